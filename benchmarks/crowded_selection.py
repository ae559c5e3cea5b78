"""Which pairs the language model sees on crowded images (issue 12, item 5): no cap, cap by detector score,
cap by SAP interactiveness (``pairs.proposal.select``), and the cap with DA-HOI's interactiveness gate, side by
side on one briefly trained tiny model (synthetic world with HICO-DET's habits, ground-truth boxes, every box
scored 1, so "by score" is the proposal order: the cap is arbitrary there, as on HICO-DET with ground truth).

Per arm: held-out Seen / Unseen / Full mAP, recognition seconds per image (the whole ground-truth-box
evaluation loop: encode, SAP first pass where used, language model, post-processing), pairs recognised per
image, and the share of annotated pairs left out (no kept pair covers it at IoU >= 0.5 on both boxes).

    python benchmarks/crowded_selection.py --images 24 --test-images 8 --steps 4          # smoke
    python benchmarks/crowded_selection.py --images 160 --test-images 60 --steps 200 --cap 8

What it can show: whether ranking by a *trained* interactiveness head keeps the annotated pairs a score cap
drops, and what the first pass costs. What it cannot: a briefly trained tiny head is weaker than DA-HOI's
pre-trained SAP on photographs, and the gate's 0.15 is calibrated for that head, not for this one.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")

from synthetic_runs import add_run_arguments, make_world  # noqa: E402  (beside this script)


def arms(cap: int, gate: float) -> dict:
    from hoi_mllm.pairs import PairProposalConfig

    return {"no cap": PairProposalConfig(max_pairs=None),
            f"cap {cap}, by score": PairProposalConfig(max_pairs=cap, select="score"),
            f"cap {cap}, by interactiveness": PairProposalConfig(max_pairs=cap, select="interactiveness"),
            f"cap {cap}, by interactiveness, gate {gate}": PairProposalConfig(
                max_pairs=cap, select="interactiveness", interactiveness_gate=gate)}


def annotated_left_out(recogniser, samples, pair_config) -> tuple[int, int]:
    """``(annotated pairs no kept pair covers, annotated pairs)`` over ``samples`` (ground-truth boxes)."""
    import torch
    from torchvision.ops import box_iou

    from hoi_mllm.detectors.ground_truth import MERGE_IOU
    from hoi_mllm.finetune.data import annotated_detections
    from hoi_mllm.pipeline import HOIPipeline
    from hoi_mllm.runner import items_from_samples

    pipe = HOIPipeline(None, recogniser, pair_config)
    lost = total = 0
    for sample, item in zip(samples, items_from_samples(samples)):
        image = item.load()
        dets = annotated_detections(sample, image.size, recogniser.vocabulary.name, MERGE_IOU)
        pairs, selection, _ = pipe.proposals(image, dets)
        kept = pairs[selection.index]
        annotated = [(h, o) for h, o in zip(sample.pair_human, sample.pair_object) if o >= 0]
        if not annotated:
            continue
        boxes = torch.as_tensor(sample.boxes, dtype=torch.float32)
        hb = boxes[[int(h) for h, _ in annotated]]
        ob = boxes[[int(o) for _, o in annotated]]
        total += len(annotated)
        if len(kept) == 0:
            lost += len(annotated)
            continue
        cover = torch.minimum(box_iou(hb, torch.as_tensor(kept.human_boxes).float()),
                              box_iou(ob, torch.as_tensor(kept.object_boxes).float()))  # [A, K]
        lost += int((cover.max(1).values < 0.5).sum())
    return lost, total


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_arguments(p, images=160, test_images=60, steps=200, image_size=128)
    p.add_argument("--cap", type=int, default=8, help="max_pairs of the capped arms (small: the world is not HICO-DET)")
    p.add_argument("--gate", type=float, default=0.15, help="interactiveness gate of the last arm (DA-HOI: 0.15)")
    args = p.parse_args(argv)

    import torch

    from hoi_mllm.data import load_annotations
    from hoi_mllm.finetune.evaluate import predict_ground_truth_boxes
    from hoi_mllm.pairs import dropped_pairs
    from hoi_mllm.pipeline import HOIPipeline
    from synthetic_runs import evaluate_ground_truth_boxes, train

    torch.set_num_threads(args.threads)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        world = make_world(args, Path(tmp) / "world")
        final_dir, cfg, seconds = train(world, args.recipe, {}, Path(tmp) / "run", args.seed, args.steps, args.threads)
        print(f"trained {args.steps} steps in {seconds:.1f} s", flush=True)
        rec = HOIPipeline.from_pretrained(final_dir).recogniser
        test = load_annotations(world.annotations["test"])
        predict_ground_truth_boxes(rec, test[:2], arms(args.cap, args.gate)["no cap"])  # warm-up
        for name, pair_config in arms(args.cap, args.gate).items():
            start = time.perf_counter()
            preds = predict_ground_truth_boxes(rec, test, pair_config)
            per_image = (time.perf_counter() - start) / len(test)
            row = evaluate_ground_truth_boxes(rec, test, cfg.data.split, pair_config)
            counts = dropped_pairs(preds)
            lost, total = annotated_left_out(rec, test, pair_config)
            row.update(seconds_per_image=round(per_image, 4),
                       pairs_per_image=round((counts["pairs_proposed"] - counts["pairs_gated"]
                                              - counts["pairs_capped"]) / len(test), 2),
                       proposed_per_image=round(counts["pairs_proposed"] / len(test), 2),
                       gated=counts["pairs_gated"], capped=counts["pairs_capped"],
                       annotated_left_out_pct=round(100.0 * lost / max(1, total), 2))
            rows[name] = row
            print(name, row, flush=True)
    base = rows["no cap"]["seconds_per_image"]
    print(f"\nseed {args.seed}, {args.steps} steps ({args.recipe}), {args.images} training / {args.test_images} test "
          f"images (habits hico, {args.image_size} px), ground-truth boxes; mAP in %:")
    print(f"  {'arm':<40}{'seen':>7}{'unseen':>8}{'full':>7}{'s/img':>8}{'x time':>8}{'pairs/img':>10}"
          f"{'annot. left out %':>19}")
    for name, r in rows.items():
        print(f"  {name:<40}{r['seen']:>7}{r['unseen']:>8}{r['full']:>7}{r['seconds_per_image']:>8}"
              f"{r['seconds_per_image'] / base:>8.2f}{r['pairs_per_image']:>10}{r['annotated_left_out_pct']:>19}")
    print(f"  proposed pairs per image: {rows['no cap']['proposed_per_image']}")
    if args.output:
        from hoi_mllm.io import atomic_write_json

        atomic_write_json(args.output, {"settings": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
