"""Detectors: options and the shared post-filter, the registry, every adapter on generated images,
bad inputs, and the ``hoi-mllm detections`` command end to end."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_sample, save_images, scene_image, tiny_detr, tiny_grounding_dino, tiny_owlv2, tiny_rtdetr
from PIL import Image

from hoi_mllm.cli import main
from hoi_mllm.detectors import (
    DetectionsFileError,
    Detector,
    DetectorOptions,
    DetectorProtocol,
    FileDetector,
    FileIndex,
    GroundTruthDetector,
    build_detector,
    class_name_table,
    detector_class,
    filter_detections,
    parse_detector_spec,
    read_detections_file,
    register_detector,
    write_detections_file,
)
from hoi_mllm.detectors.jitter import image_rng, jitter_boxes
from hoi_mllm.detectors.open_vocab import caption_chunks, positive_map
from hoi_mllm.pairs import propose_pairs
from hoi_mllm.prompts import load_vocabulary
from hoi_mllm.records import Detections

VOCAB = load_vocabulary("hico-det")
PERSON = VOCAB.human_object
BICYCLE, CUP = VOCAB.object_index("bicycle"), VOCAB.object_index("cup")
NO_FILTER = dict(score_threshold=0.0, nms_iou=None, max_humans=None, max_objects=None)


def check_valid(dets: list[Detections], images: list[Image.Image]) -> None:
    """The detector contract: one Detections per image, sizes set, boxes inside, labels in the vocabulary."""
    assert len(dets) == len(images)
    for d, im in zip(dets, images):
        assert isinstance(d, Detections)
        assert d.image_size == im.size
        assert d.vocabulary == VOCAB.name
        boxes, scores, labels = (torch.as_tensor(x) for x in (d.boxes, d.scores, d.labels))
        assert boxes.dtype == torch.float32 and labels.dtype == torch.int64
        assert boxes.shape == (len(d), 4) and scores.shape == (len(d),)
        assert torch.isfinite(boxes).all()
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= im.width).all() and (boxes[:, 3] <= im.height).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert ((scores >= 0) & (scores <= 1)).all()
        assert ((labels >= 0) & (labels < VOCAB.num_objects)).all()
        assert (scores[:-1] >= scores[1:]).all()  # sorted by score


def named(image: Image.Image, name: str) -> Image.Image:
    image.filename = name
    return image


# ---------------------------------------------------------------------------------------- options / filter
def test_options_validate_and_name_the_field():
    assert DetectorOptions(nms_iou="none", max_humans="None").nms_iou is None
    assert DetectorOptions(device=1).device == "cuda:1"
    for bad in (dict(score_threshold=1.5), dict(score_threshold="x"), dict(human_score_threshold=-0.1),
                dict(max_humans=-1), dict(max_objects=2.5), dict(nms_iou=0), dict(batch_size=0), dict(device="")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DetectorOptions(**bad)


def _raw(boxes, scores, labels, size=(100, 100)):
    return Detections.create(boxes, scores, labels, size)


def test_filter_thresholds_human_threshold_and_sorting():
    d = _raw([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60], [5, 5, 30, 30]], [0.3, 0.9, 0.15, 0.5],
             [PERSON, CUP, PERSON, BICYCLE])
    out = filter_detections(d, DetectorOptions(score_threshold=0.2, human_score_threshold=0.1, nms_iou=None), VOCAB)
    assert out.scores.tolist() == pytest.approx([0.9, 0.5, 0.3, 0.15])
    out = filter_detections(d, DetectorOptions(score_threshold=0.4, human_score_threshold=0.35, nms_iou=None), VOCAB)
    assert out.labels.tolist() == [CUP, BICYCLE]
    assert out.vocabulary == VOCAB.name


def test_filter_nms_is_class_aware():
    boxes = [[0, 0, 50, 50], [2, 2, 50, 50], [1, 1, 50, 50], [60, 60, 90, 90]]
    d = _raw(boxes, [0.9, 0.8, 0.7, 0.6], [PERSON, PERSON, CUP, PERSON])
    out = filter_detections(d, DetectorOptions(score_threshold=0.0, nms_iou=0.5), VOCAB)
    # the second person overlaps the first (IoU 0.92) and goes; the cup overlaps but is another class
    assert out.scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert out.labels.tolist() == [PERSON, CUP, PERSON]
    off = filter_detections(d, DetectorOptions(score_threshold=0.0, nms_iou=None), VOCAB)
    assert len(off) == 4


def test_filter_caps_humans_and_objects_separately():
    n = 6
    boxes = [[10 * i, 0, 10 * i + 8, 8] for i in range(2 * n)]
    scores = np.linspace(0.99, 0.5, 2 * n)
    labels = [PERSON if i % 2 == 0 else CUP for i in range(2 * n)]
    out = filter_detections(_raw(boxes, scores, labels, (200, 50)),
                            DetectorOptions(score_threshold=0.0, nms_iou=None, max_humans=2, max_objects=3), VOCAB)
    labels_out = out.labels.tolist()
    assert labels_out.count(PERSON) == 2 and labels_out.count(CUP) == 3
    assert out.scores.tolist() == pytest.approx(sorted(out.scores.tolist(), reverse=True))
    assert out.scores[0].item() == pytest.approx(0.99)  # the best ones are kept


def test_filter_clips_and_drops_non_finite_and_empty_boxes():
    d = _raw([[-5, -5, 20, 20], [float("nan"), 0, 5, 5], [120, 10, 130, 20], [10, 10, 10, 30]],
             [0.9, 0.9, 0.9, 0.9], [PERSON, PERSON, CUP, CUP], (100, 50))
    out = filter_detections(d, DetectorOptions(**NO_FILTER), VOCAB)
    assert out.boxes.tolist() == [[0, 0, 20, 20]]


def test_filter_rejects_labels_outside_the_vocabulary():
    with pytest.raises(ValueError, match="outside the hico-det objects"):
        filter_detections(_raw([[0, 0, 1, 1]], [1.0], [VOCAB.num_objects]), DetectorOptions(), VOCAB)


def test_class_name_table_maps_coco_names_and_drops_unknown():
    table = class_name_table({0: "person", 1: "motorbike", 2: "N/A", 3: "Dining Table", 5: "unicorn"}, VOCAB)
    assert table.tolist() == [PERSON, VOCAB.object_index("motorcycle"), -1, VOCAB.object_index("dining_table"), -1, -1]


# ---------------------------------------------------------------------------------------- registry
def test_parse_detector_spec():
    assert parse_detector_spec("yolo") == ("yolo", {})
    name, opts = parse_detector_spec("yolo:model=yolov8n.yaml,score_threshold=0.3,nms_iou=null,classes=[1,2]")
    assert name == "yolo"
    assert opts == {"model": "yolov8n.yaml", "score_threshold": 0.3, "nms_iou": None, "classes": [1, 2]}
    with pytest.raises(ValueError, match="key=value"):
        parse_detector_spec("yolo:model")
    with pytest.raises(ValueError, match="no detector name"):
        parse_detector_spec(":model=x")


def test_build_detector_errors_name_the_allowed_values():
    with pytest.raises(ValueError, match=r"unknown detector 'yolox'; allowed: .*ground-truth.*yolo"):
        build_detector("yolox")
    with pytest.raises(ValueError, match=r"unknown option 'colour' for detector 'ground-truth'; allowed: annotations, .*score_threshold"):
        build_detector("ground-truth", annotations=[], colour=1)
    with pytest.raises(ValueError, match="needs annotations=PATH"):
        build_detector("gt")
    with pytest.raises(ValueError, match="score_threshold"):
        build_detector("gt:score_threshold=2", annotations=[])


def test_build_by_spec_and_aliases_applies_defaults_and_options():
    det = build_detector("oracle:max_humans=3", annotations=[])
    assert isinstance(det, GroundTruthDetector) and det.name == "ground-truth"
    assert det.options.max_humans == 3 and det.options.nms_iou is None  # ground truth: no NMS by default
    assert detector_class("Ground-Truth") is GroundTruthDetector
    assert isinstance(det, DetectorProtocol)


def test_register_detector_refuses_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):
        @register_detector("yolo")
        class Other(Detector):  # noqa: F811
            def detect_batch(self, images, file_names):
                return []


# ---------------------------------------------------------------------------------------- inputs, file index
def test_inputs_are_checked_and_non_rgb_converted():
    sample = make_sample("g.png", (40, 30), [[1, 1, 20, 20]], [PERSON])
    det = GroundTruthDetector.from_samples([sample])
    for mode in ("L", "RGBA", "P", "CMYK"):
        out = det([Image.new(mode, (40, 30))], ["g.png"])
        assert len(out) == 1 and len(out[0]) == 1
    assert det([]) == []
    with pytest.raises(ValueError, match="expected a PIL.Image.Image"):
        det([np.zeros((4, 4, 3))])
    with pytest.raises(ValueError, match="1 file_names for 2 images"):
        det([Image.new("RGB", (4, 4))] * 2, ["g.png"])


def test_file_index_matching_rules():
    index = FileIndex({"test2015/a.jpg": 1, "b.jpg": 2, "x/c.jpg": 3, "y/c.jpg": 4}, "the annotations")
    im = Image.new("RGB", (2, 2))
    assert index.lookup(im, "test2015/a.jpg") == ("test2015/a.jpg", 1)
    assert index.lookup(im, "/data/hico/images/test2015/a.jpg")[1] == 1  # trailing path
    assert index.lookup(im, "a.jpg")[1] == 1  # unique base name
    assert index.lookup(named(Image.new("RGB", (2, 2)), "/somewhere/b.jpg"), None)[1] == 2  # image.filename
    with pytest.raises(ValueError, match="ambiguous"):
        index.lookup(im, "c.jpg")
    with pytest.raises(ValueError, match=r"image #3 \('zzz.jpg'\) is not in the annotations"):
        index.lookup(im, "zzz.jpg", 3)
    with pytest.raises(ValueError, match="has no file name"):
        index.lookup(im, None)
    with pytest.raises(ValueError, match="twice"):
        FileIndex({"a.jpg": 1, "./a.jpg": 2}, "f")


# ---------------------------------------------------------------------------------------- ground truth
SAMPLES = [
    make_sample("img_a.jpg", (96, 64), [[5, 5, 40, 60], [45, 20, 90, 50], [50, 2, 60, 12]], [PERSON, BICYCLE, CUP],
                pairs=[(0, 1)]),
    make_sample("sub/img_b.jpg", (80, 80), [[10, 10, 30, 70]], [PERSON]),
    make_sample("no_person.jpg", (64, 48), [[4, 4, 30, 30]], [CUP]),
    make_sample("empty.jpg", (64, 48), np.zeros((0, 4)), []),
]


def _images():
    return [scene_image(s.image_size, i) for i, s in enumerate(SAMPLES)]


def test_ground_truth_returns_the_annotated_instances():
    det = GroundTruthDetector.from_samples(SAMPLES)
    images = _images()
    out = det(images, [s.file_name for s in SAMPLES])
    check_valid(out, images)
    for d, s in zip(out, SAMPLES):
        assert sorted(map(tuple, d.boxes.tolist())) == sorted(map(tuple, s.boxes.tolist()))
        assert sorted(d.labels.tolist()) == sorted(s.labels.tolist())
        assert (d.scores == 1).all()
    # no person: a correct empty pair set; no annotation: empty detections
    assert len(propose_pairs(out[2], PERSON)) == 0
    assert len(out[3]) == 0
    # found by image.filename (full path, base name) as well
    again = det([named(scene_image((80, 80)), "/elsewhere/sub/img_b.jpg"), named(scene_image((96, 64)), "img_a.jpg")])
    assert again[0].boxes.tolist() == out[1].boxes.tolist() and len(again[1]) == 3


def test_ground_truth_merges_duplicate_rows_of_one_instance():
    # UPT-format HICO-DET: each verb of one pair its own, slightly different boxes (rows 0/2 and 1/3)
    dup = make_sample("dup.jpg", (96, 64), [[5, 5, 40, 60], [45, 20, 90, 50], [6, 4, 41, 59], [46, 21, 89, 51],
                                            [50, 2, 60, 12], [46, 20, 90, 49]],
                      [PERSON, BICYCLE, PERSON, BICYCLE, CUP, CUP], pairs=[(0, 1), (2, 3)], verbs=[(0,), (1,)])
    image = scene_image((96, 64))
    merged = GroundTruthDetector.from_samples([dup])([image], ["dup.jpg"])[0]
    # the first row of each duplicate group stays; the cup overlapping the bicycle is another class, kept
    assert merged.boxes.tolist() == dup.boxes[[0, 1, 4, 5]].tolist()
    assert merged.labels.tolist() == [PERSON, BICYCLE, CUP, CUP]
    assert len(propose_pairs(merged, PERSON)) == 3  # one person, three objects: no duplicate pair
    every = GroundTruthDetector.from_samples([dup], merge_iou="none")([image], ["dup.jpg"])[0]
    assert len(every) == 6 and len(propose_pairs(every, PERSON)) == 2 * 5
    # the jitter detector perturbs the merged instances (no spurious boxes, no drops here)
    jit = detector_class("jitter").from_samples([dup], spurious_rate=0.0, drop_rate=0.0)([image], ["dup.jpg"])[0]
    assert len(jit) == 4
    with pytest.raises(ValueError, match=r"merge_iou=2.*\(0, 1\], or none"):
        GroundTruthDetector.from_samples([dup], merge_iou=2)


def test_ground_truth_errors_name_the_image():
    det = GroundTruthDetector.from_samples(SAMPLES)
    with pytest.raises(ValueError, match="'missing.jpg'.* is not in the given annotations"):
        det([scene_image()], ["missing.jpg"])
    with pytest.raises(ValueError, match="has no file name"):
        det([scene_image()])
    with pytest.raises(ValueError, match="labels outside hico-det"):
        GroundTruthDetector.from_samples([make_sample("a.jpg", (9, 9), [[0, 0, 1, 1]], [VOCAB.num_objects])])
    with pytest.raises(ValueError, match="twice"):
        GroundTruthDetector.from_samples([SAMPLES[0], SAMPLES[0]])


def test_ground_truth_warns_when_the_image_size_differs(caplog):
    det = GroundTruthDetector.from_samples(SAMPLES[:1])
    with caplog.at_level(logging.WARNING):
        det([scene_image((50, 50))], ["img_a.jpg"])
    assert "img_a.jpg: image is 50x50 but its entry says 96x64" in caplog.text


def test_ground_truth_from_a_real_annotation_file(shared_data):
    path = shared_data / "hicodet" / "instances_test2015.json"
    raw = json.loads(path.read_text())
    det = build_detector("ground-truth", annotations=str(path))
    i = next(k for k, a in enumerate(raw["annotation"]) if a["boxes_h"])
    w, h = raw["size"][i]
    out = det([Image.new("RGB", (w, h))], [raw["filenames"][i]])[0]
    ann = raw["annotation"][i]
    boxes = {tuple(b) for b in ann["boxes_h"]} | {tuple(b) for b in ann["boxes_o"]}
    got = {tuple(b) for b in out.boxes.tolist()}
    assert got <= boxes and len(got) >= 1  # distinct instances of the pairs' boxes
    assert PERSON in out.labels.tolist()


# ---------------------------------------------------------------------------------------- jitter
def test_jitter_is_deterministic_per_seed_and_file_whatever_the_batching():
    det = build_detector("jitter", annotations=SAMPLES, seed=3, spurious_rate=2.0, batch_size=4)
    one = build_detector("jitter", annotations=SAMPLES, seed=3, spurious_rate=2.0, batch_size=1)
    names = [s.file_name for s in SAMPLES]
    together = det(_images(), names)
    reversed_ = one(_images()[::-1], names[::-1])[::-1]
    for a, b in zip(together, reversed_):
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores) and torch.equal(a.labels, b.labels)
    check_valid(together, _images())
    other = build_detector("jitter", annotations=SAMPLES, seed=4, spurious_rate=2.0)(_images(), names)
    assert any(not torch.equal(a.boxes, b.boxes) for a, b in zip(together, other))


def test_jitter_with_no_noise_is_the_ground_truth_and_full_drop_is_empty():
    names = [s.file_name for s in SAMPLES]
    exact = build_detector("jitter", annotations=SAMPLES, box_noise=0, drop_rate=0, score_noise=0, spurious_rate=0)
    gt = GroundTruthDetector.from_samples(SAMPLES)
    for a, b in zip(exact(_images(), names), gt(_images(), names)):
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.labels, b.labels) and torch.equal(a.scores, b.scores)
    nothing = build_detector("jitter", annotations=SAMPLES, drop_rate=1.0, spurious_rate=0)(_images(), names)
    assert all(len(d) == 0 for d in nothing)


def test_jitter_boxes_statistics():
    box = np.array([[100.0, 100.0, 300.0, 200.0]])  # 200 x 100
    kw = dict(drop_rate=0.25, score_noise=0.1, spurious_rate=1.5, spurious_human_fraction=0.5, spurious_max_score=0.8,
              num_objects=VOCAB.num_objects, human_object=PERSON)
    shifts, kept, spurious, scores = [], 0, 0, []
    trials = 2000
    for t in range(trials):
        b, s, lab = jitter_boxes(box, [CUP], (1000, 1000), image_rng(0, f"im{t}"), box_noise=0.1, **kw)
        real = 1 if (lab[:1] == CUP).all() and len(lab) and s[0] >= 0.5 and abs(b[0, 0] - 100) < 80 else 0
        kept += real
        if real:
            shifts.append(b[0] - box[0])
            scores.append(s[0])
        spurious += len(lab) - real
    shifts = np.array(shifts)
    assert kept / trials == pytest.approx(0.75, abs=0.04)
    assert spurious / trials == pytest.approx(1.5, abs=0.12)
    # x moves by 0.1 x width (20 px), y by 0.1 x height (10 px)
    assert shifts[:, 0].std() == pytest.approx(20, rel=0.1) and shifts[:, 1].std() == pytest.approx(10, rel=0.1)
    assert np.mean(scores) == pytest.approx(1 - 0.1 * np.sqrt(2 / np.pi), abs=0.01)


def test_jitter_rejects_bad_parameters():
    for bad in (dict(drop_rate=1.5), dict(box_noise=-1), dict(seed=-1), dict(spurious_rate=float("nan"))):
        with pytest.raises(ValueError, match=next(iter(bad))):
            build_detector("jitter", annotations=SAMPLES, **bad)


# ---------------------------------------------------------------------------------------- detections file
def _dets(size, boxes, scores, labels):
    return Detections.create(boxes, scores, labels, size, VOCAB.name)


def test_detections_file_round_trip(tmp_path):
    written = {"a.jpg": _dets((96, 64), [[1, 2, 30, 40], [40, 10, 90, 60]], [0.9, 0.4], [PERSON, CUP]),
               "b.jpg": _dets((50, 50), np.zeros((0, 4)), [], [])}
    path = write_detections_file(tmp_path / "d.json", written, VOCAB.name, detector="test")
    doc = json.loads(path.read_text())
    assert doc["format"] == "hoi-mllm/detections" and doc["version"] == 1 and doc["vocabulary"] == "hico-det"
    assert doc["images"][0] == {"file_name": "a.jpg", "image_size": [96, 64], "boxes": [[1, 2, 30, 40], [40, 10, 90, 60]],
                                "scores": [0.9, 0.4], "labels": [PERSON, CUP]}
    det = build_detector("file", path=str(path))
    out = det([scene_image((96, 64)), scene_image((50, 50))], ["a.jpg", "b.jpg"])
    check_valid(out, [scene_image((96, 64)), scene_image((50, 50))])
    assert out[0].boxes.tolist() == [[1, 2, 30, 40], [40, 10, 90, 60]] and out[0].labels.tolist() == [PERSON, CUP]
    assert len(out[1]) == 0


def test_detections_file_with_label_names_and_another_vocabulary(tmp_path):
    doc = {"format": "hoi-mllm/detections", "version": 1, "vocabulary": "coco",
           "images": [{"file_name": "a.jpg", "boxes": [[0, 0, 5, 5], [1, 1, 9, 9]], "scores": [1, 0.5],
                       "label_names": ["person", "motorbike"]}]}
    (tmp_path / "d.json").write_text(json.dumps(doc))
    entries, header = read_detections_file(tmp_path / "d.json", "hico-det")
    assert entries["a.jpg"]["labels"].tolist() == [PERSON, VOCAB.object_index("motorcycle")]
    assert entries["a.jpg"]["image_size"] is None and header["vocabulary"] == "coco"
    out = FileDetector(tmp_path / "d.json")([scene_image((20, 20))], ["a.jpg"])[0]
    assert out.image_size == (20, 20)  # taken from the image when the file has none


MALFORMED = [
    ({"format": "other"}, "'format' is 'other'"),
    ({"version": 2}, "version 2 not supported"),
    ({"images": {}}, "'images' must be a list"),
    ({"images": [{"boxes": []}]}, "needs a 'file_name'"),
    ({"images": [{"file_name": "a.jpg", "boxes": [[0, 0, float("nan"), 1]], "scores": [1], "labels": [0]}]},
     r"image #0 \('a.jpg'\): 'boxes' holds a non-finite value"),
    ({"images": [{"file_name": "a.jpg", "boxes": [[5, 0, 1, 1]], "scores": [1], "labels": [0]}]}, "x2 < x1"),
    ({"images": [{"file_name": "a.jpg", "boxes": [[0, 0, 1]], "scores": [1], "labels": [0]}]}, r"\[x1, y1, x2, y2\]"),
    ({"images": [{"file_name": "a.jpg", "boxes": [[0, 0, 1, 1]], "scores": [1.5], "labels": [0]}]}, "score #0 is 1.5"),
    ({"images": [{"file_name": "a.jpg", "boxes": [[0, 0, 1, 1]], "scores": [], "labels": [0]}]}, "0 scores for 1 boxes"),
    ({"images": [{"file_name": "a.jpg", "boxes": [[0, 0, 1, 1]], "scores": [1], "labels": [999]}]}, "label #0 is 999"),
    ({"images": [{"file_name": "a.jpg", "boxes": [[0, 0, 1, 1]], "scores": [1]}]}, "missing 'labels'"),
    ({"images": [{"file_name": "a.jpg", "boxes": [[0, 0, 1, 1]], "scores": [1], "label_names": ["persn"]}]},
     "Did you mean 'person'"),
    ({"images": [{"file_name": "a.jpg", "boxes": [], "scores": [], "labels": [], "image_size": [0, 5]}]}, "'image_size'"),
    ({"images": [{"file_name": "a.jpg", "boxes": [], "scores": [], "labels": []}] * 2}, "appears twice"),
    ({"vocabulary": "vcoco", "images": [{"file_name": "a.jpg", "boxes": [], "scores": [], "labels": []}]},
     "give 'label_names' instead"),
]


@pytest.mark.parametrize("change,message", MALFORMED)
def test_malformed_detections_files_are_reported(tmp_path, change, message):
    doc = {"format": "hoi-mllm/detections", "version": 1, "vocabulary": "hico-det", "images": []}
    doc.update(change)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DetectionsFileError, match=message) as err:
        build_detector("file", path=str(path))
    assert str(path) in str(err.value)


def test_detections_file_not_json_or_missing(tmp_path):
    (tmp_path / "t.json").write_text('{"format": "hoi-mllm/detections", "vers')
    with pytest.raises(DetectionsFileError, match="not valid JSON"):
        FileDetector(tmp_path / "t.json")
    with pytest.raises(FileNotFoundError, match="detections file not found"):
        FileDetector(tmp_path / "none.json")


# ---------------------------------------------------------------------------------------- YOLO
def test_yolo_from_yaml_on_generated_images():
    det = build_detector("yolo", model="yolov8n.yaml", imgsz=64, score_threshold=0.0, batch_size=2)
    images = [scene_image((96, 64), 0), scene_image((50, 70), 1), scene_image((64, 64), 2)]
    out = det(images)
    check_valid(out, images)
    assert sum(len(d) for d in out) > 0
    # random .yaml models have no class names: COCO order is assumed, and all 80 map to HICO-DET
    assert (det.label_table >= 0).all() and det.label_table[0] == PERSON


def test_yolo_missing_weights_fail_before_any_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="YOLO weights file not found"):
        build_detector("yolo", model=str(tmp_path / "weights" / "best.pt"))
    with pytest.raises(FileNotFoundError, match=r"not found locally .*offline.*Accepted: a path to a \.pt.*\.yaml"):
        build_detector("yolo", model="yolov8x-does-not-exist.pt")


def test_yolo_weights_name_not_downloadable_says_what_is_accepted(tmp_path, monkeypatch):
    """Online, ultralytics tries a download and fails with a bare ``[Errno 2] ... 'missing.pt'``: say what happened."""
    import ultralytics

    def no_download(name):
        raise FileNotFoundError(2, "No such file or directory", name)

    for key in ("YOLO_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ultralytics, "YOLO", no_download)
    with pytest.raises(FileNotFoundError) as info:
        build_detector("yolo", model="missing.pt")
    text = str(info.value)
    assert "YOLO weights 'missing.pt' not found locally" in text and "could not be downloaded" in text
    assert ".pt weights file" in text and "yolov8x.pt on a machine connected" in text and "yolov8n.yaml" in text


# ---------------------------------------------------------------------------------------- transformers
@pytest.fixture(scope="module")
def detr_dir(tmp_path_factory):
    return tiny_detr(tmp_path_factory.mktemp("detr"), ["person", "bicycle", "cup", "N/A", "not_an_object"])


def test_hf_detr_matches_its_own_post_processing(detr_dir):
    from transformers import AutoImageProcessor, AutoModelForObjectDetection

    det = build_detector("hf", model=str(detr_dir), **NO_FILTER)
    images = [scene_image((96, 64), 0), scene_image((50, 70), 1)]
    out = det(images)
    check_valid(out, images)
    proc = AutoImageProcessor.from_pretrained(detr_dir)
    model = AutoModelForObjectDetection.from_pretrained(detr_dir).eval()
    with torch.no_grad():
        raw = model(**proc(images=images, return_tensors="pt"))
    results = proc.post_process_object_detection(raw, threshold=0.0, target_sizes=[(im.height, im.width) for im in images])
    for d, r, im in zip(out, results, images):
        names = [model.config.id2label[int(k)] for k in r["labels"]]
        keep = [n in ("person", "bicycle", "cup") for n in names]
        expected_labels = sorted(VOCAB.object_index(n) for n, k in zip(names, keep) if k)
        assert sorted(d.labels.tolist()) == expected_labels  # N/A and unknown names dropped
        assert sorted(d.scores.tolist()) == pytest.approx(sorted(r["scores"][torch.tensor(keep)].tolist()), abs=1e-5)


def test_hf_thresholds_apply(detr_dir):
    det = build_detector("hf", model=str(detr_dir), score_threshold=0.99, nms_iou=None)
    assert all(len(d) == 0 for d in det([scene_image()]))


def test_hf_rtdetr(tmp_path):
    det = build_detector("rt-detr", model=str(tiny_rtdetr(tmp_path / "rt", ["person", "cup", "bicycle"])), **NO_FILTER)
    images = [scene_image((96, 64), 0), scene_image((40, 80), 1)]
    out = det(images)
    check_valid(out, images)
    assert sum(len(d) for d in out) > 0 and set(torch.cat([d.labels for d in out]).tolist()) <= {PERSON, CUP, BICYCLE}


def test_hf_missing_model_folder_and_uncached_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder not found"):
        build_detector("hf", model=str(tmp_path / "no_such_model"))
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache"):
        build_detector("hf", model="hoi-mllm-tests/no-such-detr")
    with pytest.raises(ValueError, match="dtype 'float8'"):
        build_detector("hf", model="x", dtype="float8")


@pytest.fixture(scope="module")
def owl_dir(tmp_path_factory):
    return tiny_owlv2(tmp_path_factory.mktemp("owl"))


def test_owlv2_queries_every_object_and_scales_boxes_to_the_padded_square(owl_dir):
    from transformers import AutoModelForZeroShotObjectDetection

    det = build_detector("owlv2", model=str(owl_dir), **NO_FILTER)
    assert det.family == "owlv2" and len(det.queries) == VOCAB.num_objects
    assert det.queries[BICYCLE] == "a photo of a bicycle"
    images = [scene_image((128, 64), 0), scene_image((64, 64), 1)]
    out = det(images)
    check_valid(out, images)
    assert sum(len(d) for d in out) > 0
    # with the box head zeroed, every patch predicts OWLv2's prior box: check the geometry
    model = AutoModelForZeroShotObjectDetection.from_pretrained(owl_dir)
    prior = torch.sigmoid(model.box_bias)  # [P, 4] cxcywh of the padded square
    raw = det.detect_batch(images, [None, None])
    for d, im in zip(raw, images):
        side = max(im.size)
        expected = torch.cat([prior[:, :2] - prior[:, 2:] / 2, prior[:, :2] + prior[:, 2:] / 2], 1) * side
        assert torch.allclose(torch.as_tensor(d.boxes), expected, atol=1e-3)


def test_grounding_dino_scores_names_by_their_tokens(tmp_path):
    det = build_detector("grounding-dino", model=str(tiny_grounding_dino(tmp_path / "gd")), **NO_FILTER)
    assert det.family == "grounding-dino" and len(det.captions) == 1
    text, object_ids, pos = det.captions[0]
    assert object_ids.tolist() == list(range(VOCAB.num_objects))
    assert torch.allclose(pos.sum(1), torch.ones(VOCAB.num_objects))
    images = [scene_image((96, 64), 0), scene_image((50, 70), 1)]
    out = det(images)
    check_valid(out, images)
    assert sum(len(d) for d in out) > 0


def test_caption_chunks_and_positive_map():
    names = ["person", "dining table", "cup", "hair drier"]
    chunks = caption_chunks(names, lambda s: len(s.split()) + 2, max_tokens=5)
    assert [c[0] for c in chunks] == ["person. dining table.", "cup. hair drier."]
    assert [c[1] for c in chunks] == [[0, 1], [2, 3]]
    text, _, spans = chunks[0]
    assert [text[s:e] for s, e in spans] == ["person", "dining table"]
    # tokens: [CLS] person . dining table . [SEP]
    offsets = [(0, 0), (0, 6), (6, 7), (8, 14), (15, 20), (20, 21), (0, 0)]
    pos = positive_map(offsets, spans, len(offsets))
    assert pos.tolist() == [[0, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0.5, 0.5, 0, 0]]
    with pytest.raises(ValueError, match="longer than"):
        caption_chunks(["a very long name indeed"], lambda s: len(s.split()) + 2, max_tokens=4)


def test_open_vocab_rejects_other_model_families(detr_dir):
    with pytest.raises(ValueError, match="is a 'detr' model; supported: owlv2"):
        build_detector("hf-open-vocab", model=str(detr_dir))


# ---------------------------------------------------------------------------------------- CLI
def _make_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    save_images(folder, {"a.jpg": ((96, 64), 0), "b.png": ((50, 70), 1)})
    Image.new("L", (40, 30), 128).save(folder / "gray.png")
    Image.new("RGBA", (30, 40), (10, 20, 30, 128)).save(folder / "rgba.png")
    Image.new("P", (32, 32)).save(folder / "palette.gif")
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    (folder / "notes.txt").write_text("ignored")
    return folder


def _detections_file(tmp_path: Path) -> Path:
    entries = {"a.jpg": _dets((96, 64), [[5, 5, 40, 60], [45, 20, 90, 50]], [0.9, 0.8], [PERSON, BICYCLE]),
               "b.png": _dets((50, 70), [[4, 4, 30, 30]], [0.7], [CUP]),  # no person: empty pairs, still written
               "gray.png": _dets((40, 30), np.zeros((0, 4)), [], []),
               "rgba.png": _dets((30, 40), [[1, 1, 20, 20]], [0.6], [PERSON]),
               "palette.gif": _dets((32, 32), [[1, 1, 20, 20]], [0.6], [PERSON])}
    return write_detections_file(tmp_path / "input_dets.json", entries, VOCAB.name)


def test_cli_detections_end_to_end_skips_unreadable_images(tmp_path, capsys):
    folder = _make_folder(tmp_path)
    src = _detections_file(tmp_path)
    out = tmp_path / "out"
    rc = main(["detections", str(folder), "--detector", "file", "--option", f"path={src}", "--output", str(out)])
    assert rc == 0
    entries, header = read_detections_file(out / "detections.json", "hico-det")
    assert sorted(entries) == ["a.jpg", "b.png", "gray.png", "palette.gif", "rgba.png"]
    assert header["skipped"][0]["file_name"] == "broken.jpg" and "unreadable" in header["skipped"][0]["error"]
    assert entries["a.jpg"]["labels"].tolist() == [PERSON, BICYCLE]
    assert entries["b.png"]["labels"].tolist() == [CUP]
    vis = sorted(p.name for p in (out / "vis").iterdir())
    assert vis == ["a.jpg", "b.jpg", "gray.jpg", "palette.jpg", "rgba.jpg"]
    with Image.open(out / "vis" / "a.jpg") as im:
        assert im.mode == "RGB" and min(im.size) >= 64
    assert "broken.jpg" in capsys.readouterr().err


def test_cli_yolo_output_feeds_back_as_a_file_detector(tmp_path):
    folder = tmp_path / "images"
    save_images(folder, {"a.jpg": ((96, 64), 0), "b.jpg": ((64, 80), 1)})
    first = tmp_path / "yolo"
    rc = main(["detections", str(folder / "a.jpg"), str(folder / "b.jpg"), "--detector",
               "yolo:model=yolov8n.yaml,imgsz=64,score_threshold=0", "--output", str(first), "--no-vis"])
    assert rc == 0 and not (first / "vis").exists()
    again = tmp_path / "again"
    assert main(["detections", str(folder), "--detector", "file", "--option", f"path={first / 'detections.json'}",
                 "--output", str(again)]) == 0
    a = read_detections_file(first / "detections.json")[0]
    b = read_detections_file(again / "detections.json")[0]
    assert a.keys() == b.keys()
    for k in a:
        assert np.allclose(a[k]["boxes"], b[k]["boxes"], atol=0.01) and (a[k]["labels"] == b[k]["labels"]).all()


@pytest.mark.parametrize("argv,message", [
    (["--detector", "yolox"], "unknown detector 'yolox'; allowed:"),
    (["--detector", "file", "--option", "path=/no/such/dets.json"], "detections file not found"),
    (["--detector", "yolo", "--option", "model=/no/such/best.pt"], "YOLO weights file not found"),
    (["--detector", "file", "--option", "colour=red"], "unknown option 'colour'"),
    (["--detector", "file", "--option", "oops"], "not of the form key=value"),
])
def test_cli_bad_input_reports_one_line(tmp_path, capsys, argv, message):
    folder = tmp_path / "images"
    save_images(folder, {"a.jpg": ((32, 32), 0)})
    rc = main(["detections", str(folder), "--output", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert rc == 1 and message in err and "Traceback" not in err


def test_cli_empty_image_list_and_malformed_file(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["detections", str(tmp_path / "empty"), "--detector", "file", "--output", str(tmp_path / "o")])
    assert rc == 1 and "no images found" in capsys.readouterr().err
    rc = main(["detections", str(tmp_path / "nothing_here"), "--detector", "file", "--output", str(tmp_path / "o")])
    assert rc == 1 and "no such image or folder" in capsys.readouterr().err
    save_images(tmp_path / "imgs", {"a.jpg": ((32, 32), 0)})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "hoi-mllm/detections", "version": 1, "vocabulary": "hico-det",
                               "images": [{"file_name": "a.jpg", "boxes": [[0, 0, 1]], "scores": [1], "labels": [0]}]}))
    rc = main(["detections", str(tmp_path / "imgs"), "--detector", "file", "--option", f"path={bad}", "--output",
               str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and str(bad) in err and "'a.jpg'" in err and "'boxes'" in err


def test_cli_all_images_unreadable_is_an_error(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(b"\x00garbage")
    src = _detections_file(tmp_path)
    rc = main(["detections", str(tmp_path / "imgs"), "--detector", "file", "--option", f"path={src}",
               "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1 and "no image could be processed (1 skipped): a.jpg: unreadable image" in err
    assert not (tmp_path / "out" / "detections.json").exists()


def test_cli_image_missing_from_the_file_is_skipped_and_the_rest_complete(tmp_path, capsys):
    save_images(tmp_path / "imgs", {"a.jpg": ((96, 64), 0), "extra.jpg": ((20, 20), 1)})
    src = _detections_file(tmp_path)
    out = tmp_path / "out"
    assert main(["detections", str(tmp_path / "imgs"), "--detector", "file", "--option", f"path={src}",
                 "--output", str(out)]) == 0
    entries, header = read_detections_file(out / "detections.json")
    assert list(entries) == ["a.jpg"]
    assert header["skipped"][0]["file_name"] == "extra.jpg" and "is not in" in header["skipped"][0]["error"]


def test_cli_detections_crash_part_way_keeps_what_was_done(tmp_path, monkeypatch, capsys, caplog):
    """A detector that fails after the first image: the first is written, marked incomplete, and the error raised."""
    from hoi_mllm.detectors.file import FileDetector

    save_images(tmp_path / "imgs", {"a.jpg": ((96, 64), 0), "b.png": ((50, 70), 1)})
    src = _detections_file(tmp_path)
    original = FileDetector.detect_batch
    calls = []

    def flaky(self, images, file_names):
        calls.append(list(file_names))
        if "b.png" in file_names:
            raise RuntimeError("CUDA error: device-side assert triggered")
        return original(self, images, file_names)

    monkeypatch.setattr(FileDetector, "detect_batch", flaky)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="device-side assert"):
        main(["detections", str(tmp_path / "imgs"), "--detector", "file", "--option", f"path={src}",
              "--output", str(out)])
    assert calls == [["a.jpg", "b.png"], ["a.jpg"], ["b.png"]]  # the failed batch was retried one by one
    entries, header = read_detections_file(out / "detections.json")
    assert list(entries) == ["a.jpg"] and header["complete"] is False
    assert entries["a.jpg"]["labels"].tolist() == [PERSON, BICYCLE]
    assert (out / "vis" / "a.jpg").exists()
    assert "stopped after 1 of 2 images" in capsys.readouterr().err
    with caplog.at_level(logging.WARNING):
        build_detector("file", path=out / "detections.json")
    assert "marked incomplete" in caplog.text

    monkeypatch.setattr(FileDetector, "detect_batch", original)  # a run that finishes says so
    assert main(["detections", str(tmp_path / "imgs"), "--detector", "file", "--option", f"path={src}",
                 "--output", str(out)]) == 0
    assert read_detections_file(out / "detections.json")[1]["complete"] is True
