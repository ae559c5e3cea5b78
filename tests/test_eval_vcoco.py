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
        # hold, look, eat obj and eat instr have ground truth (A eats, so eat instr counts A: role-less)
        assert np.isnan(s.ap).sum() == VOCAB.num_verbs - 4
    report = vcoco_report(r)
    assert report["scenario_1"]["role_ap"] == pytest.approx(100.0)
    assert report["scenario_1"]["role_ap_vsrl_slots"] == pytest.approx(100.0 * 4 / 25)  # point instr counts 0
    assert report["role_less_ground_truth"][EAT_INSTR] == 1 and sum(report["role_less_ground_truth"]) == 1
    gt = [make_sample("a.jpg", [(A, FOOD, (HOLD_OBJ,))])]
    assert "coincide" in vcoco_report(evaluate(gt, ground_truth_predictions(gt, VOCAB).images))["note"]


def test_scenario_1_and_2_differ_on_a_role_less_case():
    # agent A eats with no annotated object, agent B eats FOOD
    gt = [make_sample("a.jpg", [(A, None, (EAT_OBJ,)), (B, FOOD, (EAT_OBJ,))])]
    preds = [triplets("a.jpg", [
        (A, FOOD, EAT_OBJ, 0.9),  # predicts a role object where none is annotated
        (B, FOOD, EAT_OBJ, 0.8),  # correct
        (A, NONE, EAT_OBJ, 0.7),  # predicts "no role object"
    ])]
    r = evaluate(gt, preds)
    assert r.role_less[EAT_OBJ] == 2 - 1 and r.scenarios_differ
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


# ------------------------------------------------- vsrl_eval._do_role_eval, line by line, on its own inputs
ACTION_OF, ACTIONS = VOCAB.verb_action_ids
# vsrl_eval's roles per action: ['agent', role, ...]; slot (aid, rid) <-> action-role verb
ROLES = [["agent"] + [VOCAB.extra["verb_roles"][v] for v in np.flatnonzero(ACTION_OF == a)] for a in range(len(ACTIONS))]
SLOT_VERB = {(a, r): int(v) for a in range(len(ACTIONS)) for r, v in enumerate(np.flatnonzero(ACTION_OF == a))}


def get_overlap(boxes, ref_box):
    """vsrl_eval.get_overlap: IoU of ``boxes [n, 4]`` with one box, +1-pixel widths."""
    ixmin = np.maximum(boxes[:, 0], ref_box[0])
    iymin = np.maximum(boxes[:, 1], ref_box[1])
    ixmax = np.minimum(boxes[:, 2], ref_box[2])
    iymax = np.minimum(boxes[:, 3], ref_box[3])
    inters = np.maximum(ixmax - ixmin + 1.0, 0.0) * np.maximum(iymax - iymin + 1.0, 0.0)
    uni = ((ref_box[2] - ref_box[0] + 1.0) * (ref_box[3] - ref_box[1] + 1.0)
           + (boxes[:, 2] - boxes[:, 0] + 1.0) * (boxes[:, 3] - boxes[:, 1] + 1.0) - inters)
    return inters / uni


