"""DA-HOI's HICO-DET protocol (``qwenvl/eval/hico_eval.py``): its evaluator re-written loop for loop as a reference."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from hoi_mllm.data.sample import HOISample
from hoi_mllm.eval import HICODetConfig, evaluate_hicodet, hicodet_table
from hoi_mllm.predictions import PredictionsFile
from hoi_mllm.prompts import Vocabulary
from hoi_mllm.records import HOITriplets

# objects: person 0, ball 1, cup 2; verbs: hold 0, kick 1, no_interaction 2
# classes: 0 hold ball, 1 kick ball (rare), 2 no_interaction ball, 3 hold cup, 4 no_interaction cup (rare)
NI = Vocabulary.from_dict({
    "format": "hoi-mllm/vocabulary", "name": "tiny-ni", "objects": ["person", "ball", "cup"],
    "verbs": ["hold", "kick", "no_interaction"], "human_object": 0, "no_interaction_verb": 2,
    "classes": [[1, 0], [1, 1], [1, 2], [2, 0], [2, 2]],
    "phrases": ["holding a ball", "kicking a ball", "no interaction with a ball", "holding a cup",
                "no interaction with a cup"],
    "rare": [1, 4], "splits": {"uc": {"kind": "unseen_combination", "unseen": [1, 4]}},
})
NO_INT = NI.no_interaction_verb


def sample(name: str, pairs) -> HOISample:
    """``pairs``: (human box, object box, class)."""
    boxes, labels, ph, po, verbs, classes = [], [], [], [], [], []
    for hb, ob, c in pairs:
        ph.append(len(boxes)), boxes.append(hb), labels.append(NI.human_object)
        po.append(len(boxes)), boxes.append(ob), labels.append(NI.classes[c][0])
        verbs.append((NI.classes[c][1],)), classes.append((c,))
    return HOISample(name, (100, 100), np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                     np.asarray(labels, dtype=np.int64), np.asarray(ph, dtype=np.int64),
                     np.asarray(po, dtype=np.int64), verbs, classes)


def predictions(name: str, rows) -> HOITriplets:
    """``rows``: (human box, object box, class, score)."""
    if not rows:
        return HOITriplets.empty(name)
    hb, ob, cls, sc = zip(*rows)
    return HOITriplets.create(hb, ob, [NI.classes[c][0] for c in cls], [NI.classes[c][1] for c in cls], sc, name)


# ---------------------------------------------------------------- hico_eval.py HICOEvaluator, loop for loop
def compute_iou(b1, b2):
    if b1["category_id"] != b2["category_id"]:
        return 0
    r1, r2 = b1["bbox"], b2["bbox"]
    sum_area = (r1[2] - r1[0]) * (r1[3] - r1[1]) + (r2[2] - r2[0]) * (r2[3] - r2[1])
    left, right = max(r1[1], r2[1]), min(r1[3], r2[3])
    top, bottom = max(r1[0], r2[0]), min(r1[2], r2[2])
    if left >= right or top >= bottom:
        return 0
    inter = (right - left) * (bottom - top)
    return inter / (sum_area - inter + 1e-12)


def dahoi_reference(samples, images, max_hois=100):
    """``{"mAP", "rare", "non_rare"}`` as ``HICOEvaluator.evaluate`` computes them (preds in gt order)."""
    by_name = {im.file_name: im for im in images}
    gts, preds, gt_triplets, sum_gts = [], [], [], defaultdict(int)
    for s in samples:
        anns = [{"bbox": b.astype(np.float64).tolist(), "category_id": int(c)} for b, c in zip(s.boxes, s.labels)]
        hois = [{"subject_id": int(h), "object_id": int(o), "category_id": v}
                for h, o, verbs in zip(s.pair_human, s.pair_object, s.pair_verbs) for v in verbs]
        gts.append({"annotations": anns, "hoi_annotation": hois})
        for hoi in hois:
            triplet = (anns[hoi["subject_id"]]["category_id"], anns[hoi["object_id"]]["category_id"], hoi["category_id"])
            if hoi["category_id"] == NO_INT:
                continue
            if triplet not in gt_triplets:
                gt_triplets.append(triplet)
            sum_gts[triplet] += 1
        im = by_name.get(s.file_name)
        bboxes, hoi_preds = [], []
        if im is not None:
            for k in range(len(im.scores)):  # every triplet is a pair of its own
                bboxes += [{"bbox": im.human_boxes[k].tolist(), "category_id": NI.human_object},
                           {"bbox": im.object_boxes[k].tolist(), "category_id": int(im.objects[k])}]
                hoi_preds.append({"subject_id": 2 * k, "object_id": 2 * k + 1, "category_id": int(im.verbs[k]),
                                  "score": float(im.scores[k])})
            hoi_preds.sort(key=lambda h: h["score"], reverse=True)
            hoi_preds = hoi_preds[:max_hois]
        preds.append({"predictions": bboxes, "hoi_prediction": hoi_preds})
    tp, fp, score = defaultdict(list), defaultdict(list), defaultdict(list)
    for p, g in zip(preds, gts):
        exist = list(set(h["category_id"] for h in g["hoi_annotation"]))
        if len(exist) == 1 and exist[0] == NO_INT:
            continue
        pred_bboxes, gt_bboxes, gt_hois = p["predictions"], g["annotations"], g["hoi_annotation"]
        match, overlaps = defaultdict(list), defaultdict(list)  # compute_iou_mat
        for i, gb in enumerate(gt_bboxes):
            for j, pb in enumerate(pred_bboxes):
                iou = compute_iou(gb, pb)
                if iou >= 0.5:
                    match[j].append(i)
                    overlaps[j].append(iou)
        vis = np.zeros(len(gt_hois))
        for ph in sorted(p["hoi_prediction"], key=lambda h: h["score"], reverse=True):  # compute_fptp
            is_match, max_overlap, max_gt = 0, 0, None
            if ph["subject_id"] in match and ph["object_id"] in match:
                sub_ids, obj_ids = match[ph["subject_id"]], match[ph["object_id"]]
                for gh in gt_hois:
                    if gh["subject_id"] in sub_ids and gh["object_id"] in obj_ids and ph["category_id"] == gh["category_id"]:
                        is_match = 1
                        m = min(overlaps[ph["subject_id"]][sub_ids.index(gh["subject_id"])],
                                overlaps[ph["object_id"]][obj_ids.index(gh["object_id"])])
                        if m > max_overlap:
                            max_overlap, max_gt = m, gh
            triplet = (pred_bboxes[ph["subject_id"]]["category_id"], pred_bboxes[ph["object_id"]]["category_id"],
                       ph["category_id"])
            if triplet not in gt_triplets:
                continue
            if is_match == 1 and vis[gt_hois.index(max_gt)] == 0:
                fp[triplet].append(0), tp[triplet].append(1)
                vis[gt_hois.index(max_gt)] = 1
            else:
                fp[triplet].append(1), tp[triplet].append(0)
            score[triplet].append(ph["score"])
    ap = {}
    for triplet in gt_triplets:
        t, f = np.array(tp[triplet]), np.array(fp[triplet])
        if len(t) == 0:
            ap[triplet] = 0.0
            continue
        order = np.argsort(-np.array(score[triplet]))
        t, f = np.cumsum(t[order]), np.cumsum(f[order])
        rec, prec = t / sum_gts[triplet], t / (f + t)
        a = 0.0
        for thr in np.arange(0.0, 1.1, 0.1):
            a += (0 if np.sum(rec >= thr) == 0 else np.max(prec[rec >= thr])) / 11.0
        ap[triplet] = a
    cls = {(NI.human_object, o, v): c for c, (o, v) in enumerate(NI.classes)}
    rare = [ap[t] for t in ap if cls[t] in NI.rare]
    non_rare = [ap[t] for t in ap if cls[t] not in NI.rare]
    return {"full": np.mean(list(ap.values())), "rare": np.mean(rare) if rare else None,
            "non_rare": np.mean(non_rare) if non_rare else None, "ap": {cls[t]: v for t, v in ap.items()}}


def random_case(rng):
    box = lambda: np.r_[rng.uniform(0, 40, 2), rng.uniform(45, 90, 2)].round(1)  # noqa: E731

    def jitter(b):
        b = b + rng.normal(0, 5, 4)
        return np.r_[np.minimum(b[:2], b[2:]), np.maximum(b[:2], b[2:])]

    samples, images = [], []
    for n in range(14):
        kinds = [0, 1, 3] if n % 5 else [2, 4]  # every 5th image holds only no-interaction pairs
        pairs = [(box().tolist(), box().tolist(), int(rng.choice(kinds))) for _ in range(rng.integers(0, 4))]
        if n == 3:
            pairs = []  # an image without ground truth: its predictions are false positives
        samples.append(sample(f"{n}.jpg", pairs))
        rows = []
        for hb, ob, c in pairs:
            for _ in range(rng.integers(1, 3)):
                rows.append((jitter(np.array(hb)), jitter(np.array(ob)), c, float(rng.uniform())))
        for _ in range(104 if n == 1 else 6):  # image 1 has more than 100 triplets: DA-HOI keeps 100
            rows.append((box(), box(), int(rng.integers(0, NI.num_classes)), float(rng.uniform())))
        images.append(predictions(f"{n}.jpg", rows))
    return samples, images


def test_da_hoi_protocol_equals_its_evaluator_loop_for_loop():
    samples, images = random_case(np.random.default_rng(0))
    ref = dahoi_reference(samples, images)
    r = evaluate_hicodet(samples, PredictionsFile("tiny-ni", images[::-1]), NI, HICODetConfig(protocol="da-hoi"))
    s = r.settings["da_hoi"]
    assert list(r.settings) == ["da_hoi"]
    for k in ("full", "rare", "non_rare"):
        assert s.summary[k] == pytest.approx(ref[k], abs=1e-12), k
    for c in range(NI.num_classes):  # no-interaction classes are not averaged: no AP at all
        assert (np.isnan(s.ap[c]) if NI.classes[c][1] == NO_INT else s.ap[c] == pytest.approx(ref["ap"][c], abs=1e-12))
    only_no_interaction = sum(1 for n, s in enumerate(samples) if n % 5 == 0 and s.num_pairs)
    assert r.counts["classes_averaged"] == 3 and r.counts["images_left_out"] == only_no_interaction > 0
    assert r.counts["dropped_beyond_top_per_image"] == len(images[1].scores) - 100 > 0
    official = evaluate_hicodet(samples, PredictionsFile("tiny-ni", images), NI, HICODetConfig())
    assert official.settings["default"].summary["full"] != pytest.approx(ref["full"])


def test_what_the_da_hoi_protocol_changes_one_rule_at_a_time():
    h, ball = [10.0, 10.0, 50.0, 90.0], [60.0, 60.0, 80.0, 80.0]
    # (1) an image whose ground truth is only no-interaction: its false positives count officially only
    gt = [sample("a.jpg", [(h, ball, 0)]), sample("b.jpg", [(h, ball, 2)])]
    preds = [predictions("a.jpg", [(h, ball, 0, 0.5)]), predictions("b.jpg", [(h, ball, 0, 0.9)])]
    da = evaluate_hicodet(gt, PredictionsFile("tiny-ni", preds), NI, HICODetConfig(protocol="da-hoi"))
    off = evaluate_hicodet(gt, PredictionsFile("tiny-ni", preds), NI, HICODetConfig(settings="default"))
    assert da.settings["da_hoi"].ap[0] == pytest.approx(1.0) and off.settings["default"].ap[0] == pytest.approx(0.5)
    # no-interaction classes leave the mean: 1 class averaged (hold ball), not the 5 of the vocabulary
    assert da.settings["da_hoi"].summary["full"] == pytest.approx(1.0) and da.counts["classes_averaged"] == 1
    # (2) IoU without the +1 pixel: a 10-px box shifted by 3.5 px has IoU 6.5/13.5 = 0.48, with +1 7.5/14.5 = 0.52
    gt = [sample("a.jpg", [(h, [60.0, 60.0, 70.0, 70.0], 0)])]
    preds = [predictions("a.jpg", [(h, [63.5, 60.0, 73.5, 70.0], 0, 0.9)])]
    da = evaluate_hicodet(gt, PredictionsFile("tiny-ni", preds), NI, HICODetConfig(protocol="da-hoi"))
    off = evaluate_hicodet(gt, PredictionsFile("tiny-ni", preds), NI, HICODetConfig(settings="default"))
    assert da.settings["da_hoi"].ap[0] == 0.0 and off.settings["default"].ap[0] == pytest.approx(1.0)
    # (3) only the 100 best triplets of an image count
    gt = [sample("a.jpg", [(h, ball, 0)])]
    preds = [predictions("a.jpg", [(h, [0.0, 0.0, 5.0, 5.0], 3, 0.9)] * 100 + [(h, ball, 0, 0.1)])]
    da = evaluate_hicodet(gt, PredictionsFile("tiny-ni", preds), NI, HICODetConfig(protocol="da-hoi"))
    assert da.settings["da_hoi"].ap[0] == 0.0 and da.counts["dropped_beyond_top_per_image"] == 1


def test_da_hoi_results_are_named_as_such_and_refuse_known_object():
    gt = [sample("a.jpg", [([10.0, 10.0, 50.0, 90.0], [60.0, 60.0, 80.0, 80.0], 0)])]
    r = evaluate_hicodet(gt, PredictionsFile("tiny-ni", []), NI, HICODetConfig(protocol="da-hoi"))
    report = r.to_dict()
    assert report["protocol_name"] == "da-hoi" and "default" not in report and "da_hoi" in report
    assert "not the official" in report["title"] and "DA-HOI protocol" in hicodet_table(r)
    with pytest.raises(ValueError, match="no Known-Object|Known-Object is official only"):
        HICODetConfig(protocol="da-hoi", settings="both")
    with pytest.raises(ValueError, match="allowed: official, da-hoi"):
        HICODetConfig(protocol="dahoi")
