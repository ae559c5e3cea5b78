"""Sharded ``detect`` over 2 CPU processes (gloo; the launcher ``accelerate launch --multi_gpu`` uses) equals one process;
resume per shard and after a change of process count; a shard of other settings is refused."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from test_detect_cli import SCENES, write_annotations

from hoi_mllm.cli import main
from hoi_mllm.predictions import PredictionsWriter, read_predictions

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def detect_args(images, annotations, out):
    return ["detect", str(images), "--model", "tiny-qwen2-vl", "--output", str(out), "--no-vis", "--top-k", "9",
            "--detector", "ground-truth", "--detector-option", f"annotations={annotations}"]


def launch(args, processes=2):
    # torch's elastic launcher, which `accelerate launch --multi_gpu` runs (on CPU accelerate's own launcher
    # starts one process); the processes meet through accelerate's PartialState over gloo
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_addr",
           "127.0.0.1", "--master_port", str(free_port()), "-m", "hoi_mllm", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def same(a, b):
    a, b = read_predictions(a), read_predictions(b)
    assert [im.file_name for im in a.images] == [im.file_name for im in b.images]
    for x, y in zip(a.images, b.images):
        assert np.array_equal(x.verbs, y.verbs) and np.array_equal(x.objects, y.objects)
        assert np.allclose(x.scores, y.scores, atol=1e-6) and np.allclose(x.human_boxes, y.human_boxes)


def test_two_processes_equal_one_and_resume_per_shard_and_after_a_count_change(tmp_path):
    images = tmp_path / "images"
    annotations = write_annotations(images)
    one = tmp_path / "one"
    assert main(detect_args(images, annotations, one)) == 0
    # 2 processes, from scratch
    two = tmp_path / "two"
    stdout = launch(detect_args(images, annotations, two))
    assert f"{len(SCENES)} images ({len(SCENES)} new, 2 processes)" in stdout
    same(one / "predictions.json", two / "predictions.json")
    same(one / "predictions.json", two / "predictions.jsonl")
    assert not (two / "shards").exists()  # merged, then removed
    # an interrupted earlier run: a shard of 2 processes with a torn last line, one of 3 processes
    done = read_predictions(one / "predictions.jsonl")
    by_name = done.by_file_name()
    resumed = tmp_path / "resumed"
    with PredictionsWriter(resumed / "shards" / "rank-0-of-2.jsonl", done.vocabulary, meta=done.meta) as w:
        w.write(by_name["two.jpg"])
    with open(resumed / "shards" / "rank-0-of-2.jsonl", "a") as f:
        f.write('{"file_name": "people.png", "hois": [{"human_b')
    with PredictionsWriter(resumed / "shards" / "rank-2-of-3.jsonl", done.vocabulary, meta=done.meta) as w:
        w.write(by_name["people.png"])
    stdout = launch(detect_args(images, annotations, resumed))
    assert f"{len(SCENES)} images (1 new, 2 processes)" in stdout  # only objects_only.jpg was left
    same(one / "predictions.json", resumed / "predictions.json")
    assert not (resumed / "shards").exists()


def test_a_shard_written_with_other_settings_is_refused(tmp_path, capsys):
    images = tmp_path / "images"
    annotations = write_annotations(images)
    out = tmp_path / "out"
    meta = {"settings": {"detector": "ground-truth", "top_k": 3}}
    with PredictionsWriter(out / "shards" / "rank-1-of-2.jsonl", "hico-det", meta=meta):
        pass
    assert main(detect_args(images, annotations, out)) == 1
    err = capsys.readouterr().err
    assert "rank-1-of-2.jsonl holds predictions made with other settings" in err and "top_k: 3 -> 9" in err
    assert (out / "shards" / "rank-1-of-2.jsonl").exists()  # nothing lost
    assert main(detect_args(images, annotations, out) + ["--force"]) == 0
    assert len(read_predictions(out / "predictions.json").images) == len(SCENES)
