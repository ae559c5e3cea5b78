"""Dataset loaders: HICO-DET (UPT, PPDM) and V-COCO (UPT, CDN) files, format detection, bad input,
the torch and Hugging Face datasets, and ``hoi-mllm data stats``."""
import json
import random
import time

import numpy as np
import pytest
from PIL import Image

from hoi_mllm.cli import main
from hoi_mllm.data import (CDN_ACTIONS, FORMATS, AnnotationError, HOIDataset, collate_samples, detect_format,
                           load_annotations, read_annotations, to_hf_dataset)
from hoi_mllm.prompts import load_vocabulary

HICO = load_vocabulary("hico-det")
VCOCO = load_vocabulary("vcoco")
COCO91 = {o: cid for cid, o in HICO.coco91_to_object.items()}  # object id -> COCO-91 category id

# Same content for both HICO-DET formats: instances (box, object name) and triplets (human, object, verb).
HICO_CONTENT = [
    {"file_name": "HICO_test2015_00000001.jpg", "size": (640, 480),
     "instances": [([10.5, 20, 200, 470], "person"), ([150, 200, 600, 460], "bicycle"),
                   ([300, 30, 420, 300], "person"), ([0, 0, 640, 480], "person")],
     "triplets": [(0, 1, "ride"), (0, 1, "sit_on"), (2, 1, "hold"), (2, 0, "hug"), (0, 2, "no_interaction"),
                  (3, 1, "ride")]},
    {"file_name": "HICO_test2015_00000002.jpg", "size": (500, 375), "instances": [], "triplets": []},
    {"file_name": "HICO_test2015_00000003.jpg", "size": (300, 200),
     "instances": [([1, 1, 100, 199], "person"), ([120, 150, 160, 190], "sports_ball"), ([170, 0, 299, 150], "person"),
                   ([0, 100, 30, 130], "chair")],
     "triplets": [(0, 1, "kick"), (2, 1, "catch"), (2, 1, "throw"), (0, 3, "sit_on")]},
]


def hico_rows(img):
    for h, o, verb in img["triplets"]:
        (bh, _), (bo, obj) = img["instances"][h], img["instances"][o]
        oi, vi = HICO.object_index(obj), HICO.verb_index(verb)
        yield bh, bo, oi, vi, HICO.class_of(vi, oi)


def write_hicodet_upt(path, content=HICO_CONTENT, edit=None):
    ann = []
    for img in content:
        rows = list(hico_rows(img))
        ann.append({"boxes_h": [r[0] for r in rows], "boxes_o": [r[1] for r in rows], "object": [r[2] for r in rows],
                    "verb": [r[3] for r in rows], "hoi": [r[4] for r in rows]})
    data = {"annotation": ann, "filenames": [img["file_name"] for img in content],
            "size": [list(img["size"]) for img in content], "empty": [i for i, a in enumerate(ann) if not a["hoi"]],
            "objects": list(HICO.objects), "verbs": list(HICO.verbs),
            "correspondence": [[c, o, v] for c, (o, v) in enumerate(HICO.classes)],
            "rare": sorted(HICO.rare), "non_rare": sorted(HICO.non_rare)}
    if edit:
        edit(data)
    path.write_text(json.dumps(data))
    return path


def write_hicodet_ppdm(path, content=HICO_CONTENT, sizes=False, seed=0, edit=None):
    """PPDM layout; the boxes of each image are listed in a shuffled order, rows keep the content's order."""
    rnd = random.Random(seed)
    images = []
    for img in content:
        perm = list(range(len(img["instances"])))
        rnd.shuffle(perm)  # perm[k] = content instance at file position k
        pos = {c: k for k, c in enumerate(perm)}
        anns = [{"bbox": img["instances"][c][0], "category_id": COCO91[HICO.object_index(img["instances"][c][1])]}
                for c in perm]
        hois = []
        for h, o, verb in img["triplets"]:
            oi, vi = HICO.object_index(img["instances"][o][1]), HICO.verb_index(verb)
            hois.append({"subject_id": pos[h], "object_id": pos[o], "category_id": vi + 1,
                         "hoi_category_id": HICO.class_of(vi, oi) + 1})
        rec = {"file_name": img["file_name"], "img_id": int(img["file_name"][-12:-4]), "annotations": anns,
               "hoi_annotation": hois}
        if sizes:
            rec["width"], rec["height"] = img["size"]
        images.append(rec)
    if edit:
        edit(images)
    path.write_text(json.dumps(images))
    return path


