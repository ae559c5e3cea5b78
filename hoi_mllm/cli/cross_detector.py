"""``hoi-mllm evaluate cross-detector``: one recogniser under several detectors, one table.

::

    hoi-mllm evaluate cross-detector --model PATH --dataset hico-det --annotations instances_test2015.json \\
        --detector ground-truth --detector "yolo:model=yolov8x.pt,score_threshold=0.3" \\
        [--images DIR] [--split rare_first] [--baselines random,prior --train-annotations FILE] \\
        [--output DIR] [--device auto] [--limit N]

Detector specs are ``NAME[:key=value,...]``, and options are separated by commas, so a list of
specs needs another separator: repeat ``--detector SPEC``, or give ``--detectors`` one value with
``;`` between specs (a comma also starts a new spec where a registered detector name follows it).
Writes ``OUTPUT/cross_detector.md`` and ``.json`` (see :mod:`hoi_mllm.eval.cross_detector` for the
folder layout, the caches and resuming) and prints the table.
"""
from __future__ import annotations

import sys

from hoi_mllm.cli import CLIError
from hoi_mllm.cli.detect import MODES

HELP = ("one recogniser under several detectors (and baselines on the same boxes): mAP, U-R@K, time per "
        "image and each detector's box recall in one table")
SPECS_NOTE = ("Detector specs are NAME[:key=value,...]; repeat --detector SPEC, or give --detectors one value with "
              "';' between specs (a ',' also starts a new spec where a detector name follows it). Detections and "
              "predictions are cached in OUTPUT: a rerun reuses them and an interrupted run resumes.")


def add_parser(proto) -> None:
    """Register ``cross-detector`` under ``hoi-mllm evaluate``."""
    c = proto.add_parser("cross-detector", help=HELP, description=HELP + ". " + SPECS_NOTE)
    c.add_argument("--model", required=True, metavar="PATH_OR_PRESET",
                   help="a folder saved by HOIPipeline.save_pretrained, a preset (tiny-qwen2-vl, ...: untrained), "
                        "a hub id or a local checkpoint")
    c.add_argument("--detector", action="append", default=[], metavar="SPEC",
                   help="a detector spec NAME[:key=value,...] (repeatable), e.g. ground-truth, "
                        "'yolo:model=yolov8x.pt,score_threshold=0.3', 'jitter:box_noise=0.2'")
    c.add_argument("--detectors", default=None, metavar="SPECS",
                   help="several specs in one value, separated by ';' (or by ',' before a detector name)")
    c.add_argument("--dataset", required=True, choices=("hico-det", "vcoco"),
                   help="the protocol: HICO-DET mAP (also the synthetic world) or V-COCO role AP")
    c.add_argument("--annotations", required=True, metavar="FILE", help="test annotation file")
    c.add_argument("--images", default=None, metavar="DIR", help="folder of the test images (default: found "
                                                                  "beside the annotations)")
    c.add_argument("--vocabulary", default=None, metavar="NAME|PATH",
                   help="vocabulary (default: vocabulary.json beside the annotations, else the dataset's)")
    c.add_argument("--split", default=None, metavar="NAME", help="zero-shot split: Unseen / Seen / Full and U-R@K")
    c.add_argument("--output", default="cross_detector", metavar="DIR",
                   help="output folder: table, detections and predictions caches (default: ./cross_detector)")
    c.add_argument("--baselines", default="", metavar="NAMES",
                   help="comma-separated baselines on the same boxes: random, prior (prior needs --train-annotations)")
    c.add_argument("--train-annotations", default=None, metavar="FILE",
                   help="training annotations: the prior baseline's verb frequencies (filtered for --split)")
    c.add_argument("--seed", type=int, default=0, help="seed of the random baseline (default 0)")
    c.add_argument("--prior-smoothing", type=float, default=0.0,
                   help="additive smoothing of the prior baseline (default 0: unseen classes score 0)")
    c.add_argument("--mode", choices=MODES, default=None,
                   help="recogniser mode (default: the saved model's, else matching)")
    c.add_argument("--device", default="auto", help="auto (CUDA when present, else cpu), cpu, cuda or cuda:N, for the "
                                                    "recogniser and for detectors whose spec names no device "
                                                    "(default: auto)")
    c.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate the first N images only")
    c.add_argument("--missing-classes", default="zero", choices=("zero", "skip"),
                   help="HICO-DET classes without ground truth: AP 0 in every mean (zero, official) or left "
                        "out of the means (skip, for small test sets)")
    c.add_argument("--top-k", type=int, default=None, help="triplets kept per image (default: the model's, else 100)")
    c.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    c.add_argument("--no-progress", action="store_true", help="no progress bars")


def _specs(args) -> list[str]:
    from hoi_mllm.detectors import split_detector_specs

    specs = [s.strip() for s in args.detector]
    if args.detectors:
        specs += split_detector_specs(args.detectors)
    if not specs:
        from hoi_mllm.detectors import available_detectors

        raise CLIError("give at least one detector: --detector SPEC (repeatable) or --detectors 'SPEC;SPEC'; "
                       f"detectors: {', '.join(available_detectors())}")
    return specs


def run(args) -> int:
    """Load annotations and the recogniser, run :func:`~hoi_mllm.eval.cross_detector.run_cross_detector`, print."""
    from hoi_mllm.cli.evaluate import _load
    from hoi_mllm.data import read_annotations
    from hoi_mllm.eval.cross_detector import CrossDetectorConfig, plan_detectors, run_cross_detector
    from hoi_mllm.device import resolve_device
    from hoi_mllm.pipeline import load_pipeline

    specs = _specs(args)
    if args.limit is not None and args.limit < 1:
        raise CLIError(f"--limit must be >= 1, got {args.limit}")
    if args.top_k is not None and args.top_k < 1:
        raise CLIError(f"--top-k must be >= 1, got {args.top_k}")
    baselines = tuple(b.strip() for b in args.baselines.split(",") if b.strip())
    if "prior" in [b.lower() for b in baselines] and not args.train_annotations:
        raise CLIError("--baselines prior needs --train-annotations FILE (the verb frequencies are counted there)")
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise CLIError(f"--device: {exc}") from exc
    print(f"device: {device}", file=sys.stderr)
    samples, vocab = _load(args, args.dataset)
    if args.split:
        vocab.split(args.split)  # an unknown split: an error naming the allowed ones, before any work
    config = CrossDetectorConfig(split=args.split, protocol=args.dataset, baselines=baselines, seed=args.seed,
                                 prior_smoothing=args.prior_smoothing, missing_classes=args.missing_classes,
                                 limit=args.limit, device=device, progress=not args.no_progress)
    from pathlib import Path

    plan_detectors(specs, vocab, samples, Path(args.output))  # bad specs fail before the model loads
    train = None
    if args.train_annotations:
        train, _ = read_annotations(args.train_annotations, vocab, progress=not args.no_progress)
    pipeline = load_pipeline(args.model, vocabulary=vocab, mode=args.mode, device=device,
                             **({} if args.top_k is None else {"top_k": args.top_k}))
    result = run_cross_detector(pipeline, specs, samples, args.output, config=config, train_samples=train)
    if result is None:  # another process of a sharded run: process 0 evaluates and reports
        return 0
    print(result.title())
    print(result.to_table(markdown=args.markdown))
    print(f"wrote {Path(args.output) / 'cross_detector.md'} and {Path(args.output) / 'cross_detector.json'}")
    return 0
