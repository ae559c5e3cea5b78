"""HICO-DET mAP: hand-computed cases, the official loop re-written literally as a cross-check, real data."""
from __future__ import annotations

import numpy as np
import pytest

from hoi_mllm.boxes import box_iou_aligned
from hoi_mllm.data.sample import HOISample
from hoi_mllm.eval import HICODetConfig, HICODetEvaluator, ap_11point, ap_voc, evaluate_hicodet
from hoi_mllm.eval.ap import MATLAB_RECALL_THRESHOLDS
from hoi_mllm.eval.inputs import ground_truth_predictions
from hoi_mllm.predictions import PredictionsError, PredictionsFile
from hoi_mllm.prompts import Vocabulary
from hoi_mllm.records import HOITriplets

# objects: person 0, ball 1, cup 2; verbs: hold 0, kick 1, drink 2
# classes: 0 hold ball, 1 kick ball (rare), 2 hold cup, 3 drink cup; split "uc": unseen {1, 3}
TINY = Vocabulary.from_dict({
    "format": "hoi-mllm/vocabulary", "name": "tiny", "objects": ["person", "ball", "cup"],
    "verbs": ["hold", "kick", "drink"], "human_object": 0,
    "classes": [[1, 0], [1, 1], [2, 0], [2, 2]],
    "phrases": ["holding a ball", "kicking a ball", "holding a cup", "drinking from a cup"],
    "rare": [1], "splits": {"uc": {"kind": "unseen_combination", "unseen": [1, 3]}},
})
H = [10.0, 10.0, 50.0, 90.0]  # a human box
BALL = [60.0, 60.0, 80.0, 80.0]
CUP = [40.0, 20.0, 55.0, 35.0]


def make_sample(name: str, pairs: list[tuple[list, list, int, tuple[int, ...]]]) -> HOISample:
    """``pairs``: (human box, object box, object id, classes); verbs follow from the classes."""
    boxes, labels, ph, po, verbs, classes = [], [], [], [], [], []
    for hb, ob, obj, cls in pairs:
        ph.append(len(boxes))
        boxes.append(hb)
        labels.append(TINY.human_object)
        po.append(len(boxes))
        boxes.append(ob)
        labels.append(obj)
        verbs.append(tuple(TINY.classes[c][1] for c in cls))
        classes.append(tuple(cls))
    return HOISample(name, (100, 100), np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                     np.asarray(labels, dtype=np.int64), np.asarray(ph, dtype=np.int64),
                     np.asarray(po, dtype=np.int64), verbs, classes)


def triplets(name: str, rows: list[tuple[list, list, int, float]]) -> HOITriplets:
    """``rows``: (human box, object box, class, score)."""
    if not rows:
        return HOITriplets.empty(name)
    hb, ob, cls, sc = zip(*rows)
    return HOITriplets.create(hb, ob, [TINY.classes[c][0] for c in cls], [TINY.classes[c][1] for c in cls], sc, name)


def shift(box, dx=0.0, dy=0.0):
    return [box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy]


def evaluate(samples, images, **cfg):
    return evaluate_hicodet(samples, PredictionsFile("tiny", images), TINY, HICODetConfig(**cfg))


# --------------------------------------------------------------------------------------------- AP rules
def test_11_point_ap_of_a_hand_made_curve():
    rec = np.array([0.25, 0.5, 0.5, 0.75])
    prec = np.array([1.0, 1.0, 2 / 3, 0.75])
    # t = 0..0.5 (6 thresholds): max precision 1; t = 0.6, 0.7: 0.75; t = 0.8..1: no point -> 0
    assert ap_11point(rec, prec) == pytest.approx((6 * 1.0 + 2 * 0.75) / 11)


def test_11_point_thresholds_are_matlab_colon_values():
    # MATLAB's 0:0.1:1 has 3*0.1 = 0.30000000000000004 as its fourth value: recall 3/10 does not reach it
    assert MATLAB_RECALL_THRESHOLDS[3] == 3 * 0.1 > 0.3
    assert MATLAB_RECALL_THRESHOLDS[7] == 0.7
    assert ap_11point(np.array([3 / 10]), np.array([1.0])) == pytest.approx(3 / 11)
    assert ap_11point(np.array([0.4]), np.array([1.0])) == pytest.approx(5 / 11)


