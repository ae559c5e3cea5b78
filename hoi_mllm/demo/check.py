"""``python -m hoi_mllm.demo.check DIR``: check a finished demo's report (what CI runs after the demo).

Passes (exit 0) when ``report.md``, ``report.html`` and ``report.json`` are in ``DIR``, every number
of the results table (Unseen / Seen / Full mAP, U-R@5 of every row) is present and finite, and the
recogniser's Full mAP on ground-truth boxes is above the random baseline's on the same boxes: a
check of honesty (the trained model beats chance), not a tuned threshold. Otherwise it prints each
problem and exits 1.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from hoi_mllm.demo.summary import GT, find_row

FILES = ("report.md", "report.html", "report.json")
NUMBERS = ("unseen", "seen", "full", "ur5")


def check_report(folder: str | Path) -> list[str]:
    """The problems found in the demo report in ``folder`` (empty: it passes)."""
    folder = Path(folder)
    problems = [f"{name} is missing from {folder}" for name in FILES if not (folder / name).is_file()]
    if (folder / "report.json").is_file():
        try:
            summary = json.loads((folder / "report.json").read_text())
            table = summary["table"]
            rows = table["rows"]
        except (ValueError, KeyError, TypeError) as exc:
            return problems + [f"report.json is not a demo report: {exc}"]
        if not rows:
            problems.append("the results table has no rows")
        for r in rows:
            for key in NUMBERS:
                v = r.get(key)
                if not isinstance(v, (int, float)) or not math.isfinite(v):
                    problems.append(f"{r.get('detector')} / {r.get('scorer')}: {key} is {v!r}, not a finite number")
        ours, chance = find_row(table, GT), find_row(table, GT, "random")
        if ours is None or chance is None:
            problems.append("the table lacks the recogniser or the random baseline on ground-truth boxes")
        elif all(isinstance(x, (int, float)) and math.isfinite(x) for x in (ours.get("full"), chance.get("full"))):
            if not ours["full"] > chance["full"]:
                problems.append(f"the recogniser's Full mAP on ground-truth boxes ({ours['full']:.2f}) is not above "
                                f"the random baseline's ({chance['full']:.2f})")
        for name in ("report.md", "report.html"):
            path = folder / name
            if path.is_file() and "Full mAP" not in path.read_text(errors="replace"):
                problems.append(f"{name} does not hold the results table")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hoi_mllm.demo.check", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="the demo's output folder")
    args = parser.parse_args(argv)
    problems = check_report(args.folder)
    if problems:
        for p in problems:
            print(f"demo check: FAIL: {p}", file=sys.stderr)
        return 1
    summary = json.loads((Path(args.folder) / "report.json").read_text())
    ours, chance = find_row(summary["table"], GT), find_row(summary["table"], GT, "random")
    print(f"demo check: OK: {len(summary['table']['rows'])} rows, all finite; recogniser Full mAP "
          f"{ours['full']:.2f} > random {chance['full']:.2f} on ground-truth boxes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