def assert_same_samples(a, b, sizes=True):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.file_name == y.file_name and x.image_id == y.image_id
        if sizes:
            assert x.image_size == y.image_size
        np.testing.assert_array_equal(x.boxes, y.boxes)
        assert x.boxes.dtype == y.boxes.dtype == np.float32
        np.testing.assert_array_equal(x.labels, y.labels)
        np.testing.assert_array_equal(x.pair_human, y.pair_human)
        np.testing.assert_array_equal(x.pair_object, y.pair_object)
        assert x.pair_verbs == y.pair_verbs and x.pair_classes == y.pair_classes
        assert x.extra == y.extra


# ------------------------------------------------------------------------------------------ HICO-DET
def test_hicodet_upt_record(tmp_path):
    samples, report = read_annotations(write_hicodet_upt(tmp_path / "instances_test2015.json"))
    assert report.format == "hicodet-upt" and report.vocabulary == "hico-det"
    s = samples[0]
    person, bicycle = HICO.object_index("person"), HICO.object_index("bicycle")
    # instances de-duplicated by box + label, in order of first use (human, then object)
    assert s.labels.tolist() == [person, bicycle, person, person]
    np.testing.assert_allclose(s.boxes[0], [10.5, 20, 200, 470])
    # rows with the same human box + object box + object are one pair with several verbs
    ride, sit_on = HICO.verb_index("ride"), HICO.verb_index("sit_on")
    assert s.pair_human.tolist() == [0, 2, 2, 0, 3] and s.pair_object.tolist() == [1, 1, 0, 2, 1]
    assert s.pair_verbs[0] == tuple(sorted((ride, sit_on)))
    assert s.pair_classes[0] == tuple(HICO.class_of(v, bicycle) for v in s.pair_verbs[0])
    assert s.num_pairs == 5 and s.num_triplets == 6 and s.image_size == (640, 480) and s.image_id == 0
    assert samples[1].num_pairs == 0 and samples[1].boxes.shape == (0, 4)
    assert report.counts.images == 3 and report.counts.images_with_pairs == 2
    assert report.counts.pairs == 8 and report.counts.triplets == 10


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_both_hicodet_formats_load_to_identical_records(tmp_path, seed):
    upt, upt_report = read_annotations(write_hicodet_upt(tmp_path / "instances_test2015.json"))
    ppdm, ppdm_report = read_annotations(write_hicodet_ppdm(tmp_path / "test_hico.json", sizes=True, seed=seed))
    assert ppdm_report.format == "hicodet-ppdm"
    assert_same_samples(upt, ppdm)
    assert upt_report.counts == ppdm_report.counts
    # the plain PPDM files carry no image size: everything else is the same
    plain = load_annotations(write_hicodet_ppdm(tmp_path / "test2_hico.json", seed=seed))
    assert_same_samples(upt, plain, sizes=False)
    assert all(s.image_size is None for s in plain)


def test_ppdm_keeps_boxes_without_pairs_and_merges_identical_boxes(tmp_path):
    def edit(images):
        anns, hois = images[0]["annotations"], images[0]["hoi_annotation"]
        anns.append({"bbox": [5, 5, 50, 50], "category_id": 72})  # a TV, in no pair
        anns.append(dict(anns[hois[0]["object_id"]]))  # the bicycle again: identical box and label
        hois.append({**hois[0], "object_id": len(anns) - 1})  # the first triplet again, on the copy
    samples, report = read_annotations(write_hicodet_ppdm(tmp_path / "test_hico.json", edit=edit))
    s = samples[0]
    assert s.boxes.shape[0] == 5 and s.labels.tolist()[-1] == HICO.object_index("tv")  # unused boxes come last
    assert report.duplicate_instances == 1 and report.duplicate_triplets == 1
    assert s.num_pairs == 5 and s.num_triplets == 6
    assert report.counts.instances == 5 + 4


