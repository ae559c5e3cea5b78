"""Training targets before and after issue 11: the earlier one-to-one rule against DA-HOI's union rule.

Two measurements, each printing the two rules side by side:

``shares FILE [FILE ...] [--split S]``
    on real annotation files used as stand-ins for training data, with ground-truth proposals:
    verbs a proposal should carry that its targets lose, proposals duplicating an annotated
    interacting pair trained as non-interacting, potential-pair slots on duplicates and self-pairs
    (:func:`hoi_mllm.finetune.targets_file.write_targets`, the trainer's own code)::

        python benchmarks/training_targets.py shares ../shared/data/hicodet/instances_test2015.json \\
            ../shared/data/vcoco/instances_vcoco_test.json

``train [--seeds 0 1 2] [--images N] [--test-images N] [--steps N] [--recipe R] [--habits hico] [--yolo]``
    on the synthetic world with HICO-DET's habits (``habits=hico``), the same seed and steps for both
    rules (``matcher.targets``): held-out Seen / Unseen / Full mAP and U-R@5 with ground-truth boxes
    (every annotated row's boxes, duplicates included, as the trainer's periodic evaluation takes
    them), per seed, then mean and spread (sample standard deviation) over the seeds. Torch threads
    are fixed (``--threads``, default 1) so that a run's numbers do not depend on the machine's cores.
    ``--yolo`` also trains the demo's quick YOLO on each seed's world and evaluates both rules on its boxes::

        python benchmarks/training_targets.py train --seeds 0 1 2 --images 1600 --test-images 300 \\
            --steps 1000 --recipe synthetic --image-size 256          # the demo's size: hours on 2 cores
        python benchmarks/training_targets.py train --seeds 0 --images 24 --test-images 8 --steps 2 \\
            --recipe synthetic_quick --image-size 128                 # the smoke setting (seconds)

Results are also written as JSON (``--output``, atomically).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")

RULES = ("one-to-one", "union")
# the arms of ``train --rules``: matcher.targets plus what else each changes
ARMS = {"one-to-one": {"matcher.targets": "one-to-one", "pairs.merge_duplicates": False},
        "union": {"matcher.targets": "union", "pairs.merge_duplicates": True},
        # the union rule with EoID's unknown mask off: unselected stage-two matches are interactiveness negatives
        "union-negatives": {"matcher.targets": "union", "pairs.merge_duplicates": True,
                            "matcher.unselected_matches": "negative"},
        # the union rule on the one-to-one arm's proposals: every annotated row's own boxes, duplicates unmerged
        "union-unmerged": {"matcher.targets": "union", "pairs.merge_duplicates": False}}
SHARE_KEYS = (("missing_verbs_share", "annotated verbs missing"),
              ("duplicates_not_interacting_share", "duplicates trained non-interacting"),
              ("potential_on_duplicates_share", "potential slots on duplicates / self-pairs"),
              ("positive_verbs_per_seen_proposal", "verbs per seen proposal"), ("seconds", "seconds"))
METRICS = ("seen", "unseen", "full", "ur5")


def shares(files: list[str], split: str | None) -> dict:
    from hoi_mllm.finetune.config import MatcherConfig
    from hoi_mllm.finetune.targets_file import write_targets

    out = {}
    for f in files:
        out[f] = {}
        for rule in RULES:
            with tempfile.TemporaryDirectory() as tmp:
                out[f][rule] = write_targets(f, tmp, split, matcher=MatcherConfig(targets=rule), progress=False).as_dict()
        print(f"\n{f}" + (f" (split {split})" if split else ""))
        print(f"  {'':<46}{RULES[0]:>12}{RULES[1]:>12}")
        for key, label in SHARE_KEYS:
            a, b = (out[f][r][key] for r in RULES)
            print(f"  {label:<46}{a:>12}{b:>12}")
    return out


def train_one(seed: int, rule: str, args, root: Path, yolo: dict) -> dict:
    """One rule trained on seed ``seed``'s world; with ``args.yolo`` also evaluated on the boxes of the demo's
    quick YOLO trained on that world (``yolo`` caches it per seed), as ``yolo_seen`` ... ``yolo_ur5``."""
    import torch

    from hoi_mllm.data.synthetic import generate_world
    from synthetic_runs import train_world_yolo, train_and_evaluate

    torch.set_num_threads(args.threads)
    world = generate_world(root / f"world_{seed}", args.images, args.test_images, seed, image_size=args.image_size,
                           progress=False, workers=1, habits=args.habits)
    overrides = dict(ARMS[rule])
    if args.yolo and seed not in yolo:
        yolo[seed] = train_world_yolo(world, root / f"yolo_{seed}", seed)
    row = train_and_evaluate(world, args.recipe, overrides, root / f"run_{seed}_{rule}", seed, args.steps,
                             args.threads, {"yolo": yolo[seed]} if args.yolo else None)
    return {"seed": seed, "rule": rule, **row}


def spread(values: list) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.2f} ± {sd:.2f}"


def train(args) -> dict:
    rows = []
    metrics = METRICS + tuple(f"yolo_{m}" for m in METRICS if args.yolo)
    yolo: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        rules = tuple(args.rules)
        for seed in args.seeds:
            for rule in rules:
                rows.append(train_one(seed, rule, args, Path(tmp), yolo))
                r = rows[-1]
                print(f"seed {seed} {rule:>10}: " + "  ".join(f"{m} {r[m]}" for m in metrics)
                      + f"  ({r['train_seconds']} s)", flush=True)
    print(f"\nmean ± sd over {len(args.seeds)} seed(s), {args.steps} steps, {args.images} training images "
          f"(yolo_*: on the boxes of the demo's quick YOLO trained on the same world):")
    print(f"  {'':<10}" + "".join(f"{r:>18}" for r in rules) + f"{'second - first':>18}")
    table = {}
    for m in metrics:
        by = {rule: [r[m] for r in rows if r["rule"] == rule] for rule in rules}
        diff = [b - a for a, b in zip(by[rules[0]], by[rules[1]]) if a is not None and b is not None] \
            if len(rules) > 1 else []
        table[m] = {rule: spread(v) for rule, v in by.items()} | {"difference": spread(diff)}
        print(f"  {m:<10}" + "".join(f"{table[m][r]:>18}" for r in rules) + f"{table[m]['difference']:>18}")
    return {"runs": rows, "summary": table}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("shares", help="target shares of real annotation files, both rules")
    s.add_argument("files", nargs="+")
    s.add_argument("--split", default=None)
    t = sub.add_parser("train", help="held-out mAP and U-R@5 after training with each rule, over seeds")
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    t.add_argument("--images", type=int, default=400)
    t.add_argument("--test-images", type=int, default=100)
    t.add_argument("--steps", type=int, default=250)
    t.add_argument("--image-size", type=int, default=160)
    t.add_argument("--recipe", default="synthetic_quick")
    t.add_argument("--habits", default="hico", choices=["hico", "clean"])
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--rules", nargs="+", default=list(RULES), choices=list(ARMS),
                   help="arms to train (the difference column: second minus first). union-negatives: the union rule "
                        "with unselected stage-two matches as interactiveness negatives (matcher.unselected_matches); "
                        "union-unmerged: the union rule on every annotated row's own boxes (pairs.merge_duplicates "
                        "false, as the one-to-one arm proposes)")
    t.add_argument("--yolo", action="store_true",
                   help="also train the demo's quick YOLO on each seed's world (hoi-mllm demo --quick's detector "
                        "settings) and evaluate both rules on its boxes (yolo_seen ... yolo_ur5)")
    for q in (s, t):
        q.add_argument("--output", default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    out = shares(args.files, args.split) if args.what == "shares" else train(args)
    if args.output:
        from hoi_mllm.io import atomic_write_json

        atomic_write_json(args.output, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
