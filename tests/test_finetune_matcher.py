"""EoID two-stage matching on hand-built cases."""
import numpy as np
import pytest
import torch

from hoi_mllm.finetune.config import MatcherConfig
from hoi_mllm.finetune.matcher import (
    NONE,
    POTENTIAL,
    SEEN,
    PairSet,
    assign,
    two_stage_match,
    unannotated_combinations,
    verb_cost,
)

SIZE = (200, 100)
V = 4  # verbs
H1, H2 = [0, 0, 40, 100], [100, 0, 140, 100]  # two people
A, B, C = [50, 50, 70, 70], [150, 50, 170, 70], [10, 10, 30, 30]  # three objects


def pairs(humans, objects, labels, verbs=None, scores=None) -> PairSet:
    t = lambda x: torch.as_tensor(x, dtype=torch.float32).reshape(-1, 4)  # noqa: E731
    return PairSet(t(humans), t(objects), torch.as_tensor(labels, dtype=torch.long).reshape(-1),
                   None if scores is None else torch.as_tensor(scores, dtype=torch.float32),
                   None if verbs is None else torch.as_tensor(verbs, dtype=torch.float32).reshape(-1, V))


def shift(box, dx):
    return [box[0] + dx, box[1], box[2] + dx, box[3]]


def no_pairs() -> PairSet:
    return pairs(np.zeros((0, 4)), np.zeros((0, 4)), [], np.zeros((0, V)))


def test_seen_pairs_are_matched_first_then_combinations():
    # proposals: the annotated pair (H1, A), the unannotated combination (H1, B), a stray pair
    props = pairs([H1, H1, H2], [A, B, C], [1, 2, 3], verbs=np.full((3, V), 0.5))
    gt = pairs([H1], [A], [1], verbs=[[1, 0, 0, 0]])
    combos = pairs([H1, H2], [B, A], [2, 1])
    m = two_stage_match(props, gt, combos, torch.tensor([0.9, 0.9, 0.9]), SIZE, MatcherConfig())
    assert m.role.tolist() == [SEEN, POTENTIAL, NONE]
    assert m.seen_proposal.tolist() == [0] and m.seen_target.tolist() == [0]
    assert m.potential_proposal.tolist() == [1] and m.potential_target.tolist() == [0]
    assert m.target_of(SEEN).tolist() == [0, -1, -1] and m.target_of(POTENTIAL).tolist() == [-1, 0, -1]


def test_a_proposal_matching_an_annotated_pair_is_never_taken_by_stage_two():
    # the same boxes are both an annotated pair and (by construction here) a combination:
    # stage one takes the proposal, stage two finds nothing left for it
    props = pairs([H1], [A], [1])
    gt = pairs([H1], [A], [1], verbs=[[0, 1, 0, 0]])
    combos = pairs([H1], [A], [1])
    m = two_stage_match(props, gt, combos, torch.tensor([0.99]), SIZE, MatcherConfig())
    assert m.role.tolist() == [SEEN] and m.stage_two_proposal.numel() == 0


@pytest.mark.parametrize("dx,expected", [(0, SEEN), (5, SEEN), (14, NONE)])
def test_iou_gate_on_the_object_box(dx, expected):
    # object box shifted by dx px: IoU(20-px box, shifted) = (20-dx)/(20+dx); 5 -> 0.6, 14 -> 0.18
    props = pairs([H1], [shift(A, dx)], [1])
    gt = pairs([H1], [A], [1], verbs=[[1, 0, 0, 0]])
    m = two_stage_match(props, gt, no_pairs(), torch.tensor([0.9]), SIZE, MatcherConfig())
    assert m.role.tolist() == [expected]


def test_iou_gate_on_the_human_box_and_on_combinations():
    # good object, human shifted by 30 px (IoU of the 40-px wide human: 10/70 < 0.5): no match in either stage
    props = pairs([shift(H1, 30)], [A], [1])
    gt = pairs([H1], [A], [1], verbs=[[1, 0, 0, 0]])
    m = two_stage_match(props, gt, pairs([H1], [A], [1]), torch.tensor([0.9]), SIZE, MatcherConfig())
    assert m.role.tolist() == [NONE]
    # the gate threshold is a config value
    m = two_stage_match(props, gt, no_pairs(), torch.tensor([0.9]), SIZE, MatcherConfig(iou_threshold=0.1))
    assert m.role.tolist() == [SEEN]


def test_no_proposal_is_used_twice_and_no_target_twice():
    # two annotated pairs on nearly the same boxes, one proposal: one match only
    props = pairs([H1], [A], [1])
    gt = pairs([H1, H1], [A, shift(A, 1)], [1, 1], verbs=[[1, 0, 0, 0], [0, 1, 0, 0]])
    m = two_stage_match(props, gt, no_pairs(), torch.tensor([0.9]), SIZE, MatcherConfig())
    assert m.seen_proposal.tolist() == [0] and m.seen_target.numel() == 1
    # three proposals on one annotated pair: one is seen, the others are no pair (duplicates)
    props = pairs([H1, H1, H1], [A, shift(A, 1), shift(A, 2)], [1, 1, 1])
    gt = pairs([H1], [A], [1], verbs=[[1, 0, 0, 0]])
    m = two_stage_match(props, gt, no_pairs(), torch.tensor([0.9, 0.9, 0.9]), SIZE, MatcherConfig())
    assert m.role.tolist() == [SEEN, NONE, NONE]
    # two proposals, two combinations: each combination once, each proposal once
    props = pairs([H1, H1], [B, shift(B, 1)], [2, 2])
    combos = pairs([H1, H1], [B, shift(B, 2)], [2, 2])
    m = two_stage_match(props, no_pairs(), combos, torch.tensor([0.9, 0.8]), SIZE, MatcherConfig())
    assert sorted(m.potential_proposal.tolist()) == [0, 1]
    assert sorted(m.potential_target.tolist()) == [0, 1]


