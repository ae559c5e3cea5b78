"""DA-HOI's recogniser parts one by one (issue 12): each arm a named set of config overrides, trained with the
same seed and steps on the synthetic world with HICO-DET's habits, evaluated on held-out images with
ground-truth boxes (Seen / Unseen / Full mAP and U-R@5), printed as one table.

Arms (``ARMS``; add one by name -> overrides): ``base`` is the synthetic recipe as it is; every other arm turns
one of DA-HOI's parts on over it (the real-data recipes have them all on):

    grounded       the grounded prompt (both boxes as text, the backbone family's convention)
    context        SAP's scene-context decoder (2 cross-attention layers over the whole grid)
    sap_branch     the second verb branch on SAP's pair feature, scores averaged over the two branches
    augment        flip, colour jitter, multi-scale resize and box-keeping crop
    shuffle        candidates shuffled in training
    frozen_merger  the vision-language merger frozen
    match_mean     the match embedding initialised at the mean input embedding
    sap_pretrain   DA-HOI's two stages: SAP trained alone first (``train.stage=sap``, ``--sap-steps``, once per
                   invocation), then loaded and frozen (``sap.pretrained``, ``sap.freeze: true``) in the joint run;
                   the synthetic recipe trains the vision tower and merger, so the frozen SAP reads a grid that
                   drifts from the one it was trained on (``sap_pretrain_fixed`` keeps both fixed)
    sap_pretrain_fixed  sap_pretrain with the vision tower and merger frozen too (``adapter.train_vision=false``,
                   ``adapter.train_projector=false``), as in DA-HOI's stage 2
    all            all of the above but the two SAP pre-training arms (as the README's table was measured)

    python benchmarks/dahoi_ablation.py --arms base grounded context --images 24 --test-images 8 --steps 2   # smoke
    python benchmarks/dahoi_ablation.py --images 400 --test-images 100 --steps 250 --output ablation.json
    python benchmarks/dahoi_ablation.py --arms base context --yolo-weights DEMO_OUTPUT/yolo/best.pt   # + YOLO boxes

``--yolo-weights`` evaluates every arm also on the boxes of an already trained YOLO (the full demo's: trained on
1,550 images of a seed-0 world of 256 pixels; on a 128-pixel world's 60 test images it covers 86 % of the
annotated pairs, 2026-12-03), as ``yolo_seen`` ... ``yolo_ur5`` and ``yolo_pair_recall``: training a YOLO per
world at this size gives boxes too poor to say anything (``training_targets.py --yolo``: Full 1.8).

What the synthetic world cannot show: it has no language prior (its verbs are names for poses), so the
grounded prompt's text and the match embedding's initialisation act on a tiny random LM only; its figures
fill the image, so augmentation's scales mean less than on photographs. SAP pre-training is not an arm: it is a
stage of its own, so its arms run that stage first.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")

from synthetic_runs import add_run_arguments, make_world  # noqa: E402  (beside this script)

R = "model.recogniser."
ARMS: dict[str, dict] = {
    "base": {},
    "grounded": {R + "grounded": True},
    "context": {R + "sap.context_layers": 2, R + "sap.context_heads": 4},
    "sap_branch": {R + "sap_branch": True, R + "branch_scores": "mean"},
    "augment": {"augment.flip": True, "augment.color_jitter": 0.4, "augment.scales": [128, 160, 192],
                "augment.crop": True},
    "shuffle": {R + "shuffle_candidates": True},
    "frozen_merger": {"adapter.train_projector": False},
    "match_mean": {R + "match_init": "mean"},
}
ARMS["all"] = {k: v for name, arm in ARMS.items() for k, v in arm.items()}
PRETRAINED = "<the SAP stage's sap.safetensors>"  # replaced by the path once the SAP stage has run
ARMS["sap_pretrain"] = {"sap.pretrained": PRETRAINED, "sap.freeze": True}
ARMS["sap_pretrain_fixed"] = ARMS["sap_pretrain"] | {"adapter.train_vision": False, "adapter.train_projector": False}
METRICS = ("seen", "unseen", "full", "ur5")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    add_run_arguments(p, images=400, test_images=100, steps=250, image_size=160)
    p.add_argument("--sap-steps", type=int, default=300, help="steps of the SAP stage of the sap_pretrain arms")
    p.add_argument("--yolo-weights", default=None, metavar="PT",
                   help="also evaluate every arm on the boxes of this trained YOLO (e.g. the full demo's "
                        "OUTPUT/yolo/best.pt), at the full demo's image size and score threshold")
    args = p.parse_args(argv)

    import torch

    from synthetic_runs import pretrain_sap, train_and_evaluate, yolo_spec

    torch.set_num_threads(args.threads)
    detectors = {"yolo": yolo_spec(args.yolo_weights)} if args.yolo_weights else None
    metrics = METRICS + (tuple(f"yolo_{m}" for m in METRICS + ("pair_recall",)) if detectors else ())
    rows = {}
    width = max(len(name) for name in ("arm", *args.arms)) + 2  # the arm column fits the longest name
    with tempfile.TemporaryDirectory() as tmp:
        world = make_world(args, Path(tmp) / "world")
        sap = None
        for name in args.arms:
            arm = ARMS[name]
            if PRETRAINED in arm.values():
                sap = sap or pretrain_sap(world, args.recipe, {}, Path(tmp) / "sap_stage", args.seed, args.sap_steps,
                                          args.threads)
                arm = {k: sap if v == PRETRAINED else v for k, v in arm.items()}
            rows[name] = train_and_evaluate(world, args.recipe, arm, Path(tmp) / f"run_{name}", args.seed,
                                            args.steps, args.threads, detectors)
            print(f"{name:<{width}}" + "  ".join(f"{m} {rows[name][m]}" for m in metrics)
                  + f"  ({rows[name]['train_seconds']} s)", flush=True)
    print(f"\nseed {args.seed}, {args.steps} steps, {args.images} training / {args.test_images} test images, "
          f"recipe {args.recipe}, ground-truth boxes" + (f" (yolo_*: {detectors['yolo']})" if detectors else "")
          + " (%):")
    print(f"  {'arm':<{width}}" + "".join(f"{m:>{max(8, len(m) + 2)}}" for m in metrics) + f"{'train s':>10}")
    for name, r in rows.items():
        print(f"  {name:<{width}}" + "".join(f"{'n/a' if r[m] is None else round(r[m], 2):>{max(8, len(m) + 2)}}"
                                      for m in metrics) + f"{r['train_seconds']:>10}")
    if args.output:
        from hoi_mllm.io import atomic_write_json

        atomic_write_json(args.output, {"settings": vars(args), "arms": {n: ARMS[n] for n in rows}, "sap_steps": args.sap_steps, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
