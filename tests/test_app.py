"""The web app's session, without a browser: runs, the detector cache, text interactions, bad input."""
from __future__ import annotations

import json
import weakref

import pytest
from PIL import Image

from helpers import scene_image
from hoi_mllm.app.session import AppError, AppSession, parse_interaction_text, table_rows
from hoi_mllm.predictions_reader import read_predictions

PERSONS = [[10, 10, 60, 110], [120, 10, 170, 110]]
BICYCLE = [50, 60, 130, 118]


def _detections(path, name="photo.png", size=(192, 128)):
    doc = {"format": "hoi-mllm/detections", "version": 1, "vocabulary": "hico-det",
           "images": [{"file_name": name, "image_size": list(size), "boxes": PERSONS + [BICYCLE],
                       "scores": [0.95, 0.4, 0.9], "label_names": ["person", "person", "bicycle"]}]}
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("app")
    scene_image((192, 128), seed=1, boxes=PERSONS + [BICYCLE]).save(folder / "photo.png")
    return folder, _detections(folder / "dets.json")


@pytest.fixture(scope="module")
def session(files):
    folder, dets = files
    return AppSession("tiny-qwen2-vl", [f"file:path={dets}", f"file:path={folder / 'missing.json'}"], device="cpu",
                      output_dir=folder / "out")


