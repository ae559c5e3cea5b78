"""Periodic evaluation during fine-tuning: the protocol follows the recogniser's vocabulary."""
from types import SimpleNamespace

import pytest
from test_eval_vcoco import A, B, FOOD, HOLD_OBJ, LOOK_OBJ, make_sample, triplets

import hoi_mllm.finetune.evaluate as fe
from hoi_mllm.prompts import load_vocabulary


def test_a_vcoco_recogniser_is_scored_with_role_ap(monkeypatch):
    samples = [make_sample("a.jpg", [(A, FOOD, (LOOK_OBJ, HOLD_OBJ)), (B, None, (HOLD_OBJ,))])]
    # look: right; hold on A: right; hold on B: predicted with a role box where there is none
    preds = [triplets("a.jpg", [(A, FOOD, LOOK_OBJ, 0.9), (A, FOOD, HOLD_OBJ, 0.8), (B, FOOD, HOLD_OBJ, 0.7)])]
    monkeypatch.setattr(fe, "predict_ground_truth_boxes", lambda *a, **k: preds)
    out = fe.evaluate_recogniser(SimpleNamespace(vocabulary=load_vocabulary("vcoco")), samples, None)
    # scenario 1: B's hold needs no role box (AP of hold 0.5, look 1); scenario 2 ignores the role box
    assert out["role_ap_scenario_1"] == pytest.approx(75.0)
    assert out["role_ap_scenario_2"] == pytest.approx(100.0)
    assert out["full"] == out["role_ap_scenario_1"] and out["images"] == 1
    assert "rare" not in out  # no HICO-DET groups for an action-role vocabulary


def test_an_image_that_cannot_be_evaluated_is_an_error_not_a_silent_miss(monkeypatch, tmp_path):
    """A wrong image root used to give every annotated triplet of the missing images as a miss (0 mAP, no word)."""
    import hoi_mllm.runner as runner
    from hoi_mllm.pairs import PairProposalConfig

    samples = [make_sample("a.jpg", [(A, FOOD, (LOOK_OBJ,))]), make_sample("b.jpg", [(B, None, (HOLD_OBJ,))])]

    def recognise(pipe, items, skipped, **kw):  # as the runner does with an unreadable image
        for item in items:
            skipped.append({"file_name": item.name, "error": "No such file or directory"})
        yield from ()

    monkeypatch.setattr(runner, "recognise", recognise)
    rec = SimpleNamespace(training=False, eval=lambda: None, train=lambda mode=True: None,
                          vocabulary=load_vocabulary("vcoco"))
    with pytest.raises(ValueError, match=r"2 of 2 annotated images could not be evaluated .*a\.jpg: No such file"):
        fe.predict_ground_truth_boxes(rec, samples, PairProposalConfig(max_pairs=None))
