"""Merge the JSON files of ``benchmarks/gpu.sh`` into one ``gpu.json`` and print the table.

    python benchmarks/gpu_report.py OUT_FOLDER [--mode gpu|dry]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path


def _load(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder")
    p.add_argument("--mode", default="gpu", choices=("gpu", "dry"))
    args = p.parse_args(argv)
    out = Path(args.folder)
    stages = [json.loads(l) for l in (out / "stages.jsonl").read_text().splitlines()] if (out / "stages.jsonl").is_file() else []
    eval_log = out / "eval_speed.log"
    report = {
        "mode": args.mode, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpu": (out / "gpu_name.txt").read_text().strip() if (out / "gpu_name.txt").is_file() else None,
        "cpu_cores": os.cpu_count(), "stages": stages,
        "recognizer": _load(out / "recognizer.json"), "train_step": _load(out / "train_step.json"),
        "eval_speed": eval_log.read_text()[-6000:] if eval_log.is_file() else None,
    }
    tmp = out / ".gpu.json.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out / "gpu.json")

    print(f"\n== {args.mode} run, {report['date']}, {report['gpu'] or 'no GPU'} ==")
    rec = report["recognizer"]
    if rec:
        metric = rec["metric"]
        pairs = [str(n) for n in rec["pairs"]]
        res = rec["results"]
        print(f"recogniser, {rec['config']} {rec['dtype']} on {rec['device']}, {rec['image_side']}px image "
              f"({metric} ms per image; detector excluded unless noted)")
        print(f"{'':<28}" + "".join(f"{n + ' pairs':>12}" for n in pairs))
        for name in ("a-suffix", "a-prefix", "b-full", "b-per-pair", "t-shared"):
            if name in res:
                print(f"{name:<28}" + "".join(f"{1000 * res[name][n][metric]:>12.1f}" if n in res[name] else f"{'-':>12}"
                                              for n in pairs))
        if rec.get("detector_wall_s") is not None:
            d = rec["detector_wall_s"]
            print(f"{'a-suffix + ' + str(rec['detector']):<28}" + "".join(f"{1000 * (res['a-suffix'][n]['wall'] + d):>12.1f}"
                                                                      for n in pairs))
        print(f"{'ratio b-full / a-suffix':<28}" + "".join(f"{res['b-full'][n][metric] / res['a-suffix'][n][metric]:>11.1f}x"
                                                         for n in pairs))
        print(f"{'mean suffix tokens (suffix)':<28}" + "".join(f"{rec['mean_suffix_tokens']['suffix'][n]:>12.1f}" for n in pairs))
        if len(pairs) > 1:
            first, last = pairs[0], pairs[-1]
            print(f"{last} / {first} pairs cost (a-suffix): {res['a-suffix'][last][metric] / res['a-suffix'][first][metric]:.2f}x")
        if rec["device"].startswith("cuda"):
            print(f"{'peak GiB (a-suffix)':<28}" + "".join(f"{res['a-suffix'][n]['peak'] / 2**30:>12.2f}" for n in pairs))
    train = report["train_step"]
    if train:
        print(f"\ntraining step, {train['config']} {train['dtype']} on {train['device']}, {train['images']} images x "
              f"{train['pairs']} pairs, gradient checkpointing")
        print(f"{'method':<8}{'s/step':>10}{'peak GiB':>10}{'trainable':>14}{'suffix tok':>12}")
        for r in train["results"]:
            print(f"{r['method']:<8}{r['step_s']:>10.3f}{r['peak_bytes'] / 2**30:>10.2f}{r['trainable']:>14,}"
                  f"{r['mean_suffix_tokens']:>12.1f}")
    failed = [s for s in stages if s["rc"] != 0]
    for s in failed:
        print(f"stage {s['stage']} failed (rc {s['rc']}); see {out / (s['stage'] + '.log')}")
    print(f"\nwritten: {out / 'gpu.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