def test_a_run_gives_picture_rows_and_a_predictions_file(session, files):
    folder, _ = files
    out = session.run(str(folder / "photo.png"), top_k=100)
    w, h = out.picture.size  # drawn on a copy (small pictures are enlarged to fit the labels)
    assert w >= 192 and abs(w / h - 1.5) < 0.02
    assert out.rows and all(len(r) == 4 for r in out.rows)
    scores = [r[3] for r in out.rows]
    assert scores == sorted(scores, reverse=True)
    assert {r[0] for r in out.rows} <= {"person 1", "person 2"}
    assert any(r[2] == "bicycle 1" for r in out.rows)
    assert out.choices == sorted({r[1] for r in out.rows})
    predictions = read_predictions(out.predictions_path)  # the evaluators' reader accepts it
    assert predictions.vocabulary == "hico-det" and predictions.images[0].file_name == "photo.png"
    assert len(predictions.images[0]) == len(out.rows)
    # thresholds: the detector threshold drops the 0.4 person, top-k and the triplet threshold cut the table
    fewer = session.run(str(folder / "photo.png"), score_threshold=0.5, top_k=100)
    assert {r[0] for r in fewer.rows} == {"person 1"} and len(fewer.rows) < len(out.rows)
    assert len(session.run(str(folder / "photo.png"), top_k=3).rows) == 3
    cut = session.run(str(folder / "photo.png"), top_k=100, triplet_threshold=scores[len(scores) // 2])
    assert 0 < len(cut.rows) < len(out.rows) and min(r[3] for r in cut.rows) >= scores[len(scores) // 2] - 1e-4


def test_text_interactions_are_added_and_removed(session, files):
    folder, _ = files
    out = session.run(str(folder / "photo.png"), top_k=100, score_threshold=0.5, interactions="admire bicycle\n")
    assert out.added and "admire bicycle" in out.choices
    assert "added interaction: 'admire bicycle'" in out.message
    assert read_predictions(out.predictions_path).vocabulary == "hico-det+1"
    plain = session.run(str(folder / "photo.png"), top_k=100, score_threshold=0.5, interactions="")
    assert session.vocabulary.name == "hico-det" and "admire bicycle" not in plain.choices
    reused = session.run(str(folder / "photo.png"), top_k=5, interactions="ride bicycle")
    assert not reused.added and "reused" in reused.message


def test_an_unknown_object_is_a_message_and_the_session_goes_on(session, files):
    folder, _ = files
    with pytest.raises(AppError, match="close names: giraffe"):
        session.run(str(folder / "photo.png"), interactions="feed giraff")
    assert session.vocabulary.name == "hico-det"
    with pytest.raises(AppError, match="needs a verb and an object"):
        session.run(str(folder / "photo.png"), interactions="bicycle")
    assert session.run(str(folder / "photo.png"), top_k=5).rows


def test_bad_uploads_are_messages(session, tmp_path, files):
    text = tmp_path / "notes.png"
    text.write_text("not a picture at all")
    with pytest.raises(AppError, match="'notes.png' is not an image"):
        session.run(str(text))
    with pytest.raises(AppError, match="no picture"):
        session.run(None)
    with pytest.raises(AppError, match="not a file"):
        session.run(str(tmp_path / "gone.jpg"))
    with pytest.raises(AppError, match="top-k must be >= 1"):
        session.run(str(files[0] / "photo.png"), top_k=0)
    with pytest.raises(AppError, match="from 0 to 1"):
        session.run(str(files[0] / "photo.png"), score_threshold=1.5)


def test_a_huge_image_is_refused_before_decoding(session, tmp_path):
    huge = tmp_path / "huge.png"
    Image.new("1", (12000, 12000)).save(huge)  # 144 MP, a few kB on disk
    with pytest.raises(AppError, match=r"12000x12000 pixels \(144 MP\), more than the 40 MP"):
        session.run(str(huge))


def test_a_large_image_is_downscaled_and_said(files, tmp_path):
    folder, _ = files
    small = AppSession("tiny-qwen2-vl", [f"file:path={_detections(tmp_path / 'd.json', 'wide.png', (300, 200))}"],
                       device="cpu", output_dir=tmp_path / "out", max_side=150)
    scene_image((300, 200), seed=2).save(tmp_path / "wide.png")
    image, name, note = small.open_upload(tmp_path / "wide.png")
    assert image.size == (150, 100) and name == "wide.png" and "downscaled to 150x100" in note


def test_a_detector_that_fails_to_load_is_a_message_and_one_detector_is_kept(session, files):
    folder, dets = files
    session.run(str(folder / "photo.png"), top_k=5)
    first = weakref.ref(session.detector(f"file:path={dets}"))
    assert session.detector(f"file:path={dets}") is first()  # cached
    with pytest.raises(AppError, match="failed to load"):
        session.run(str(folder / "photo.png"), detector=f"file:path={folder / 'missing.json'}")
    assert session.loaded_detector is None and first() is None  # the old one was dropped before building
    with pytest.raises(AppError, match="not offered"):
        session.run(str(folder / "photo.png"), detector="yolo")
    assert session.run(str(folder / "photo.png"), top_k=5).rows  # and the app goes on
    assert session.loaded_detector == f"file:path={dets}"


def test_a_spec_that_does_not_parse_fails_at_start():
    with pytest.raises(ValueError, match="yolo"):
        AppSession("tiny-qwen2-vl", ["yolo:model"], device="cpu")
    with pytest.raises(ValueError, match="at least one detector"):
        AppSession("tiny-qwen2-vl", [], device="cpu")


def test_parse_interaction_text_and_rows():
    assert parse_interaction_text("feed giraffe\n\n  polish car, motorcycle  # two objects\n#x\n") == [
        "feed giraffe", "polish car, motorcycle"]
    assert parse_interaction_text(None) == []
    assert table_rows.__doc__


def test_cli_app_checks_its_arguments(capsys):
    from hoi_mllm.cli import main

    assert main(["app", "--model", "tiny-qwen2-vl", "--port", "0"]) == 1
    assert "--port must be from 1 to 65535" in capsys.readouterr().err
    assert main(["app", "--model", "tiny-qwen2-vl", "--detector", "nope"]) == 1
    assert "nope" in capsys.readouterr().err


def test_the_space_entry_reads_its_settings_from_the_environment(monkeypatch):
    import importlib.util

    from conftest import REPO
    import hoi_mllm.app.ui as ui

    calls = []
    monkeypatch.setattr(ui, "launch", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setenv("HOI_MLLM_MODEL", "out/model")
    monkeypatch.setenv("HOI_MLLM_DETECTORS", "yolo:model=a.pt,score_threshold=0.3;file:path=d.json")
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    spec = importlib.util.spec_from_file_location("space_app", REPO / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main()
    (args, kwargs), = calls
    assert args == ("out/model", ["yolo:model=a.pt,score_threshold=0.3", "file:path=d.json"])
    assert kwargs["host"] == "0.0.0.0" and kwargs["port"] == 7860


def test_a_spec_that_names_its_device_keeps_it(session, files):
    folder, dets = files
    mine = AppSession("tiny-qwen2-vl", [f"file:path={dets},device=auto", f"file:path={dets}"], device="cpu")
    mine._pipeline, mine._base = session._pipeline, session._base  # the same recogniser, not loaded again
    assert mine.detector(f"file:path={dets},device=auto").options.device == "auto"  # the spec's own
    assert mine.detector(f"file:path={dets}").options.device == "cpu"