def test_voc_all_point_ap_of_a_hand_made_curve():
    # envelope: precision 1 up to recall 0.5, then 2/3 up to 1
    assert ap_voc(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert ap_voc(np.array([]), np.array([])) == 0.0


# --------------------------------------------------------------------------------------------- matching
def test_perfect_predictions_score_100_in_every_setting():
    gt = [make_sample("a.jpg", [(H, BALL, 1, (0, 1)), (H, CUP, 2, (2,))]),
          make_sample("b.jpg", [(shift(H, 5), CUP, 2, (3,))])]
    r = evaluate(gt, ground_truth_predictions(gt, TINY).images, split="uc")
    for s in r.settings.values():
        assert s.summary == pytest.approx({"full": 1, "rare": 1, "non_rare": 1, "unseen": 1, "seen": 1})
        np.testing.assert_allclose(s.recall, 1.0)


def test_a_duplicate_is_a_false_positive_without_fallback():
    # two ground truths of one class; d2 overlaps both but more the one d1 already took: a false
    # positive (the official code does not fall back to its second-best ground truth)
    g1, g2 = [0.0, 0.0, 40.0, 40.0], [0.0, 20.0, 40.0, 60.0]
    gt = [make_sample("a.jpg", [(g1, BALL, 1, (0,)), (g2, BALL, 1, (0,))])]
    d2 = [0.0, 8.0, 40.0, 48.0]  # IoU 0.67 with g1, 0.52 with g2 (+1 convention)
    assert box_iou_aligned(np.array([d2]), np.array([g1]), True)[0] > box_iou_aligned(np.array([d2]), np.array([g2]), True)[0] >= 0.5
    r = evaluate(gt, [triplets("a.jpg", [(g1, BALL, 0, 0.9), (d2, BALL, 0, 0.8), (g2, BALL, 0, 0.7)])])
    s = r.settings["default"]
    assert s.num_tp[0] == 2 and s.num_detections[0] == 3
    # tp = [1, 0, 1]: recall [.5, .5, 1], precision [1, .5, 2/3] -> 6 thresholds at 1, 5 at 2/3
    assert s.ap[0] == pytest.approx((6 + 5 * 2 / 3) / 11)


def test_the_plus_one_convention_decides_a_borderline_case():
    gt_box, det = [0.0, 0.0, 9.0, 9.0], [3.2, 0.0, 12.2, 9.0]
    a, b = np.array([det]), np.array([gt_box])
    assert box_iou_aligned(a, b, plus_one=False)[0] < 0.5 <= box_iou_aligned(a, b, plus_one=True)[0]
    gt = [make_sample("a.jpg", [(gt_box, BALL, 1, (0,))])]
    r = evaluate(gt, [triplets("a.jpg", [(det, BALL, 0, 0.9)])], settings="default")
    assert r.settings["default"].ap[0] == pytest.approx(1.0)  # a true positive, as in ho-rcnn


def test_known_object_ignores_images_without_the_object():
    gt = [make_sample("a.jpg", [(H, BALL, 1, (0,))]), make_sample("b.jpg", [(H, CUP, 2, (2,))]),
          make_sample("c.jpg", [])]
    preds = [triplets("a.jpg", [(H, BALL, 0, 0.5)]), triplets("b.jpg", [(H, BALL, 0, 0.9)]),
             triplets("c.jpg", [(H, BALL, 0, 0.8)])]
    r = evaluate(gt, preds, missing_classes="skip")
    # Default: ranks FP (b), FP (c), TP (a): precision 1/3 at recall 1 -> AP 1/3
    assert r.settings["default"].ap[0] == pytest.approx(1 / 3)
    # Known-Object: b and c have no ball -> only the true positive remains
    assert r.settings["known_object"].ap[0] == pytest.approx(1.0)
    assert r.settings["known_object"].num_detections[0] == 1


def test_a_zero_shot_split_averages_over_its_classes():
    g = [0.0, 0.0, 40.0, 40.0]
    gt = [make_sample("a.jpg", [(H, BALL, 1, (0, 1)), (g, CUP, 2, (2, 3))])]
    preds = [triplets("a.jpg", [
        (H, BALL, 0, 0.9),                          # class 0: AP 1
        (H, CUP, 1, 0.9), (H, BALL, 1, 0.8),        # class 1: FP then TP -> AP 0.5
        (g, CUP, 3, 0.7),                           # class 3: AP 1 (class 2: no detection -> 0)
    ])]
    r = evaluate(gt, preds, split="uc", settings="default")
    s = r.settings["default"]
    np.testing.assert_allclose(s.ap, [1.0, 0.5, 0.0, 1.0])
    assert s.summary["unseen"] == pytest.approx((0.5 + 1.0) / 2)  # classes 1, 3
    assert s.summary["seen"] == pytest.approx((1.0 + 0.0) / 2)  # classes 0, 2
    assert s.summary["full"] == pytest.approx(2.5 / 4)
    assert s.summary["rare"] == pytest.approx(0.5)
    assert s.summary["non_rare"] == pytest.approx(2.0 / 3)


def test_classes_without_ground_truth_count_as_zero_like_the_official_code():
    gt = [make_sample("a.jpg", [(H, BALL, 1, (0,))])]
    preds = [triplets("a.jpg", [(H, BALL, 0, 0.9), (H, CUP, 2, 0.5)])]
    zero = evaluate(gt, preds, settings="default").settings["default"]
    assert zero.ap.tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0]) and zero.summary["full"] == pytest.approx(0.25)
    assert np.isnan(zero.recall[1:]).all()
    skip = evaluate(gt, preds, settings="default", missing_classes="skip").settings["default"]
    assert skip.summary["full"] == pytest.approx(1.0) and skip.summary["rare"] is None


