"""End-to-end ``detect`` speed (images/s): the runner with and without overlap, against a per-image loop.

Same pipeline (tiny preset recogniser; a YOLO detector built from ``yolov8n.yaml``: random weights,
real compute, ``score_threshold=0`` so it proposes boxes: untrained, it labels them all one class,
which is ``person`` in HICO-DET's order, so every image has human-human pairs to recognise), same
JPEG files, same run, three ways, interleaved, best of ``--repeats``:

  per-image   open an image, detect it alone, recognise it, next (no batching, no overlap);
  runner-0    :func:`hoi_mllm.runner.recognise` without prefetch: the detector batched, then the
              recogniser image by image (what ``detect`` did before the runner overlapped);
  runner-N    the same with ``prefetch=N``: a background thread decodes and detects the next
              images while the recogniser runs (``detect --prefetch N``).

Wall-clock time (overlap is a wall-clock gain); prints images/s of each and the ratios. The
predictions of the three are checked equal. On a shared 2-core machine the overlap has little idle
core to use; a GPU run (detector and recogniser on one device, decoding on the CPU) is where it pays.

    python benchmarks/pipeline.py                        # CPU, 16 images
    python benchmarks/pipeline.py --images 64 --device cuda
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_images(folder: Path, n: int, size: int, seed: int = 0) -> list[tuple[Path, str]]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        pixels = rng.integers(40, 200, size=(size, size, 3), dtype=np.uint8)
        for _ in range(4):
            x, y = rng.integers(0, size - 64, 2)
            w, h = rng.integers(32, 160, 2)
            pixels[y:y + h, x:x + w] = rng.integers(0, 255, 3, dtype=np.uint8)
        path = folder / f"im{i:03d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        out.append((path, path.name))
    return out


def per_image(pipe, files):
    from hoi_mllm.runner import open_image

    out = {}
    for path, name in files:
        image = open_image(path)
        dets = pipe.detector([image], [name])[0]
        out[name] = pipe.recognise_detections(image, dets, name)
    return out


def runner(pipe, files, prefetch):
    from hoi_mllm.runner import items_from_files, recognise

    return {it.name: t for it, _, t in recognise(pipe, items_from_files(files), prefetch=prefetch, timed=False)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--size", type=int, default=448, help="image side (pixels)")
    p.add_argument("--model", default="tiny-qwen2-vl")
    p.add_argument("--detector", default="yolo:model=yolov8n.yaml,imgsz=320,score_threshold=0.0,max_det=30,batch_size=4")
    p.add_argument("--max-pairs", type=int, default=16)
    p.add_argument("--prefetch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("YOLO_OFFLINE", "1")

    import torch

    from hoi_mllm.pipeline import load_pipeline

    torch.manual_seed(0)
    pipe = load_pipeline(args.model, detector=args.detector, device=args.device, max_pairs=args.max_pairs)
    with tempfile.TemporaryDirectory() as tmp:
        files = make_images(Path(tmp), args.images, args.size)
        ways = {"per-image": lambda: per_image(pipe, files), "runner-0": lambda: runner(pipe, files, 0),
                f"runner-{args.prefetch}": lambda: runner(pipe, files, args.prefetch)}
        runner(pipe, files[:2], 0)  # warm-up (allocation, kernels)
        best = {k: float("inf") for k in ways}
        results = {}
        for _ in range(args.repeats):
            for name, fn in ways.items():
                t0 = time.perf_counter()
                results[name] = fn()
                best[name] = min(best[name], time.perf_counter() - t0)
    ref = results["per-image"]
    for name, res in results.items():
        assert sorted(res) == sorted(ref), name
        for k in ref:
            assert np.allclose(res[k].scores, ref[k].scores, atol=1e-5), (name, k)
    pairs = np.mean([len(t) for t in ref.values()])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}, device {args.device}; {args.images} images {args.size}x{args.size}, "
          f"{args.detector}, {args.model}, max_pairs {args.max_pairs}; mean triplets/image {pairs:.1f}")
    base = best["per-image"]
    for name, seconds in best.items():
        print(f"{name:>12}: {args.images / seconds:6.2f} images/s  ({seconds:.2f} s; x{base / seconds:.2f} vs per-image)")
    r0 = best["runner-0"]
    print(f"overlap gain runner-{args.prefetch} / runner-0: x{r0 / best[f'runner-{args.prefetch}']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
