"""Detection-only sources (hoi_mllm/data/coco_detections.py): COCO boxes converted exactly, crowd boxes left
out, bad input named or counted, an HOI file with its labels dropped, and ``hoi-mllm data stats --detection-only``."""
import json

import numpy as np
import pytest

from hoi_mllm.cli import main
from hoi_mllm.data import AnnotationError
from hoi_mllm.data.coco_detections import is_detection_only, read_detection_only
from hoi_mllm.prompts import load_vocabulary

HICO = load_vocabulary("hico-det")


def coco_file(tmp_path, annotations, images=None, categories=None):
    images = images or [{"id": 7, "file_name": "a.jpg", "width": 640, "height": 480},
                        {"id": 9, "file_name": "b.jpg", "width": 320, "height": 240}]
    data = {"images": images, "annotations": annotations,
            "categories": categories or [{"id": 1, "name": "person"}, {"id": 2, "name": "bicycle"},
                                         {"id": 90, "name": "toothbrush"}]}
    path = tmp_path / "instances_train2014.json"
    path.write_text(json.dumps(data))
    return path


ANNS = [
    {"id": 1, "image_id": 7, "bbox": [10.5, 20.0, 100.0, 200.25], "category_id": 1, "iscrowd": 0},
    {"id": 2, "image_id": 7, "bbox": [150, 200, 50, 60], "category_id": 2, "iscrowd": 0},
    {"id": 3, "image_id": 7, "bbox": [0, 0, 640, 480], "category_id": 1, "iscrowd": 1},
    {"id": 4, "image_id": 7, "bbox": [300, 30, 20, 10], "category_id": 90, "iscrowd": 0},
    {"id": 5, "image_id": 9, "bbox": [1, 2, 3, 4], "category_id": 2, "iscrowd": 0},  # no person in b.jpg
]


def test_coco_boxes_become_xyxy_exactly_and_crowd_boxes_are_left_out(tmp_path):
    samples, report = read_detection_only(coco_file(tmp_path, ANNS), "hico-det", image_root=tmp_path)
    assert [s.file_name for s in samples] == ["a.jpg"]
    s = samples[0]
    np.testing.assert_array_equal(s.boxes, np.array([[10.5, 20.0, 110.5, 220.25], [150, 200, 200, 260],
                                                     [300, 30, 320, 40]], dtype=np.float32))
    assert s.labels.tolist() == [HICO.object_index("person"), HICO.object_index("bicycle"),
                                 HICO.object_index("toothbrush")]
    assert s.num_pairs == 0 and is_detection_only(s) and s.image_size == (640, 480)
    assert report.crowd_excluded == 1 and report.images_without_person == 1 and report.images_in_file == 2
    assert (report.images, report.persons, report.objects, report.candidate_pairs) == (1, 1, 2, 2)
    crowd, rep = read_detection_only(coco_file(tmp_path, ANNS), "hico-det", tmp_path, include_crowd=True)
    assert crowd[0].boxes.shape[0] == 4 and rep.crowd_excluded == 0 and rep.candidate_pairs == 2 * 3


@pytest.mark.parametrize("cid", [0, 12, 91, "1"])
def test_category_ids_outside_the_91_scheme_are_named(tmp_path, cid):
    anns = [dict(ANNS[0]), {"id": 8, "image_id": 7, "bbox": [1, 1, 5, 5], "category_id": cid}]
    with pytest.raises(AnnotationError, match=r"annotations\[1\]\.category_id.*91-id scheme"):
        read_detection_only(coco_file(tmp_path, anns), "hico-det", tmp_path)


def test_zero_sized_boxes_raise_or_are_counted(tmp_path):
    anns = ANNS[:2] + [{"id": 8, "image_id": 7, "bbox": [5, 5, 0, 9], "category_id": 2}]
    with pytest.raises(AnnotationError, match=r"a\.jpg.*annotations\[2\]\.bbox.*width or height"):
        read_detection_only(coco_file(tmp_path, anns), "hico-det", tmp_path)
    samples, report = read_detection_only(coco_file(tmp_path, anns), "hico-det", tmp_path, skip_degenerate=True)
    assert report.degenerate_skipped == 1 and samples[0].boxes.shape[0] == 2


