"""How the no-interaction classes are scored at inference (issue 11: interactiveness means "interacts").

Interactiveness is trained as "this pair interacts" (0 for pairs annotated only with the no-interaction verb), so
the score of a no-interaction triplet can no longer be ``verb x human x object x interactiveness``: that ranks the
pairs the model calls non-interacting *last* in the no-interaction classes. ``PostprocessConfig.no_interaction``
chooses: ``complement`` (default: ``1 - interactiveness`` for those classes) or ``same`` (the earlier factor);
``no_interaction_cap`` whether the no-interaction triplets share the per-image top-k with the interactions
(``shared``, the default) or have a cap of their own (``separate``, for the official evaluation).

This script evaluates one trained model under three of the combinations, on the same predictions' pairs (ground-truth boxes, every
pair), and prints the mean AP over the interacting classes, over the no-interaction classes, and Full / Seen /
Unseen / U-R@5 (%)::

    python benchmarks/no_interaction.py --model hoi_demo/finetune/final --world hoi_demo/world

(``--model``: a saved pipeline folder; ``--world``: the synthetic world it was trained on, or ``--annotations``
any test file of the model's vocabulary with ``--split``.)
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")

MODES = {"complement, separate cap": {"no_interaction": "complement", "no_interaction_cap": "separate"},
         "complement, shared cap": {"no_interaction": "complement", "no_interaction_cap": "shared"},
         "same, shared cap": {"no_interaction": "same", "no_interaction_cap": "shared"}}
COLUMNS = ("interacting", "no_interaction", "full", "seen", "unseen", "ur5")


def measure(model: str, annotations: str, split: str | None, threads: int, top_k="saved") -> dict[str, dict]:
    """mode -> the :func:`synthetic_runs.evaluate_ground_truth_boxes` row (``by_verb_kind``) of ``model``;
    ``top_k``: triplets kept per image (``"saved"``: the model's own, ``None``: all)."""
    import torch

    from hoi_mllm.data import load_annotations
    from hoi_mllm.pipeline import HOIPipeline
    from synthetic_runs import evaluate_ground_truth_boxes

    torch.set_num_threads(threads)
    pipe = HOIPipeline.from_pretrained(model)
    test = load_annotations(annotations, pipe.recogniser.vocabulary)
    post = pipe.post_config if top_k == "saved" else replace(pipe.post_config, top_k=top_k)
    return {mode: evaluate_ground_truth_boxes(pipe.recogniser, test, split,
                                              post_config=replace(post, **settings),
                                              by_verb_kind=True)
            for mode, settings in MODES.items()}


def world_test_file(world: Path) -> str:
    """The test annotation file of a generated world folder (``instances_test.json``)."""
    test = world / "instances_test.json"
    if not (world / "world.json").is_file() or not test.is_file():
        raise SystemExit(f"--world {world}: no world.json and instances_test.json in it (a folder of hoi-mllm synth "
                         "or the demo's world/)")
    return str(test)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a saved pipeline folder (e.g. hoi_demo/finetune/final)")
    parser.add_argument("--world", default=None, help="the synthetic world folder the model was trained on")
    parser.add_argument("--annotations", default=None, help="instead of --world: a test annotation file")
    parser.add_argument("--split", default=None, help="the zero-shot split of Seen / Unseen (default: with --world, "
                        "the world's demo split; none with --annotations)")
    parser.add_argument("--top-k", default="saved", type=lambda v: v if v == "saved" else None if v == "all" else int(v),
                        help="triplets kept per image: saved (the model's own, default), all, or a number")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if (args.world is None) == (args.annotations is None):
        parser.error("give exactly one of --world and --annotations")
    if args.annotations:
        annotations, split = args.annotations, args.split
    else:
        from hoi_mllm.data.synthetic import DEFAULT_SPLIT

        annotations, split = world_test_file(Path(args.world)), args.split or DEFAULT_SPLIT
    rows = measure(args.model, annotations, split, args.threads, args.top_k)
    print(f"model {args.model}, test file {annotations}, split {split}, top-k {args.top_k}, ground-truth boxes (%)")
    print("| no-interaction score, cap | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for mode, row in rows.items():
        print(f"| {mode} | " + " | ".join("-" if row.get(c) is None else f"{row[c]:.2f}" for c in COLUMNS) + " |")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
