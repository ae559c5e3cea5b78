"""Evaluation speed at the real test-set size: HICO-DET (both settings) and V-COCO.

Builds predictions for every test image of ``../shared/data`` (HICO-DET 9,658 images, V-COCO
4,946), ``--per-image`` triplets each (default 100): noisy copies of the ground truth (boxes
jittered, some duplicated, random scores) plus random false triplets of valid classes. Writes them
as a predictions JSON, then times apart: parsing that file, and the evaluation (ground-truth
preparation, matching, accumulation and summary). Prints wall time, triplets/s, peak RSS and the
ratio to the aims of issue 5 (HICO-DET < 10 s, V-COCO < 5 s, one process < 4 GiB).

    python benchmarks/eval_speed.py [--data ../shared/data] [--per-image 100] [--seed 0]

Exits 0 (also when the data folder is absent: it says so).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

AIMS = {"hico-det": 10.0, "vcoco": 5.0}
RSS_AIM_GIB = 4.0


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def noisy_predictions(samples, vocab, per_image: int, rng: np.random.Generator):
    """Per image: each ground-truth triplet 1-3 times with jittered boxes, then random false triplets."""
    from hoi_mllm.predictions import PredictionsFile
    from hoi_mllm.records import HOITriplets

    images = []
    classes = np.asarray(vocab.classes, dtype=np.int64)  # [C, 2] (object, verb)
    for s in samples:
        pair, verbs, _ = s.triplets()
        has = s.pair_object[pair] >= 0
        pair, verbs = pair[has], verbs[has]
        w, h = s.image_size or (640, 480)
        copies = rng.integers(1, 4, size=pair.shape[0])
        rep = np.repeat(np.arange(pair.shape[0]), copies)[:per_image]
        boxes = np.asarray(s.boxes, dtype=np.float64)
        hb = boxes[s.pair_human[pair[rep]]]
        ob = boxes[s.pair_object[pair[rep]]]
        scale = lambda b: np.c_[b[:, 2] - b[:, 0], b[:, 3] - b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]]  # noqa: E731
        hb = hb + rng.normal(0, 0.08, hb.shape) * scale(hb)
        ob = ob + rng.normal(0, 0.08, ob.shape) * scale(ob)
        objs = np.asarray(s.labels)[s.pair_object[pair[rep]]]
        n_false = per_image - rep.shape[0]
        cls = classes[rng.integers(0, len(classes), n_false)]
        xy = rng.uniform(0, 1, (n_false, 2, 2)) * [w, h]
        wh = rng.uniform(0.05, 0.6, (n_false, 2, 2)) * [w, h]
        fb = np.concatenate([xy, np.minimum(xy + wh, [w, h])], axis=2)  # [n, 2, 4] human, object
        images.append(HOITriplets.create(
            np.r_[hb, fb[:, 0]], np.r_[ob, fb[:, 1]], np.r_[objs, cls[:, 0]], np.r_[verbs[rep], cls[:, 1]],
            np.r_[rng.uniform(0.2, 1.0, rep.shape[0]), rng.uniform(0.0, 0.8, n_false)], s.file_name, s.image_size))
    return PredictionsFile(vocab.name, images)


def measure(name: str, annotations: Path, per_image: int, rng: np.random.Generator, workdir: Path) -> dict:
    from hoi_mllm.data import load_annotations
    from hoi_mllm.eval import HICODetConfig, HICODetEvaluator, VCOCOEvaluator
    from hoi_mllm.predictions import read_predictions, write_predictions
    from hoi_mllm.prompts import load_vocabulary

    vocab = load_vocabulary(name)
    samples = load_annotations(annotations, vocab)
    preds = noisy_predictions(samples, vocab, per_image, rng)
    n = sum(len(im.scores) for im in preds.images)
    path = write_predictions(workdir / f"{name}_predictions.json", preds)
    del preds
    t0 = time.perf_counter()
    preds = read_predictions(path)
    parse_s = time.perf_counter() - t0
    out = {"name": name, "images": len(samples), "triplets": n, "file_mib": path.stat().st_size / 2**20,
           "parse_s": parse_s}
    t0 = time.perf_counter()
    if name == "hico-det":
        ev = HICODetEvaluator(samples, vocab, HICODetConfig(settings="both"))
        ev.update(preds)
        result = ev.compute()
        out["numbers"] = {s: r.summary["full"] for s, r in result.settings.items()}
    else:
        ev = VCOCOEvaluator(samples, vocab)
        ev.update(preds)
        result = ev.compute()
        out["numbers"] = {s: r.mean for s, r in result.scenarios.items()}
    out["eval_s"] = time.perf_counter() - t0
    if name == "hico-det":  # the same with a zero-shot split (adds Unseen/Seen and U-R@3/5/10)
        t0 = time.perf_counter()
        ev = HICODetEvaluator(samples, vocab, HICODetConfig(settings="both", split="rare_first"))
        ev.update(preds)
        ev.compute()
        out["eval_split_s"] = time.perf_counter() - t0
    out["peak_rss_gib"] = peak_rss_gib()
    return out


def main(argv: list[str] | None = None) -> int:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.environ.get("HOI_MLLM_SHARED_DATA", str(repo.parent / "shared" / "data")),
                        help="folder with hicodet/ and vcoco/ annotation files (default ../shared/data)")
    parser.add_argument("--per-image", type=int, default=100, help="predicted triplets per image (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = Path(args.data)
    files = {"hico-det": data / "hicodet" / "instances_test2015.json",
             "vcoco": data / "vcoco" / "instances_vcoco_test.json"}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        print(f"eval_speed: annotation files not found ({', '.join(missing)}); nothing measured")
        return 0
    rng = np.random.default_rng(args.seed)
    print(f"cpu cores: {os.cpu_count()}, python {sys.version.split()[0]}, numpy {np.__version__}")
    with tempfile.TemporaryDirectory(prefix="hoi_mllm_eval_speed_") as tmp:
        for name, path in files.items():
            r = measure(name, path, args.per_image, rng, Path(tmp))
            aim = AIMS[name]
            print(f"\n{name}: {r['images']} images, {r['triplets']:,} triplets, predictions JSON {r['file_mib']:.0f} MiB")
            print(f"  parse predictions file : {r['parse_s']:6.2f} s  ({r['triplets'] / r['parse_s']:,.0f} triplets/s)")
            print(f"  evaluate               : {r['eval_s']:6.2f} s  ({r['triplets'] / r['eval_s']:,.0f} triplets/s)"
                  f"  aim < {aim:.0f} s  ratio {r['eval_s'] / aim:.2f}")
            print(f"  parse + evaluate       : {r['parse_s'] + r['eval_s']:6.2f} s  ratio to aim "
                  f"{(r['parse_s'] + r['eval_s']) / aim:.2f}")
            if "eval_split_s" in r:
                print(f"  evaluate with a split  : {r['eval_split_s']:6.2f} s  (rare_first: + Unseen/Seen, U-R@3/5/10)"
                      f"  ratio {r['eval_split_s'] / aim:.2f}")
            print("  result (%)             : " + ", ".join(f"{k} {100 * v:.2f}" for k, v in r["numbers"].items()))
            print(f"  peak RSS so far        : {r['peak_rss_gib']:.2f} GiB  aim < {RSS_AIM_GIB:.0f} GiB  "
                  f"ratio {r['peak_rss_gib'] / RSS_AIM_GIB:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