def test_pairs_that_are_not_a_class_are_ignored_and_counted():
    gt = [make_sample("a.jpg", [(H, BALL, 1, (0,))])]
    im = HOITriplets.create([H, H], [BALL, BALL], [1, 1], [0, 2], [0.9, 0.95], "a.jpg")  # drink ball: no class
    r = evaluate(gt, [im], missing_classes="skip")
    assert r.counts["ignored_not_a_class"] == 1
    assert r.settings["default"].summary["full"] == pytest.approx(1.0)


def test_ties_follow_image_order_then_position():
    gt = [make_sample("a.jpg", [(H, BALL, 1, (0,))]), make_sample("b.jpg", [(H, BALL, 1, (0,))])]
    # equal scores: a.jpg (image 0) ranks first even though b.jpg is given first; in a.jpg the FP
    # comes before the TP by position
    preds = [triplets("b.jpg", [(H, BALL, 0, 0.5)]),
             triplets("a.jpg", [(H, CUP, 0, 0.5), (H, BALL, 0, 0.5)])]
    r = evaluate(gt, preds, settings="default", keep_curves=True)
    rec, prec = r.settings["default"].curves[0]
    np.testing.assert_allclose(prec, [0.0, 0.5, 2 / 3])
    np.testing.assert_allclose(rec, [0.0, 0.5, 1.0])


# --------------------------------------------------------------------------------------------- inputs
def test_unknown_images_are_an_error_naming_them_or_ignored():
    gt = [make_sample("a.jpg", [(H, BALL, 1, (0,))])]
    preds = [triplets("a.jpg", [(H, BALL, 0, 0.9)]), triplets("zzz.jpg", [(H, BALL, 0, 0.9)])]
    with pytest.raises(PredictionsError, match="zzz.jpg"):
        evaluate(gt, preds)
    r = evaluate(gt, preds, unknown_images="ignore", missing_classes="skip")
    assert r.counts["unknown_images_ignored"] == 1 and r.settings["default"].summary["full"] == pytest.approx(1.0)