def vsrl_role_ap(vcocodb, dets, eval_type):
    """``_do_role_eval`` on vcocodb-style ground truth and vsrl-style detections, loop for loop.

    ``vcocodb[i]``: ``gt_boxes [n, 4]`` (every person of the image), ``gt_actions [n, A]`` (-1: a person
    V-COCO did not annotate, else 0/1), ``gt_roles[(aid, rid)] [n, 4]`` (-1 rows: no role object).
    ``dets[i]``: detections, each ``{"person_box": [4], (aid, rid): [x1, y1, x2, y2, score]}`` (a
    missing slot is a NaN score). Returns ``{(aid, rid): AP}`` over slots with ground truth.
    """
    num_actions = len(ACTIONS)
    tp = [[[] for _ in range(2)] for _ in range(num_actions)]
    fp = [[[] for _ in range(2)] for _ in range(num_actions)]
    sc = [[[] for _ in range(2)] for _ in range(num_actions)]
    npos = np.zeros(num_actions)
    for entry, image_dets in zip(vcocodb, dets):
        gt_boxes, gt_actions = entry["gt_boxes"], entry["gt_actions"]
        ignore = np.any(gt_actions == -1, axis=1)
        for aid in range(num_actions):
            npos[aid] += np.sum(gt_actions[:, aid] == 1)
        for aid in range(num_actions):
            if len(ROLES[aid]) < 2:
                continue
            for rid in range(len(ROLES[aid]) - 1):
                covered = np.zeros(gt_boxes.shape[0], dtype=bool)
                gt_roles = entry["gt_roles"][(aid, rid)]
                agent_boxes = np.array([d["person_box"] for d in image_dets], dtype=np.float64).reshape(-1, 4)
                slot = np.array([d.get((aid, rid), [0, 0, 0, 0, np.nan]) for d in image_dets]).reshape(-1, 5)
                role_boxes, agent_scores = slot[:, :4], slot[:, 4]
                valid = np.where(~np.isnan(agent_scores))[0]
                agent_scores, agent_boxes, role_boxes = agent_scores[valid], agent_boxes[valid], role_boxes[valid]
                for j in agent_scores.argsort()[::-1]:
                    overlaps = get_overlap(gt_boxes, agent_boxes[j])
                    jmax, ovmax = overlaps.argmax(), overlaps.max()
                    if ignore[jmax]:
                        continue
                    if np.all(gt_roles[jmax, :] == -1):
                        if eval_type == "scenario_1":
                            empty = np.all(role_boxes[j] == 0.0) or np.all(np.isnan(role_boxes[j]))
                            ov_role = 1.0 if empty else 0.0
                        else:
                            ov_role = 1.0
                    else:
                        ov_role = get_overlap(gt_roles[jmax].reshape(1, 4), role_boxes[j])[0]
                    is_true_action = gt_actions[jmax, aid] == 1
                    sc[aid][rid].append(agent_scores[j])
                    if is_true_action and ovmax >= 0.5 and ov_role >= 0.5 and not covered[jmax]:
                        fp[aid][rid].append(0)
                        tp[aid][rid].append(1)
                        covered[jmax] = True
                    else:
                        fp[aid][rid].append(1)
                        tp[aid][rid].append(0)
    aps = {}
    for aid in range(num_actions):
        for rid in range(len(ROLES[aid]) - 1):
            if npos[aid] == 0:
                continue  # vsrl_eval would fail its assert here; such slots are left out
            idx = np.array(sc[aid][rid]).argsort()[::-1]
            a_tp = np.cumsum(np.array(tp[aid][rid], dtype=np.float64)[idx])
            a_fp = np.cumsum(np.array(fp[aid][rid], dtype=np.float64)[idx])
            rec = a_tp / float(npos[aid])
            prec = a_tp / np.maximum(a_tp + a_fp, np.finfo(np.float64).eps)
            aps[(aid, rid)] = ap_voc(rec, prec)
    return aps


def scene_inputs(scenes, role_less_rows: bool):
    """One description, both sides' inputs.

    ``scenes``: per image a list of persons ``(box, annotated, {action-role verb: role box or None})``
    (``None``: the person does the action with no object for that role) and detections
    ``[(person box, {verb: (role box, score)})]``. Our side lists a role-less role as a pair without
    an object when ``role_less_rows`` (GEN-VLKT style), or not at all (the 24-class files' style,
    possible when the person has an object for another role of the action).
    """
    vcocodb, dets, samples, images = [], [], [], []
    for n, (persons, detections) in enumerate(scenes):
        name = f"{n}.jpg"
        num = len(persons)
        gt_actions = np.zeros((num, len(ACTIONS)), dtype=np.int64)
        gt_roles = {slot: -np.ones((num, 4)) for slot in SLOT_VERB}
        boxes, labels, ph, po, pv, unannotated = [], [], [], [], [], []
        for j, (box, annotated, roles) in enumerate(persons):
            boxes.append(box)
            labels.append(VOCAB.human_object)
            if not annotated:
                gt_actions[j] = -1
                unannotated.append(j)
        for j, (box, annotated, roles) in enumerate(persons):
            for v, role_box in roles.items():
                a = int(ACTION_OF[v])
                gt_actions[j, a] = 1
                slot = next(k for k, u in SLOT_VERB.items() if u == v)
                if role_box is not None:
                    gt_roles[slot][j] = role_box
                    boxes.append(role_box)
                    labels.append(APPLE)
                    ph.append(j), po.append(len(boxes) - 1), pv.append((v,))
                elif role_less_rows:
                    ph.append(j), po.append(-1), pv.append((v,))
            for a in set(int(ACTION_OF[v]) for v in roles):  # the other roles of an action it does
                for slot, v in SLOT_VERB.items():
                    if slot[0] == a and v not in roles:
                        raise AssertionError("describe every role of an action the person does")
        vcocodb.append({"gt_boxes": np.asarray(boxes[:num], dtype=np.float64).reshape(-1, 4),
                        "gt_actions": gt_actions, "gt_roles": gt_roles})
        dets.append([{"person_box": pb, **{next(k for k, u in SLOT_VERB.items() if u == v): list(rb) + [s]
                                           for v, (rb, s) in slots.items()}} for pb, slots in detections])
        samples.append(HOISample(name, (640, 480), np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                                 np.asarray(labels, dtype=np.int64), np.asarray(ph, dtype=np.int64),
                                 np.asarray(po, dtype=np.int64), pv, [(-1,) for _ in pv],
                                 extra={"unannotated_persons": unannotated}))
        rows = [(pb, rb, v, s) for pb, slots in detections for v, (rb, s) in slots.items()]
        images.append(triplets(name, rows) if rows else HOITriplets.empty(name))
    return vcocodb, dets, samples, images


