"""V-COCO role AP: hand-computed scenarios, vsrl_eval's loop re-written literally as a cross-check, real data."""
from __future__ import annotations

import numpy as np
import pytest

from hoi_mllm.boxes import box_iou_aligned
from hoi_mllm.data.sample import HOISample
from hoi_mllm.eval import VCOCOConfig, VCOCOEvaluator, ap_voc, evaluate_vcoco, vcoco_report
from hoi_mllm.eval.inputs import ground_truth_predictions
from hoi_mllm.predictions import PredictionsError, PredictionsFile
from hoi_mllm.prompts import load_vocabulary
from hoi_mllm.records import HOITriplets

VOCAB = load_vocabulary("vcoco")
EAT_OBJ = VOCAB.verbs.index("eat obj")
HOLD_OBJ = VOCAB.verbs.index("hold obj")
LOOK_OBJ = VOCAB.verbs.index("look obj")
APPLE = VOCAB.object_index("apple")
A = [10.0, 10.0, 60.0, 110.0]
B = [200.0, 10.0, 250.0, 110.0]
FOOD = [30.0, 40.0, 50.0, 60.0]
NONE = [0.0, 0.0, 0.0, 0.0]


def make_sample(name: str, pairs: list[tuple[list, list | None, tuple[int, ...]]]) -> HOISample:
    """``pairs``: (agent box, role box or None for "no role object", action-role ids)."""
    boxes, labels, ph, po = [], [], [], []
    for hb, ob, _ in pairs:
        if hb not in boxes:
            boxes.append(hb)
            labels.append(VOCAB.human_object)
        ph.append(boxes.index(hb))
        if ob is None:
            po.append(-1)
        else:
            boxes.append(ob)
            labels.append(APPLE)
            po.append(len(boxes) - 1)
    verbs = [tuple(sorted(v)) for _, _, v in pairs]
    classes = [tuple(-1 for _ in v) for v in verbs]
    return HOISample(name, (640, 480), np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                     np.asarray(labels, dtype=np.int64), np.asarray(ph, dtype=np.int64),
                     np.asarray(po, dtype=np.int64), verbs, classes)


def triplets(name: str, rows: list[tuple[list, list, int, float]]) -> HOITriplets:
    """``rows``: (agent box, role box, action-role, score)."""
    hb, ob, verbs, sc = zip(*rows)
    return HOITriplets.create(hb, ob, [APPLE] * len(rows), verbs, sc, name)


def evaluate(samples, images, **cfg):
    return evaluate_vcoco(samples, PredictionsFile("vcoco", images), VOCAB, VCOCOConfig(**cfg))


def test_perfect_predictions_score_100_and_roles_without_ground_truth_are_left_out():
    gt = [make_sample("a.jpg", [(A, FOOD, (EAT_OBJ, HOLD_OBJ)), (B, FOOD, (LOOK_OBJ,))])]
    r = evaluate(gt, ground_truth_predictions(gt, VOCAB).images)
    for s in r.scenarios.values():
        assert s.mean == pytest.approx(1.0)
        assert np.isnan(s.ap).sum() == VOCAB.num_verbs - 3  # only the three action-roles with ground truth count
    report = vcoco_report(r)
    assert report["scenario_1"]["role_ap"] == pytest.approx(100.0)
    assert report["role_less_ground_truth"] == 0 and "coincide" in report["note"]


def test_scenario_1_and_2_differ_on_a_role_less_case():
    # agent A eats with no annotated object, agent B eats FOOD
    gt = [make_sample("a.jpg", [(A, None, (EAT_OBJ,)), (B, FOOD, (EAT_OBJ,))])]
    preds = [triplets("a.jpg", [
        (A, FOOD, EAT_OBJ, 0.9),  # predicts a role object where none is annotated
        (B, FOOD, EAT_OBJ, 0.8),  # correct
        (A, NONE, EAT_OBJ, 0.7),  # predicts "no role object"
    ])]
    r = evaluate(gt, preds)
    assert r.role_less == 1 and r.scenarios_differ
    # Scenario 1: FP, TP, TP -> recall [0, .5, 1], precision [0, .5, 2/3] -> area 2/3
    assert r.scenarios["scenario_1"].ap[EAT_OBJ] == pytest.approx(2 / 3)
    # Scenario 2: the role box is ignored: TP, TP, FP (A already covered) -> AP 1
    assert r.scenarios["scenario_2"].ap[EAT_OBJ] == pytest.approx(1.0)
    assert ap_voc(np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.5, 2 / 3])) == pytest.approx(2 / 3)