def test_stage_one_costs_prefer_the_right_object_class_and_verbs():
    # two proposals on the same boxes; the annotated pair's object is class 1 and its verb is 2
    props = pairs([H1, H1], [A, A], [3, 1], verbs=[[0, 0, 0.1, 0], [0, 0, 0.1, 0]])
    gt = pairs([H1], [A], [1], verbs=[[0, 0, 1, 0]])
    m = two_stage_match(props, gt, no_pairs(), torch.tensor([0.5, 0.5]), SIZE, MatcherConfig())
    assert m.seen_proposal.tolist() == [1]
    # same labels: the proposal whose verb scores agree wins
    props = pairs([H1, H1], [A, A], [1, 1], verbs=[[0.9, 0, 0.1, 0.9], [0.1, 0, 0.9, 0.1]])
    m = two_stage_match(props, gt, no_pairs(), torch.tensor([0.5, 0.5]), SIZE, MatcherConfig())
    assert m.seen_proposal.tolist() == [1]


def test_potential_pairs_top_k_by_interactiveness_above_threshold():
    objs = [[20 + 30 * k, 10, 40 + 30 * k, 30] for k in range(5)]
    props = pairs([H1] * 5, objs, [1] * 5)
    combos = pairs([H1] * 5, objs, [1] * 5)
    inter = torch.tensor([0.9, 0.2, 0.7, 0.6, 0.95])
    m = two_stage_match(props, no_pairs(), combos, inter, SIZE, MatcherConfig(top_k=3, interactiveness_threshold=0.5))
    assert m.potential_proposal.tolist() == [4, 0, 2]  # by descending interactiveness, at most 3
    assert m.role.tolist() == [POTENTIAL, NONE, POTENTIAL, NONE, POTENTIAL]
    assert sorted(m.stage_two_proposal.tolist()) == [0, 1, 2, 3, 4]  # all matched before the selection
    m = two_stage_match(props, no_pairs(), combos, inter, SIZE, MatcherConfig(top_k=3, interactiveness_threshold=0.8))
    assert m.potential_proposal.tolist() == [4, 0]
    m = two_stage_match(props, no_pairs(), combos, inter, SIZE, MatcherConfig(top_k=0))
    assert m.potential_proposal.numel() == 0 and (m.role == NONE).all()


def test_stage_two_ignores_verbs_and_needs_the_object_class_only_through_the_cost():
    # a stage-two proposal with another object label still matches by boxes (the class is a cost, not a gate)
    props = pairs([H1], [B], [3], scores=[0.6])
    combos = pairs([H1], [B], [2])
    m = two_stage_match(props, no_pairs(), combos, torch.tensor([0.9]), SIZE, MatcherConfig())
    assert m.role.tolist() == [POTENTIAL]
    # with two candidate combinations on the same boxes, the one with the proposal's class wins
    combos = pairs([H1, H1], [B, B], [2, 3])
    m = two_stage_match(props, no_pairs(), combos, torch.tensor([0.9]), SIZE, MatcherConfig())
    assert m.potential_target.tolist() == [1]


def test_empty_inputs():
    m = two_stage_match(no_pairs(), no_pairs(), no_pairs(), torch.zeros(0), SIZE, MatcherConfig())
    assert m.role.numel() == 0
    props = pairs([H1], [A], [1])
    m = two_stage_match(props, no_pairs(), no_pairs(), torch.tensor([0.9]), SIZE, MatcherConfig())
    assert m.role.tolist() == [NONE]


def test_assign_never_returns_a_forbidden_match_and_maximises_allowed_ones():
    cost = torch.tensor([[0.0, 5.0], [0.1, 9.0]])
    allowed = torch.tensor([[True, True], [True, False]])
    rows, cols = assign(cost, allowed)
    # the cheapest single choice (0,0) would leave row 1 unmatched; both rows match instead
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0)]
    rows, cols = assign(cost, torch.zeros(2, 2, dtype=torch.bool))
    assert rows.numel() == 0


def test_verb_cost_prefers_agreeing_predictions():
    targets = torch.tensor([[1.0, 0, 0, 0]])
    probs = torch.tensor([[0.9, 0.1, 0.0, 0.0], [0.1, 0.9, 0.9, 0.0]])
    cost = verb_cost(probs, targets)
    assert cost.shape == (2, 1) and cost[0, 0] < cost[1, 0]
    assert torch.isclose(verb_cost(targets, targets), torch.tensor([[-1.0]])).all()


def test_unannotated_combinations():
    labels = np.array([0, 1, 0, 2])  # person, object, person, object (person = 0)
    h, o = unannotated_combinations(labels, np.array([0, 2]), np.array([1, -1]), human_label=0)
    assert list(zip(h.tolist(), o.tolist())) == [(0, 2), (0, 3), (2, 0), (2, 1), (2, 3)]
    h, o = unannotated_combinations(labels, np.array([0]), np.array([1]), human_label=0, human_human=False)
    assert list(zip(h.tolist(), o.tolist())) == [(0, 3), (2, 1), (2, 3)]