def assert_matches_vsrl(scenes):
    for role_less_rows in (True, False):
        vcocodb, dets, samples, images = scene_inputs(scenes, role_less_rows)
        r = evaluate(samples, images)
        for scenario in ("scenario_1", "scenario_2"):
            ref = vsrl_role_ap(vcocodb, dets, scenario)
            got = {slot: r.scenarios[scenario].ap[v] for slot, v in SLOT_VERB.items() if r.scenarios[scenario].npos[v]}
            assert set(got) == set(ref)
            for slot in ref:
                assert got[slot] == pytest.approx(ref[slot], abs=1e-12), (scenario, VOCAB.verbs[SLOT_VERB[slot]])
    return r


EAT_INSTR = VOCAB.verbs.index("eat instr")
KNIFE = [70.0, 40.0, 90.0, 60.0]
C = [400.0, 10.0, 450.0, 110.0]


def test_role_less_persons_twice_detected_and_unlisted_persons_match_vsrl_eval():
    scenes = [(
        [(A, True, {EAT_OBJ: FOOD, EAT_INSTR: None}),  # eats, no instrument: role-less for eat instr
         (B, True, {EAT_OBJ: FOOD, EAT_INSTR: KNIFE, HOLD_OBJ: KNIFE}),
         (C, True, {}),  # annotated, does nothing: a detection on it is a false positive
         ([600.0, 10.0, 630.0, 110.0], False, {})],  # not annotated: a detection on it counts for nothing
        [(A, {EAT_OBJ: (FOOD, 0.95), EAT_INSTR: (NONE, 0.9)}),
         (A, {EAT_INSTR: (KNIFE, 0.85), EAT_OBJ: (FOOD, 0.3)}),  # A detected twice
         (B, {EAT_INSTR: (NONE, 0.8), EAT_OBJ: (FOOD, 0.7), HOLD_OBJ: (KNIFE, 0.6)}),
         (B, {EAT_INSTR: (KNIFE, 0.75)}),
         (C, {HOLD_OBJ: (KNIFE, 0.99), EAT_OBJ: (FOOD, 0.5)}),
         ([601.0, 10.0, 630.0, 110.0], {HOLD_OBJ: (KNIFE, 0.97), EAT_INSTR: (NONE, 0.96)})],
    )]
    r = assert_matches_vsrl(scenes)
    s1, s2 = r.scenarios["scenario_1"], r.scenarios["scenario_2"]
    assert s1.npos[EAT_OBJ] == s1.npos[EAT_INSTR] == 2  # npos per action, whatever the role
    assert r.role_less[EAT_INSTR] == 1 and r.role_less[EAT_OBJ] == 0
    # eat instr in score order: A empty (TP in S1; TP in S2), A knife (S1: FP; S2: duplicate FP), B empty (FP: B has
    # a knife), B knife (TP); the unannotated person's 0.96 is not counted
    assert s1.num_detections[EAT_INSTR] == 4 and r.counts["matched_unannotated_persons"] == 2
    assert s1.ap[EAT_INSTR] == pytest.approx(0.5 * 1 + 0.5 * 0.5)
    assert s2.ap[EAT_INSTR] == pytest.approx(0.5 * 1 + 0.5 * 0.5)
    assert s1.ap[EAT_OBJ] == pytest.approx(1.0)  # A 0.95 TP, B 0.7 TP, then C 0.5 FP and A 0.3 a duplicate
    assert s1.ap[HOLD_OBJ] == pytest.approx(0.5)  # C's 0.99 first (FP), then B's TP


