"""What the training benchmarks share: train a recipe on a synthetic world, evaluate the final model on held-out
images with ground-truth boxes (every annotated row's boxes, as the trainer's periodic evaluation takes them).

Used by ``training_targets.py``, ``detection_only.py`` and ``dahoi_ablation.py`` (run from this folder:
``python benchmarks/<script>.py``)."""
from __future__ import annotations

import time
from pathlib import Path


def add_run_arguments(parser, images: int, test_images: int, steps: int, image_size: int) -> None:
    """The arguments every synthetic-world benchmark takes (world size, seed, steps, recipe, threads, output)."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=images)
    parser.add_argument("--test-images", type=int, default=test_images)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--image-size", type=int, default=image_size)
    parser.add_argument("--recipe", default="synthetic_quick")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=None, help="also write the results as JSON here")


def make_world(args, folder: Path):
    """The ``habits="hico"`` world of :func:`add_run_arguments`' sizes and seed in ``folder``."""
    from hoi_mllm.data.synthetic import generate_world

    return generate_world(Path(folder), args.images, args.test_images, args.seed, image_size=args.image_size,
                          progress=False, workers=1, habits="hico")


def evaluate_ground_truth_boxes(final_dir, test, split: str | None, pair_config=None, post_config=None,
                                by_verb_kind: bool = False) -> dict:
    """Held-out Seen / Unseen / Full mAP (Default setting) and U-R@5 of a trained model (a saved folder or a
    recogniser), in percent; ``pair_config`` default: every pair (``max_pairs=None``); ``post_config``: the
    triplet score (default: the pipeline's, verb x interactiveness). ``by_verb_kind``: also ``interacting`` and
    ``no_interaction``, the mean AP over the classes of the interacting verbs and over those of the
    no-interaction verb (classes with ground truth in ``test``)."""
    from hoi_mllm.eval import HICODetConfig, evaluate_hicodet, unseen_pair_recall
    from hoi_mllm.finetune.evaluate import predict_ground_truth_boxes
    from hoi_mllm.pairs import PairProposalConfig
    from hoi_mllm.pipeline import HOIPipeline

    rec = HOIPipeline.from_pretrained(final_dir).recogniser if isinstance(final_dir, (str, Path)) else final_dir
    preds = predict_ground_truth_boxes(rec, test, pair_config or PairProposalConfig(max_pairs=None), post_config)
    result = evaluate_hicodet(test, preds, rec.vocabulary, HICODetConfig(split=split, settings=("default",))
                              ).settings["default"]
    summary = dict(result.summary)
    if by_verb_kind:
        no_int = rec.vocabulary.class_verbs == rec.vocabulary.no_interaction_verb
        present = result.npos > 0
        for name, members in (("interacting", present & ~no_int), ("no_interaction", present & no_int)):
            summary[name] = float(result.ap[members].mean()) if members.any() else None
    ur = unseen_pair_recall(test, preds, rec.vocabulary, split, ks=(5,)) if split else {5: None}
    pct = lambda v: None if v is None else round(100.0 * v, 2)  # noqa: E731
    return {"seen": pct(summary.get("seen")), "unseen": pct(summary.get("unseen")), "full": pct(summary.get("full")),
            "ur5": pct(ur[5])} | {k: pct(summary[k]) for k in ("interacting", "no_interaction") if k in summary}