def test_renumbered_categories_and_empty_sources_raise(tmp_path):
    with pytest.raises(AnnotationError, match="category id 2 is named 'dog'"):
        read_detection_only(coco_file(tmp_path, ANNS, categories=[{"id": 2, "name": "dog"}]), "hico-det", tmp_path)
    with pytest.raises(AnnotationError, match="no image with a person is left of 2"):
        read_detection_only(coco_file(tmp_path, ANNS[4:]), "hico-det", tmp_path)


def test_an_hoi_file_with_its_labels_dropped(tmp_path, capsys):
    from test_datasets import HICO_CONTENT, write_hicodet_upt  # the datasets tests' own HICO-DET content

    path = write_hicodet_upt(tmp_path / "instances_test2015.json")
    samples, report = read_detection_only(path, "hico-det", tmp_path)
    assert len(samples) == 2 and report.images_without_person == 1  # the empty image has no person
    assert all(s.num_pairs == 0 and is_detection_only(s) for s in samples)
    assert report.dropped_triplets == sum(len(img["triplets"]) for img in HICO_CONTENT)
    assert samples[0].extra["dropped_labels"].num_triplets == len(HICO_CONTENT[0]["triplets"])
    assert main(["data", "stats", str(path), "--detection-only", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["images"], out["persons"], out["objects"]) == (2, 5, 3)
    assert out["candidate_pairs"] == 3 * 3 + 2 * 3


@pytest.mark.shared_data
def test_real_vcoco_trainval_as_a_detection_only_source(shared_data):
    """pseudo-V-COCO's source: the V-COCO trainval boxes with their action labels dropped, on HICO-DET's objects."""
    path = shared_data / "vcoco" / "instances_vcoco_trainval.json"
    samples, report = read_detection_only(path, "hico-det")
    raw = json.loads(path.read_text())
    assert report.images_in_file == len(raw["images"]) and report.format == "vcoco-upt"
    assert report.images + report.images_without_person == report.images_in_file
    assert report.unmapped_objects == {}  # V-COCO's objects are COCO's, as HICO-DET's
    assert all(s.num_pairs == 0 for s in samples) and report.dropped_triplets > 0
    assert report.candidate_pairs == sum(int((s.labels == HICO.human_object).sum()) * (len(s.labels) - 1)
                                         for s in samples)


def test_images_of_keeps_only_the_listed_coco_images(tmp_path, capsys):
    """Pseudo-V-COCO: COCO train2014 boxes of the V-COCO trainval images only, matched by COCO image id."""
    images = [{"id": 7, "file_name": "COCO_train2014_000000000007.jpg", "width": 640, "height": 480},
              {"id": 11, "file_name": "COCO_train2014_000000000011.jpg", "width": 640, "height": 480}]
    anns = ANNS[:2] + [{"id": 6, "image_id": 11, "bbox": [5, 5, 50, 90], "category_id": 1, "iscrowd": 0},
                       {"id": 7, "image_id": 11, "bbox": [60, 5, 30, 30], "category_id": 2, "iscrowd": 0}]
    coco = coco_file(tmp_path, anns, images=images)
    vcoco = load_vocabulary("vcoco")
    listed = tmp_path / "instances_vcoco_trainval.json"
    listed.write_text(json.dumps({
        "classes": list(vcoco.verbs), "objects": ["background", "person", "bicycle"], "images": [11],
        "action_to_object": [], "annotations": [{"file_name": "COCO_train2014_000000000011.jpg",
                                                 "boxes_h": [[5, 5, 55, 95]], "boxes_o": [[60, 5, 90, 35]],
                                                 "objects": [2], "actions": [vcoco.verbs.index("ride instr")]}]}))
    whole, _ = read_detection_only(coco, "hico-det", tmp_path)
    kept, report = read_detection_only(coco, "hico-det", tmp_path, images_of=listed)
    assert len(whole) == 2 and [s.file_name for s in kept] == ["COCO_train2014_000000000011.jpg"]
    assert (report.images, report.images_outside_list, report.persons, report.objects, report.candidate_pairs) == \
        (1, 1, 1, 1, 1)
    assert main(["data", "stats", str(coco), "--detection-only", "--images-of", str(listed), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images_outside_list"] == 1
    other = tmp_path / "other.json"
    other.write_text(listed.read_text().replace("000000000011", "000000000099"))
    with pytest.raises(AnnotationError, match="none of the 2 images with a person is listed in images_of"):
        read_detection_only(coco, "hico-det", tmp_path, images_of=other)