# ------------------------------------------------------------------------------------------ V-COCO
def vcoco_upt_file(path):
    objects = ["background", "person", "bicycle", "car", "sports ball", "cup"]
    classes = list(VCOCO.verbs)
    hold, ride, kick = classes.index("hold obj"), classes.index("ride instr"), classes.index("kick obj")
    h, b, ball = [10, 10, 100, 200], [50, 100, 300, 220], [120, 180, 140, 200]
    data = {"classes": classes, "objects": objects, "images": [42, 43], "action_to_object": [],
            "annotations": [
                {"file_name": "COCO_val2014_000000000042.jpg", "boxes_h": [h, h, h], "boxes_o": [b, b, ball],
                 "actions": [hold, ride, kick], "objects": [2, 2, 4]},
                {"file_name": "COCO_val2014_000000000043.jpg", "boxes_h": [], "boxes_o": [], "actions": [],
                 "objects": []}]}
    path.write_text(json.dumps(data))
    return path


def test_vcoco_upt_maps_objects_and_actions_by_name(tmp_path):
    samples, report = read_annotations(vcoco_upt_file(tmp_path / "instances_vcoco_test.json"))
    assert report.format == "vcoco-upt" and report.vocabulary == "vcoco"
    s = samples[0]
    assert s.labels.tolist() == [VCOCO.human_object, VCOCO.object_index("bicycle"), VCOCO.object_index("sports_ball")]
    assert s.pair_verbs == [tuple(sorted((VCOCO.verb_index("hold obj"), VCOCO.verb_index("ride instr")))),
                            (VCOCO.verb_index("kick obj"),)]
    assert s.extra == {"coco_image_id": 42} and samples[1].num_pairs == 0
    assert report.counts.pairs == 2 and report.counts.triplets == 3


def test_vcoco_cdn_maps_29_actions_onto_action_roles(tmp_path):
    a = {name: k for k, name in enumerate(CDN_ACTIONS)}
    anns = [{"bbox": [10, 10, 100, 200], "category_id": 1}, {"bbox": [50, 100, 300, 220], "category_id": 2},
            {"bbox": [120, 180, 140, 200], "category_id": 37}, {"bbox": [400, 0, 420, 20], "category_id": 47}]
    hois = [{"subject_id": 0, "object_id": 1, "category_id": a["ride_instr"]},
            {"subject_id": 0, "object_id": -1, "category_id": a["stand"]},          # agent-only: skipped
            {"subject_id": 0, "object_id": 2, "category_id": a["kick_obj"]},
            {"subject_id": 0, "object_id": -1, "category_id": a["hold_obj"]},       # role absent: kept, object -1
            {"subject_id": 0, "object_id": 1, "category_id": a["point_instr"]},     # not an action-role class
            {"subject_id": 0, "object_id": 2, "category_id": a["hit_instr"]}]
    path = tmp_path / "test_vcoco.json"
    path.write_text(json.dumps([{"file_name": "COCO_val2014_000000000042.jpg", "annotations": anns,
                                 "hoi_annotation": hois}]))
    samples, report = read_annotations(path)
    assert report.format == "vcoco-cdn"
    s = samples[0]
    assert s.boxes.shape[0] == 4  # the cup is in no pair but stays an instance
    assert s.labels.tolist() == [VCOCO.human_object, VCOCO.object_index("bicycle"),
                                 VCOCO.object_index("sports_ball"), VCOCO.object_index("cup")]
    assert s.pair_object.tolist() == [1, 2, -1]
    assert s.pair_verbs[1] == tuple(sorted((VCOCO.verb_index("kick obj"), VCOCO.verb_index("hit instr"))))
    assert s.pair_verbs[2] == (VCOCO.verb_index("hold obj"),) and s.pair_classes[2] == (-1,)
    assert report.roleless_triplets == 1 and sum(report.skipped.values()) == 2
    assert any("stand" in k for k in report.skipped) and any("point_instr" in k for k in report.skipped)
    assert s.extra == {"coco_image_id": 42}
    # every CDN action-role has a vcoco verb; exactly the agent-only actions and point do not
    unmapped = {n for n in CDN_ACTIONS if n.replace("_", " ") not in {v.replace("_", " ") for v in VCOCO.verbs}}
    assert unmapped == {"stand", "walk", "run", "smile", "point_instr"}


