"""Evaluation speed at the real test-set size: the whole ``hoi-mllm evaluate`` command, its parts, start-up.

Builds predictions for every test image of ``../shared/data`` (HICO-DET 9,658 images, V-COCO
4,946), ``--per-image`` triplets each (default 100): noisy copies of the ground truth (boxes
jittered, some repeated, random scores; for V-COCO also the role-less cases with an empty role box)
plus random false triplets of valid classes. Writes them as JSON and JSON Lines, then measures,
each in a fresh process so that times and peak memory are its own:

- parsing the file with the previous parser (``json.loads`` and arrays per image, as
  ``read_predictions`` did before issue 13) beside the current one (msgspec, columns), same run;
- the whole command (``python -m hoi_mllm evaluate ...``: start-up, annotations, parse, Default and
  Known-Object) for both files, against the aims of issue 13 (HICO-DET < 3 s, V-COCO < 1.5 s, peak
  memory < 1 GiB), with its parts timed inside one process (import, annotations, parse, evaluate; also
  with a zero-shot split and DA-HOI's protocol);
- start-up: ``hoi-mllm --help`` and every subcommand's ``--help`` (aim < 0.3 s).

Wall times depend on what else the machine runs; CPU times (user + system) less so: both are printed.

    python benchmarks/eval_speed.py [--data ../shared/data] [--per-image 100] [--seed 0] [--repeat 3]

Exits 0 (also when the data folder is absent: it says so).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

AIM_COMMAND_S = {"hico-det": 3.0, "vcoco": 1.5}
AIM_RSS_GIB = 1.0
AIM_HELP_S = 0.3


# ------------------------------------------------------------------------------ the predictions files
def noisy_predictions(samples, vocab, per_image: int, rng: np.random.Generator):
    """Per image: each ground-truth triplet 1-3 times with jittered boxes, then random false triplets."""
    from hoi_mllm.eval.inputs import ground_truth_predictions
    from hoi_mllm.predictions import PredictionsFile
    from hoi_mllm.records import HOITriplets

    images = []
    classes = np.asarray(vocab.classes, dtype=np.int64)  # [C, 2] (object, verb)
    oracle = ground_truth_predictions(samples, vocab).images
    for s, gt in zip(samples, oracle):
        keep = ~(gt.object_boxes == 0).all(1)  # triplets with a role box; the rest are V-COCO's role-less ones
        empty = gt[np.flatnonzero(~keep)] if (~keep).any() else None
        gt = gt[np.flatnonzero(keep)]
        w, h = s.image_size or (640, 480)
        rep = np.repeat(np.arange(len(gt)), rng.integers(1, 4, size=len(gt)))[:per_image]
        hb, ob = gt.human_boxes[rep], gt.object_boxes[rep]
        scale = lambda b: np.c_[b[:, 2] - b[:, 0], b[:, 3] - b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]]  # noqa: E731
        hb = hb + rng.normal(0, 0.08, hb.shape) * scale(hb)
        ob = ob + rng.normal(0, 0.08, ob.shape) * scale(ob)
        hb, ob = (np.c_[np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:])] for b in (hb, ob))
        parts = [(hb, ob, gt.objects[rep], gt.verbs[rep], rng.uniform(0.2, 1.0, rep.shape[0]))]
        if empty is not None:
            n = min(len(empty), per_image - rep.shape[0])
            parts.append((empty.human_boxes[:n], empty.object_boxes[:n], empty.objects[:n], empty.verbs[:n],
                          rng.uniform(0.2, 1.0, n)))
        n_false = per_image - sum(len(p[-1]) for p in parts)
        cls = classes[rng.integers(0, len(classes), n_false)]
        xy = rng.uniform(0, 1, (n_false, 2, 2)) * [w, h]
        wh = rng.uniform(0.05, 0.6, (n_false, 2, 2)) * [w, h]
        fb = np.concatenate([xy, np.minimum(xy + wh, [w, h])], axis=2)  # [n, 2, 4] human, object
        parts.append((fb[:, 0], fb[:, 1], cls[:, 0], cls[:, 1], rng.uniform(0.0, 0.8, n_false)))
        images.append(HOITriplets.create(*(np.concatenate([p[k] for p in parts]) for k in range(5)),
                                         s.file_name, s.image_size))
    return PredictionsFile(vocab.name, images)


def previous_read(path: Path) -> int:
    """The parser before issue 13: ``json`` to dicts, then a Python list and an array per field per image."""
    text = path.read_text()
    if path.suffix == ".jsonl":
        lines = text.splitlines()
        images = [json.loads(line) for line in lines[1:] if line.strip()]
    else:
        images = json.loads(text)["images"]
    n = 0
    for entry in images:
        hois = entry["hois"]
        hb = np.array([h["human_box"] for h in hois], dtype=np.float64).reshape(-1, 4)
        ob = np.array([h["object_box"] for h in hois], dtype=np.float64).reshape(-1, 4)
        objs = np.array([h["object"] for h in hois]).astype(np.int64)
        verbs = np.array([h["verb"] for h in hois]).astype(np.int64)
        scores = np.array([h["score"] for h in hois], dtype=np.float64)
        for arr in (hb, ob):
            np.isfinite(arr).all(1)
        n += int(scores.shape[0] + 0 * (objs.sum() + verbs.sum()))
    return n


# ------------------------------------------------------------------------------ measured in a child
def _child(kind: str, args: list[str]) -> dict:
    """Run one measurement in this (fresh) process; the parent reads the JSON it prints."""
    t0, c0 = time.perf_counter(), time.process_time()
    out: dict = {}
    if kind == "generate":  # the predictions files, made here so that the parent stays small (see run_command)
        from hoi_mllm.data import load_annotations
        from hoi_mllm.predictions import write_predictions
        from hoi_mllm.prompts import load_vocabulary

        name, annotations, folder, per_image, seed = args
        vocab = load_vocabulary(name)
        samples = load_annotations(annotations, vocab)
        preds = noisy_predictions(samples, vocab, int(per_image), np.random.default_rng(int(seed)))
        paths = {s: str(write_predictions(Path(folder) / f"{name}{s}", preds)) for s in (".json", ".jsonl")}
        out.update(images=len(samples), triplets=sum(len(im.scores) for im in preds.images), paths=paths)
    elif kind == "parse-previous":
        out["triplets"] = previous_read(Path(args[0]))
    elif kind == "parse-new":
        from hoi_mllm.predictions_reader import read_prediction_columns

        out["triplets"] = read_prediction_columns(args[0]).num_triplets
    elif kind == "parts":  # import, annotations, parse, evaluate, in one process
        name, annotations, predictions = args
        parts = {}
        start = time.perf_counter()
        from hoi_mllm.data import read_annotations
        from hoi_mllm.eval import HICODetConfig, HICODetEvaluator, VCOCOEvaluator
        from hoi_mllm.predictions_reader import read_prediction_columns

        parts["import"] = time.perf_counter() - start
        start = time.perf_counter()
        samples, _ = read_annotations(annotations, None, progress=False)
        parts["annotations"] = time.perf_counter() - start
        start = time.perf_counter()
        cols = read_prediction_columns(predictions)
        parts["parse"] = time.perf_counter() - start
        configs = ({"evaluate": HICODetConfig(), "evaluate, split rare_first": HICODetConfig(split="rare_first"),
                    "evaluate, DA-HOI protocol": HICODetConfig(protocol="da-hoi")} if name == "hico-det"
                   else {"evaluate": None})
        numbers = {}
        for label, config in configs.items():
            start = time.perf_counter()
            ev = HICODetEvaluator(samples, "hico-det", config) if name == "hico-det" else VCOCOEvaluator(samples)
            ev.update(cols)
            r = ev.compute()
            parts[label] = time.perf_counter() - start
            numbers[label] = ({k: 100 * s.summary["full"] for k, s in r.settings.items()} if name == "hico-det"
                              else {k: 100 * s.mean for k, s in r.scenarios.items()})
        out.update(parts=parts, numbers=numbers)
    out.update(wall_s=time.perf_counter() - t0, cpu_s=time.process_time() - c0,
               peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return out


def run_child(kind: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, *map(str, args)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_command(argv: list[str]) -> dict:
    """Wall, CPU (user + system) and peak RSS of a whole command, in a child process.

    Linux keeps a process's peak RSS across ``exec``, so a child's peak is at least its parent's:
    the parent of every measurement stays small (the files are made in a child of their own).
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, _, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read()
    proc.stderr.close()
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_gib": usage.ru_maxrss / 2**20,
            "log": err.strip().splitlines()[-1] if err.strip() else ""}


