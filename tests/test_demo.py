"""``hoi-mllm demo``: stage bookkeeping, disk space, the YOLO dataset, the report, CI's check, and a micro demo."""
from __future__ import annotations

import json
import math
import shutil
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from hoi_mllm.cli import main
from hoi_mllm.demo import DiskSpaceError, StageBook, check_disk_space, demo_config, write_report
from hoi_mllm.demo.check import check_report
from hoi_mllm.demo.config import YOLOTrainConfig, flatten
from hoi_mllm.demo.summary import evaluate_aims
from hoi_mllm.demo.yolo_training import model_yaml, write_yolo_dataset, yolo_label_rows

Usage = namedtuple("Usage", "total used free")


@pytest.fixture(autouse=True)
def _keep_threads():
    """The demo sets torch's (and ultralytics') CPU threads for its process; give other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- stage bookkeeping
class Work:
    """A stage function that writes ``out/<name>/a.txt`` (and can fail half way), counting its calls."""

    def __init__(self, root: Path, name: str = "work"):
        self.root, self.name, self.calls, self.fail = root, name, [], False

    def __call__(self, resume: bool):
        self.calls.append(resume)
        folder = self.root / self.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "partial.txt").write_text("half")
        if self.fail:
            raise KeyboardInterrupt
        (folder / "a.txt").write_text("done")
        return {"a": f"{self.name}/a.txt"}, {"count": len(self.calls)}


def test_stage_runs_records_and_is_skipped_when_valid(tmp_path):
    work = Work(tmp_path)
    first = StageBook(tmp_path).run("s", {"x": 1, "t": (1, 2)}, work, folders=("work",))
    assert not first.skipped and work.calls == [False]
    record = json.loads((tmp_path / "stage_s.json").read_text())
    assert record["params"] == {"x": 1, "t": [1, 2]} and record["outputs"] == {"a": "work/a.txt"}
    assert record["info"] == {"count": 1} and record["seconds"] >= 0
    assert not (tmp_path / "stage_s.partial.json").exists()
    again = StageBook(tmp_path).run("s", {"x": 1, "t": (1, 2)}, work, folders=("work",))
    assert again.skipped and work.calls == [False]  # not called again
    assert again.record.digest() == first.record.digest()


def test_stage_redone_with_force_or_other_params(tmp_path):
    work = Work(tmp_path)
    StageBook(tmp_path).run("s", {"x": 1}, work, folders=("work",))
    (tmp_path / "work" / "stale.txt").write_text("old")
    forced = StageBook(tmp_path, force=True).run("s", {"x": 1}, work, folders=("work",))
    assert not forced.skipped and not forced.resumed and work.calls == [False, False]
    assert not (tmp_path / "work" / "stale.txt").exists()  # a fresh run starts from an empty folder
    (tmp_path / "work" / "stale.txt").write_text("old")
    other = StageBook(tmp_path).run("s", {"x": 2}, work, folders=("work",))
    assert not other.skipped and not other.resumed and work.calls == [False, False, False]
    assert not (tmp_path / "work" / "stale.txt").exists()
    assert other.record.digest() != forced.record.digest()


def test_stage_rerun_when_an_output_is_missing(tmp_path):
    work = Work(tmp_path)
    first = StageBook(tmp_path).run("s", {"x": 1}, work, folders=("work",))
    (tmp_path / "work" / "a.txt").unlink()
    run = StageBook(tmp_path).run("s", {"x": 1}, work, folders=("work",))
    assert not run.skipped and run.resumed and work.calls == [False, True]
    assert run.record.digest() != first.record.digest()  # the stages after it will run again


def test_interrupted_stage_resumes_with_its_partial_work(tmp_path):
    work = Work(tmp_path)
    work.fail = True
    with pytest.raises(KeyboardInterrupt):
        StageBook(tmp_path).run("s", {"x": 1}, work, folders=("work",))
    assert not (tmp_path / "stage_s.json").exists()  # no record of an unfinished stage
    assert (tmp_path / "stage_s.partial.json").exists() and (tmp_path / "work" / "partial.txt").exists()
    work.fail = False
    seen = []
    resumed = StageBook(tmp_path).run("s", {"x": 1}, lambda r: (seen.append((tmp_path / "work" / "partial.txt").exists())
                                                               or work(r)), folders=("work",))
    assert resumed.resumed and seen == [True] and work.calls[-1] is True
    assert json.loads((tmp_path / "stage_s.json").read_text())["resumed"] is True
    # an interruption, then a run with other parameters: the partial work is thrown away
    other = Work(tmp_path, "other")
    other.fail = True
    with pytest.raises(KeyboardInterrupt):
        StageBook(tmp_path).run("t", {"x": 1}, other, folders=("other",))
    other.fail = False
    seen.clear()
    fresh = StageBook(tmp_path).run("t", {"x": 3}, lambda r: (seen.append((tmp_path / "other" / "partial.txt").exists())
                                                             or other(r)), folders=("other",))
    assert not fresh.resumed and seen == [False]


def test_stage_that_does_not_write_its_outputs_is_not_recorded(tmp_path):
    with pytest.raises(RuntimeError, match="without writing"):
        StageBook(tmp_path).run("s", {}, lambda r: ({"a": "nothing.txt"}, {}))
    assert not (tmp_path / "stage_s.json").exists()


def test_stage_never_removes_folders_it_did_not_write(tmp_path):
    (tmp_path / "out" / "work").mkdir(parents=True)
    (tmp_path / "out" / "work" / "mine.txt").write_text("the user's")
    (tmp_path / "keep").mkdir()
    with pytest.raises(ValueError, match="outside"):
        StageBook(tmp_path / "out", force=True).run("s", {}, Work(tmp_path / "out"), folders=("../keep",))
    with pytest.raises(ValueError, match="not written by this stage"):  # a folder of that name, no record
        StageBook(tmp_path / "out", force=True).run("s", {}, Work(tmp_path / "out"), folders=("work",))
    assert (tmp_path / "keep").is_dir() and (tmp_path / "out" / "work" / "mine.txt").exists()


def test_corrupt_record_is_ignored(tmp_path):
    work = Work(tmp_path)
    StageBook(tmp_path).run("s", {"x": 1}, work)
    (tmp_path / "stage_s.json").write_text("{truncated")
    assert StageBook(tmp_path).run("s", {"x": 1}, work).skipped is False


# --------------------------------------------------------------------------- disk space
def test_disk_space_error_names_folder_needed_and_free(tmp_path, monkeypatch):
    monkeypatch.setattr("hoi_mllm.demo.stages.shutil.disk_usage", lambda p: Usage(10**9, 10**9 - 5_000_000, 5_000_000))
    target = tmp_path / "not" / "yet"
    with pytest.raises(DiskSpaceError) as err:
        check_disk_space(target, 200_000_000)
    msg = str(err.value)
    assert str(target) in msg and "200.0 MB" in msg and "5.0 MB" in msg
    assert check_disk_space(target, 1_000_000) == 5_000_000


def test_demo_cli_stops_before_writing_images_when_the_disk_is_full(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("hoi_mllm.demo.stages.shutil.disk_usage", lambda p: Usage(10**9, 10**9, 1000))
    rc = main(["demo", "--quick", "--quiet", "--output", str(tmp_path / "demo")])
    err = capsys.readouterr().err
    assert rc == 1 and "not enough disk space" in err and str(tmp_path / "demo") in err
    assert not list((tmp_path / "demo").rglob("*.png")) and not (tmp_path / "demo" / "stage_world.json").exists()


def test_demo_config_overrides_and_errors():
    c = demo_config("quick", {"train_images": 12, "yolo.val_images": 4, "yolo.epochs": 1, "finetune.train.steps": 3})
    assert c.train_images == 12 and c.yolo.epochs == 1 and flatten(c.finetune) == {"train.steps": 3}
    assert c.recipe == "synthetic_quick" and demo_config().recipe == "synthetic"
    with pytest.raises(ValueError, match="yolo.epochs"):
        demo_config("full", {"yolo.epoch": 1})
    with pytest.raises(ValueError, match="allowed: full, quick"):
        demo_config("fast")
    with pytest.raises(ValueError, match="val_images"):
        demo_config("quick", {"train_images": 10})
    with pytest.raises(ValueError, match="multiple of 32"):
        YOLOTrainConfig(imgsz=100)


# --------------------------------------------------------------------------- YOLO dataset
def test_yolo_label_rows_are_normalised_cxcywh():
    rows = yolo_label_rows(np.array([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 200.0, 100.0]]), np.array([3, 0]), (200, 100))
    np.testing.assert_allclose(rows, [[3, 0.15, 0.4, 0.2, 0.4], [0, 0.5, 0.5, 1.0, 1.0]])


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    from hoi_mllm.data import load_annotations
    from hoi_mllm.data.synthetic import generate_world
    from hoi_mllm.prompts import load_vocabulary

    info = generate_world(tmp_path_factory.mktemp("world"), 10, 3, seed=2, image_size=128, progress=False, workers=1)
    vocab = load_vocabulary(info.vocabulary)
    return info, vocab, load_annotations(info.annotations["train"], vocab)


def test_world_as_yolo_dataset(small_world, tmp_path):
    _, vocab, samples = small_world
    data_yaml = write_yolo_dataset(samples, vocab.objects, tmp_path / "ds", val_images=3, seed=0)
    data = yaml.safe_load(data_yaml.read_text())
    assert data["names"] == dict(enumerate(vocab.objects))
    images = {p: sorted((tmp_path / "ds" / "images" / p).iterdir()) for p in ("train", "val")}
    assert len(images["train"]) == 7 and len(images["val"]) == 3
    for s in samples:
        part = next(p for p in images if (tmp_path / "ds" / "images" / p / s.file_name).exists())
        assert (tmp_path / "ds" / "images" / part / s.file_name).read_bytes() == s.path.read_bytes()
        text = (tmp_path / "ds" / "labels" / part / s.file_name.replace(".png", ".txt")).read_text()
        rows = np.array([[float(x) for x in line.split()] for line in text.splitlines()])
        w, h = s.image_size
        b = s.boxes.astype(np.float64)
        expected = np.stack([(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                             (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], 1)
        assert rows.shape == (len(s.labels), 5)
        np.testing.assert_array_equal(rows[:, 0], s.labels)
        np.testing.assert_allclose(rows[:, 1:], expected, atol=1e-6)
        assert (rows[:, 0] == vocab.human_object).any()  # persons are labelled too
    # the YOLO detector maps these class names back to the vocabulary one to one
    from hoi_mllm.detectors.yolo import yolo_class_table

    table = yolo_class_table(data["names"], vocab)
    assert table.tolist() == list(range(vocab.num_objects))
    with pytest.raises(ValueError, match="hold out"):
        write_yolo_dataset(samples, vocab.objects, tmp_path / "ds2", val_images=10)


def test_tiny_model_yaml_builds_with_the_world_classes(tmp_path):
    from hoi_mllm.demo.yolo_training import keep_torch_threads

    keep_torch_threads()
    from ultralytics import YOLO

    path = model_yaml(YOLOTrainConfig(width=0.125, max_channels=128), 8, tmp_path)
    model = YOLO(path)
    assert model.model.yaml["nc"] == 8
    # YOLOv8's layout, 1024 channels capped at 128 then x 0.125: 16 channels from P2 down
    assert [layer[3][0] for layer in model.model.yaml["backbone"]] == [8, 16, 16, 16, 16, 16, 16, 16, 16, 16]
    assert sum(p.numel() for p in model.model.parameters()) < 250_000  # yolov8n: 3.2 M
    # the same scale as ultralytics' own: yolov8n's layers and parameter count
    n = YOLO(model_yaml(YOLOTrainConfig(depth=0.33, width=0.25, max_channels=1024), 80, tmp_path))
    assert sum(p.numel() for p in n.model.parameters()) == sum(p.numel() for p in YOLO("yolov8n.yaml").model.parameters())
    assert model_yaml(YOLOTrainConfig(model="yolov8n.yaml"), 8, tmp_path) == "yolov8n.yaml"


# --------------------------------------------------------------------------- report and check
def _row(detector, scorer, unseen, seen, full, ur5=50.0):
    return {"detector": detector, "spec": detector, "scorer": scorer, "unseen": unseen, "seen": seen, "full": full,
            "ur5": ur5, "detector_ms": 1.0, "scorer_ms": 20.0, "triplets": 10, "predictions": None}


def fabricated_summary(folder: Path) -> dict:
    (folder / "report_files").mkdir(parents=True)
    (folder / "finetune").mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(folder / "finetune" / "loss_curve.png")
    Image.new("RGB", (60, 20), (10, 200, 10)).save(folder / "report_files" / "gallery_00.png")
    rows = [_row("ground truth", "recogniser", 50.0, 70.0, 66.0), _row("ground truth", "random", 10.0, 12.0, 11.5),
            _row("ground truth", "prior", 0.5, 40.0, 32.0), _row("trained YOLO", "recogniser", 40.0, 60.0, 56.0),
            _row("jitter", "recogniser", 30.0, 50.0, 46.0)]
    recall = [{"detector": d, "humans": 99.0, "objects": 98.0, "pairs": 97.0, "num_humans": 10, "num_objects": 10,
               "num_pairs": 20, "detections": 50, "images": 10} for d in ("ground truth", "trained YOLO", "jitter")]
    table = {"split": "uc_a", "images": 10, "rows": rows, "box_recall": recall}
    config = demo_config("quick").to_dict()
    return {"format": "hoi-mllm/demo-report", "version": 1, "preset": "quick", "config": config,
            "machine": {"cpus": 2, "cpus_usable": 2, "cpu_model": "test cpu", "torch": torch.__version__,
                        "torch_threads": 1, "python": "3", "platform": "test", "load_average": [1.0, 1.0, 1.0]},
            "world": {"counts": {"train": {"images": 20}, "test": {"images": 10}}, "split": "uc_a", "classes": 45,
                      "unseen_classes": ["kick cup"], "objects": [], "verbs": [], "image_size": 256},
            "stages": [{"name": "world", "seconds": 1.0, "finished": "", "load_average_before": [1.0, 1.0, 1.0]},
                       {"name": "report", "seconds": 0.5, "finished": None, "load_average_before": None}],
            "total_seconds": 1.5, "table": table,
            "yolo": {"val_metrics": {"mAP50": 90.0}, "epochs": 1, "seconds": 1.0, "train_images": 15,
                     "val_images": 5, "resumed": False, "config": config["yolo"]},
            "finetune": {"recipe": "synthetic_quick", "steps": 3, "images": 24, "seconds": 2.0,
                         "images_per_second": 12.0, "parameters": {"trainable": 5, "total": 10},
                         "eval": {"full": 60.0, "seen": 61.0, "unseen": 55.0}},
            "loss_curve": "finetune/loss_curve.png",
            "gallery": [{"file_name": "synth_test_000000.png", "path": "report_files/gallery_00.png", "unseen": True,
                         "panels": {"ground truth": ["kick cup 1.00"]}}],
            "aims": evaluate_aims(table, 1.5, 180.0, "quick")}


def test_report_md_and_html_hold_the_table_and_images(tmp_path):
    summary = fabricated_summary(tmp_path)
    paths = write_report(summary, tmp_path)
    md, page = paths["md"].read_text(), paths["html"].read_text()
    assert "| ground truth | recogniser (fine-tuned) | 50.00 | 70.00 | 66.00 | 50.00 |" in md
    assert "| trained YOLO | recogniser (fine-tuned) | 40.00 | 60.00 | 56.00 |" in md
    assert "](finetune/loss_curve.png)" in md and "](report_files/gallery_00.png)" in md
    assert "<th>Full mAP</th>" in page and "<td>66.00</td>" in page
    assert page.count("src='data:image/png;base64,") == 2 and "src='finetune" not in page  # self-contained
    assert "kick cup" in md and "reached" in md and "test cpu" in page
    assert json.loads(paths["json"].read_text())["table"]["rows"][0]["full"] == 66.0
    assert check_report(tmp_path) == []


def test_aims_compare_measurements_with_the_issue():
    table = {"rows": [_row("ground truth", "recogniser", 45.0, 62.0, 58.0), _row("ground truth", "prior", 20.0, 50.0, 45.0),
                      _row("trained YOLO", "recogniser", 30.0, 45.0, 42.0)]}
    aims = {a["aim"].split(":")[0] + str(i): a["reached"] for i, a in enumerate(evaluate_aims(table, 200.0, 180.0, "quick"))}
    assert list(aims.values()) == [False, True, True, True, False]  # 200 s > 180; 45 >= 43.4; 45 >= 40; gap 16 > 15
    missing = evaluate_aims({"rows": []}, 10.0, 180.0, "quick")
    assert [a["reached"] for a in missing] == [True, None, None, None, None]
    resumed = evaluate_aims({"rows": []}, 10.0, 180.0, "quick", resumed=True)[0]
    assert resumed["reached"] is None and "--force" in resumed["measured"]


def test_check_fails_on_missing_files_non_finite_numbers_and_chance(tmp_path, capsys):
    from hoi_mllm.demo.check import main as check_main

    summary = fabricated_summary(tmp_path)
    write_report(summary, tmp_path)
    assert check_main([str(tmp_path)]) == 0 and "OK" in capsys.readouterr().out
    doc = json.loads((tmp_path / "report.json").read_text())
    doc["table"]["rows"][3]["seen"] = None
    doc["table"]["rows"][1]["full"] = 70.0  # random above the recogniser
    (tmp_path / "report.json").write_text(json.dumps(doc))
    problems = check_report(tmp_path)
    assert any("seen is None" in p for p in problems) and any("not above the random" in p for p in problems)
    (tmp_path / "report.json").write_text(json.dumps(doc).replace("null", "NaN"))
    assert any("nan" in p for p in check_report(tmp_path))
    (tmp_path / "report.html").unlink()
    assert check_main([str(tmp_path)]) == 1
    assert "report.html is missing" in capsys.readouterr().err


# --------------------------------------------------------------------------- end to end
MICRO = ["train_images=14", "test_images=4", "yolo.epochs=1", "yolo.val_images=4", "yolo.batch=8", "yolo.imgsz=128",
         "image_size=128", "finetune.train.steps=2", "finetune.data.val_images=4", "finetune.train.log_every=1",
         "finetune.train.checkpoint_every=0", "gallery=2"]


@pytest.mark.slow
def test_micro_demo_end_to_end_through_the_cli(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--quiet", "--output", str(out), *MICRO]) == 0
    printed = capsys.readouterr().out
    assert "ground truth" in printed and "trained YOLO" in printed and "jitter" in printed and "Full mAP" in printed
    for name in ("report.md", "report.html", "report.json", "yolo/best.pt", "finetune/final/config.json",
                 "finetune/loss_curve.png", "report_files/gallery_01.png", "evaluate/cross_detector.json"):
        assert (out / name).exists(), name
    summary = json.loads((out / "report.json").read_text())
    rows = summary["table"]["rows"]
    assert {(r["detector"], r["scorer"]) for r in rows} == {
        (d, s) for d in ("ground truth", "trained YOLO", "jitter") for s in ("recogniser", "random", "prior")}
    for r in rows:
        assert all(r[k] is None or math.isfinite(r[k]) for k in ("unseen", "seen", "full", "ur5"))
    gt = next(r for r in rows if r["detector"] == "ground truth" and r["scorer"] == "recogniser")
    assert all(math.isfinite(gt[k]) for k in ("unseen", "seen", "full"))
    assert [s["name"] for s in summary["stages"]] == ["world", "yolo", "finetune", "evaluate", "report"]
    assert len(summary["aims"]) == 5 and summary["machine"]["cpus"] >= 1
    records = {p.name: p.stat().st_mtime_ns for p in out.glob("stage_*.json")}
    assert len(records) == 5 and not list(out.glob("stage_*.partial.json"))
    # a rerun reuses every stage: nothing is recomputed, the same table is printed
    assert main(["demo", "--quick", "--quiet", "--output", str(out), *MICRO]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("stage_*.json")} == records
    assert printed.split("Results on")[1].split("aim:")[0] in capsys.readouterr().out
    # another evaluation setting redoes the evaluation and the report only
    shutil.copy(out / "stage_world.json", tmp_path / "world_before.json")
    assert main(["demo", "--quick", "--quiet", "--output", str(out), *MICRO, "missing_classes=zero"]) == 0
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("stage_*.json")}
    assert [n for n in sorted(after) if after[n] != records[n]] == ["stage_evaluate.json", "stage_report.json"]