# ------------------------------------------------------------------------------------------ real files
@pytest.mark.shared_data
def test_real_hicodet_test_file_counts(shared_data):
    start = time.perf_counter()
    samples, report = read_annotations(shared_data / "hicodet" / "instances_test2015.json")
    seconds = time.perf_counter() - start
    print(f"loaded HICO-DET test in {seconds:.2f} s")
    # the README's 33,405 "instances" are rows = triplets; no two rows share both boxes, so they are pairs too
    assert report.counts.images == 9658 and report.counts.triplets == 33405 and report.counts.pairs == 33405
    assert report.counts.images - report.counts.images_with_pairs == 112
    assert len(report.counts.classes) == HICO.num_classes and report.repairs == 0
    raw = json.loads((shared_data / "hicodet" / "instances_test2015.json").read_text())
    assert sorted(i for i, s in enumerate(samples) if s.num_pairs == 0) == sorted(raw["empty"])
    for s in samples[:200]:
        idx, verbs, classes = s.triplets()
        objs = s.object_labels[idx]
        assert (HICO.class_table[objs, verbs] == classes).all()


@pytest.mark.shared_data
def test_real_vcoco_test_file_counts(shared_data):
    samples, report = read_annotations(shared_data / "vcoco" / "instances_vcoco_test.json")
    # the README's 12,402 "instances" are rows = triplets (human, action-role, object); they form 7,797 pairs
    assert report.counts.images == 4946 and report.counts.triplets == 12402 and report.counts.pairs == 7797
    assert report.format == "vcoco-upt" and report.no_class_triplets == 0
    raw = json.loads((shared_data / "vcoco" / "instances_vcoco_test.json").read_text())
    assert [s.extra["coco_image_id"] for s in samples] == raw["images"]


@pytest.mark.shared_data
def test_real_vcoco_data_stats_names_instances_and_pairs(shared_data, capsys):
    """``data stats`` says which of V-COCO's numbers are action-role instances and which distinct pairs."""
    assert main(["data", "stats", str(shared_data / "vcoco" / "instances_vcoco_test.json")]) == 0
    text = capsys.readouterr().out
    assert "7797 (distinct human-object pairs)" in text
    assert "12402 (action-role instances" in text


# ------------------------------------------------------------------------------------------ detection
def test_format_detection(tmp_path):
    assert detect_format(json.loads(write_hicodet_upt(tmp_path / "a.json").read_text())) == "hicodet-upt"
    assert detect_format(json.loads(write_hicodet_ppdm(tmp_path / "b.json").read_text())) == "hicodet-ppdm"
    assert detect_format(json.loads(vcoco_upt_file(tmp_path / "c.json").read_text())) == "vcoco-upt"
    cdn = [{"file_name": "x.jpg", "annotations": [], "hoi_annotation": [{"subject_id": 0, "object_id": -1,
                                                                         "category_id": 1}]}]
    assert detect_format(cdn) == "vcoco-cdn"
    bare = [{"file_name": "x.jpg", "annotations": [], "hoi_annotation": []}]
    with pytest.raises(ValueError, match="hicodet-ppdm.*vcoco-cdn"):
        detect_format(bare)
    assert detect_format(bare, "trainval_vcoco.json") == "vcoco-cdn"
    assert detect_format(bare, "data.json", hint="hico-det") == "hicodet-ppdm"
    for wrong in ({"images": [], "categories": []}, [1, 2], "text", []):
        with pytest.raises(ValueError, match="accepted formats") as info:
            detect_format(wrong, "wrong.json")
        assert all(name in str(info.value) for name in FORMATS)


