"""Typed records: Detections, Pairs, HOITriplets (indexing, cpu/numpy, empty, validation)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hoi_mllm.records import Detections, HOITriplets, Pairs


def dets() -> Detections:
    return Detections.create([[0, 0, 10, 10], [5, 5, 20, 30], [1, 2, 3, 4]], [0.9, 0.5, 0.1], [49, 10, 49], (40, 30),
                             "hico-det")


def test_create_converts_types():
    d = dets()
    assert d.boxes.dtype == torch.float32 and d.scores.dtype == torch.float32 and d.labels.dtype == torch.int64
    assert d.image_size == (40, 30) and len(d) == 3 and d.vocabulary == "hico-det"


@pytest.mark.parametrize("index,expected", [
    (1, [0.5]), (-1, [0.1]), (slice(0, 2), [0.9, 0.5]), (torch.tensor([True, False, True]), [0.9, 0.1]),
    (np.array([2, 0]), [0.1, 0.9]), (torch.tensor([1]), [0.5]),
])
def test_indexing_keeps_the_record(index, expected):
    d = dets()
    sub = d[index]
    assert isinstance(sub, Detections) and sub.image_size == (40, 30) and sub.vocabulary == "hico-det"
    assert sub.scores.tolist() == pytest.approx(expected)
    assert sub.boxes.shape == (len(expected), 4)
    n = d.numpy()[index]
    assert isinstance(n.scores, np.ndarray) and n.scores.tolist() == pytest.approx(expected)
    assert n.boxes.shape == (len(expected), 4)


def test_cpu_numpy_to():
    d = dets()
    n = d.numpy()
    assert isinstance(n.boxes, np.ndarray) and n.boxes.dtype == np.float32 and n.labels.dtype == np.int64
    assert isinstance(n.cpu().boxes, torch.Tensor)  # numpy back to torch
    assert d.to("cpu").boxes.device.type == "cpu"
    assert torch.equal(d.cpu().labels, d.labels)


def test_empty_and_cat_and_dict_round_trip():
    e = Detections.empty((8, 6))
    assert len(e) == 0 and e.boxes.shape == (0, 4) and e.image_size == (8, 6)
    both = Detections.cat([dets(), e, dets()[0]])
    assert len(both) == 4 and both.scores.tolist() == pytest.approx([0.9, 0.5, 0.1, 0.9])
    again = Detections.from_dict(dets().to_dict(), "hico-det")
    assert torch.equal(again.boxes, dets().boxes) and torch.equal(again.labels, dets().labels)
    assert Detections.from_dict(e.to_dict()).image_size == (8, 6)
    with pytest.raises(ValueError, match="at least one"):
        Detections.cat([])


def test_validation_errors():
    with pytest.raises(ValueError, match=r"must be \[N, 4\]"):
        Detections(torch.zeros(2, 3), torch.zeros(2), torch.zeros(2, dtype=torch.long), (1, 1))
    with pytest.raises(ValueError, match="disagree in length: boxes 2, scores 1, labels 2"):
        Detections(torch.zeros(2, 4), torch.zeros(1), torch.zeros(2, dtype=torch.long), (1, 1))


def test_pairs_from_detections_and_empty():
    d = dets()
    p = Pairs.from_detections(d, [0, 2], [1, 0])
    assert len(p) == 2 and p.image_size == (40, 30)
    assert p.human_boxes.tolist() == [[0, 0, 10, 10], [1, 2, 3, 4]]
    assert p.object_boxes.tolist() == [[5, 5, 20, 30], [0, 0, 10, 10]]
    assert p.object_labels.tolist() == [10, 49] and p.object_scores.tolist() == pytest.approx([0.5, 0.9])
    assert p[1].human_index.tolist() == [2] and len(p.numpy()[np.array([True, False])]) == 1
    e = Pairs.empty((4, 4))
    assert len(e) == 0 and e.human_boxes.shape == (0, 4)


def triplets() -> HOITriplets:
    return HOITriplets.create([[0, 0, 5, 5]] * 3, [[1, 1, 4, 4], [2, 2, 3, 3], [1, 1, 4, 4]], [3, 4, 3], [7, 8, 9],
                              [0.2, 0.9, 0.5], file_name="a.jpg", image_size=(10, 10), took_ms=5)


def test_triplets_sorting_top_k_indexing():
    t = triplets()
    assert len(t) == 3 and t.file_name == "a.jpg" and t.extra == {"took_ms": 5}
    assert t.sorted().scores.tolist() == [0.9, 0.5, 0.2]
    assert t.top_k(2).verbs.tolist() == [8, 9] and len(t.top_k(None)) == 3 and len(t.top_k(10)) == 3
    assert t[0].verbs.tolist() == [7] and t[0].human_boxes.shape == (1, 4)
    e = HOITriplets.empty("b.jpg")
    assert len(e) == 0 and len(e.top_k(3)) == 0 and e.to_json() == {"file_name": "b.jpg", "hois": []}


def test_triplets_json_entry():
    j = triplets().to_json()
    assert j["file_name"] == "a.jpg" and j["size"] == [10, 10] and j["took_ms"] == 5
    assert j["hois"][1] == {"human_box": [0, 0, 5, 5], "object_box": [2, 2, 3, 3], "object": 4, "verb": 8, "score": 0.9}