def train_world_yolo(world, folder: Path, seed: int) -> str:
    """The demo's quick YOLO (``hoi-mllm demo --quick``'s detector settings) trained on ``world``'s training
    images in ``folder``: the detector spec that evaluates with it (its score threshold, the demo's 0.2)."""
    from dataclasses import replace

    from hoi_mllm.data import load_annotations
    from hoi_mllm.demo.config import QUICK
    from hoi_mllm.demo.yolo_training import train_yolo, write_yolo_dataset
    from hoi_mllm.prompts import load_vocabulary

    vocab = load_vocabulary(str(world.vocabulary))
    samples = load_annotations(world.annotations["train"], vocab)
    # the demo's 50 validation images, fewer for a small world (an eighth of it)
    config = replace(QUICK.yolo, seed=seed, val_images=min(QUICK.yolo.val_images, max(1, len(samples) // 8)))
    start = time.perf_counter()
    data = write_yolo_dataset(samples, vocab.objects, Path(folder) / "dataset", config.val_images, config.seed)
    result = train_yolo(config, data, vocab.num_objects, folder, progress=False)
    print(f"yolo: {config.epochs} epochs ({time.perf_counter() - start:.1f} s)", flush=True)
    return yolo_spec(result.weights, config)


def yolo_spec(weights, config=None) -> str:
    """The detector spec of YOLO ``weights`` at the demo's evaluation settings (``config``: a
    :class:`hoi_mllm.demo.config.YOLOTrainConfig`, default the full demo's: its image size and score threshold)."""
    if config is None:
        from hoi_mllm.demo.config import FULL

        config = FULL.yolo
    weights = str(weights).replace("'", "''")
    return f"yolo:model='{weights}',imgsz={config.imgsz},score_threshold={config.score_threshold}"


def evaluate_detector_boxes(final_dir, test, split: str | None, detector: str, folder: Path) -> dict:
    """Held-out Seen / Unseen / Full mAP (Default setting) and U-R@5 of a saved model (percent) on ``detector``'s
    boxes (a detector spec), through the cross-detector evaluation; the same keys as
    :func:`evaluate_ground_truth_boxes`, and ``pair_recall``: the annotated pairs whose two boxes the detector
    covers (IoU >= 0.5, percent; what the detector allows)."""
    from hoi_mllm.eval.cross_detector import CrossDetectorConfig, run_cross_detector
    from hoi_mllm.pipeline import HOIPipeline

    pipeline = HOIPipeline.from_pretrained(final_dir, device="cpu")
    result = run_cross_detector(pipeline, [detector], test, folder, config=CrossDetectorConfig(
        split=split, recall_ks=(5,), device="cpu", progress=False))
    row = next(r for r in result.rows if r.scorer == "recogniser")
    values = {k: row.metrics.get(k) for k in ("seen", "unseen", "full")} | {"ur5": row.unseen_recall.get(5),
                                                                           "pair_recall": row.box_recall.get("pairs")}
    return {k: None if v is None else round(v, 2) for k, v in values.items()}  # percent, as the ground-truth rows


def train(world, recipe: str, overrides: dict, run_dir: Path, seed: int, steps: int, threads: int):
    """Fine-tune ``recipe`` (with ``overrides``) on ``world``'s training file: ``(final_dir, config, seconds)``."""
    from hoi_mllm.finetune.config import load_config
    from hoi_mllm.finetune.trainer import finetune

    cfg = load_config(recipe, {"data.train": str(world.annotations["train"]), "data.val_images": 0,
                               "train.seed": seed, "train.steps": steps, "train.tensorboard": False,
                               "train.checkpoint_every": 0, "eval.at_end": False, "eval.every": 0,
                               "train.threads": threads, **overrides})
    start = time.perf_counter()
    result = finetune(cfg, run_dir, progress=False)
    return result.final_dir, cfg, time.perf_counter() - start


def pretrain_sap(world, recipe: str, overrides: dict, run_dir: Path, seed: int, steps: int, threads: int) -> str:
    """DA-HOI's stage 1 (``train.stage=sap``: SAP, its interactiveness and a verb classifier on the frozen grid)
    of ``recipe`` on ``world``: the path of its ``sap.safetensors``, for the next stage's ``sap.pretrained``."""
    from hoi_mllm.finetune.sap_stage import SAP_WEIGHTS

    final_dir, _, seconds = train(world, recipe, {**overrides, "train.stage": "sap"}, run_dir, seed, steps, threads)
    print(f"sap stage: {steps} steps ({seconds:.1f} s)", flush=True)
    return str(Path(final_dir) / SAP_WEIGHTS)


def train_and_evaluate(world, recipe: str, overrides: dict, run_dir: Path, seed: int, steps: int,
                       threads: int, detectors: dict[str, str] | None = None) -> dict:
    """:func:`train`, then :func:`evaluate_ground_truth_boxes` on ``world``'s test file; adds ``train_seconds``, and
    for each ``detectors`` entry (name -> detector spec) the same metrics on its boxes as ``NAME_seen`` ..."""
    from hoi_mllm.data import load_annotations

    final_dir, cfg, seconds = train(world, recipe, overrides, run_dir, seed, steps, threads)
    test = load_annotations(world.annotations["test"])
    row = evaluate_ground_truth_boxes(final_dir, test, cfg.data.split) | {"train_seconds": round(seconds, 1)}
    for name, spec in (detectors or {}).items():
        boxes = evaluate_detector_boxes(final_dir, test, cfg.data.split, spec, Path(run_dir) / f"eval_{name}")
        row |= {f"{name}_{k}": v for k, v in boxes.items()}
    return row