def test_format_can_be_named(tmp_path):
    path = tmp_path / "anything.json"
    path.write_text(json.dumps([{"file_name": "x.jpg", "annotations": [], "hoi_annotation": []}]))
    assert read_annotations(path, fmt="vcoco-cdn")[1].vocabulary == "vcoco"
    with pytest.raises(ValueError, match="accepted: hicodet-upt"):
        read_annotations(path, fmt="coco")


# ------------------------------------------------------------------------------------------ bad input
def test_wrong_or_truncated_file(tmp_path):
    good = write_hicodet_upt(tmp_path / "instances_test2015.json").read_text()
    truncated = tmp_path / "truncated.json"
    truncated.write_text(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"truncated\.json is not valid JSON"):
        load_annotations(truncated)
    wrong = tmp_path / "coco.json"
    wrong.write_text(json.dumps({"images": [], "annotations": {}, "categories": []}))
    with pytest.raises(ValueError, match=r"coco\.json.*accepted formats: hicodet-upt"):
        load_annotations(wrong)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_annotations(tmp_path / "missing.json")
    bad = tmp_path / "instances_x.json"
    bad.write_text(json.dumps({"annotation": [{"boxes_h": []}], "filenames": ["a.jpg"]}))
    with pytest.raises(AnnotationError, match=r"image 0 \(a\.jpg\): field annotation\[0\]\.boxes_o: missing"):
        load_annotations(bad)


def _set(key, value, image=2, row=0):
    def edit(data):
        data["annotation"][image][key][row] = value
    return edit


@pytest.mark.parametrize("key,value,field,message", [
    ("boxes_o", [120, 150, 310, 190], "annotation[2].boxes_o[0]", "outside the 300x200 image"),
    ("boxes_h", [100, 1, 1, 199], "annotation[2].boxes_h[0]", "x2 < x1"),
    ("boxes_h", [1, 1, 100], "annotation[2].boxes_h[0]", "not 4 numbers"),
    ("hoi", len(HICO.classes), "annotation[2].hoi[0]", "class index 600 outside 0..599"),
    ("hoi", 0, "annotation[2].hoi[0]", "does not match"),
    ("verb", len(HICO.verbs), "annotation[2].verb[0]", "verb index 117 outside 0..116"),
    ("object", -1, "annotation[2].object[0]", "object index -1 outside 0..79"),
    ("verb", HICO.verb_index("ride"), "annotation[2].verb[0]", "is not a class"),
])
def test_bad_hicodet_upt_values_name_file_image_and_field(tmp_path, key, value, field, message):
    path = write_hicodet_upt(tmp_path / "instances_test2015.json", edit=_set(key, value))
    with pytest.raises(AnnotationError) as info:
        load_annotations(path)
    text = str(info.value)
    assert str(path) in text and "image 2 (HICO_test2015_00000003.jpg)" in text
    assert f"field {field}" in text and message in text


@pytest.mark.parametrize("value,message", [
    (700, "class index 700 outside 0..599"),
    (-3, "class index -3 outside 0..599"),
    (0, "class 0 does not match"),  # a valid class index, but not the row's (verb, object)
])
def test_hoi_index_is_checked_without_correspondence(tmp_path, value, message):
    """Without ``correspondence`` the file's class ids are the vocabulary's: range and (verb, object) checked."""
    def drop_corr(data):
        del data["correspondence"]
    ok = write_hicodet_upt(tmp_path / "ok.json", edit=drop_corr)
    assert [s.pair_classes for s in load_annotations(ok)] == [s.pair_classes for s in load_annotations(
        write_hicodet_upt(tmp_path / "with.json"))]

    def edit(data):
        drop_corr(data)
        _set("hoi", value)(data)
    path = write_hicodet_upt(tmp_path / "instances_test2015.json", edit=edit)
    with pytest.raises(AnnotationError) as info:
        load_annotations(path)
    text = str(info.value)
    assert str(path) in text and "image 2 (HICO_test2015_00000003.jpg)" in text
    assert "field annotation[2].hoi[0]" in text and message in text


@pytest.mark.parametrize("value", [7, None, ["a.jpg"]])
def test_non_string_file_name_names_the_field(tmp_path, value):
    def edit(data):
        data["filenames"][1] = value
    path = write_hicodet_upt(tmp_path / "instances_test2015.json", edit=edit)
    with pytest.raises(AnnotationError, match=r"image 1: field filenames\[1\]: file name .* is not a string"):
        load_annotations(path)


