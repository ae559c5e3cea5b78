"""The trainer on a small synthetic world: loss falls, resume equals an uninterrupted run, QLoRA, bad input,
detector-proposal cache, the saved model loads in ``hoi-mllm detect``, and no unseen label reaches a loss."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hoi_mllm.finetune.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints
from hoi_mllm.finetune.config import load_config
from hoi_mllm.finetune.trainer import NonFiniteLossError, finetune


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from hoi_mllm.data.synthetic import generate_world

    folder = tmp_path_factory.mktemp("world")
    generate_world(folder, 24, 8, seed=3, image_size=128, progress=False, workers=1)
    return folder


def small(world: Path, **overrides):
    """The synthetic recipe made small: 2 images per step, a narrow SAP, a short language warm-up."""
    base = {"data.train": str(world / "instances_train.json"), "data.val_images": 4, "train.batch_size": 2,
            "train.steps": 4, "train.log_every": 1, "train.tensorboard": False, "train.checkpoint_every": 0,
            "eval.at_end": False, "model.pretrain_steps": 10, "model.recogniser.sap.hidden_size": 32,
            "train.threads": 2}
    base.update(overrides)
    return load_config("synthetic", base)


def trainable(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(latest_checkpoint(run).path / "trainable.safetensors"))


def history(run: Path) -> list[dict]:
    return [json.loads(l) for l in (run / "history.jsonl").read_text().splitlines() if l.strip()]


@pytest.mark.slow
def test_loss_falls_and_the_run_writes_its_folder(world, tmp_path):
    cfg = small(world, **{"train.steps": 36, "optim.warmup_steps": 2, "train.checkpoint_every": 12,
                          "train.keep_checkpoints": 2, "train.tensorboard": True, "eval.at_end": True})
    result = finetune(cfg, tmp_path / "run", progress=False)
    rows = [r for r in history(tmp_path / "run") if "loss" in r]
    first = np.mean([r["loss"] for r in rows[:6]])
    last = np.mean([r["loss"] for r in rows[-6:]])
    assert last < 0.7 * first, (first, last)
    assert all(np.isfinite(r["loss"]) for r in rows)
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_0000024", "step_0000036"]  # keep the last 2
    run = tmp_path / "run"
    for name in ("config.yaml", "summary.json", "loss_curve.png", "final/config.json"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    assert result.eval is not None and 0 <= result.eval["full"] <= 100
    assert result.steps == 36 and result.images_per_second > 0


def test_resume_from_a_mid_run_checkpoint_equals_the_uninterrupted_run(world, tmp_path):
    # DA-HOI's switches on: candidates shuffled, grounded prompt, mean match init, augmentation, epochs,
    # SAP's scene-context decoder and the second (SAP) branch
    # (20 training images at 2 per step: 0.6 epochs = 6 steps)
    cfg = small(world, **{"train.epochs": 0.6, "train.checkpoint_every": 3, "teacher.kind": "ema",
                          "model.recogniser.shuffle_candidates": True, "adapter.dropout": 0.1,
                          "model.recogniser.grounded": True, "model.recogniser.match_init": "mean",
                          "augment.flip": True, "augment.color_jitter": 0.4, "augment.scales": [112, 144],
                          "augment.crop": True, "model.recogniser.sap_branch": True,
                          "model.recogniser.sap.context_layers": 2, "model.recogniser.sap.context_heads": 4})
    assert finetune(cfg, tmp_path / "straight", progress=False).steps == 6
    interrupted = finetune(cfg, tmp_path / "resumed", progress=False, stop_after=3)
    assert interrupted.final_dir is None and latest_checkpoint(tmp_path / "resumed").step == 3
    resumed = finetune(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert resumed.resumed_from == 3 and resumed.steps == 6
    a, b = trainable(tmp_path / "straight"), trainable(tmp_path / "resumed")
    assert a.keys() == b.keys() and len(a) > 10
    assert any("sap_verb_projector" in k for k in a) and any("context" in k for k in a)  # both trained and saved
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 1e-6, worst
    # the history of the resumed run is that of one run: steps 1..6 once each
    steps = [r["step"] for r in history(tmp_path / "resumed") if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]
    la = [r["loss"] for r in history(tmp_path / "straight") if "loss" in r]
    lb = [r["loss"] for r in history(tmp_path / "resumed") if "loss" in r]
    assert np.allclose(la, lb, atol=1e-6)


def test_tensorboard_after_a_resume_holds_each_step_once(world, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = small(world, **{"train.steps": 4, "train.checkpoint_every": 2, "train.tensorboard": True})
    finetune(cfg, tmp_path / "run", progress=False, stop_after=3)  # logs step 3 after the checkpoint at 2
    finetune(cfg, tmp_path / "run", resume=True, progress=False)  # logs steps 3 and 4 again
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]


def test_bad_input_fails_before_training(world, tmp_path, monkeypatch):
    import hoi_mllm.finetune.trainer as trainer

    built = []
    monkeypatch.setattr(trainer, "build_student", lambda *a, **k: built.append(1) or (_ for _ in ()).throw(AssertionError))
    with pytest.raises(ValueError, match="unknown split 'uc_z'.*uc_a"):
        finetune(small(world, **{"data.split": "uc_z"}), tmp_path / "a", progress=False)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        finetune(small(world), tmp_path / "b", resume=True, progress=False)
    # a dataset whose every pair is unseen after filtering: nothing to learn
    from hoi_mllm.prompts import load_vocabulary

    unseen = load_vocabulary(world / "vocabulary.json").unseen_classes("unseen_object")
    data = json.loads((world / "instances_train.json").read_text())
    for ann in data["annotation"]:  # keep only the rows of unseen classes
        rows = [i for i, c in enumerate(ann["hoi"]) if c in unseen]
        for key in ("boxes_h", "boxes_o", "hoi", "object", "verb"):
            ann[key] = [ann[key][i] for i in rows]
    assert sum(len(a["hoi"]) for a in data["annotation"]) > 0
    sub = tmp_path / "unseen_only"
    sub.mkdir()
    (sub / "instances_train.json").write_text(json.dumps(data))
    (sub / "vocabulary.json").write_text((world / "vocabulary.json").read_text())
    cfg = small(world, **{"data.train": str(sub / "instances_train.json"), "data.split": "unseen_object",
                          "data.image_root": str(world / "images" / "train")})
    with pytest.raises(ValueError, match="no annotated \\(seen\\) pair left after the 'unseen_object'"):
        finetune(cfg, tmp_path / "c", progress=False)
    assert not built


def test_checkpoint_of_another_base_model_or_process_count_and_a_fresh_run_over_old_checkpoints_are_refused(
        world, tmp_path, monkeypatch):
    import hoi_mllm.finetune.trainer as trainer

    run = tmp_path / "run"
    finetune(small(world, **{"train.steps": 2, "train.checkpoint_every": 1}), run, progress=False)
    other = small(world, **{"train.steps": 4, "model.preset_overrides": {"hidden_size": 32}})
    with pytest.raises(CheckpointError, match="another base model.*preset_overrides"):
        finetune(other, run, resume=True, progress=False)
    with pytest.raises(ValueError, match="already at train.steps=2"):
        finetune(small(world, **{"train.steps": 2}), run, resume=True, progress=False)
    before = [p.name for p in list_checkpoints(run)]
    monkeypatch.setattr(trainer, "build_student", lambda *a, **k: (_ for _ in ()).throw(AssertionError("built")))
    # without --resume the old run's checkpoints would outlive the new run's (pruning keeps the highest steps)
    with pytest.raises(CheckpointError, match="already holds checkpoints of a run .*step_0000002.*use --resume"):
        finetune(small(world, **{"train.steps": 4}), run, progress=False)
    assert [p.name for p in list_checkpoints(run)] == before
    # a checkpoint of 2 processes cannot be continued by 1 (each process's RNG and data share)
    state_file = latest_checkpoint(run).path / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "processes": 2}))
    with pytest.raises(CheckpointError, match="written by 2 process\\(es\\), this run has 1"):
        finetune(small(world, **{"train.steps": 4}), run, resume=True, progress=False)


def test_non_finite_loss_names_the_step_and_images(world, tmp_path):
    cfg = small(world, **{"optim.lr": 1e30, "optim.head_lr": 1e30, "optim.grad_clip": None, "train.steps": 5,
                          "optim.warmup_steps": 0, "optim.scheduler": "constant"})
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step \d+ .* on images synth_train_\d+\.png"):
        finetune(cfg, tmp_path / "run", progress=False)


def test_detector_pairs_are_cached_once_per_dataset_topped_up_and_recomputed_on_request(world, tmp_path,
                                                                                         monkeypatch):
    import hoi_mllm.detectors as detectors
    from hoi_mllm.finetune.data import cache_path, detector_detections, load_training_data

    monkeypatch.setenv("HOI_MLLM_CACHE", str(tmp_path / "cache"))
    cfg = small(world, **{"pairs.source": "both", "pairs.detector": "jitter:seed=1,spurious_rate=2.0",
                          "train.steps": 2})
    finetune(cfg, tmp_path / "run", progress=False)
    caches = list((tmp_path / "cache" / "pairs").glob("jitter_*.json"))
    assert len(caches) == 1 and not (tmp_path / "run" / "pairs").exists()  # beside no run: shared
    doc = json.loads(caches[0].read_text())
    assert doc["format"] == "hoi-mllm/detections" and doc["detector"] == cfg.pairs.detector
    assert len(doc["images"]) == 20  # the training images (24 minus 4 held out)
    stamp = caches[0].stat().st_mtime_ns
    finetune(cfg, tmp_path / "run2", progress=False)  # another run over the same dataset reads it
    assert caches[0].stat().st_mtime_ns == stamp
    # a cache lacking 3 images: the detector sees those 3 only, the others' entries stay as they were
    seen = []
    build = detectors.build_detector

    def counting(*args, **kwargs):
        detector = build(*args, **kwargs)
        call = detector.__call__
        return type("Counting", (), {"options": detector.options,
                                     "__call__": lambda self, images, names: seen.extend(names) or call(images, names)})()

    monkeypatch.setattr(detectors, "build_detector", counting)
    dropped = [im["file_name"] for im in doc["images"][:3]]
    caches[0].write_text(json.dumps({**doc, "images": doc["images"][3:]}))
    data = load_training_data(cfg.data)
    assert cache_path(cfg.pairs, data.source) == caches[0]
    detector_detections(cfg.pairs, data.train, data.vocabulary, caches[0], progress=False)
    assert sorted(seen) == sorted(dropped)
    topped = json.loads(caches[0].read_text())
    assert len(topped["images"]) == 20
    kept = {im["file_name"]: im for im in doc["images"][3:]}
    assert all(im == kept[im["file_name"]] for im in topped["images"] if im["file_name"] in kept)
    seen.clear()
    again = dataclasses.replace(cfg.pairs, recompute=True)
    detector_detections(again, data.train, data.vocabulary, caches[0], progress=False)
    assert len(seen) == 20  # recompute: every image


def test_pairs_cache_is_a_new_file_when_the_dataset_or_detector_weights_change(tmp_path, monkeypatch):
    from hoi_mllm.finetune.config import PairsConfig
    from hoi_mllm.finetune.data import cache_path

    monkeypatch.setenv("HOI_MLLM_CACHE", str(tmp_path / "cache"))
    data, weights = tmp_path / "train.json", tmp_path / "det.pt"
    data.write_text("{}")
    weights.write_bytes(b"weights")
    config = PairsConfig(source="detector", detector=f"yolo:model={weights}")
    first = cache_path(config, str(data))
    assert first == cache_path(config, str(data)) and first.parent == tmp_path / "cache" / "pairs"
    data.write_text('{"rewritten": true}')  # a dataset generated again in place: never its stale detections
    second = cache_path(config, str(data))
    assert second != first
    weights.write_bytes(b"other weights!")  # new weights under the same name
    assert cache_path(config, str(data)) not in (first, second)


def test_final_model_loads_in_detect(world, tmp_path):
    from hoi_mllm.cli import main
    from hoi_mllm.pipeline import HOIPipeline

    result = finetune(small(world, **{"train.steps": 2}), tmp_path / "run", progress=False)
    pipe = HOIPipeline.from_pretrained(result.final_dir)
    assert pipe.vocabulary.name == "synthetic"
    out = tmp_path / "detect"
    code = main(["detect", "--model", result.final_dir, "--detector",
                 f"ground-truth:annotations={world / 'instances_test.json'}", "--output", str(out),
                 str(world / "images" / "test")])
    assert code == 0
    predictions = json.loads((out / "predictions.json").read_text())
    assert predictions["vocabulary"] == "synthetic" and len(predictions["images"]) == 8
    assert sum(len(im["hois"]) for im in predictions["images"]) > 0


def test_qlora_step_runs(world, tmp_path):
    pytest.importorskip("bitsandbytes")
    from hoi_mllm.finetune.data import load_training_data
    from hoi_mllm.finetune.model import base_loader

    cfg = small(world)
    vocab = load_training_data(cfg.data).vocabulary
    base = tmp_path / "tiny"
    base_loader(cfg.model, vocab)().save_pretrained(base)
    q = small(world, **{"model.base": str(base), "model.quantization": "4bit", "model.pretrain_steps": 0,
                        "adapter.train_vision": False, "train.steps": 2, "train.checkpoint_every": 2,
                        "teacher.kind": "none"})
    result = finetune(q, tmp_path / "run", progress=False)
    weights = trainable(tmp_path / "run")
    assert any("lora_A" in k for k in weights) and not any("q_proj.weight" in k for k in weights)
    rows = [r for r in history(tmp_path / "run") if "loss" in r]
    assert len(rows) == 2 and all(np.isfinite(r["loss"]) for r in rows)
    assert result.final_dir and (Path(result.final_dir) / "adapter").is_dir()


@pytest.mark.slow
def test_accelerate_launch_two_processes_trains_and_saves(world, tmp_path):
    overrides = [f"data.train={world / 'instances_train.json'}", "data.val_images=4", "train.batch_size=1",
                 "train.steps=3", "train.log_every=1", "train.tensorboard=false", "train.checkpoint_every=3",
                 "eval.at_end=false", "model.pretrain_steps=5", "model.recogniser.sap.hidden_size=32",
                 "train.threads=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # `--multi_gpu` is accelerate's multi-process launcher (torchrun); without CUDA it runs DDP over gloo on the
    # CPU. (`--cpu` would start a single process.)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "hoi_mllm", "finetune", "synthetic", *overrides,
           "--output", str(tmp_path / "run"), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["images"] == 6  # 3 steps x 1 image x 2 processes
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt.state["processes"] == 2 and {p.name for p in ckpt.path.glob("rng_*.pt")} == {"rng_0.pt", "rng_1.pt"}
    assert (tmp_path / "run" / "final" / "config.json").is_file()


NAN_ON_RANK_1 = """
import os, sys
import hoi_mllm.finetune.step as step

