"""``hoi-mllm detect``: HOI triplets in images with any detector and a recogniser.

Writes ``OUTPUT/predictions.jsonl`` image by image while running (a rerun skips the images already
in it), ``OUTPUT/predictions.json`` at the end (atomically; the ``hoi-mllm/predictions`` format
of :mod:`hoi_mllm.predictions` that the evaluators read: per image the file name and per triplet
human box, object box, object index, verb index, score) and ``OUTPUT/vis/<name>.jpg`` per image
with the triplets drawn. An unreadable image, or one the detector rejects, is reported and
skipped; the others complete. An image where the detector finds no person or nothing to pair
with gets an empty triplet list. The run itself is :func:`hoi_mllm.runner.detect_folder`
(sharded over the processes of ``accelerate launch``); this module parses and prints.
"""
from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)

from hoi_mllm.device import DEVICE_HELP

DTYPES = ("float32", "bfloat16", "float16")
SELECTIONS = ("score", "interactiveness")  # hoi_mllm.pairs.SELECTIONS (not imported: the parser loads no torch)
NO_INTERACTION_CAPS = ("shared", "separate")  # hoi_mllm.postprocess.NO_INTERACTION_CAPS (likewise)
_UNSET = object()


def _gate(text: str):
    """``--interactiveness-gate``: a probability in [0, 1), or ``none``."""
    import argparse

    if text.lower() in ("none", "null", "off"):
        return _UNSET
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a probability in [0, 1) or none, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"a probability in [0, 1) or none, got {text!r}")
    return value


MODES = ("matching", "training-free")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "detect", help="detect HOI triplets in images with a detector and a recogniser",
        description="Detect human-object interactions: a detector proposes boxes, the recogniser scores the "
                    "candidate verb phrases of every human-object pair in one pass. Writes OUTPUT/predictions.jsonl "
                    "(resumable), OUTPUT/predictions.json and OUTPUT/vis/<name>.jpg.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders of images")
    p.add_argument("--detector", required=True,
                   help="detector name or spec NAME[:key=value,...]: yolo, hf, hf-open-vocab, grounding-dino, "
                        "ground-truth, file, jitter")
    p.add_argument("--detector-option", action="append", default=[], metavar="KEY=VALUE",
                   help="detector option (repeatable), e.g. model=yolov8x.pt, score_threshold=0.3, annotations=PATH")
    p.add_argument("--model", required=True, metavar="PATH_OR_PRESET",
                   help="a folder saved by HOIPipeline.save_pretrained, a preset (tiny-qwen2-vl, tiny-qwen2.5-vl, "
                        "tiny-llava, tiny-llava-onevision: an untrained recogniser), a hub id or a local checkpoint")
    p.add_argument("--vocabulary", default=None,
                   help="hico-det, vcoco or a vocabulary.json (default: the saved model's, else hico-det)")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="matching (a fine-tuned recogniser) or training-free (likelihood of each candidate phrase "
                        "under a pretrained MLLM); default: a saved model's own mode, matching for a tiny preset, "
                        "training-free for a hub id or base checkpoint")
    p.add_argument("--interaction", action="append", default=[], metavar="PHRASE",
                   help="a new interaction to score, no training: 'VERB OBJECT' (repeatable; 'feed giraffe, zebra' "
                        "gives one verb several objects); the object must be in the vocabulary")
    p.add_argument("--interactions", default=None, metavar="FILE",
                   help="a YAML or JSON list of interactions ('VERB OBJECT' strings or {verb, objects, phrase})")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--device", default="auto", help=f"{DEVICE_HELP} (default: auto)")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="backbone precision (default: float32 on cpu, "
                                                                 "the checkpoint's otherwise)")
    p.add_argument("--top-k", type=int, default=None, help="triplets kept per image (default: the saved model's, "
                                                             "else 100)")
    p.add_argument("--no-interaction-cap", choices=NO_INTERACTION_CAPS, default=None,
                   help="shared: --top-k counts every triplet; separate: the no-interaction triplets have a top-k of "
                        "their own and never push an interaction out (for the official HICO-DET evaluation; "
                        "default: the saved model's, else shared)")
    p.add_argument("--max-pairs", type=int, default=None, help="pairs per image recognised, chosen by --select "
                                                                "(default: the saved model's, else 64)")
    p.add_argument("--select", choices=SELECTIONS, default=None,
                   help="which pairs --max-pairs keeps: score (best human x object detector score) or "
                        "interactiveness (SAP scores every pair first; best interactiveness x human x object); "
                        "default: the saved model's, else score")
    p.add_argument("--interactiveness-gate", type=_gate, default=None, metavar="P|none",
                   help="pairs whose interactiveness probability is <= P are not recognised (DA-HOI: 0.15; none: "
                        "no gate); default: the saved model's, else none")
    p.add_argument("--prefetch", type=int, default=1, metavar="N",
                   help="images decoded and detected ahead by a background thread while the recogniser runs "
                        "(0: none; default: 1)")
    p.add_argument("--recursive", action="store_true", help="also look for images in sub-folders")
    p.add_argument("--no-vis", action="store_true", help="do not draw pictures")
    p.add_argument("--force", action="store_true",
                   help="start OUTPUT/predictions.jsonl afresh even when it holds images predicted with other "
                        "settings (without it, such a file is refused, not mixed or overwritten)")
    p.set_defaults(func=run)


