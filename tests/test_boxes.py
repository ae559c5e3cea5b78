"""Box geometry against hand-computed values, torch and numpy alike."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hoi_mllm.boxes import (
    box_area,
    box_iou,
    box_iou_aligned,
    box_xyxy_to_cxcywh,
    clip_boxes,
    generalized_box_iou,
    intersection_box,
    invalid_box_mask,
    normalise_boxes,
    union_box,
)

A = [[0.0, 0.0, 10.0, 10.0]]
B = [[5.0, 5.0, 15.0, 15.0], [10.0, 0.0, 20.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]]


@pytest.mark.parametrize("lib", ["torch", "numpy"])
def test_iou_hand_computed(lib):
    a, b = (torch.tensor(A), torch.tensor(B)) if lib == "torch" else (np.array(A), np.array(B))
    iou = box_iou(a, b)
    # overlap 5x5 = 25 of union 100 + 100 - 25; touching edge; disjoint; identical
    assert np.asarray(iou).shape == (1, 4)
    assert np.asarray(iou)[0].tolist() == pytest.approx([25 / 175, 0.0, 0.0, 1.0])


@pytest.mark.parametrize("lib", ["torch", "numpy"])
def test_iou_plus_one_convention(lib):
    a, b = (torch.tensor(A), torch.tensor(B)) if lib == "torch" else (np.array(A), np.array(B))
    iou = np.asarray(box_iou(a, b, plus_one=True))
    # 11x11 boxes; overlap 6x6 = 36; touching at x = 10: one shared column, 1 x 11 = 11
    assert iou[0].tolist() == pytest.approx([36 / (121 + 121 - 36), 11 / (121 + 121 - 11), 0.0, 1.0])
    assert np.asarray(box_area(a, plus_one=True)).tolist() == [121.0]


def test_area_of_degenerate_and_reversed_boxes_is_zero():
    boxes = torch.tensor([[0.0, 0.0, 4.0, 3.0], [5.0, 5.0, 5.0, 9.0], [6.0, 6.0, 2.0, 2.0]])
    assert box_area(boxes).tolist() == [12.0, 0.0, 0.0]
    assert box_area(boxes, plus_one=True).tolist() == [20.0, 5.0, 0.0]


def test_aligned_iou_is_the_diagonal():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(6, 2, generator=g) * 50
    a = torch.cat([xy, xy + torch.rand(6, 2, generator=g) * 30 + 1], 1)
    xy = torch.rand(6, 2, generator=g) * 50
    b = torch.cat([xy, xy + torch.rand(6, 2, generator=g) * 30 + 1], 1)
    for plus_one in (False, True):
        assert torch.allclose(box_iou_aligned(a, b, plus_one), torch.diagonal(box_iou(a, b, plus_one)))
    assert np.allclose(box_iou_aligned(a.numpy(), b.numpy()), torch.diagonal(box_iou(a, b)).numpy())


def test_generalized_iou():
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[0.0, 0.0, 1.0, 1.0], [2.0, 0.0, 3.0, 1.0], [0.5, 0.0, 1.5, 1.0]])
    giou = generalized_box_iou(a, b)[0]
    # identical: 1; disjoint: 0 - (hull 3 - union 2) / 3; half overlap: 1/3 - (1.5 - 1.5) / 1.5
    assert giou.tolist() == pytest.approx([1.0, -1 / 3, 1 / 3])
    far = generalized_box_iou(a, torch.tensor([[1000.0, 0.0, 1001.0, 1.0]]))
    assert -1.0 <= far.item() < -0.99


def test_union_intersection_clip_normalise_centre():
    a = torch.tensor([[0.0, 5.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 20.0, 8.0]])
    assert union_box(a, b).tolist() == [[0, 0, 20, 10]]
    assert intersection_box(a, b).tolist() == [[5, 5, 10, 8]]
    boxes = torch.tensor([[-5.0, -1.0, 120.0, 30.0]])
    clipped = clip_boxes(boxes, (100, 50))
    assert clipped.tolist() == [[0, 0, 100, 30]] and boxes.tolist() == [[-5, -1, 120, 30]]  # input kept
    assert normalise_boxes(torch.tensor([[10.0, 5.0, 50.0, 25.0]]), (100, 50))[0].tolist() == pytest.approx([0.1, 0.1, 0.5, 0.5])
    assert box_xyxy_to_cxcywh(torch.tensor([[10.0, 20.0, 30.0, 60.0]])).tolist() == [[20, 40, 20, 40]]


@pytest.mark.parametrize("lib", ["torch", "numpy"])
def test_invalid_box_mask(lib):
    rows = [[0, 0, 5, 5], [float("nan"), 0, 5, 5], [6, 0, 5, 5], [0, 0, 200, 5], [0, 0, 100, 50]]
    boxes = torch.tensor(rows) if lib == "torch" else np.array(rows)
    assert np.asarray(invalid_box_mask(boxes)).tolist() == [False, True, True, False, False]
    assert np.asarray(invalid_box_mask(boxes, (100, 50))).tolist() == [False, True, True, True, False]


def test_batched_shapes():
    a, b = torch.rand(7, 4), torch.rand(3, 4)
    a[:, 2:] += a[:, :2]
    b[:, 2:] += b[:, :2]
    assert box_iou(a, b).shape == (7, 3) and generalized_box_iou(a, b).shape == (7, 3)
    assert box_iou(torch.zeros(0, 4), b).shape == (0, 3)
