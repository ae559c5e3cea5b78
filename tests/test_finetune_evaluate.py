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
