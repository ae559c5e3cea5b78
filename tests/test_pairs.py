"""Pair proposal: every human with every other detection, filtered, ordered, capped, deterministic."""
from __future__ import annotations

import pytest
import torch

from hoi_mllm.pairs import PairProposalConfig, propose_pairs
from hoi_mllm.records import Detections

H, CUP, BIKE = 49, 41, 10


def dets(scores, labels):
    n = len(scores)
    boxes = [[i, i, i + 10, i + 10] for i in range(n)]
    return Detections.create(boxes, scores, labels, (100, 100))


def rows(pairs):
    return list(zip(pairs.human_index.tolist(), pairs.object_index.tolist()))


def test_every_human_with_every_other_detection_by_joint_score():
    d = dets([0.9, 0.8, 0.6, 0.5], [H, CUP, H, BIKE])
    p = propose_pairs(d, H, PairProposalConfig(max_pairs=None))
    # joint scores: (0,1) .72 (0,2) .54 (0,3) .45 (2,0) .54 (2,1) .48 (2,3) .30
    assert rows(p) == [(0, 1), (0, 2), (2, 0), (2, 1), (0, 3), (2, 3)]
    assert p.object_labels.tolist() == [CUP, H, H, CUP, BIKE, BIKE]
    assert torch.equal(p.human_boxes[0], d.boxes[0]) and torch.equal(p.object_boxes[0], d.boxes[1])


def test_ties_break_by_human_then_object_row():
    d = dets([0.5, 0.5, 0.5, 0.5], [H, CUP, H, CUP])
    p = propose_pairs(d, H, PairProposalConfig(max_pairs=None))
    assert rows(p) == [(0, 1), (0, 2), (0, 3), (2, 0), (2, 1), (2, 3)]


def test_cap_thresholds_and_human_human():
    d = dets([0.9, 0.8, 0.6, 0.3], [H, CUP, H, BIKE])
    assert rows(propose_pairs(d, H, PairProposalConfig(max_pairs=2))) == [(0, 1), (0, 2)]
    assert rows(propose_pairs(d, H, PairProposalConfig(min_human_score=0.7, max_pairs=None))) == [(0, 1), (0, 2), (0, 3)]
    assert rows(propose_pairs(d, H, PairProposalConfig(min_object_score=0.5, max_pairs=None))) == [(0, 1), (0, 2), (2, 0), (2, 1)]
    no_hh = propose_pairs(d, H, PairProposalConfig(human_human=False, max_pairs=None))
    assert rows(no_hh) == [(0, 1), (2, 1), (0, 3), (2, 3)]


def test_no_person_or_nothing_to_pair_gives_empty_pairs():
    for d in (dets([0.9, 0.8], [CUP, BIKE]), dets([0.9], [H]), Detections.empty((10, 10))):
        p = propose_pairs(d, H)
        assert len(p) == 0 and p.image_size == d.image_size and p.human_boxes.shape == (0, 4)
    only_humans = propose_pairs(dets([0.9, 0.8], [H, H]), H, PairProposalConfig(human_human=False))
    assert len(only_humans) == 0


def test_deterministic_and_no_self_pairs():
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(12, generator=g).tolist()
    labels = [H if i % 3 == 0 else CUP for i in range(12)]
    a = propose_pairs(dets(scores, labels), H, PairProposalConfig(max_pairs=20))
    b = propose_pairs(dets(scores, labels), H, PairProposalConfig(max_pairs=20))
    assert rows(a) == rows(b) and len(a) == 20
    assert all(h != o for h, o in rows(a))
    joint = (a.human_scores * a.object_scores).tolist()
    assert joint == sorted(joint, reverse=True)


def test_config_is_frozen():
    with pytest.raises(Exception):
        PairProposalConfig().max_pairs = 3
