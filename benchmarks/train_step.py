"""Training-step cost of LoRA, QLoRA and full fine-tuning of the same model, side by side.

One optimiser step of the real training path (:class:`hoi_mllm.finetune.step.TrainingStep`: SAP,
one packed forward over every pair's suffix with gradient checkpointing, two-stage matching, the
losses, backward, AdamW) on a batch of ``--images`` images with ``--pairs`` annotated
human-object pairs each, for

  lora   LoRA (rank 16, every linear layer of the LM) + SAP + projector, base in --dtype;
  qlora  the same adapters on 4-bit NF4 base weights (bitsandbytes, prepare_model_for_kbit_training);
  full   every weight of the LM, the projector and the vision encoder, + SAP.

Each method runs in its own process (a clean peak-memory count): on a GPU the peak of
``torch.cuda.max_memory_allocated`` over the timed steps; on a CPU the process's peak resident
memory (``ru_maxrss``, which includes building the model). The step time is the median of
``--steps`` timed steps after ``--warmup``; on a CPU the process CPU time is printed beside the
wall time and used for the ratios (robust to a shared machine). Ratios are against LoRA.

    python benchmarks/train_step.py                                        # CPU, tiny preset
    python benchmarks/train_step.py --config qwen2.5-vl-3b --device cuda   # GPU, the real 3B config

The base (a tiny preset, or ``qwen2.5-vl-3b``: random weights of the real Qwen2.5-VL-3B-Instruct
configuration) is written once to a temporary folder as a real-format checkpoint
(``python -m hoi_mllm.models.make_checkpoint``: shards, the real tokenizer, preprocessor config) and
every method loads it through ``load_backbone``, QLoRA in 4-bit. Candidates per pair are HICO-DET's
real lists for the pair's object; the mean suffix length in tokens of the packed rows is printed.
Weights are random: compute and memory do not depend on their values.

``--teacher`` adds the recipes' teacher (``teacher.kind: likelihood``, the frozen base in training-free
mode), as the trainer builds it: for LoRA the student's own backbone with the adapter disabled
(:func:`hoi_mllm.finetune.teacher.shares_base`; the extra memory is a frozen copy of the projector),
for QLoRA and full fine-tuning a second copy of the base (4-bit for QLoRA). Only every other pair is
then annotated, and the interactiveness threshold is 0, so each image has the recipes' maximum of
``matcher.top_k`` potential pairs for the teacher to score; its cache is cleared before every step
(the first epoch's cost: later epochs read the cached scores).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

METHODS = ("lora", "qlora", "full")
IMAGE_SIDE = 448


def save_base(config: str, folder: Path, dtype: torch.dtype) -> Path:
    """Write the base model of ``config`` (a tiny preset, or a real size such as ``qwen2.5-vl-3b``) to
    ``folder`` once, as a real-format checkpoint (``hoi_mllm.models.make_checkpoint``)."""
    from hoi_mllm.models.make_checkpoint import make_checkpoint

    if not (folder / "config.json").is_file():
        make_checkpoint(config, folder, dtype={torch.float32: "float32", torch.bfloat16: "bfloat16"}[dtype],
                        overwrite=True)
    return folder


def batch(vocab, images: int, pairs: int, seed: int = 0, every: int = 1):
    """``images`` random images, each with 4 persons x ``pairs / 4`` objects, every ``every``-th person-object
    pair annotated with one of its object's classes (``every`` 1: every proposal is a seen pair; 2: half are
    left for the second matching stage, i.e. potential pairs)."""
    from PIL import Image

    from hoi_mllm.data.sample import HOISample
    from hoi_mllm.finetune.data import annotated_detections
    from hoi_mllm.finetune.step import TrainItem

    rng = np.random.default_rng(seed)
    objects = [o for o in range(vocab.num_objects) if o != vocab.human_object]
    n_obj = max(1, pairs // 4)
    items = []
    for i in range(images):
        image = Image.fromarray(rng.integers(0, 256, (IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8))
        xy = rng.uniform(0, IMAGE_SIDE * 0.7, (4 + n_obj, 2))
        wh = rng.uniform(30, IMAGE_SIDE * 0.3, (4 + n_obj, 2))
        labels = np.array([vocab.human_object] * 4 + list(rng.choice(objects, n_obj)))
        h, o = np.meshgrid(np.arange(4), np.arange(4, 4 + n_obj), indexing="ij")
        h, o = h.ravel()[:pairs:every], o.ravel()[:pairs:every]
        classes = [(int(rng.choice(vocab.classes_for_object(int(labels[k])))),) for k in o]
        sample = HOISample(f"bench_{i}.png", (IMAGE_SIDE, IMAGE_SIDE), np.concatenate([xy, xy + wh], 1).astype(np.float32),
                           labels.astype(np.int64), h.astype(np.int64), o.astype(np.int64),
                           [(int(vocab.class_verbs[c[0]]),) for c in classes], classes)
        items.append(TrainItem(i, sample, image, annotated_detections(sample, image.size)))
    return items


def worker(args) -> dict:
    """One method in this process: build, warm up, time; return the measurements."""
    from hoi_mllm.finetune.config import AdapterConfig, LossConfig, MatcherConfig, OptimConfig, PairsConfig
    from hoi_mllm.finetune.model import apply_adapter, parameter_counts
    from hoi_mllm.finetune.step import TrainingStep
    from hoi_mllm.finetune.config import load_config
    from hoi_mllm.finetune.teacher import LikelihoodTeacher, NoTeacher, build_teacher, shares_base
    from hoi_mllm.finetune.trainer import make_optimizer
    from hoi_mllm.models.loading import load_backbone
    from hoi_mllm.models.recogniser import HOIRecogniser, RecogniserConfig
    from hoi_mllm.models.sap import SAPConfig
    from hoi_mllm.pairs import PairProposalConfig
    from hoi_mllm.prompts import load_vocabulary

    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    method = args.worker
    backbone = load_backbone(args.base, dtype=dtype, device_map=str(device),
                             quantization="4bit" if method == "qlora" else None)
    adapter = AdapterConfig(method="full" if method == "full" else "lora", rank=16, alpha=32, dropout=0.0,
                            train_projector=True, train_vision=method == "full")
    apply_adapter(backbone, adapter, quantized=method == "qlora", checkpointing=True)
    vocab = load_vocabulary("hico-det")
    rec = HOIRecogniser(backbone, vocab, RecogniserConfig(sap=SAPConfig(hidden_size=256))).train()
    suffix_lengths: list[int] = []
    run_packed = backbone.run_packed

    def spy(enc, embeds, lengths, *a, **k):  # record the rows' suffix lengths (tokens)
        suffix_lengths.extend(int(v) for v in lengths)
        return run_packed(enc, embeds, lengths, *a, **k)

    backbone.run_packed = spy
    pairs = PairsConfig(proposal=PairProposalConfig(max_pairs=None, human_human=False))
    teacher, teacher_kind = NoTeacher(vocab), "none"
    if args.teacher:
        # the zero-shot recipes' teacher for this method, by the trainer's own rule
        recipe = load_config("zero_shot", {"adapter.method": adapter.method,
                                           "model.quantization": "4bit" if method == "qlora" else None})
        if shares_base(recipe):
            teacher, teacher_kind = build_teacher(recipe.teacher, vocab, rec, share_base=True), "shared"
        else:
            copy = load_backbone(args.base, dtype=dtype, device_map=str(device), quantization=recipe.model.quantization)
            teacher, teacher_kind = LikelihoodTeacher(copy, vocab, recipe.teacher.temperature), "copy"
    matcher = MatcherConfig(interactiveness_threshold=0.0) if args.teacher else MatcherConfig()
    step = TrainingStep(rec, frozenset(range(vocab.num_classes)), pairs, matcher, LossConfig(), teacher)
    optimizer, _ = make_optimizer(rec, OptimConfig(lr=1e-4), 1000)
    items = batch(vocab, args.images, args.pairs, every=2 if args.teacher else 1)
    potential = 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if dtype == torch.bfloat16 else torch.autocast(
        device.type, enabled=False)
    times, cpu_times = [], []
    for i in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
            if i == args.warmup:
                torch.cuda.reset_peak_memory_stats()
        teacher._cache.clear()  # every image new to the teacher, as in the first epoch
        wall, cpu = time.perf_counter(), time.process_time()
        with autocast:
            terms = step(items)
        potential = int(terms.potential_pairs)
        terms.total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - wall)
            cpu_times.append(time.process_time() - cpu)
    counts = parameter_counts(rec)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"method": method, "step_s": float(np.median(times)), "cpu_s": float(np.median(cpu_times)),
            "peak_bytes": int(peak), "peak_kind": "cuda allocated" if device.type == "cuda" else "process RSS",
            "trainable": counts["trainable"], "total": counts["total"], "loss": float(terms.total.detach()),
            "pairs_per_step": int(terms.pairs), "teacher": teacher_kind, "potential_pairs": potential,
            "mean_suffix_tokens": float(np.mean(suffix_lengths)) if suffix_lengths else float("nan")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="tiny-qwen2.5-vl", help="tiny-qwen2.5-vl (default) or qwen2.5-vl-3b")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: float32 on cpu, bfloat16 on cuda)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of lora,qlora,full")
    p.add_argument("--images", type=int, default=8, help="images per step (default 8)")
    p.add_argument("--pairs", type=int, default=16, help="annotated pairs per image (default 16)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per method (median kept)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--teacher", action="store_true",
                   help="include the recipes' likelihood teacher (shared base for LoRA, a second copy otherwise)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--base", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        p.error(f"unknown method(s) {bad}; allowed: {', '.join(METHODS)}")
    results = []
    with tempfile.TemporaryDirectory(prefix="train_step_") as tmp:
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
        base = save_base(args.config, Path(tmp) / "base", dtype)
        for m in methods:
            cmd = [sys.executable, __file__, "--worker", m, "--base", str(base), "--device", args.device,
                   "--dtype", args.dtype, "--images", str(args.images), "--pairs", str(args.pairs),
                   "--steps", str(args.steps), "--warmup", str(args.warmup)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            if args.teacher:
                cmd.append("--teacher")
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                print(f"{m}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            results.append(json.loads(line[len("RESULT "):]))
    if not results:
        return 1
    cpu = not args.device.startswith("cuda")
    key = "cpu_s" if cpu else "step_s"
    ref = next((r for r in results if r["method"] == "lora"), results[0])
    print(f"training step: {args.config} on {args.device} ({args.dtype}), {args.images} images x {args.pairs} pairs, "
          f"gradient checkpointing, median of {args.steps} steps")
    print(f"{'method':<6} {'teacher':>7} {'potential':>9} {'wall s/step':>11} {'cpu s/step':>10} {'peak GiB':>9} "
          f"{'trainable':>13} {'time/LoRA':>9} {'mem/LoRA':>8} {'suffix tok':>10}  (peak = {results[0]['peak_kind']})")
    for r in results:
        print(f"{r['method']:<6} {r['teacher']:>7} {r['potential_pairs']:>9} {r['step_s']:>11.3f} {r['cpu_s']:>10.3f} "
              f"{r['peak_bytes'] / 2**30:>9.2f} {r['trainable']:>13,} {r[key] / ref[key]:>9.2f} "
              f"{r['peak_bytes'] / ref['peak_bytes']:>8.2f} {r['mean_suffix_tokens']:>10.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": args.config, "device": args.device, "dtype": args.dtype,
                                               "images": args.images, "pairs": args.pairs, "results": results},
                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