def test_scenario_1_and_2_differ_where_a_role_box_is_predicted_for_a_role_less_person():
    scenes = [([(A, True, {EAT_OBJ: FOOD, EAT_INSTR: None})], [(A, {EAT_INSTR: (KNIFE, 0.9)})])]
    r = assert_matches_vsrl(scenes)
    assert r.scenarios["scenario_1"].ap[EAT_INSTR] == 0.0 and r.scenarios["scenario_2"].ap[EAT_INSTR] == 1.0
    assert r.scenarios_differ


def random_scenes(rng, n_images=12):
    box = lambda: (rng.uniform(0, 100, 2).tolist() + rng.uniform(120, 200, 2).tolist())  # noqa: E731
    jitter = lambda b: ordered((np.asarray(b) + rng.normal(0, 8, 4)).tolist())  # noqa: E731
    pick = [HOLD_OBJ, LOOK_OBJ, EAT_OBJ, EAT_INSTR]
    scenes = []
    for _ in range(n_images):
        persons = []
        for _ in range(rng.integers(1, 4)):
            roles = {}
            if rng.uniform() < 0.5:
                roles[HOLD_OBJ] = box()
            if rng.uniform() < 0.4:
                roles[LOOK_OBJ] = box()
            if rng.uniform() < 0.6:  # eats: one role may have no object (never both, as in the 24-class files)
                k = rng.integers(0, 3)
                roles[EAT_OBJ] = None if k == 1 else box()
                roles[EAT_INSTR] = None if k == 2 else box()
            persons.append((box(), bool(roles) or rng.uniform() < 0.5, roles))  # some unannotated, doing nothing
        dets = []
        for b, _, roles in persons:
            for _ in range(rng.integers(1, 3)):  # detected once or twice
                slots = {}
                for v in pick:
                    if rng.uniform() < 0.7:
                        gt = roles.get(v)
                        rb = NONE if (gt is None and rng.uniform() < 0.5) else jitter(gt if gt is not None else box())
                        slots[v] = (rb, float(rng.uniform()))
                dets.append((jitter(b), slots))
        dets.append((box(), {v: (box(), float(rng.uniform())) for v in pick}))
        scenes.append((persons, dets))
    return scenes


def ordered(b):
    b = np.asarray(b, dtype=np.float64)
    return np.r_[np.minimum(b[:2], b[2:]), np.maximum(b[:2], b[2:])].tolist()


def test_vectorised_matching_equals_vsrl_eval_on_random_scenes():
    rng = np.random.default_rng(0)
    r = assert_matches_vsrl(random_scenes(rng))
    assert r.scenarios_differ and r.counts["matched_unannotated_persons"] > 0
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
    # 12,402 rows; a person listed with one role of eat / cut / hit does the action without an object
    # for the other role: 550 role-less positives, which the oracle gives an empty role box
    assert r.counts["ground_truth_positives"] == 12402 + 550 and int(r.role_less.sum()) == 550
    assert {VOCAB.verbs[v]: int(n) for v, n in enumerate(r.role_less) if n} == {
        "hit instr": 21, "hit obj": 110, "eat obj": 53, "eat instr": 287, "cut instr": 26, "cut obj": 53}
    for s in r.scenarios.values():
        assert s.mean == pytest.approx(1.0) and s.mean_vsrl_slots == pytest.approx(24 / 25)
        assert not np.isnan(s.ap).any()
    # the same oracle without its empty-role triplets misses the role-less cases in both scenarios; with the
    # other role's box there instead, Scenario 2 still gives 100 and Scenario 1 does not
    preds = ground_truth_predictions(samples, "vcoco")
    for im in preds.images:
        empty = (im.object_boxes == 0).all(1)
        im.object_boxes[empty] = im.object_boxes[~empty][0] if (~empty).any() else [1, 1, 2, 2]
    r = evaluate_vcoco(samples, preds)
    assert r.scenarios["scenario_2"].mean == pytest.approx(1.0) and r.scenarios["scenario_1"].mean < 0.97
