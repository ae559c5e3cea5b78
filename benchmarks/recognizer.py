"""Recogniser speed: one shared image prefix vs a full prompt per pair vs a pass per candidate.

Per-image time (vision encoding included) at 1, 4, 16 and 64 human-object pairs, measured side by
side in one run on one model with realistic token geometry (a 448 x 448 image: 16 x 16 = 256
visual tokens after Qwen's 2 x 2 merge) for:

  (a) one-pass deterministic matching over a shared, cached image prefix (the recogniser's
      inference path), both candidate placements: ``suffix`` (candidates after each pair's tokens)
      and ``prefix`` (candidates once per object class in the shared prefix), and ``a-grounded``:
      ``suffix`` with the grounded prompt (``RecogniserConfig.grounded``, DA-HOI's: each suffix opens
      with the person's and the object's boxes as text), beside the old one;
  (b) each pair with its own full prompt, pairs one at a time, same scores as (a)-suffix, two ways:
      ``b-full``: the whole prompt per pair, vision encoder included (a pair per forward, as DA-HOI's
      public code runs); ``b-per-pair``: the image encoded once and only the language-model prefix
      recomputed per pair (a stricter baseline: what sharing the prefix alone saves);
  (c) one forward pass per candidate phrase, each with the full prompt (generation-style
      likelihood scoring);
  and, for reference, (t) training-free likelihood scoring of every candidate over the shared prefix.

Methods run interleaved and the fastest of ``--repeats`` runs is kept; on a CPU the process CPU time
is reported beside the wall-clock time and used for the ratios (robust to a shared, busy machine). Prints the milliseconds per image, ratios (b)/(a) and (c)/(a), the cost of each additional pair
(least-squares slope), the largest score difference between (a) and (b), and on a GPU the peak
memory. Weights are random: compute does not depend on their values.

    python benchmarks/recognizer.py                                  # CPU: a small Qwen2.5-VL config
    python benchmarks/recognizer.py --config qwen2.5-vl-3b --device cuda --dtype bfloat16

Configs (``hoi_mllm.models.make_checkpoint.CONFIGS``, Qwen2.5-VL architecture): ``cpu-small``
(hidden 512, 6 layers) and ``qwen2.5-vl-3b`` (the real Qwen2.5-VL-3B-Instruct configuration: hidden
2048, 36 layers, 16 heads, 2 key-value heads, MLP 11008, vocabulary 151936, vision encoder of 32
layers of width 1280); or a tiny preset, or a checkpoint folder (``--config DIR``, e.g. one written
by ``python -m hoi_mllm.models.make_checkpoint``). The tokenizer is the real Qwen2.5-VL one
(``hoi_mllm.models.qwen_tokenizer``), so suffixes have the real model's token counts; candidates
per pair are HICO-DET's real candidate lists for the pair's object (the vocabulary's prior), and
the mean suffix length in tokens (pair tokens, question, candidates and match tokens) is printed.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import numpy as np
import torch

IMAGE_SIDE = 448
PATCH, MERGE = 14, 2
OBJECTS = ("bicycle", "cup", "horse", "chair", "skateboard", "umbrella", "motorcycle", "dining table")


def build_backbone(name: str, device: torch.device, dtype: torch.dtype):
    """A Qwen2.5-VL backbone adapter of config ``name`` with a 448 x 448 input size.

    ``name``: a size of ``hoi_mllm.models.make_checkpoint.CONFIGS`` (random weights, built in memory
    from the same config a ``make_checkpoint`` folder holds, with the real tokenizer and our tokens
    added as ``load_backbone`` adds them), a tiny preset, or a checkpoint folder (loaded by
    ``load_backbone``, the path of a hub id).
    """
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    from hoi_mllm.models.loading import load_backbone
    from hoi_mllm.models.make_checkpoint import CONFIGS, qwen25_config
    from hoi_mllm.models.qwen_tokenizer import qwen_tokenizer
    from hoi_mllm.models.qwen_vl import QwenVLBackbone
    from hoi_mllm.models.tokenizer import DEFAULT_NUM_PAIR_TOKENS, add_special_tokens

    pixels = IMAGE_SIDE * IMAGE_SIDE
    if name not in CONFIGS:  # a preset or a folder
        backbone = load_backbone(name, dtype=dtype, device_map=str(device), min_pixels=pixels, max_pixels=pixels)
        return backbone.eval()
    tokenizer = qwen_tokenizer("qwen2.5-vl")
    add_special_tokens(tokenizer, DEFAULT_NUM_PAIR_TOKENS)
    config = qwen25_config(name, tokenizer)
    with torch.device(device):
        torch.manual_seed(0)
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation="sdpa")
    size = {"shortest_edge": pixels, "longest_edge": pixels}
    image_processor = Qwen2VLImageProcessor(size=size, patch_size=PATCH, merge_size=MERGE, temporal_patch_size=2)
    video_processor = Qwen2VLVideoProcessor(size=size, patch_size=PATCH, merge_size=MERGE, temporal_patch_size=2)
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                                    chat_template=tokenizer.chat_template)
    return QwenVLBackbone(model.eval(), tokenizer, processor, DEFAULT_NUM_PAIR_TOKENS, name)


def record_lengths(recogniser) -> list:
    """Wrap ``recogniser._run`` to record the suffix lengths (tokens) of every row it runs."""
    seen: list = []
    run = recogniser._run

    def spy(enc, embeds, lengths, mode, **kwargs):
        seen.append((enc.length, [int(v) for v in lengths]))
        return run(enc, embeds, lengths, mode, **kwargs)

    recogniser._run = spy
    return seen


def scene(vocab, n_pairs: int):
    """A 448 x 448 image and its first ``n_pairs`` human-object pairs (8 persons x 8 objects of 8 classes)."""
    from PIL import Image

    from hoi_mllm.pairs import PairProposalConfig, propose_pairs
    from hoi_mllm.records import Detections

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8))
    xy = rng.uniform(0, IMAGE_SIDE * 0.7, (16, 2))
    wh = rng.uniform(30, IMAGE_SIDE * 0.3, (16, 2))
    labels = [vocab.human_object] * 8 + [vocab.object_index(o) for o in OBJECTS]
    dets = Detections.create(np.concatenate([xy, xy + wh], 1), rng.uniform(0.3, 1.0, 16), labels, (IMAGE_SIDE,) * 2)
    return image, propose_pairs(dets, vocab.human_object, PairProposalConfig(max_pairs=n_pairs, human_human=False))


def timed(fn, device: torch.device) -> tuple[dict, object]:
    """One call: ``({"wall", "cpu", "peak"}, result)``: wall seconds, CPU seconds of this process (all its
    threads: what the work costs, little affected by other processes on a shared machine), peak GPU bytes."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
            "peak": torch.cuda.max_memory_allocated() if cuda else None}, out


