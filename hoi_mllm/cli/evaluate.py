"""``hoi-mllm evaluate``: HICO-DET mAP and V-COCO role AP of a predictions file.

::

    hoi-mllm evaluate hico-det --annotations instances_test2015.json --predictions preds.jsonl \\
        [--split rare_first] [--setting default|known-object|both] [--protocol official|da-hoi] \\
        [--json OUT] [--plot DIR]
    hoi-mllm evaluate vcoco --annotations instances_vcoco_test.json --predictions preds.jsonl \\
        [--json OUT] [--plot DIR]

Prints a table in percent and writes the same numbers as JSON (atomically). Reading the
predictions and evaluating them are timed apart (logged). Nothing here imports torch: the
predictions are read as columns (:mod:`hoi_mllm.predictions_reader`) and evaluated with numpy.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from hoi_mllm.cli import CLIError

log = logging.getLogger("hoi_mllm.evaluate")

PROTOCOLS = {
    "hico-det": "HICO-DET mAP (Full/Rare/Non-rare, Default and Known-Object; Unseen/Seen and U-R@K for a split)",
    "vcoco": "V-COCO role AP as vsrl_eval counts it (Scenario 1 and 2; the mean over the 24 action-roles and "
             "over vsrl_eval's 25 slots); a role without an object is \"object_box\": null or all zeros",
    "cross-detector": "one recogniser under several detectors and baselines: one table (see cli/cross_detector.py)",
}


def _common(p) -> None:
    p.add_argument("--annotations", required=True, metavar="FILE",
                   help="ground-truth annotation file (any format `hoi-mllm data` reads)")
    p.add_argument("--predictions", required=True, metavar="FILE", help="predictions file (.json or .jsonl)")
    p.add_argument("--vocabulary", default=None, metavar="NAME|PATH",
                   help="vocabulary of annotations and predictions (default: vocabulary.json beside the "
                        "annotations, else the dataset's built-in one)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the numbers as JSON (percent)")
    p.add_argument("--plot", default=None, metavar="DIR",
                   help="write precision-recall curves of the best and worst classes as PNG into DIR")
    p.add_argument("--plot-classes", type=int, default=5, metavar="N", help="classes per plot (default 5)")
    p.add_argument("--ignore-unknown-images", action="store_true",
                   help="skip predicted images that are not in the annotations (default: an error naming them)")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate predictions: HICO-DET mAP, V-COCO role AP",
                       description="Evaluate a predictions file with the official protocols.")
    proto = p.add_subparsers(dest="protocol", metavar="PROTOCOL")
    h = proto.add_parser("hico-det", help=PROTOCOLS["hico-det"], description=PROTOCOLS["hico-det"])
    _common(h)
    h.add_argument("--split", default=None, metavar="NAME",
                   help="zero-shot split (e.g. rare_first, non_rare_first, unseen_object, unseen_verb, uc0)")
    h.add_argument("--protocol", dest="map_protocol", default="official", choices=("official", "da-hoi"),
                   help="official (ho-rcnn's MATLAB code, 600 classes; default) or da-hoi (DA-HOI's hico_eval.py: "
                        "no-interaction classes and the images holding only them dropped, top 100 per image, "
                        "continuous IoU; its published 44.58 is on this footing, not the official one)")
    h.add_argument("--setting", default=None, choices=("default", "known-object", "both"),
                   help="Default, Known-Object or both (default: both; DA-HOI's protocol has only its own Default)")
    h.add_argument("--missing-classes", default="zero", choices=("zero", "skip"),
                   help="classes without ground truth: AP 0 in every mean as the official code (zero, "
                        "default) or left out of the means (skip)")
    h.add_argument("--recall-count-no-interaction", action="store_true",
                   help="let triplets of the no-interaction verb rank pairs for U-R@K (default: they do not: a "
                        "pair called non-interacting is not proposed as carrying an interaction)")
    v = proto.add_parser("vcoco", help=PROTOCOLS["vcoco"], description=PROTOCOLS["vcoco"])
    _common(v)
    v.add_argument("--union", default=None, metavar="VOCAB",
                   help="the predictions are in this union vocabulary (e.g. hico-det+vcoco, prompts/union.py): map "
                        "their verbs to V-COCO's action-roles with its verb_map, then also report the mean role AP "
                        "over the seen actions (mapped from labelled verbs) and the unseen ones (pseudo-V-COCO)")
    from hoi_mllm.cli import cross_detector

    cross_detector.add_parser(proto)
    p.set_defaults(func=run)


def _load(args, dataset: str):
    from hoi_mllm.data import read_annotations, resolve_vocabulary
    from hoi_mllm.data.formats import FORMATS

    samples, report = read_annotations(args.annotations, args.vocabulary, image_root=getattr(args, "images", None),
                                       progress=not args.no_progress)
    found = FORMATS[report.format].dataset
    if found != dataset:
        other = "vcoco" if found == "vcoco" else "hico-det"
        use = f"--dataset {other}" if args.protocol == "cross-detector" else f"`hoi-mllm evaluate {other}`"
        raise CLIError(f"{args.annotations} holds {found} annotations ({report.format}); use {use}")
    vocab = resolve_vocabulary(args.annotations, report.format, args.vocabulary)
    return samples, vocab


def read_predictions_for_evaluation(path: str | Path, vocabulary):
    """The predictions file as columns, for ``vocabulary``; one without any image is an error (a run that crashed early)."""
    from hoi_mllm.eval.inputs import check_vocabulary
    from hoi_mllm.predictions_reader import read_prediction_columns

    columns = read_prediction_columns(path)
    check_vocabulary(columns, vocabulary)
    if len(columns) == 0:
        raise CLIError(f"{path} holds no predicted image (only a header): a run that stopped before its "
                       "first image? (nothing to evaluate)")
    return columns


def run(args) -> int:
    if not getattr(args, "protocol", None):
        raise CLIError(f"choose a protocol: {', '.join(PROTOCOLS)} (e.g. `hoi-mllm evaluate hico-det --help`)")
    if args.protocol == "cross-detector":
        from hoi_mllm.cli import cross_detector

        return cross_detector.run(args)
    if args.plot_classes < 1:
        raise CLIError(f"--plot-classes must be >= 1, got {args.plot_classes}")
    from hoi_mllm.io import atomic_write_json

    dataset = "hico-det" if args.protocol == "hico-det" else "vcoco"
    samples, vocab = _load(args, dataset)
    start = time.perf_counter()
    union = getattr(args, "union", None)
    predictions = (_union_predictions(args.predictions, union, vocab) if union
                   else read_predictions_for_evaluation(args.predictions, vocab))
    parse_s = time.perf_counter() - start
    start = time.perf_counter()
    unknown = "ignore" if args.ignore_unknown_images else "error"
    if args.protocol == "hico-det":
        result, table = _hicodet(args, samples, vocab, predictions, unknown)
    else:
        result, table = _vcoco(args, samples, vocab, predictions, unknown)
    eval_s = time.perf_counter() - start
    triplets = (predictions.num_triplets if hasattr(predictions, "num_triplets")  # a mapped union file: records
                else sum(len(t) for t in predictions.images))
    log.info("read %d images, %d triplets in %.2f s; evaluated in %.2f s", len(predictions), triplets, parse_s, eval_s)
    print(table)
    split = None
    if union:
        from hoi_mllm.prompts import load_vocabulary
        from hoi_mllm.prompts.union import action_split_summary

        split = action_split_summary(result, load_vocabulary(union), vocab)
        print(_action_split_table(split))
    if args.json:
        report = result.to_dict()
        if split is not None:
            report["action_split"] = split
        report["files"] = {"annotations": str(args.annotations), "predictions": str(args.predictions)}
        report["seconds"] = {"read_predictions": round(parse_s, 3), "evaluate": round(eval_s, 3)}
        atomic_write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


def _union_predictions(path, union: str, vocab):
    """A predictions file of a union vocabulary, its verbs mapped to ``vocab``'s (:func:`prompts.union.map_predictions`)."""
    from hoi_mllm.predictions import read_predictions
    from hoi_mllm.prompts import load_vocabulary
    from hoi_mllm.prompts.union import map_predictions

    u = load_vocabulary(union)
    raw = read_predictions(path)
    if raw.vocabulary != u.name:
        raise CLIError(f"{path} is in vocabulary {raw.vocabulary!r}, --union names {u.name!r}")
    mapped, counts = map_predictions(raw, u, vocab)
    log.info("mapped %d triplets of %s to %s (%d merged on one action-role, unmapped: %s)", counts["kept"], u.name,
             vocab.name, counts["merged"], counts["unmapped"] or "none")
    return mapped