def test_nan_role_box_in_memory_means_no_role_object():
    gt = [make_sample("a.jpg", [(A, None, (EAT_OBJ,))])]
    im = HOITriplets.create([A], [[np.nan] * 4], [-1], [EAT_OBJ], [0.9], "a.jpg")
    r = evaluate(gt, [im])
    assert r.scenarios["scenario_1"].ap[EAT_OBJ] == pytest.approx(1.0)
    im.human_boxes = np.array([[np.nan, 0, 1, 1]])
    with pytest.raises(PredictionsError, match="non-finite human_box"):
        evaluate(gt, [im])


def test_the_agent_is_the_best_overlapping_person_whatever_its_actions():
    looker = [14.0, 16.0, 62.0, 114.0]
    a2 = [13.0, 15.0, 61.0, 113.0]  # overlaps the looker more than A (the holder)
    gt = [make_sample("a.jpg", [(A, FOOD, (HOLD_OBJ,)), (looker, FOOD, (LOOK_OBJ,))])]
    iou = box_iou_aligned(np.array([a2, a2]), np.array([A, looker]), True)
    assert iou[1] > iou[0] >= 0.5
    r = evaluate(gt, [triplets("a.jpg", [(a2, FOOD, HOLD_OBJ, 0.9)])])
    assert r.scenarios["scenario_1"].ap[HOLD_OBJ] == 0.0  # matched to the looking person: a false positive


def test_role_overlap_duplicates_and_the_plus_one_convention():
    gt = [make_sample("a.jpg", [(A, FOOD, (HOLD_OBJ,))])]
    far = [300.0, 300.0, 320.0, 320.0]
    r = evaluate(gt, [triplets("a.jpg", [(A, far, HOLD_OBJ, 0.9), (A, FOOD, HOLD_OBJ, 0.8), (A, FOOD, HOLD_OBJ, 0.7)])])
    s = r.scenarios["scenario_2"]
    assert s.num_detections[HOLD_OBJ] == 3
    # FP (role missed), TP, FP (duplicate): precision envelope 1/2 over recall 0..1
    assert s.ap[HOLD_OBJ] == pytest.approx(0.5)
    # vsrl_eval.get_overlap uses +1: a role box at IoU 0.475 without it, 0.515 with it, is correct
    gt = [make_sample("b.jpg", [(A, [0.0, 0.0, 9.0, 9.0], (HOLD_OBJ,))])]
    r = evaluate(gt, [triplets("b.jpg", [(A, [3.2, 0.0, 12.2, 9.0], HOLD_OBJ, 0.9)])])
    assert r.scenarios["scenario_1"].ap[HOLD_OBJ] == pytest.approx(1.0)


def test_an_image_without_agents_and_other_inputs():
    gt = [make_sample("a.jpg", [(A, FOOD, (HOLD_OBJ,))]), make_sample("empty.jpg", [])]
    r = evaluate(gt, [triplets("a.jpg", [(A, FOOD, HOLD_OBJ, 0.5)]), triplets("empty.jpg", [(A, FOOD, HOLD_OBJ, 0.9)])])
    assert r.scenarios["scenario_1"].ap[HOLD_OBJ] == pytest.approx(0.5)  # FP in the empty image first
    with pytest.raises(PredictionsError, match="'hico-det'"):
        evaluate_vcoco(gt, PredictionsFile("hico-det", []), VOCAB)
    assert evaluate(gt, []).scenarios["scenario_1"].mean == 0.0