def slope(xs, ys) -> float:
    """Least-squares slope of ``ys`` over ``xs``: the cost of one more pair."""
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    return float(np.polyfit(x, y, 1)[0]) if len(x) > 1 else float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="cpu-small",
                        help="cpu-small, qwen2.5-vl-3b, qwen2.5-vl-7b, a tiny preset or a checkpoint folder")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                        help="default: float32 on CPU, bfloat16 on GPU")
    parser.add_argument("--pairs", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per cell (the fastest is kept), after a warm-up")
    parser.add_argument("--budget", type=float, default=10.0, help="a cell whose run takes longer runs once (seconds)")
    parser.add_argument("--skip-c", action="store_true", help="skip (c), the slowest")
    parser.add_argument("--c-max-pairs", type=int, default=None, help="run (c) only up to this many pairs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--metric", choices=("wall", "cpu"), default=None,
                        help="time the ratios use (default: process CPU time on CPU, wall-clock on GPU)")
    parser.add_argument("--yolo", default=None,
                        help="also time this YOLO detector on the image (e.g. yolov8x.pt, or yolov8x.yaml: random "
                             "weights, same compute) and print the per-image time with the detector included")
    parser.add_argument("--json", default=None, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)

    from hoi_mllm.models.likelihood import LikelihoodConfig, LikelihoodScorer
    from hoi_mllm.models.recogniser import HOIRecogniser, RecogniserConfig
    from hoi_mllm.prompts import load_vocabulary

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    vocab = load_vocabulary("hico-det")
    t0 = time.perf_counter()
    backbone = build_backbone(args.config, device, dtype)
    n_params = sum(p.numel() for p in backbone.model.parameters())
    print(f"config {args.config}: {n_params / 1e6:.0f}M parameters, {dtype}, {device}, built in "
          f"{time.perf_counter() - t0:.1f} s; torch threads {torch.get_num_threads()}")
    base = RecogniserConfig(max_pairs_per_pass=64)
    rec = {p: HOIRecogniser(backbone, vocab, replace(base, candidate_placement=p)).eval() for p in ("suffix", "prefix")}
    rec["grounded"] = HOIRecogniser(backbone, vocab, replace(base, grounded=True)).eval()
    per_pair = HOIRecogniser(backbone, vocab, replace(base, max_pairs_per_pass=1)).eval()  # same seed, same weights
    lengths = {p: record_lengths(r) for p, r in rec.items()}
    scorer_shared = LikelihoodScorer(backbone, vocab, LikelihoodConfig(max_rows_per_pass=256))
    scorer_each = LikelihoodScorer(backbone, vocab, LikelihoodConfig(max_rows_per_pass=1))

    methods = {
        "a-suffix": lambda im, pr: rec["suffix"].recognise(im, pr),
        "a-prefix": lambda im, pr: rec["prefix"].recognise(im, pr),
        "a-grounded": lambda im, pr: rec["grounded"].recognise(im, pr),
        "b-full": lambda im, pr: [per_pair(im, pr[[i]], mode="unshared") for i in range(len(pr))],
        "b-per-pair": lambda im, pr: per_pair(im, pr, mode="unshared"),
        "c-per-cand": lambda im, pr: scorer_each(im, pr, mode="unshared"),
        "t-shared": lambda im, pr: scorer_shared(im, pr, mode="cache"),
    }
    if args.skip_c:
        methods.pop("c-per-cand")
    image, pairs = scene(vocab, max(args.pairs))
    detector_s = None
    if args.yolo:
        from hoi_mllm.detectors import build_detector

        detector = build_detector("yolo", vocab, model=args.yolo, device=str(device))
        detector([image])  # warm-up
        detector_s = min(timed(lambda: detector([image]), device)[0]["wall"] for _ in range(max(args.repeats, 3)))
    with torch.no_grad():
        for fn in methods.values():  # warm-up
            fn(image, pairs[:2])
        results: dict[str, dict[int, dict]] = {m: {} for m in methods}
        diffs, rows = {}, {}
        prefix_len = {p: {} for p in rec}
        suffix_len = {p: {} for p in rec}
        for n in args.pairs:
            sub = pairs[: n]
            best: dict[str, dict] = {}
            outs: dict[str, object] = {}
            for r in range(args.repeats):  # methods interleaved, so background load hits all alike
                for name, fn in methods.items():
                    if name == "c-per-cand" and args.c_max_pairs is not None and n > args.c_max_pairs:
                        continue
                    if r and best[name]["wall"] > args.budget:
                        continue  # one run of a slow cell is enough
                    m, outs[name] = timed(lambda: fn(image, sub), device)
                    best[name] = {k: min(v, best[name][k]) if name in best and v is not None else v for k, v in m.items()}
            for name, m in best.items():
                results[name][n] = m
                print(f"  {name:<11} {n:>3} pairs: wall {1000 * m['wall']:9.1f} ms, cpu {1000 * m['cpu']:9.1f} ms",
                      file=sys.stderr, flush=True)
            for p in rec:  # the last run of this cell: its rows' suffix lengths and the prefix length
                prefix_len[p][n], suffix_len[p][n] = lengths[p][-1][0], float(np.mean(lengths[p][-1][1]))
            valid = outs["a-suffix"].valid
            diffs[n] = float((outs["a-suffix"].verb_logits - outs["b-per-pair"].verb_logits)[valid].abs().max())
            rows[n] = int(valid.sum())

    metric = args.metric or ("wall" if device.type == "cuda" else "cpu")
    print(f"\nper image ({IMAGE_SIDE}x{IMAGE_SIDE} image, 256 visual tokens); candidates = pair-candidate rows; "
          f"fastest of {args.repeats} (cells over {args.budget:g} s: one run)")
    for key, title in (("wall", "wall-clock ms"), ("cpu", "process CPU ms (all threads)")):
        if key == "cpu" and device.type == "cuda":
            continue
        print(f"\n{title}\n{'method':<12}" + "".join(f"{n:>10} pairs" for n in args.pairs) + f"{'per +1 pair':>14}")
        print(f"{'candidates':<12}" + "".join(f"{rows[n]:>16}" for n in args.pairs))
        for p in rec:
            print(f"{'len a-' + p:<12}" + "".join(f"{suffix_len[p][n]:>9.1f} tokens" for n in args.pairs)
                  + "   (mean per row; prefix " + ", ".join(f"{prefix_len[p][n]}" for n in args.pairs) + " tokens)")
        for name in methods:
            have = [n for n in args.pairs if n in results[name]]
            cells = [1000 * results[name][n][key] if n in results[name] else float("nan") for n in args.pairs]
            per_pair = slope(have, [1000 * results[name][n][key] for n in have])
            print(f"{name:<12}" + "".join(f"{c:>16.1f}" for c in cells) + f"{per_pair:>14.2f}")
    print(f"\nratios of {metric} time (higher: (a) is faster)")
    for a in ("a-suffix", "a-prefix"):
        for other in [m for m in ("b-full", "b-per-pair", "c-per-cand", "t-shared") if m in methods]:
            r = [results[other][n][metric] / results[a][n][metric] if n in results[other] else float("nan")
                 for n in args.pairs]
            print(f"{other + ' / ' + a:<26}" + "".join(f"{x:>10.1f}x" for x in r))
    for num, den in (("a-suffix", "a-prefix"), ("a-grounded", "a-suffix")):
        r = [results[num][n][metric] / results[den][n][metric] for n in args.pairs]
        print(f"{num + ' / ' + den:<26}" + "".join(f"{x:>10.2f}x" for x in r))
    print("\nlargest |score logit (a) - (b)|: " + ", ".join(f"{n} pairs {diffs[n]:.2e}" for n in args.pairs))
    if device.type == "cuda":
        print("\npeak GPU memory (GiB)")
        for name in methods:
            print(f"{name:<12}" + "".join(f"{results[name][n]['peak'] / 2**30:>16.2f}" if n in results[name]
                                          else f"{'-':>16}" for n in args.pairs))
    if detector_s is not None:
        print(f"\nwith the detector ({args.yolo}: {1000 * detector_s:.1f} ms wall per image) included, wall ms per image:")
        for name in ("a-suffix", "a-prefix", "b-full"):
            print(f"{name:<12}" + "".join(f"{1000 * (results[name][n]['wall'] + detector_s):>16.1f}" for n in args.pairs))
    if args.json:
        import json
        from pathlib import Path

        data = {"config": args.config, "device": str(device), "dtype": str(dtype).replace("torch.", ""),
                "parameters": n_params, "image_side": IMAGE_SIDE, "metric": metric, "pairs": args.pairs,
                "candidate_rows": rows, "detector": args.yolo, "detector_wall_s": detector_s,
                "mean_suffix_tokens": suffix_len, "prefix_tokens": prefix_len, "max_abs_logit_diff": diffs,
                "results": results, "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    if 16 in args.pairs:
        a16 = {a: results[a][16][metric] for a in ("a-suffix", "a-prefix")}
        for a, t in a16.items():
            msg = (f"aim at 16 pairs ({a}): (b)/(a) >= 4x: {results['b-full'][16][metric] / t:.1f}x full prompt, "
                   f"{results['b-per-pair'][16][metric] / t:.1f}x with the vision encoder shared")
            if 16 in results.get("c-per-cand", {}):
                msg += f"; (c)/(a) >= 20x: {results['c-per-cand'][16][metric] / t:.1f}x"
            print(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