def _hoi(key, value, image=0, row=0):
    def edit(images):
        images[image]["hoi_annotation"][row][key] = value
    return edit


@pytest.mark.parametrize("edit,message", [
    (_hoi("category_id", 0), "verb category_id 0 outside 1..117"),
    (_hoi("hoi_category_id", 601), "hoi_category_id 601 outside 1..600"),
    (_hoi("hoi_category_id", 1), "does not match"),
    (_hoi("subject_id", 9), "subject_id 9 outside 0..3"),
    (_hoi("object_id", -1), "object_id -1 outside 0..3"),
    (lambda images: images[0]["annotations"][0].update(category_id=12), "category_id 12 is not a COCO-91"),
])
def test_bad_hicodet_ppdm_values(tmp_path, edit, message):
    path = write_hicodet_ppdm(tmp_path / "test_hico.json", edit=edit)
    with pytest.raises(AnnotationError, match="image 0 \\(HICO_test2015_00000001.jpg\\): field \\[0\\]") as info:
        load_annotations(path)
    assert message in str(info.value)


def test_bad_vcoco_values(tmp_path):
    path = vcoco_upt_file(tmp_path / "instances_vcoco_test.json")
    data = json.loads(path.read_text())
    data["annotations"][0]["objects"][1] = 0
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=r"annotations\[0\]\.objects\[1\]: object 'background'"):
        load_annotations(path)
    data["annotations"][0]["objects"][1] = 2
    data["annotations"][0]["actions"][2] = 24
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=r"actions\[2\]: verb index 24 outside 0..23"):
        load_annotations(path)
    cdn = tmp_path / "test_vcoco.json"
    cdn.write_text(json.dumps([{"file_name": "COCO_val2014_000000000042.jpg",
                                "annotations": [{"bbox": [0, 0, 5, 5], "category_id": 1}],
                                "hoi_annotation": [{"subject_id": 0, "object_id": -1, "category_id": 29}]}]))
    with pytest.raises(AnnotationError, match="action category_id 29 outside 0..28"):
        load_annotations(cdn)


def test_repair_boxes_clips_swaps_and_counts(tmp_path):
    def edit(data):
        data["annotation"][2]["boxes_o"][0] = [120, 150, 310, 190]   # leaves the 300x200 image
        data["annotation"][2]["boxes_h"][0] = [100, 1, 1, 199]        # x2 < x1 (rows 0 and 3 share it)
        data["annotation"][2]["boxes_h"][3] = [100, 1, 1, 199]
    path = write_hicodet_upt(tmp_path / "instances_test2015.json", edit=edit)
    with pytest.raises(AnnotationError, match="repair_boxes=True"):
        load_annotations(path)
    samples, report = read_annotations(path, repair_boxes=True)
    assert report.repairs == 2 and report.repair_kinds == {"swapped": 1, "clipped": 1}
    assert len(report.repair_examples) == 2 and "boxes_o[0]" in "".join(report.repair_examples)
    s = samples[2]
    np.testing.assert_array_equal(s.boxes[0], [1, 1, 100, 199])
    np.testing.assert_array_equal(s.boxes[1], [120, 150, 300, 190])
    nan = write_hicodet_upt(tmp_path / "nan.json", edit=_set("boxes_h", [1, None, 5, 5]))
    with pytest.raises(AnnotationError, match="non-finite"):
        load_annotations(nan, repair_boxes=True)


# ------------------------------------------------------------------------------------------ datasets
def _with_images(tmp_path, missing=()):
    path = write_hicodet_upt(tmp_path / "instances_test2015.json")
    folder = tmp_path / "images" / "test2015"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for img in HICO_CONTENT:
        if img["file_name"] not in missing:
            w, h = img["size"]
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / img["file_name"], "PNG")
    return path, folder


