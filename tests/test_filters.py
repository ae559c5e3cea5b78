"""Zero-shot training filters: no unseen class is left, pairs go whole, images and boxes stay, counts add up."""
import json

import numpy as np
import pytest

from hoi_mllm.boxes import box_iou
from hoi_mllm.data import HOISample, count_samples, filter_zero_shot, load_annotations, read_annotations
from hoi_mllm.data.filters import unseen_pair_mask
from hoi_mllm.prompts import load_vocabulary
from hoi_mllm.prompts.vocabulary import Vocabulary, VocabularyError

HICO = load_vocabulary("hico-det")


def random_samples(vocab, n_images=300, seed=0):
    """Samples in which every class of ``vocab`` occurs; pairs get 1-3 valid verbs of their object."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(vocab.num_classes)
    chunks = np.array_split(classes, n_images)
    samples = []
    for i, chunk in enumerate(chunks):
        n_h = int(rng.integers(1, 3))
        boxes = [[float(x), 10.0, float(x) + 40, 90.0] for x in range(0, 50 * n_h, 50)]
        labels = [vocab.human_object] * n_h
        ph, po, pv, pc = [], [], [], []
        for c in chunk:
            obj = int(vocab.class_objects[c])
            boxes.append([5.0 * len(boxes), 100.0, 5.0 * len(boxes) + 30, 150.0])
            labels.append(obj)
            extra = rng.choice(vocab.verbs_for_object(obj), size=int(rng.integers(0, 3)))
            verbs = sorted({int(vocab.class_verbs[c]), *map(int, extra)})
            ph.append(int(rng.integers(0, n_h)))
            po.append(len(boxes) - 1)
            pv.append(tuple(verbs))
            pc.append(tuple(vocab.class_of(v, obj) for v in verbs))
        samples.append(HOISample(
            file_name=f"img_{i:05d}.jpg", image_size=(640, 480), boxes=np.array(boxes, np.float32).reshape(-1, 4),
            labels=np.array(labels, np.int64), pair_human=np.array(ph, np.int64), pair_object=np.array(po, np.int64),
            pair_verbs=pv, pair_classes=pc, image_id=i))
    samples.append(HOISample("empty.jpg", (10, 10), np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                             np.zeros(0, np.int64), np.zeros(0, np.int64), [], [], image_id=n_images))
    return samples


def check_filtered(before, after, report, vocab, split):
    unseen = vocab.unseen_classes(split)
    assert report.unseen_present_after == 0
    assert not (count_samples(after).classes & unseen)
    for b, a in zip(before, after):  # every image kept, with all its boxes
        assert a.file_name == b.file_name
        assert a.boxes is b.boxes or np.array_equal(a.boxes, b.boxes)
        assert a.labels is b.labels or np.array_equal(a.labels, b.labels)
        assert all(not (set(c) & unseen) for c in a.pair_classes)
    assert len(after) == len(before) == report.after.images == report.before.images
    assert report.after.pairs == report.before.pairs - report.dropped_pairs
    assert report.after.triplets == report.before.triplets - report.dropped_triplets
    assert report.after.instances == report.before.instances
    assert report.after.classes <= report.before.classes - unseen  # seen classes can leave with their pair
    if vocab.splits[split].kind == "unseen_verb":  # no pair keeps an unseen verb
        verbs = {int(vocab.class_verbs[c]) for c in unseen}
        assert all(not (set(v) & verbs) for s in after for v in s.pair_verbs)


@pytest.mark.parametrize("split", sorted(HICO.splits))
def test_every_hicodet_split_leaves_no_unseen_class(split):
    samples = random_samples(HICO)
    assert count_samples(samples).classes == frozenset(range(HICO.num_classes))
    after, report = filter_zero_shot(samples, HICO, split)
    check_filtered(samples, after, report, HICO, split)
    assert report.unseen_present_before == len(HICO.unseen_classes(split)) and report.dropped_pairs > 0
    assert report.kind == HICO.splits[split].kind and report.seen_classes == HICO.num_classes - report.unseen_classes


def test_pairs_go_whole_and_emptied_images_stay():
    split = "rare_first"
    unseen = sorted(HICO.unseen_classes(split))
    c = unseen[0]
    obj, verb = int(HICO.class_objects[c]), int(HICO.class_verbs[c])
    seen_verb = next(v for v in HICO.verbs_for_object(obj) if HICO.class_of(v, obj) not in unseen)
    verbs = tuple(sorted((verb, seen_verb)))
    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 20], [30, 30, 40, 40]], np.float32)
    mixed = HOISample("a.jpg", (50, 50), boxes, np.array([HICO.human_object, obj, obj]), np.array([0, 0]),
                      np.array([1, 2]), [verbs, (seen_verb,)], [tuple(HICO.class_of(v, obj) for v in verbs),
                                                                (HICO.class_of(seen_verb, obj),)])
    only_unseen = HOISample("b.jpg", (50, 50), boxes[:2], np.array([HICO.human_object, obj]), np.array([0]),
                            np.array([1]), [(verb,)], [(c,)])
    untouched = HOISample("c.jpg", (50, 50), boxes[:2], np.array([HICO.human_object, obj]), np.array([0]),
                          np.array([1]), [(seen_verb,)], [(HICO.class_of(seen_verb, obj),)])
    after, report = filter_zero_shot([mixed, only_unseen, untouched], "hico-det", split)
    # the pair with a seen and an unseen verb is dropped whole (GEN-VLKT's skip_pair rule)
    assert after[0].pair_verbs == [(seen_verb,)] and after[0].pair_object.tolist() == [2]
    assert after[1].num_pairs == 0 and after[1].boxes.shape == (2, 4)  # kept without pairs, boxes intact
    assert after[2] is untouched and mixed.num_pairs == 2  # inputs are not modified
    assert (report.dropped_pairs, report.dropped_triplets, report.dropped_seen_triplets) == (2, 3, 1)
    assert report.images_emptied == 1 and report.after.images_with_pairs == 2
    assert report.unseen_present_before == 1 and report.unseen_present_after == 0


def test_upt_per_triplet_boxes_of_one_pair_go_with_the_unseen_one(tmp_path):
    """UPT files give each triplet its own boxes: a seen row on near-identical boxes is the same pair."""
    split = "rare_first"
    unseen = sorted(HICO.unseen_classes(split))
    c = unseen[0]
    obj, verb = int(HICO.class_objects[c]), int(HICO.class_verbs[c])
    seen_verb = next(v for v in HICO.verbs_for_object(obj) if HICO.class_of(v, obj) not in unseen)
    other_obj = next(o for o in range(HICO.num_objects) if o not in (obj, HICO.human_object)
                     and HICO.class_of(seen_verb, o) is not None and HICO.class_of(seen_verb, o) >= 0)
    h, o = [10.0, 10.0, 60.0, 110.0], [50.0, 60.0, 90.0, 100.0]
    rows = [  # (human box, object box, object, verb)
        (h, o, obj, verb),                                                   # the unseen triplet
        ([11.0, 10.0, 61.0, 111.0], [50.0, 61.0, 91.0, 100.0], obj, seen_verb),  # same pair, IoU ~0.95 / ~0.93
        ([11.0, 10.0, 61.0, 111.0], [50.0, 61.0, 91.0, 100.0], other_obj, seen_verb),  # other object label
        (h, [70.0, 60.0, 110.0, 100.0], obj, seen_verb),                     # same human, object box IoU 0.33
    ]
    data = {"annotation": [{"boxes_h": [r[0] for r in rows], "boxes_o": [r[1] for r in rows],
                            "object": [r[2] for r in rows], "verb": [r[3] for r in rows],
                            "hoi": [HICO.class_of(r[3], r[2]) for r in rows]}],
            "filenames": ["HICO_train2015_00000001.jpg"], "size": [[200, 150]]}
    (tmp_path / "instances_train2015.json").write_text(json.dumps(data))
    samples = load_annotations(tmp_path / "instances_train2015.json", vocabulary="hico-det")
    assert samples[0].num_pairs == 4  # boxes differ, so the loader cannot merge the rows into one pair

    after, report = filter_zero_shot(samples, HICO, split)
    kept = {(tuple(after[0].object_boxes[k]), int(after[0].object_labels[k])) for k in range(after[0].num_pairs)}
    assert kept == {((50.0, 61.0, 91.0, 100.0), other_obj), ((70.0, 60.0, 110.0, 100.0), obj)}
    assert (report.dropped_pairs, report.dropped_triplets, report.dropped_seen_triplets) == (2, 2, 0)
    assert (report.dropped_overlap_pairs, report.dropped_overlap_triplets, report.same_pair_iou) == (1, 1, 0.7)
    assert report.as_dict()["dropped_overlap_pairs"] == 1
    assert np.array_equal(after[0].boxes, samples[0].boxes)  # every box stays
    # a stricter IoU keeps the near-duplicate; None keeps the exact-box rule only
    assert filter_zero_shot(samples, HICO, split, same_pair_iou=0.97)[1].dropped_overlap_pairs == 0
    assert filter_zero_shot(samples, HICO, split, same_pair_iou=None)[1].dropped_pairs == 1
    with pytest.raises(ValueError, match="same_pair_iou=1.5"):
        filter_zero_shot(samples, HICO, split, same_pair_iou=1.5)


@pytest.mark.parametrize("split", ["unseen_verb", "unseen_action"])
def test_hicodet_verb_splits_hold_out_every_class_of_their_verbs(split):
    """On HICO-DET, dropping pairs by unseen verb and by unseen class drop the same pairs."""
    unseen = HICO.unseen_classes(split)
    verbs = frozenset(int(HICO.class_verbs[c]) for c in unseen)
    for s in random_samples(HICO, n_images=100, seed=3):
        np.testing.assert_array_equal(unseen_pair_mask(s, unseen, frozenset()), unseen_pair_mask(s, frozenset(), verbs))


def test_unknown_split_and_vocabulary_without_splits():
    samples = random_samples(HICO, n_images=5)
    with pytest.raises(VocabularyError, match="unknown split 'rare-first'.*rare_first"):
        filter_zero_shot(samples, HICO, "rare-first")
    with pytest.raises(VocabularyError, match="no zero-shot splits"):
        filter_zero_shot([], "vcoco", "rare_first")


# ------------------------------------------------------------------------------------------ synthetic-style
def small_vocabulary() -> Vocabulary:
    objects = ["person", "ball", "chair", "bike"]
    verbs = ["no_interaction", "hold", "kick", "sit_on", "ride", "look_at"]
    valid = {"person": ["no_interaction", "hold", "look_at"], "ball": ["no_interaction", "hold", "kick", "look_at"],
             "chair": ["no_interaction", "hold", "sit_on", "look_at"], "bike": ["no_interaction", "hold", "ride",
                                                                                "sit_on", "look_at"]}
    classes = [[objects.index(o), verbs.index(v)] for o in objects for v in valid[o]]
    cls = {(objects[o], verbs[v]): k for k, (o, v) in enumerate(classes)}
    return Vocabulary.from_dict({
        "format": "hoi-mllm/vocabulary", "name": "tiny-world", "objects": objects, "verbs": verbs,
        "human_object": 0, "no_interaction_verb": 0, "classes": classes,
        "phrases": [f"{verbs[v]} the {objects[o]}" for o, v in classes], "rare": [],
        "splits": {
            "uc": {"kind": "unseen_combination", "unseen": [cls["chair", "hold"], cls["bike", "sit_on"]]},
            "uv": {"kind": "unseen_verb", "unseen": [c for (o, v), c in cls.items() if v == "kick"]},
            "uv_partial": {"kind": "unseen_verb", "unseen": [cls["bike", "sit_on"]]},  # sit_on chair stays a class
            "uo": {"kind": "unseen_object", "unseen": [c for (o, v), c in cls.items() if o == "bike"]},
        }})


def write_world(folder, vocab, samples):
    """The UPT-style layout the synthetic world writes, with its vocabulary.json beside it."""
    ann = []
    for s in samples:
        idx, verbs, classes = s.triplets()
        ann.append({"boxes_h": s.boxes[s.pair_human[idx]].tolist(), "boxes_o": s.boxes[s.pair_object[idx]].tolist(),
                    "object": s.labels[s.pair_object[idx]].tolist(), "verb": verbs.tolist(), "hoi": classes.tolist()})
    data = {"annotation": ann, "filenames": [s.file_name for s in samples],
            "size": [list(s.image_size) for s in samples], "empty": [i for i, a in enumerate(ann) if not a["hoi"]],
            "objects": list(vocab.objects), "verbs": list(vocab.verbs),
            "correspondence": [[c, o, v] for c, (o, v) in enumerate(vocab.classes)], "rare": [], "non_rare": []}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "instances_train.json").write_text(json.dumps(data))
    vocab.save(folder / "vocabulary.json")
    return folder / "instances_train.json"


@pytest.mark.parametrize("split", ["uc", "uv", "uv_partial", "uo"])
def test_synthetic_style_splits_leave_no_unseen_class(tmp_path, split):
    vocab = small_vocabulary()
    path = write_world(tmp_path / "world", vocab, random_samples(vocab, n_images=40, seed=1))
    samples, load_report = read_annotations(path)
    assert load_report.vocabulary == "tiny-world"  # vocabulary.json beside the file wins
    after, report = filter_zero_shot(samples, vocab, split)
    check_filtered(samples, after, report, vocab, split)
    if split == "uv_partial":  # an unseen-verb split drops every pair with that verb, seen classes too
        sit_on = vocab.verb_index("sit_on")
        assert any(sit_on in v for s in samples for v in s.pair_verbs)
        assert report.dropped_pairs > sum(vocab.splits[split].unseen & set(c) != set()
                                          for s in samples for c in s.pair_classes)


# ------------------------------------------------------------------------------------------ real data
def genvlkt_rows_kept(raw: dict, unseen: frozenset, iou: float = 0.7) -> int:
    """Independent reference on the raw rows: GEN-VLKT's skip_pair rule on boxes merged at ``iou``.

    A row is skipped when an unseen row of its image has the same object and both boxes at IoU >= ``iou``
    (an exact repeat of the boxes included), as in GEN-VLKT's ``trainval_hico.json``, whose boxes are merged.
    """
    kept = 0
    for a in raw["annotation"]:
        if not a["hoi"]:
            continue
        bh, bo, obj = np.array(a["boxes_h"], float), np.array(a["boxes_o"], float), np.array(a["object"])
        bad = np.isin(a["hoi"], sorted(unseen))
        if not bad.any():
            kept += len(a["hoi"])
            continue
        same = (box_iou(bh, bh[bad]) >= iou) & (box_iou(bo, bo[bad]) >= iou) & (obj[:, None] == obj[None, bad])
        kept += int((~same.any(axis=1)).sum())
    return kept


@pytest.mark.shared_data
def test_real_hicodet_every_split(shared_data):
    path = shared_data / "hicodet" / "instances_test2015.json"
    samples = load_annotations(path)
    raw = json.loads(path.read_text())
    splits = json.loads((shared_data / "hicodet" / "zero_shot_splits.json").read_text())
    reports = {}
    for split in sorted(HICO.splits):
        assert HICO.unseen_classes(split) == frozenset(splits[split])
        after, report = filter_zero_shot(samples, HICO, split)
        reports[split] = report
        check_filtered(samples, after, report, HICO, split)
        assert report.after.triplets == genvlkt_rows_kept(raw, HICO.unseen_classes(split))
        assert report.after.images == 9658
    # pairs dropped only as the same physical pair as an unseen one (UPT's per-triplet boxes)
    assert reports["rare_first"].dropped_overlap_pairs == reports["rare_first"].dropped_overlap_triplets == 362
    assert reports["uc0"].dropped_overlap_pairs == 3123
    assert reports["unseen_object"].dropped_overlap_pairs == 0  # every class of those objects is unseen
    _, exact = filter_zero_shot(samples, HICO, "rare_first", same_pair_iou=None)
    assert exact.dropped_overlap_pairs == 0
    assert exact.dropped_pairs == reports["rare_first"].dropped_pairs - 362