# --------------------------------------------------------------------- vsrl_eval's role loop, literally
def official_role_ap(samples, images, scenario):
    """vsrl_eval._do_role_eval re-written as plain loops (agents = distinct pair humans)."""
    by_name = {im.file_name: im for im in images}
    tp = [[] for _ in VOCAB.verbs]
    sc = [[] for _ in VOCAB.verbs]
    npos = np.zeros(VOCAB.num_verbs)
    for s in samples:
        agents = sorted(set(s.pair_human.tolist()), key=s.pair_human.tolist().index)
        gt_boxes = np.asarray(s.boxes, dtype=np.float64)[agents].reshape(-1, 4)
        role = {}  # (agent row, verb) -> role box or None
        for p, verbs in enumerate(s.pair_verbs):
            for v in verbs:
                role[(agents.index(s.pair_human[p]), v)] = (s.boxes[s.pair_object[p]] if s.pair_object[p] >= 0 else None)
        for _, v in role:
            npos[v] += 1
        im = by_name.get(s.file_name)
        if im is None:
            continue
        for aid in range(VOCAB.num_verbs):
            covered = np.zeros(len(agents), dtype=bool)
            rows = [k for k in range(len(im.scores)) if im.verbs[k] == aid]
            rows = sorted(rows, key=lambda k: -im.scores[k])
            for k in rows:
                ov = box_iou_aligned(gt_boxes, np.repeat(im.human_boxes[k:k + 1], len(agents), 0), True)
                sc[aid].append(im.scores[k])
                if len(agents) == 0:
                    tp[aid].append(0)
                    continue
                j = int(np.argmax(ov))
                if (j, aid) in role and role[(j, aid)] is None:
                    empty = np.all(im.object_boxes[k] == 0) or np.all(np.isnan(im.object_boxes[k]))
                    ov_role = 1.0 if scenario == 2 or empty else 0.0
                elif (j, aid) in role:
                    ov_role = box_iou_aligned(im.object_boxes[k:k + 1], np.array([role[(j, aid)]], dtype=np.float64), True)[0]
                else:
                    ov_role = 0.0
                if (j, aid) in role and ov[j] >= 0.5 and ov_role >= 0.5 and not covered[j]:
                    covered[j] = True
                    tp[aid].append(1)
                else:
                    tp[aid].append(0)
    aps = np.full(VOCAB.num_verbs, np.nan)
    for aid in range(VOCAB.num_verbs):
        if npos[aid] == 0:
            continue
        order = np.argsort(-np.array(sc[aid]), kind="stable")
        t = np.cumsum(np.array(tp[aid], dtype=np.float64)[order])
        aps[aid] = ap_voc(t / npos[aid], t / np.maximum(np.arange(1, len(t) + 1), np.finfo(np.float64).eps))
    return aps


def test_vectorised_matching_equals_the_vsrl_loop_on_random_data():
    rng = np.random.default_rng(0)
    verbs = [HOLD_OBJ, EAT_OBJ, LOOK_OBJ]
    box = lambda: (rng.uniform(0, 100, 2).tolist() + rng.uniform(120, 200, 2).tolist())  # noqa: E731
    samples, images = [], []
    for n in range(15):
        agents = [box() for _ in range(rng.integers(0, 4))]
        pairs = [(a, None if rng.uniform() < 0.3 else box(), (int(v),))
                 for a in agents for v in rng.choice(verbs, size=rng.integers(1, 3), replace=False)]
        samples.append(make_sample(f"{n}.jpg", pairs))
        rows = []
        for a, ob, (v,) in pairs:
            for _ in range(rng.integers(1, 3)):
                role = NONE if (ob is None and rng.uniform() < 0.5) else (np.asarray(ob if ob else box()) + rng.normal(0, 8, 4)).tolist()
                rows.append(((np.asarray(a) + rng.normal(0, 8, 4)).tolist(), role, v, round(float(rng.uniform()), 2)))
        for _ in range(4):
            rows.append((box(), box(), int(rng.choice(verbs)), round(float(rng.uniform()), 2)))
        images.append(triplets(f"{n}.jpg", rows))
    r = evaluate(samples, images)
    assert r.role_less > 0
    for k, name in ((1, "scenario_1"), (2, "scenario_2")):
        np.testing.assert_allclose(r.scenarios[name].ap, official_role_ap(samples, images, k), rtol=0, atol=1e-12)
    assert r.scenarios["scenario_1"].mean != r.scenarios["scenario_2"].mean


def test_updates_in_batches_equal_one_update():
    gt = [make_sample(f"{n}.jpg", [(A, FOOD, (HOLD_OBJ,)), (B, None, (EAT_OBJ,))]) for n in range(4)]
    images = [triplets(f"{n}.jpg", [(A, FOOD, HOLD_OBJ, 0.1 * n + 0.05), (B, FOOD, EAT_OBJ, 0.5)]) for n in range(4)]
    one = evaluate(gt, images)
    ev = VCOCOEvaluator(gt, VOCAB)
    ev.update(images[:1])
    ev.update(images[1:])
    for name, s in ev.compute().scenarios.items():
        np.testing.assert_array_equal(s.ap, one.scenarios[name].ap)


def test_real_ground_truth_fed_back_scores_100(shared_data):
    from hoi_mllm.data import load_annotations

    samples = load_annotations(shared_data / "vcoco" / "instances_vcoco_test.json")
    r = evaluate_vcoco(samples, ground_truth_predictions(samples, "vcoco"))
    assert r.role_less == 0 and r.counts["ground_truth_units"] == 12402
    for s in r.scenarios.values():
        assert s.mean == pytest.approx(1.0)
        assert not np.isnan(s.ap).any()