def test_image_root_default_and_missing_image(tmp_path):
    path, folder = _with_images(tmp_path, missing=("HICO_test2015_00000002.jpg",))
    samples = load_annotations(path)
    assert all(s.image_root == folder for s in samples)
    assert samples[0].load_image().size == (640, 480)
    with pytest.raises(FileNotFoundError, match=str(folder / "HICO_test2015_00000002.jpg")):
        samples[1].load_image()
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert load_annotations(path, image_root=other)[0].path == other / "HICO_test2015_00000001.jpg"
    with pytest.raises(FileNotFoundError, match="image root folder not found"):
        load_annotations(path, image_root=tmp_path / "nope")


def test_torch_dataset(tmp_path):
    import torch

    path, _ = _with_images(tmp_path)
    ds = HOIDataset(load_annotations(path))
    assert len(ds) == 3
    item = ds[0]
    assert item.image.mode == "RGB" and item.image.size == (640, 480) and ds.samples[0].image is None
    assert HOIDataset(ds.samples, load_images=False)[0].image is None
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_samples)))
    assert [b.file_name for b in batch] == [s["file_name"] for s in HICO_CONTENT[:2]]
    assert batch[1].image.size == (500, 375)
    filtered = HOIDataset.from_file(path, split="rare_first", load_images=False)
    assert len(filtered) == 3 and filtered.vocabulary.name == "hico-det"


def test_hf_dataset_decodes_images_only_when_accessed(tmp_path):
    from datasets import Image as HFImage

    path = write_hicodet_upt(tmp_path / "instances_test2015.json")
    samples = load_annotations(path)
    ds = to_hf_dataset(samples)  # no image exists yet: building reads nothing
    assert isinstance(ds.features["image"], HFImage) and ds.features["image"].decode
    meta = ds.remove_columns("image")
    assert ds.num_rows == 3 and meta[1]["pair_verbs"] == [] and meta[0]["width"] == 640
    assert meta[0]["pair_human"] == samples[0].pair_human.tolist()
    with pytest.raises(FileNotFoundError):
        ds[0]
    (tmp_path / "x").mkdir()
    _with_images(tmp_path / "x")  # write the images, then point a dataset at them
    ds = to_hf_dataset(HOIDataset(load_annotations(tmp_path / "x" / "instances_test2015.json")))
    row = ds[2]
    assert row["image"].size == (300, 200)
    np.testing.assert_allclose(row["boxes"], samples[2].boxes)
    assert row["labels"] == samples[2].labels.tolist()
    assert [tuple(v) for v in row["pair_verbs"]] == samples[2].pair_verbs
    assert [tuple(c) for c in row["pair_classes"]] == samples[2].pair_classes


# ------------------------------------------------------------------------------------------ CLI
def test_cli_data_stats(tmp_path, capsys):
    path = write_hicodet_upt(tmp_path / "instances_test2015.json")
    assert main(["data", "stats", str(path), "--json", "--split", "rare_first"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["images"], out["images_with_pairs"], out["pairs"], out["triplets"]) == (3, 2, 8, 10)
    assert out["classes_seen"] == 9 and out["repairs"] == 0
    assert out["split"]["unseen_present_after"] == 0 and out["split"]["images_after"] == 3
    assert out["split"]["same_pair_iou"] == 0.7 and "dropped_overlap_pairs" in out["split"]
    assert main(["data", "stats", str(path), "--json", "--split", "rare_first", "--same-pair-iou", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["split"]["same_pair_iou"] is None
    assert main(["data", "stats", str(path)]) == 0
    text = capsys.readouterr().out
    assert "images with pairs" in text and "triplets" in text and "box repairs" in text
    assert "8 (distinct human-object pairs)" in text and "10 ((pair, verb) labels)" in text
    assert main(["data", "stats", str(path), "--split", "rare_frist"]) == 1
    assert "unknown split 'rare_frist'" in capsys.readouterr().err
    broken = write_hicodet_upt(tmp_path / "b.json", edit=_set("boxes_h", [100, 1, 1, 199]))
    assert main(["data", "stats", str(broken)]) == 1
    assert "x2 < x1" in capsys.readouterr().err
    assert main(["data", "stats", str(broken), "--repair-boxes", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["repairs"] == 1
