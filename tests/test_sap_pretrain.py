"""DA-HOI's two stages: SAP pre-training (train.stage=sap) through the one trainer, its output loaded frozen (or
slowed) into the joint stage, the bad inputs named before training, and resume of the SAP stage."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hoi_mllm.finetune.checkpoint import latest_checkpoint
from hoi_mllm.finetune.config import load_config
from hoi_mllm.finetune.sap_stage import SAP_META, SAP_WEIGHTS, PretrainedSAPError, check_pretrained_sap
from hoi_mllm.finetune.trainer import finetune


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from hoi_mllm.data.synthetic import generate_world

    folder = tmp_path_factory.mktemp("world")
    generate_world(folder, 24, 8, seed=3, image_size=128, progress=False, workers=1)
    return folder


def small(world: Path, recipe: str = "synthetic", **overrides):
    base = {"data.train": str(world / "instances_train.json"), "data.val_images": 4, "train.batch_size": 2,
            "train.steps": 4, "train.log_every": 1, "train.tensorboard": False, "train.checkpoint_every": 0,
            "eval.at_end": False, "model.pretrain_steps": 10, "model.recogniser.sap.hidden_size": 32,
            "model.recogniser.sap.context_layers": 1, "model.recogniser.sap.context_heads": 4,
            "train.threads": 2}
    base.update(overrides)
    return load_config(recipe, base)


def losses(run: Path, key: str = "loss") -> list[float]:
    rows = [json.loads(l) for l in (run / "history.jsonl").read_text().splitlines() if l.strip()]
    return [r[key] for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def sap_run(world, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("sap") / "run"
    cfg = small(world, "synthetic_sap", **{"train.steps": 24, "train.checkpoint_every": 24, "optim.warmup_steps": 2})
    result = finetune(cfg, run, progress=False)
    assert result.steps == 24 and result.final_dir == str(run / "final")
    return run


def test_sap_pretraining_reduces_its_loss_and_trains_only_sap(sap_run):
    rows, verb = losses(sap_run), losses(sap_run, "verb")
    assert all(np.isfinite(rows)) and len(rows) == 24
    # 2 images a step: the interactiveness term is noisy at this size; the verb term falls clearly
    assert np.mean(verb[-8:]) < 0.7 * np.mean(verb[:3]), verb
    assert np.mean(rows[-8:]) < 0.9 * np.mean(rows[:3]), rows
    # only SAP's body and the verb classifier trained: no LoRA, vision, merger, projection to the LM or match embedding
    names = set(load_file(str(latest_checkpoint(sap_run).path / "trainable.safetensors")))
    assert any(n.startswith("sap.context.") for n in names) and any(n.startswith("sap_verb_classifier.") for n in names)
    assert all(n.startswith(("sap.", "sap_verb_classifier.")) for n in names), sorted(names)[:5]
    assert not any(n.startswith(("sap.to_tokens", "sap.token_norm")) for n in names)
    # the output: SAP's body + classifier, and what they fit
    weights = load_file(str(sap_run / "final" / SAP_WEIGHTS))
    assert any(k.startswith("verb_classifier.") for k in weights) and not any("to_tokens" in k for k in weights)
    meta = json.loads((sap_run / "final" / SAP_META).read_text())
    assert meta["hidden_size"] == 64 and meta["sap"]["hidden_size"] == 32 and meta["num_verbs"] > 0
    assert weights["verb_classifier.weight"].shape[0] == meta["num_verbs"]
    assert not (sap_run / "final" / "recogniser.safetensors").exists()


@pytest.mark.slow
def test_pretrained_sap_loads_frozen_into_the_joint_stage(world, sap_run, tmp_path):
    saved = {k[4:]: v for k, v in load_file(str(sap_run / "final" / SAP_WEIGHTS)).items() if k.startswith("sap.")}
    cfg = small(world, **{"sap.pretrained": str(sap_run / "final" / SAP_WEIGHTS), "train.steps": 2,
                          "train.checkpoint_every": 2, "model.pretrain_steps": 0})
    finetune(cfg, tmp_path / "joint", progress=False)
    trained = load_file(str(latest_checkpoint(tmp_path / "joint").path / "trainable.safetensors"))
    # the SAP body is no trainable weight; the projection to the LM, LoRA and the match embedding are
    assert not any(k.startswith("sap.") and k[4:] in saved for k in trained)
    assert any(k.startswith("sap.to_tokens") for k in trained) and "match_embedding" in trained
    lora_b = [v for k, v in trained.items() if "lora_B" in k]
    assert lora_b and any(float(v.abs().max()) > 0 for v in lora_b)  # LoRA B starts at zero: it moved
    final = load_file(str(tmp_path / "joint" / "final" / "recogniser.safetensors"))
    for k, v in saved.items():  # bit-identical after training
        assert torch.equal(final[f"sap.{k}"], v), k


def test_pretrained_sap_at_a_lower_rate_trains_it(world, sap_run, tmp_path):
    from hoi_mllm.finetune.model import build_student
    from hoi_mllm.finetune.trainer import parameter_groups
    from hoi_mllm.finetune.sap_stage import sap_body_names
    from hoi_mllm.prompts import load_vocabulary

    cfg = small(world, **{"sap.pretrained": str(sap_run / "final"), "sap.freeze": False, "sap.lr_scale": 0.25,
                          "model.pretrain_steps": 0})
    rec = build_student(cfg, load_vocabulary(world / "vocabulary.json"))
    body = sap_body_names(rec)
    params = dict(rec.named_parameters())
    assert body and all(params[n].requires_grad for n in body)
    groups = parameter_groups(rec, cfg.optim, dict.fromkeys(body, cfg.sap.lr_scale))
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert all(rate[id(params[n])] == pytest.approx(0.25 * cfg.optim.head_lr) for n in body)
    assert rate[id(params["sap.to_tokens.weight"])] == pytest.approx(cfg.optim.head_lr)


def test_bad_pretrained_sap_is_named_before_training(world, sap_run, tmp_path, monkeypatch):
    import hoi_mllm.finetune.trainer as trainer
    from hoi_mllm.prompts import load_vocabulary

    real_build = trainer.build_student
    built = []
    monkeypatch.setattr(trainer, "build_student", lambda *a, **k: built.append(1) or (_ for _ in ()).throw(AssertionError))
    missing = tmp_path / "nowhere" / SAP_WEIGHTS
    with pytest.raises(PretrainedSAPError, match=r"'sap\.pretrained'.*nowhere.*does not exist"):
        finetune(small(world, **{"sap.pretrained": str(missing)}), tmp_path / "a", progress=False)
    # another vocabulary (HICO-DET's 117 verbs, not the world's)
    weights = sap_run / "final" / SAP_WEIGHTS
    sap_cfg = small(world).model.recogniser.sap
    with pytest.raises(PretrainedSAPError, match=r"'sap\.pretrained'.*sap\.safetensors.*another vocabulary.*117 verbs"):
        check_pretrained_sap(weights, load_vocabulary("hico-det"), sap_cfg)
    # another SAP shape
    with pytest.raises(PretrainedSAPError, match=r"another SAP shape.*hidden_size: checkpoint 32"):
        finetune(small(world, **{"sap.pretrained": str(weights), "model.recogniser.sap.hidden_size": 48}),
                 tmp_path / "b", progress=False)
    # metadata lost
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(weights, lone / SAP_WEIGHTS)
    with pytest.raises(PretrainedSAPError, match=rf"{SAP_META}"):
        finetune(small(world, **{"sap.pretrained": str(lone / SAP_WEIGHTS)}), tmp_path / "c", progress=False)
    assert not built
    # another backbone width: found when the model is built, before the first step
    monkeypatch.setattr(trainer, "build_student", real_build)
    monkeypatch.setattr(trainer.Trainer, "_loop", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    wide = small(world, **{"sap.pretrained": str(weights), "model.preset_overrides": {"hidden_size": 128},
                          "model.pretrain_steps": 0})
    with pytest.raises(PretrainedSAPError, match=r"'sap\.pretrained'.*hidden width 64.*128 wide"):
        finetune(wide, tmp_path / "d", progress=False)


def test_sap_stage_config_errors():
    from hoi_mllm.finetune.schema import ConfigError

    with pytest.raises(ConfigError, match="train.stage.*'joint', 'sap'|train.stage"):
        load_config("synthetic", {"data.train": "x.json", "train.stage": "lm"})
    with pytest.raises(ConfigError, match="eval.every=0"):
        load_config("synthetic_sap", {"data.train": "x.json", "eval.every": 5, "data.val_images": 4})
    with pytest.raises(ConfigError, match="sap.pretrained is for the joint stage"):
        load_config("synthetic_sap", {"data.train": "x.json", "sap.pretrained": "a/sap.safetensors"})
    cfg = load_config("sap_pretrain")
    assert cfg.train.stage == "sap" and cfg.train.epochs == 20 and cfg.pairs.source == "detector"
    assert cfg.model == load_config("hico_det").model and cfg.data == load_config("hico_det").data


@pytest.mark.slow
def test_sap_stage_resume_equals_the_uninterrupted_run(world, tmp_path):
    cfg = small(world, "synthetic_sap", **{"train.steps": 4, "train.checkpoint_every": 2, "augment.flip": True,
                                           "augment.color_jitter": 0.4, "model.recogniser.sap.dropout": 0.1})
    finetune(cfg, tmp_path / "straight", progress=False)
    finetune(cfg, tmp_path / "resumed", progress=False, stop_after=2)
    resumed = finetune(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert resumed.resumed_from == 2 and resumed.steps == 4
    a = load_file(str(latest_checkpoint(tmp_path / "straight").path / "trainable.safetensors"))
    b = load_file(str(latest_checkpoint(tmp_path / "resumed").path / "trainable.safetensors"))
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    assert np.allclose(losses(tmp_path / "straight"), losses(tmp_path / "resumed"), atol=1e-6)


def test_sap_stage_losses_mask_unseen_classes_and_read_the_prior():
    from hoi_mllm.finetune.config import LossConfig
    from hoi_mllm.finetune.losses import sap_stage_losses

    class_verbs = torch.tensor([0, 1, 2, 1])  # classes 0..3 -> verbs
    cands = torch.tensor([[0, 1, -1], [2, 3, 1]])
    logits = torch.zeros(2, 3, requires_grad=True)  # [P, V]
    targets = torch.tensor([[1.0, 0, 0], [0, 0, 0]])
    slots = torch.tensor([[True, True, False], [True, False, True]])  # class 3 unseen: its slot is out
    inter = torch.zeros(2, requires_grad=True)
    terms = sap_stage_losses(logits, inter, cands, class_verbs, targets, slots, torch.tensor([1.0, 0.0]),
                             torch.tensor([True, True]), LossConfig())
    terms.total.backward()
    g = logits.grad
    assert g[0, 2] == 0 and g[1, 0] == 0  # verbs outside the pair's prior get no gradient
    assert g[0, 0] < 0 and g[0, 1] > 0 and g[1, 2] > 0 and g[1, 1] > 0
    assert float(terms.distill.detach()) == 0.0 and inter.grad[0] < 0 < inter.grad[1]
