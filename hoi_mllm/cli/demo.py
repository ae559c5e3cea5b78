"""``hoi-mllm demo [--output DIR] [--quick] [--force] [key=value ...]``: the whole system offline, with a report.

Generates the synthetic world, trains a small YOLO on it, fine-tunes the tiny recogniser, evaluates
it under three detectors with two baselines, and writes ``report.md`` / ``report.html``; prints the
table at the end. A rerun reuses every finished stage and resumes an interrupted one (see
:mod:`hoi_mllm.demo`).
"""
from __future__ import annotations

import time


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="the whole system offline on the synthetic world, with a report",
        description="Run the offline demo: (1) generate the synthetic world, (2) train a small YOLO on it, "
                    "(3) fine-tune the tiny recogniser (LoRA, two-stage matching), (4) evaluate it under the "
                    "ground-truth, trained-YOLO and jitter detectors beside random and prior-only baselines, "
                    "(5) write report.md and report.html. Each stage is recorded in OUTPUT/stage_<name>.json: "
                    "a rerun skips finished stages and resumes an interrupted one; --force redoes everything. "
                    "key=value pairs override the preset (e.g. train_images=800 yolo.epochs=5 "
                    "finetune.train.steps=300).")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the preset (dotted keys)")
    p.add_argument("--output", default="hoi_demo", help="output folder (default: ./hoi_demo)")
    p.add_argument("--quick", action="store_true", help="the quick preset: a smaller world and shorter training "
                                                        "(aim: under 3 minutes on 2 CPU cores)")
    p.add_argument("--force", action="store_true", help="redo every stage, even those already done")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--print-config", action="store_true", help="print the resolved demo settings and exit")
    p.set_defaults(func=run)


def run(args) -> int:
    import yaml

    from hoi_mllm.cli import CLIError, parse_key_values
    from hoi_mllm.demo import DiskSpaceError, demo_config, format_table, run_demo

    config = demo_config("quick" if args.quick else "full", parse_key_values(args.overrides, what="override"))
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    start = time.perf_counter()
    try:
        result = run_demo(config, args.output, force=args.force, progress=not args.quiet)
    except DiskSpaceError as exc:
        raise CLIError(str(exc)) from exc
    s = result.summary
    print()
    print(f"Results on {s['table']['images']} test images (mAP %, split {s['table']['split']}):")
    print(format_table(s))
    for aim in s["aims"]:
        state = {True: "reached", False: "NOT reached", None: "not measured"}[aim["reached"]]
        print(f"  aim: {aim['aim']}: {state} ({aim['measured']})")
    print(f"stage times total {s['total_seconds']:.1f} s; this command {time.perf_counter() - start:.1f} s")
    print(f"report: {result.output / 'report.md'} and {result.output / 'report.html'}")
    return 0