forward = step.TrainingStep.forward


def nan_on_rank_1(self, items, step_seed=0):
    terms = forward(self, items, step_seed=step_seed)
    if os.environ["RANK"] == "1" and step_seed == 1:  # the second batch of process 1 only
        terms.total = terms.total * float("nan")
    return terms


step.TrainingStep.forward = nan_on_rank_1
from hoi_mllm.cli import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_non_finite_loss_on_one_of_two_processes_stops_both(world, tmp_path):
    """Only process 1 sees the NaN; both must raise (not hang in DDP's all-reduce)."""
    script = tmp_path / "nan_on_rank_1.py"
    script.write_text(NAN_ON_RANK_1)
    overrides = [f"data.train={world / 'instances_train.json'}", "data.val_images=4", "train.batch_size=1",
                 "train.steps=3", "train.tensorboard=false", "train.checkpoint_every=0", "eval.at_end=false",
                 "model.pretrain_steps=2", "model.recogniser.sap.hidden_size=32", "train.threads=1"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script), "finetune",
           "synthetic", *overrides, "--output", str(tmp_path / "run"), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=240)
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    for rank in (0, 1):
        assert f"non-finite loss at step 2 (batch 1) on process(es) 1; this process ({rank})" in err, err[-3000:]


def test_no_unseen_label_reaches_a_loss(world):
    """Two training sets that differ only in their unseen annotations give bit-identical losses."""
    from hoi_mllm.data import filter_zero_shot, load_annotations
    from hoi_mllm.data.filters import drop_pairs
    from hoi_mllm.finetune.data import training_detections
    from hoi_mllm.finetune.model import build_student
    from hoi_mllm.finetune.step import TrainingStep, TrainItem
    from hoi_mllm.finetune.teacher import NoTeacher
    from hoi_mllm.prompts import load_vocabulary

    cfg = small(world)
    vocab = load_vocabulary(world / "vocabulary.json")
    unseen = vocab.unseen_classes("uc_a")
    samples = [s for s in load_annotations(world / "instances_train.json") if s.num_pairs >= 2][:3]
    variants = []
    for how in ("unseen", "unseen+seen", "absent"):
        out = []
        for s in samples:
            s = dataclasses.replace(s, pair_verbs=list(s.pair_verbs), pair_classes=list(s.pair_classes))
            obj = int(s.labels[s.pair_object[0]])
            u = next(c for c in vocab.classes_for_object(obj) if c in unseen)
            seen = next(c for c in vocab.classes_for_object(obj) if c not in unseen)
            if how == "absent":
                s = drop_pairs(s, np.arange(s.num_pairs) == 0)
            else:
                classes = (u,) if how == "unseen" else tuple(sorted((u, seen)))
                s.pair_classes[0] = classes
                s.pair_verbs[0] = tuple(int(vocab.class_verbs[c]) for c in classes)
            out.append(s)
        variants.append(filter_zero_shot(out, vocab, "uc_a")[0])
    losses = []
    for train in variants:
        torch.manual_seed(0)
        rec = build_student(cfg, vocab)
        step = TrainingStep(rec, vocab.seen_classes("uc_a"), cfg.pairs, cfg.matcher, cfg.loss, NoTeacher(vocab))
        items = []
        for i, s in enumerate(train):
            image = s.load_image()
            items.append(TrainItem(i, s, image, training_detections(cfg.pairs, s, image.size, None)))
        terms = step(items)
        terms.total.backward()
        grads = torch.cat([p.grad.flatten() for p in rec.parameters() if p.grad is not None])
        losses.append((terms.as_floats(), grads))
    for floats, grads in losses[1:]:
        assert floats == losses[0][0]
        assert torch.equal(grads, losses[0][1])


