"""Sharded ``evaluate cross-detector`` over 2 CPU processes (gloo) equals one process, and folds what an
interrupted sharded run of another process count left (those images are not redone)."""
from __future__ import annotations

import json
import shutil

import pytest
from test_sharded_detect import launch

from hoi_mllm.cli import main
from hoi_mllm.data.synthetic import generate_world

pytestmark = pytest.mark.slow
JITTER = "jitter:box_noise=0.2,seed=1"


def args_for(info, out):
    return ["evaluate", "cross-detector", "--model", "tiny-qwen2-vl", "--dataset", "hico-det", "--annotations",
            str(info.annotations["test"]), "--split", "uc_a", "--output", str(out), "--detectors", f"gt;{JITTER}",
            "--baselines", "random", "--missing-classes", "skip", "--no-progress", "--device", "cpu"]


def table(out):
    doc = json.loads((out / "cross_detector.json").read_text())
    keys = ("detector", "scorer", "images", "triplets", "full", "unseen", "seen", "unseen_recall")
    return [tuple(r[k] for k in keys) for r in doc["rows"]], doc


def test_two_processes_equal_one_and_fold_an_interrupted_runs_shards(tmp_path):
    info = generate_world(tmp_path / "world", 2, 7, seed=0, image_size=128, progress=False, workers=1)
    one = tmp_path / "one"
    assert main(args_for(info, one)) == 0
    rows, doc = table(one)

    two = tmp_path / "two"
    stdout = launch(args_for(info, two))
    assert stdout.count("wrote ") == 1  # process 0 alone reports
    rows2, doc2 = table(two)
    assert rows2 == rows
    assert [d["computed"] for d in doc2["detectors"]] == [7, 7]
    assert not list(two.glob("*/shards"))  # folded, then removed
    for folder in one.iterdir():
        if folder.is_dir():
            for name in ("detections.json",):
                a = json.loads((folder / name).read_text())
                b = json.loads((two / folder.name / name).read_text())
                assert sorted(a["images"], key=lambda e: e["file_name"]) == \
                    sorted(b["images"], key=lambda e: e["file_name"])

    # an interrupted run of 3 processes: its rank-2 shard of each detector holds 3 finished images
    resumed = tmp_path / "resumed"
    for folder in one.iterdir():
        if not folder.is_dir():
            continue
        shards = resumed / folder.name / "shards"
        shards.mkdir(parents=True)
        for log in folder.glob("*.jsonl"):
            lines = log.read_text().splitlines(keepends=True)
            (shards / f"{log.stem}-rank-2-of-3.jsonl").write_text("".join(lines[:4]))
    stdout = launch(args_for(info, resumed))
    rows3, doc3 = table(resumed)
    assert rows3 == rows
    assert [d["computed"] for d in doc3["detectors"]] == [4, 4]  # the 3 in the old shard were not redone
    shutil.rmtree(tmp_path / "world")
