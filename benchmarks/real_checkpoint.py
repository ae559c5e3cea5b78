"""A real-size checkpoint folder through the real loading path, on whatever device: time and memory.

Writes (once) ``--config`` as a real-format folder with ``python -m hoi_mllm.models.make_checkpoint``
(safetensors shards of random weights, the real tokenizer, preprocessor config, chat template),
then, in this process: ``load_backbone(DIR)`` (the code that loads a hub id), one image encoded,
``--pairs`` human-object pairs recognised in matching mode (shared prefix) and scored in
training-free mode. Prints the seconds of each stage, the prefix and mean suffix lengths in tokens
and the peak memory (process resident set on a CPU, ``max_memory_allocated`` on a GPU).

    python benchmarks/real_checkpoint.py --config qwen2.5-vl-3b --folder /tmp/qwen3b    # CPU, bf16
    python benchmarks/real_checkpoint.py --config tiny-qwen2.5-vl --folder /tmp/tiny --dtype float32

Weights are random: time and memory do not depend on their values.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="qwen2.5-vl-3b", help="a make_checkpoint config (qwen2.5-vl-3b, cpu-small, tiny-...)")
    p.add_argument("--folder", required=True, help="where the checkpoint is (written there if absent)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16", help="bfloat16 (default) or float32")
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--image-side", type=int, default=448, help="square test image side; also the pixel bound")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    from hoi_mllm.models.likelihood import LikelihoodScorer
    from hoi_mllm.models.loading import load_backbone
    from hoi_mllm.models.make_checkpoint import make_checkpoint
    from hoi_mllm.models.recogniser import HOIRecogniser
    from hoi_mllm.prompts import load_vocabulary

    sys.path.insert(0, str(Path(__file__).parent))
    from recognizer import OBJECTS, record_lengths  # noqa: E402  (same scene objects)

    from hoi_mllm.pairs import PairProposalConfig, propose_pairs
    from hoi_mllm.records import Detections
    from PIL import Image

    device = torch.device(args.device)
    figures: dict = {"config": args.config, "device": str(device), "dtype": args.dtype, "pairs": args.pairs}
    folder = Path(args.folder)
    t = time.perf_counter()
    if not (folder / "config.json").is_file():
        make_checkpoint(args.config, folder, dtype=args.dtype, overwrite=True)
        figures["write_s"] = time.perf_counter() - t
        print(f"  written in {figures['write_s']:.1f} s", flush=True)
    figures["folder_bytes"] = sum(f.stat().st_size for f in folder.iterdir())
    side = args.image_side
    t = time.perf_counter()
    backbone = load_backbone(str(folder), dtype=args.dtype, device_map=str(device),
                             min_pixels=side * side, max_pixels=side * side)
    figures["load_s"] = time.perf_counter() - t
    print(f"  loaded in {figures['load_s']:.1f} s, peak {peak_bytes(device) / 2**30:.2f} GiB", flush=True)
    figures["parameters"] = sum(q.numel() for q in backbone.model.parameters())
    vocab = load_vocabulary("hico-det")
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
    n_obj = max(1, args.pairs // 2)
    xy = rng.uniform(0, side * 0.7, (2 + n_obj, 2))
    wh = rng.uniform(30, side * 0.3, (2 + n_obj, 2))
    labels = [vocab.human_object] * 2 + [vocab.object_index(OBJECTS[i % len(OBJECTS)]) for i in range(n_obj)]
    dets = Detections.create(np.concatenate([xy, xy + wh], 1), np.full(2 + n_obj, 0.9), labels, (side, side))
    pairs = propose_pairs(dets, vocab.human_object, PairProposalConfig(max_pairs=args.pairs, human_human=False))
    rec = HOIRecogniser(backbone, vocab).eval()
    lengths = record_lengths(rec)
    scorer = LikelihoodScorer(backbone, vocab)
    with torch.no_grad():
        t = time.perf_counter()
        out = rec.recognise(image, pairs)
        figures["matching_s"] = time.perf_counter() - t
        print(f"  matching ({len(pairs)} pairs) in {figures['matching_s']:.1f} s", flush=True)
        t = time.perf_counter()
        scores = scorer(image, pairs, mode="cache")
        figures["training_free_s"] = time.perf_counter() - t
    figures["prefix_tokens"] = lengths[-1][0]
    figures["mean_suffix_tokens"] = float(np.mean(lengths[-1][1]))
    figures["pairs_run"] = len(pairs)
    figures["finite"] = bool(torch.isfinite(out.verb_logits[out.valid]).all())
    figures["peak_bytes"] = peak_bytes(device)
    figures["peak_kind"] = "cuda allocated" if device.type == "cuda" else "process RSS"
    del scores
    print(f"{args.config} ({figures['parameters'] / 1e9:.2f}B parameters, {args.dtype}, {device}), "
          f"folder {figures['folder_bytes'] / 2**30:.2f} GiB")
    for key in ("write_s", "load_s", "matching_s", "training_free_s"):
        if key in figures:
            print(f"  {key:<16} {figures[key]:8.1f} s")
    print(f"  {len(pairs)} pairs; prefix {figures['prefix_tokens']} tokens, suffix {figures['mean_suffix_tokens']:.1f} "
          f"tokens a row; peak {figures['peak_bytes'] / 2**30:.2f} GiB ({figures['peak_kind']}); "
          f"scores finite: {figures['finite']}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
