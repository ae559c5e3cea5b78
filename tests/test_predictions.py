"""The predictions file: JSON and JSON Lines round trips, resumable writer, validation naming the entry."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hoi_mllm.predictions import (
    PredictionsError,
    PredictionsFile,
    PredictionsWriter,
    read_predictions,
    write_predictions,
)
from hoi_mllm.records import HOITriplets


def image(name: str, n: int, seed: int = 0) -> HOITriplets:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, size=(n, 2))
    hb = np.concatenate([xy, xy + 20], 1)
    ob = np.concatenate([xy + 5, xy + 30], 1)
    return HOITriplets.create(hb.round(2), ob.round(2), rng.integers(0, 80, n), rng.integers(0, 117, n),
                              rng.uniform(0, 1, n).round(6), file_name=name, image_size=(640, 480))


def same(a: HOITriplets, b: HOITriplets) -> bool:
    return (a.file_name == b.file_name and np.allclose(a.human_boxes, b.human_boxes) and np.allclose(a.object_boxes, b.object_boxes)
            and np.array_equal(a.objects, b.objects) and np.array_equal(a.verbs, b.verbs) and np.allclose(a.scores, b.scores))


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_round_trip(tmp_path, suffix):
    images = [image("a.jpg", 3, 0), image("b.jpg", 0, 1), image("sub/c.jpg", 5, 2)]
    images[0].extra["took_ms"] = 12.5
    path = write_predictions(tmp_path / f"p{suffix}", PredictionsFile("hico-det", images, {"detector": "gt"}))
    got = read_predictions(path)
    assert got.vocabulary == "hico-det" and got.meta == {"detector": "gt"} and len(got) == 3
    for a, b in zip(images, got.images):
        assert same(a, b) and b.image_size == (640, 480)
    assert got.images[0].extra == {"took_ms": 12.5}
    assert set(got.by_file_name()) == {"a.jpg", "b.jpg", "sub/c.jpg"}


def test_documented_shape(tmp_path):
    path = write_predictions(tmp_path / "p.json", PredictionsFile("hico-det", [image("a.jpg", 1)]))
    doc = json.loads(path.read_text())
    assert doc["format"] == "hoi-mllm/predictions" and doc["version"] == 1 and doc["vocabulary"] == "hico-det"
    hoi = doc["images"][0]["hois"][0]
    assert set(hoi) == {"human_box", "object_box", "object", "verb", "score"} and len(hoi["human_box"]) == 4


def test_json_lines_under_a_json_name_is_read_by_content(tmp_path):
    src = write_predictions(tmp_path / "p.jsonl", PredictionsFile("vcoco", [image("a.jpg", 2), image("b.jpg", 1)]))
    other = tmp_path / "p.json"
    other.write_text(src.read_text())
    assert len(read_predictions(other)) == 2


def test_writer_resumes_after_a_torn_last_line(tmp_path, caplog):
    path = tmp_path / "run" / "predictions.jsonl"
    with PredictionsWriter(path, "hico-det", meta={"detector": "gt"}) as w:
        w.write(image("a.jpg", 2, 0))
        w.write(image("b.jpg", 3, 1))
    with open(path, "a") as f:  # a run killed mid-line
        f.write('{"file_name": "c.jpg", "hois": [{"human_box": [1, 2')
    with caplog.at_level("WARNING", logger="hoi_mllm.predictions"):
        assert [im.file_name for im in read_predictions(path).images] == ["a.jpg", "b.jpg"]
    assert "last line 4, cut short" in caplog.text  # a reader is told, not silently given fewer images
    w = PredictionsWriter(path, "hico-det", meta={"detector": "gt"})
    assert w.done == {"a.jpg", "b.jpg"}
    w.write(image("c.jpg", 1, 2))
    result = w.finish(tmp_path / "run" / "predictions.json")
    assert [im.file_name for im in result.images] == ["a.jpg", "b.jpg", "c.jpg"]
    for p in (path, tmp_path / "run" / "predictions.json"):
        again = read_predictions(p)
        assert [im.file_name for im in again.images] == ["a.jpg", "b.jpg", "c.jpg"]
        assert same(again.images[2], image("c.jpg", 1, 2))
    assert PredictionsWriter(path, "hico-det", resume=False).done == set()


def test_writer_refuses_another_vocabulary(tmp_path):
    path = tmp_path / "p.jsonl"
    with PredictionsWriter(path, "hico-det") as w:
        w.write(image("a.jpg", 1))
    with pytest.raises(PredictionsError, match="vocabulary 'hico-det', not 'vcoco'"):
        PredictionsWriter(path, "vcoco")
    assert len(read_predictions(path)) == 1  # nothing already written is lost


def test_integral_float_indices_are_accepted(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(_doc([dict(GOOD, object=3.0, verb=7.0)])))
    im = read_predictions(path).images[1]
    assert im.objects.tolist() == [3] and im.verbs.tolist() == [7] and im.objects.dtype == np.int64


def test_malformed_line_in_the_middle_is_an_error(tmp_path):
    path = write_predictions(tmp_path / "p.jsonl", PredictionsFile("hico-det", [image("a.jpg", 1), image("b.jpg", 1)]))
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:20]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PredictionsError, match="line 2 is not valid JSON"):
        read_predictions(path)


def _doc(hois, **header):
    return {"format": "hoi-mllm/predictions", "version": 1, "vocabulary": "hico-det", **header,
            "images": [{"file_name": "ok.jpg", "hois": []}, {"file_name": "x.jpg", "hois": hois}]}


GOOD = {"human_box": [0, 0, 5, 5], "object_box": [1, 1, 4, 4], "object": 3, "verb": 7, "score": 0.5}


@pytest.mark.parametrize("doc,message", [
    (_doc([GOOD, dict(GOOD, human_box=[0, 0, float("nan"), 5])]), r"image #1 \('x.jpg'\): hoi #1 has a non-finite human_box"),
    (_doc([dict(GOOD, object_box=[0, 0, float("inf"), 5])]), r"hoi #0 has a non-finite object_box"),
    (_doc([dict(GOOD, score=1.5)]), r"image #1 \('x.jpg'\): hoi #0 has score 1.5; scores must be finite, in \[0, 1\]"),
    (_doc([dict(GOOD, score=-0.1)]), "has score -0.1"),
    (_doc([{k: v for k, v in GOOD.items() if k != "verb"}]), "every hoi needs human_box"),
    (_doc([dict(GOOD, human_box=[0, 0, 5])]), r"hoi #0 has human_box \[0, 0, 5\]; it must be 4 numbers"),
    (_doc([GOOD, dict(GOOD, object_box=[0, 0, 5, 5, 5])]), r"hoi #1 has object_box .*4 numbers .*or null"),
    (_doc([dict(GOOD, human_box=[5, 0, 0, 5])]), r"hoi #0 has a reversed human_box"),
    (_doc([GOOD, dict(GOOD, object_box=[0, 6, 5, 5])]), r"image #1 \('x.jpg'\): hoi #1 has a reversed object_box"),
    (_doc([dict(GOOD, score=None)]), r"hoi #0 has score None"),
    (_doc([GOOD, dict(GOOD, object=1.5)]), r"hoi #1 has object 1.5; it must be an integer index"),
    (_doc([dict(GOOD, verb=True)]), r"hoi #0 has verb True; it must be an integer index"),
    (_doc([dict(GOOD, verb="7")]), r"hoi #0 has verb '7'"),
    (_doc([], format="other"), "'format' is 'other'"),
    (_doc([], version=7), "version 7 not supported"),
    ({"format": "hoi-mllm/predictions", "version": 1, "images": []}, "missing 'vocabulary'"),
    ({"format": "hoi-mllm/predictions", "version": 1, "vocabulary": "hico-det", "images": [{"hois": []}]}, "needs 'file_name'"),
])
def test_bad_entries_are_rejected_naming_the_entry(tmp_path, doc, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(PredictionsError, match=message) as err:
        read_predictions(path)
    assert str(path) in str(err.value)


def test_missing_empty_and_invalid_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="predictions file not found"):
        read_predictions(tmp_path / "none.json")
    (tmp_path / "e.json").write_text("  \n")
    with pytest.raises(PredictionsError, match="the file is empty"):
        read_predictions(tmp_path / "e.json")
    (tmp_path / "t.json").write_text('{"format": "hoi-mllm/predictions", "ver')
    with pytest.raises(PredictionsError, match="not valid JSON"):
        read_predictions(tmp_path / "t.json")


def test_writing_nan_is_refused_and_the_old_file_kept(tmp_path):
    path = write_predictions(tmp_path / "p.json", PredictionsFile("hico-det", [image("a.jpg", 1)]))
    before = path.read_text()
    bad = HOITriplets.create([[0, 0, np.nan, 1]], [[0, 0, 1, 1]], [1], [1], [0.5], file_name="b.jpg")
    with pytest.raises(ValueError):
        write_predictions(path, PredictionsFile("hico-det", [bad]))
    assert path.read_text() == before and not list(tmp_path.glob(".p.json.*"))


def test_null_object_box_is_read_as_no_role_object_and_columns_match_images(tmp_path):
    from hoi_mllm.predictions_reader import read_prediction_columns

    doc = _doc([GOOD, dict(GOOD, object_box=None, object=-1)], vocabulary="vcoco")
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    cols = read_prediction_columns(path)
    assert cols.vocabulary == "vcoco" and cols.file_names == ["ok.jpg", "x.jpg"] and cols.offsets.tolist() == [0, 0, 2]
    assert np.isnan(cols.object_boxes[1]).all() and cols.objects.tolist() == [3, -1]
    im = read_predictions(path).images[1]
    assert np.array_equal(im.object_boxes, cols.object_boxes, equal_nan=True) and im.verbs.tolist() == [7, 7]
    lines = tmp_path / "p.jsonl"  # the same through JSON Lines
    lines.write_text("\n".join(json.dumps(x) for x in [{k: v for k, v in doc.items() if k != "images"}, *doc["images"]]))
    again = read_prediction_columns(lines)
    assert np.array_equal(again.object_boxes, cols.object_boxes, equal_nan=True)