def best_of(n: int, fn, *args) -> dict:
    runs = [fn(*args) for _ in range(n)]
    return min(runs, key=lambda r: r["wall_s"])


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        print(json.dumps(_child(argv[1], argv[2:])))
        return 0
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.environ.get("HOI_MLLM_SHARED_DATA", str(repo.parent / "shared" / "data")),
                        help="folder with hicodet/ and vcoco/ annotation files (default ../shared/data)")
    parser.add_argument("--per-image", type=int, default=100, help="predicted triplets per image (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the fastest is shown")
    args = parser.parse_args(argv)
    data = Path(args.data)
    files = {"hico-det": data / "hicodet" / "instances_test2015.json",
             "vcoco": data / "vcoco" / "instances_vcoco_test.json"}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        print(f"eval_speed: annotation files not found ({', '.join(missing)}); nothing measured")
        return 0
    from hoi_mllm.cli import COMMANDS

    print(f"cpu cores: {os.cpu_count()}, python {sys.version.split()[0]}, numpy {np.__version__}, "
          f"best of {args.repeat} runs each; parent peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    helps = [["--help"]] + [[c, "--help"] for c in COMMANDS] + [["evaluate", p, "--help"] for p in ("hico-det", "vcoco")]
    print("\nstart-up (wall s, aim < 0.3):")
    for h in helps:
        r = best_of(args.repeat, run_command, [sys.executable, "-m", "hoi_mllm", *h])
        print(f"  hoi-mllm {' '.join(h):28s} {r['wall_s']:5.2f}  ratio {r['wall_s'] / AIM_HELP_S:.2f}")
    with tempfile.TemporaryDirectory(prefix="hoi_mllm_eval_speed_") as tmp:
        for name, annotation_file in files.items():
            made = run_child("generate", name, annotation_file, tmp, args.per_image, args.seed)
            paths = {s: Path(p) for s, p in made["paths"].items()}
            print(f"\n{name}: {made['images']} images, {made['triplets']:,} triplets; JSON {paths['.json'].stat().st_size / 2**20:.0f} MiB,"
                  f" JSON Lines {paths['.jsonl'].stat().st_size / 2**20:.0f} MiB")
            for suffix, path in paths.items():
                old = best_of(args.repeat, run_child, "parse-previous", path)
                new = best_of(args.repeat, run_child, "parse-new", path)
                print(f"  parse {suffix:6s} previous parser {old['wall_s']:5.2f} s wall / {old['cpu_s']:5.2f} s cpu, "
                      f"{old['peak_rss_gib']:.2f} GiB; now {new['wall_s']:5.2f} / {new['cpu_s']:5.2f} s, "
                      f"{new['peak_rss_gib']:.2f} GiB: {old['wall_s'] / new['wall_s']:.1f}x faster")
            aim = AIM_COMMAND_S[name]
            for suffix, path in paths.items():
                cmd = [sys.executable, "-m", "hoi_mllm", "evaluate", name, "--annotations", str(annotation_file),
                       "--predictions", str(path), "--no-progress"]
                r = best_of(args.repeat, run_command, cmd)
                print(f"  whole command, {suffix:6s}  {r['wall_s']:5.2f} s wall / {r['cpu_s']:5.2f} s cpu  aim < {aim} s:"
                      f" ratio {r['wall_s'] / aim:.2f} (cpu {r['cpu_s'] / aim:.2f}); peak {r['peak_rss_gib']:.2f} GiB,"
                      f" ratio {r['peak_rss_gib'] / AIM_RSS_GIB:.2f}")
            parts = best_of(args.repeat, run_child, "parts", name, annotation_file, paths[".json"])
            print("  its parts (one process, wall s): " + ", ".join(f"{k} {v:.2f}" for k, v in parts["parts"].items()))
            for label, numbers in parts["numbers"].items():
                print(f"  result, {label} (%): " + ", ".join(f"{k} {v:.2f}" for k, v in numbers.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