@pytest.mark.parametrize("field, value, message", [
    ("human_boxes", np.array([[0, 0, np.nan, 1.0]]), "a non-finite human_box"),
    ("object_boxes", np.array([[0, 0, np.inf, 1.0]]), "a non-finite object_box"),
    ("scores", np.array([1.5]), "score 1.5"),
    ("scores", np.array([np.nan]), "score nan"),
    ("verbs", np.array([7]), "verb 7, outside the tiny vocabulary"),
])
def test_bad_triplets_are_errors_naming_the_entry(field, value, message):
    gt = [make_sample("a.jpg", [(H, BALL, 1, (0,))])]
    im = triplets("a.jpg", [(H, BALL, 0, 0.9)])
    setattr(im, field, value)
    with pytest.raises(PredictionsError, match=f"image 'a.jpg': hoi #0 has {message}"):
        evaluate(gt, [im])


def test_other_vocabulary_twice_predicted_and_empty_inputs():
    gt = [make_sample("a.jpg", [(H, BALL, 1, (0,))])]
    with pytest.raises(PredictionsError, match="vocabulary 'hico-det'"):
        evaluate_hicodet(gt, PredictionsFile("hico-det", []), TINY)
    with pytest.raises(PredictionsError, match="predicted twice"):
        evaluate(gt, [triplets("a.jpg", []), triplets("a.jpg", [])])
    r = evaluate(gt, [])  # no predictions at all: zeros, not a crash
    assert r.settings["default"].summary["full"] == 0.0 and r.settings["known_object"].summary["full"] == 0.0
    with pytest.raises(ValueError, match="unknown split 'nope'"):
        evaluate(gt, [], split="nope")
    with pytest.raises(ValueError, match="allowed: default, known-object, both"):
        HICODetConfig(settings="ko-ish")


# ------------------------------------------------------------------------ the official loop, literally
def official_hicodet_ap(samples, images, vocab, known_object=False):
    """ho-rcnn VOCevaldet_bboxpair.m re-written as plain loops (one class at a time)."""
    aps = []
    for c, (obj, verb) in enumerate(vocab.classes):
        gt = {}
        for i, s in enumerate(samples):
            rows = [(s.boxes[s.pair_human[p]], s.boxes[s.pair_object[p]]) for p, cl in enumerate(s.pair_classes) if c in cl]
            gt[i] = (rows, [False] * len(rows))
        npos = sum(len(r) for r, _ in gt.values())
        index = {s.file_name: i for i, s in enumerate(samples)}
        dets = []  # (image, hb, ob, score) concatenated in image order, then row order
        for i in range(len(samples)):
            if known_object and not any(samples[i].labels[samples[i].pair_object[p]] == obj
                                        for p in range(samples[i].num_pairs)):
                continue
            for im in images:
                if index[im.file_name] == i:
                    for k in range(len(im.scores)):
                        if im.objects[k] == obj and im.verbs[k] == verb:
                            dets.append((i, im.human_boxes[k], im.object_boxes[k], im.scores[k]))
        dets = [dets[k] for k in sorted(range(len(dets)), key=lambda k: -dets[k][3])]  # stable
        tp, fp = [], []
        for i, hb, ob, _ in dets:
            rows, taken = gt[i]
            ov_max, j_max = -np.inf, -1
            for j, (ghb, gob) in enumerate(rows):
                ov = min(box_iou_aligned(np.array([hb]), np.array([ghb], dtype=np.float64), True)[0],
                         box_iou_aligned(np.array([ob]), np.array([gob], dtype=np.float64), True)[0])
                if ov > ov_max:
                    ov_max, j_max = ov, j
            if ov_max >= 0.5 and not taken[j_max]:
                taken[j_max] = True
                tp.append(1), fp.append(0)
            else:
                tp.append(0), fp.append(1)
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        with np.errstate(invalid="ignore", divide="ignore"):
            rec, prec = tp / npos, tp / (tp + fp)
        ap = 0.0
        for t in MATLAB_RECALL_THRESHOLDS:
            p = prec[rec >= t]
            ap += (p.max() if p.size else 0.0) / 11
        aps.append(ap)
    return np.array(aps)