def _action_split_table(summary: dict) -> str:
    """The table of :func:`prompts.union.action_split_summary` (mean role AP %)."""
    lines = [f"{'':<12}{'full':>8}{'seen':>8}{'unseen':>8}   (mean role AP %, action-roles with ground truth; "
             f"unseen: {', '.join(summary['unseen_actions'])})"]
    cell = lambda v: f"{'n/a':>8}" if v is None else f"{v:8.2f}"  # noqa: E731
    for name, row in summary["scenarios"].items():
        lines.append(f"{name:<12}{cell(row['full'])}{cell(row['seen'])}{cell(row['unseen'])}")
    return "\n".join(lines)


def _hicodet(args, samples, vocab, predictions, unknown):
    from hoi_mllm.eval.hicodet import HICODetConfig, HICODetEvaluator
    from hoi_mllm.eval.tables import hicodet_table

    if args.split:
        vocab.split(args.split)  # unknown split: an error naming the allowed ones, before any work
    if args.map_protocol == "da-hoi" and args.setting not in (None, "default"):
        raise CLIError(f"--setting {args.setting}: DA-HOI's protocol has no Known-Object setting "
                       "(leave --setting out, or use --protocol official)")
    config = HICODetConfig(split=args.split, protocol=args.map_protocol, settings=args.setting, unknown_images=unknown,
                           missing_classes=args.missing_classes, keep_curves=bool(args.plot),
                           recall_count_no_interaction=args.recall_count_no_interaction,
                           progress=not args.no_progress)
    ev = HICODetEvaluator(samples, vocab, config)
    ev.update(predictions)
    result = ev.compute()
    if args.plot:
        from hoi_mllm.eval.plots import plot_best_worst

        names = [vocab.class_name(c) for c in range(vocab.num_classes)]
        for name, s in result.settings.items():
            for path in plot_best_worst(s.ap, s.curves, names, args.plot, args.plot_classes, prefix=f"{name}_"):
                print(f"wrote {path}")
    return result, hicodet_table(result, markdown=args.markdown)


def _vcoco(args, samples, vocab, predictions, unknown):
    from hoi_mllm.eval.tables import vcoco_table
    from hoi_mllm.eval.vcoco import VCOCOConfig, VCOCOEvaluator

    ev = VCOCOEvaluator(samples, vocab, VCOCOConfig(unknown_images=unknown, keep_curves=bool(args.plot),
                                                    progress=not args.no_progress))
    ev.update(predictions)
    result = ev.compute()
    if args.plot:
        from hoi_mllm.eval.plots import plot_best_worst

        names = [v.replace("_", " ") for v in vocab.verbs]
        scenarios = result.scenarios if result.scenarios_differ else {"scenario_1": result.scenarios["scenario_1"]}
        for name, s in scenarios.items():
            for path in plot_best_worst(s.ap, s.curves, names, args.plot, args.plot_classes, prefix=f"{name}_"):
                print(f"wrote {path}")
    return result, vcoco_table(result, markdown=args.markdown)