def _check_args(args) -> None:
    from hoi_mllm.cli import CLIError

    if args.top_k is not None and args.top_k < 1:
        raise CLIError(f"--top-k must be >= 1, got {args.top_k}")
    if args.max_pairs is not None and args.max_pairs < 1:
        raise CLIError(f"--max-pairs must be >= 1, got {args.max_pairs}")
    if args.prefetch < 0:
        raise CLIError(f"--prefetch must be >= 0, got {args.prefetch}")


# detector options that change how fast, not what, a detector finds
_RUNTIME_OPTIONS = ("device", "batch_size")


def _settings(args, options: dict, pipeline) -> dict:
    """What decides the predictions of an image: a rerun resumes only under the same settings."""
    report = getattr(pipeline, "interaction_report", None)
    return {"detector": args.detector, "model": str(args.model), "mode": pipeline.mode,
            "vocabulary": pipeline.recogniser.vocabulary.name,
            "detector_options": {k: str(v) for k, v in sorted(options.items()) if k not in _RUNTIME_OPTIONS},
            "top_k": pipeline.post_config.top_k, "max_pairs": pipeline.pair_config.max_pairs,
            **({"no_interaction_cap": pipeline.post_config.no_interaction_cap}
               if pipeline.post_config.no_interaction_cap != "shared" else {}),
            **({"select": pipeline.pair_config.select, "interactiveness_gate": pipeline.pair_config.interactiveness_gate}
               if pipeline.pair_config.needs_interactiveness else {}),
            **({"interactions": report.added} if report is not None and report.added else {})}


def run(args) -> int:
    from hoi_mllm.cli import CLIError, output_folder, parse_key_values
    from hoi_mllm.device import resolve_device
    from hoi_mllm.pipeline import load_pipeline
    from hoi_mllm.runner import collect_images, detect_folder, nothing_processed

    _check_args(args)
    files = collect_images(args.inputs, args.recursive)
    out_dir = output_folder(args.output)  # before the model loads: a bad --output fails at once
    options = parse_key_values(args.detector_option, what="--detector-option")
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise CLIError(f"--device: {exc}") from exc
    print(f"device: {device}", file=sys.stderr)
    overrides = {k: v for k, v in (("top_k", args.top_k), ("max_pairs", args.max_pairs), ("select", args.select),
                                   ("interactiveness_gate", args.interactiveness_gate),
                                   ("no_interaction_cap", args.no_interaction_cap)) if v is not None}
    if overrides.get("interactiveness_gate") is _UNSET:
        overrides["interactiveness_gate"] = None
    interactions = list(args.interaction)
    if args.interactions:
        from hoi_mllm.interactions import read_interactions

        interactions += read_interactions(args.interactions)
    pipeline = load_pipeline(args.model, detector=args.detector, detector_options=options, vocabulary=args.vocabulary,
                             mode=args.mode, device=device, dtype=args.dtype, interactions=interactions or None,
                             **overrides)
    if pipeline.interaction_report is not None:
        for line in pipeline.interaction_report.lines():
            print(line, file=sys.stderr)
        if pipeline.interaction_report.added:
            pipeline.vocabulary.save(out_dir / "vocabulary.json")
            print(f"the vocabulary with the new interactions: {out_dir / 'vocabulary.json'} (evaluate with "
                  f"--vocabulary {out_dir / 'vocabulary.json'})", file=sys.stderr)
    options.setdefault("device", device)
    meta = {"detector": args.detector, "detector_options": options, "model": str(args.model), "mode": pipeline.mode,
            "settings": _settings(args, options, pipeline)}
    run = detect_folder(pipeline, files, out_dir, meta, force=args.force, pictures=not args.no_vis,
                        prefetch=args.prefetch)
    skipped, unpictured, result = run.skipped, run.unpictured, run.result
    if result is None:  # another process of a sharded run: process 0 merged and reports
        return 0
    if not result.images:
        raise nothing_processed(result.meta.get("skipped", skipped))
    n_triplets = sum(len(im) for im in result.images)
    shards = f", {run.world} processes" if run.world > 1 else ""
    print(f"{len(result.images)} images ({run.new} new{shards}), {n_triplets} triplets -> "
          f"{out_dir / 'predictions.json'}" + ("" if args.no_vis else f" and {out_dir / 'vis'}/"))
    from hoi_mllm.pairs import dropped_pairs

    dropped = dropped_pairs(result.images)
    if dropped["pairs_gated"] or dropped["pairs_capped"]:
        print(f"{dropped['pairs_gated'] + dropped['pairs_capped']} of {dropped['pairs_proposed']} proposed pairs not "
              f"recognised ({dropped['pairs_gated']} at or below the interactiveness gate, {dropped['pairs_capped']} "
              f"over max_pairs {pipeline.pair_config.max_pairs}, chosen by {pipeline.pair_config.select}); per image: "
              "pairs_gated / pairs_capped in predictions.json", file=sys.stderr)
    skipped, unpictured = result.meta.get("skipped", skipped), result.meta.get("pictures_failed", unpictured)
    if skipped:
        print(f"skipped {len(skipped)} image(s): " + ", ".join(s["file_name"] for s in skipped), file=sys.stderr)
    if unpictured:
        print(f"no picture for {len(unpictured)} image(s): " + ", ".join(s["file_name"] for s in unpictured),
              file=sys.stderr)
    return 0