@pytest.mark.slow
def test_finetuned_model_scores_clearly_higher_than_untrained(tmp_path_factory):
    """Fine-tuning on a synthetic world beats the same model before fine-tuning on that world's test images."""
    from hoi_mllm.data import load_annotations
    from hoi_mllm.data.synthetic import generate_world
    from hoi_mllm.finetune.data import load_training_data
    from hoi_mllm.finetune.evaluate import evaluate_recogniser
    from hoi_mllm.finetune.model import build_student
    from hoi_mllm.pipeline import HOIPipeline

    folder = tmp_path_factory.mktemp("learn_world")
    generate_world(folder, 160, 40, seed=11, image_size=160, progress=False, workers=1)
    cfg = load_config("synthetic_quick", {"data.train": str(folder / "instances_train.json"), "data.val_images": 0,
                                          "train.tensorboard": False, "train.checkpoint_every": 0,
                                          "eval.at_end": False, "eval.every": 0, "train.threads": 2,
                                          "train.steps": 120})
    test = load_annotations(folder / "instances_test.json")
    vocab = load_training_data(cfg.data).vocabulary
    untrained = evaluate_recogniser(build_student(cfg, vocab), test, cfg.data.split)
    result = finetune(cfg, tmp_path_factory.mktemp("learn_run"), progress=False)
    trained = evaluate_recogniser(HOIPipeline.from_pretrained(result.final_dir).recogniser, test, cfg.data.split)
    assert trained["seen"] > untrained["seen"] + 10, (untrained, trained)
    assert trained["full"] > untrained["full"] + 10, (untrained, trained)


def test_frozen_merger_stays_frozen_when_the_vision_encoder_trains(world):
    """Qwen's merger sits inside its vision encoder: train_vision true with train_projector false trains the
    tower and keeps the merger frozen (the switch used to be a no-op there)."""
    from hoi_mllm.finetune.model import build_student
    from hoi_mllm.prompts import load_vocabulary

    vocab = load_vocabulary(world / "vocabulary.json")
    for projector in (True, False):
        rec = build_student(small(world, **{"adapter.train_vision": True, "adapter.train_projector": projector}),
                            vocab)
        merger = {id(p) for p in rec.backbone.projector.parameters()}
        assert merger
        assert all(p.requires_grad == projector for p in rec.backbone.projector.parameters())
        tower = [p for p in rec.backbone.vision_encoder.parameters() if id(p) not in merger]
        assert tower and all(p.requires_grad for p in tower)