def ordered(box: np.ndarray) -> np.ndarray:
    """A jittered box made valid again (x1 <= x2, y1 <= y2)."""
    return np.r_[np.minimum(box[:2], box[2:]), np.maximum(box[:2], box[2:])]


def test_vectorised_matching_equals_the_official_loop_on_random_data():
    rng = np.random.default_rng(0)
    samples, images = [], []
    for n in range(12):
        pairs = []
        for _ in range(rng.integers(0, 4)):
            c = int(rng.integers(0, TINY.num_classes))
            pairs.append((rng.uniform(0, 40, 2).tolist() + rng.uniform(45, 90, 2).tolist(),
                          rng.uniform(0, 40, 2).tolist() + rng.uniform(45, 90, 2).tolist(),
                          TINY.classes[c][0], (c,)))
        samples.append(make_sample(f"{n}.jpg", pairs))
    for s in samples[:10]:
        rows = []
        for p in range(s.num_pairs):  # noisy copies, some repeated (duplicates)
            for _ in range(rng.integers(1, 3)):
                rows.append((ordered(np.asarray(s.boxes[s.pair_human[p]]) + rng.normal(0, 6, 4)),
                             ordered(np.asarray(s.boxes[s.pair_object[p]]) + rng.normal(0, 6, 4)),
                             s.pair_classes[p][0], round(float(rng.uniform()), 1)))  # rounded: many ties
        for _ in range(8):
            rows.append((rng.uniform(0, 40, 2).tolist() + rng.uniform(45, 90, 2).tolist(),
                         rng.uniform(0, 40, 2).tolist() + rng.uniform(45, 90, 2).tolist(),
                         int(rng.integers(0, TINY.num_classes)), round(float(rng.uniform()), 1)))
        images.append(triplets(s.file_name, rows))
    images = images[::-1]  # predictions in another order than the ground truth
    r = evaluate(samples, images)
    np.testing.assert_allclose(r.settings["default"].ap, official_hicodet_ap(samples, images, TINY), rtol=0, atol=1e-12)
    np.testing.assert_allclose(r.settings["known_object"].ap, official_hicodet_ap(samples, images, TINY, True),
                               rtol=0, atol=1e-12)
    assert 0 < r.settings["default"].summary["full"] < 1


def test_updates_in_batches_equal_one_update():
    rng = np.random.default_rng(1)
    gt = [make_sample(f"{n}.jpg", [(shift(H, n), BALL, 1, (0,)), (H, CUP, 2, (3,))]) for n in range(6)]
    images = [triplets(s.file_name, [(shift(H, n + rng.normal(0, 8)), BALL, 0, float(rng.uniform())),
                                     (H, shift(CUP, rng.normal(0, 4)), 3, float(rng.uniform()))])
              for n, s in enumerate(gt)]
    one = evaluate(gt, images)
    ev = HICODetEvaluator(gt, TINY)
    ev.update(images[:2])
    ev.update(PredictionsFile("tiny", images[2:]))
    batched = ev.compute()
    for name in one.settings:
        np.testing.assert_array_equal(one.settings[name].ap, batched.settings[name].ap)


# ----------------------------------------------------------------------------------------- real data
def test_real_ground_truth_fed_back_scores_100(shared_data):
    from hoi_mllm.data import load_annotations

    samples = load_annotations(shared_data / "hicodet" / "instances_test2015.json")
    preds = ground_truth_predictions(samples, "hico-det")
    r = evaluate_hicodet(samples, preds, "hico-det", HICODetConfig(split="rare_first"))
    assert r.counts["classes_without_ground_truth"] == 0 and r.counts["ground_truth_triplets"] == 33405
    for s in r.settings.values():
        assert set(s.summary) == {"full", "rare", "non_rare", "unseen", "seen"}
        for value in s.summary.values():
            assert value == pytest.approx(1.0)
    assert r.unseen_recall[10] > r.unseen_recall[3] > 0.5
