"""Training targets (finetune/targets.py) on hand-built images: DA-HOI's union ground truth, EoID's potential pairs."""
import numpy as np
import pytest
import torch

from hoi_mllm.data.sample import HOISample
from hoi_mllm.finetune.config import MatcherConfig
from hoi_mllm.finetune.losses import hoi_losses
from hoi_mllm.finetune.matcher import PairSet, pair_ious
from hoi_mllm.finetune.schema import ConfigError
from hoi_mllm.finetune.targets import (
    IGNORED,
    NONE,
    POTENTIAL,
    SEEN,
    TargetRule,
    build_targets,
    merge_instances,
    potential_combinations,
    union_match,
)

SIZE = (300, 200)
PERSON, CUP, BALL = 0, 1, 2
NO_INT = 9  # verb id of "no interaction"
RULE = TargetRule(human_label=PERSON, no_interaction_verb=NO_INT)
H = [0, 0, 60, 150]            # a person
H_DUP = [2, 1, 61, 148]        # the same person, annotated again (IoU ~0.95)
CUP_BOX = [70, 60, 100, 90]
CUP_DUP = [71, 61, 101, 92]
BALL_BOX = [200, 100, 230, 130]  # far from everything
H2 = [150, 0, 210, 150]         # a second person


def sample(boxes, labels, pairs, name="img.jpg") -> HOISample:
    """``pairs``: (human row, object row, verbs, classes)."""
    return HOISample(name, SIZE, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64),
                     np.asarray([p[0] for p in pairs], np.int64), np.asarray([p[1] for p in pairs], np.int64),
                     [tuple(p[2]) for p in pairs], [tuple(p[3]) for p in pairs])


def props(humans, objects, labels, verbs=None) -> PairSet:
    t = lambda x: torch.as_tensor(x, dtype=torch.float32).reshape(-1, 4)  # noqa: E731
    return PairSet(t(humans), t(objects), torch.as_tensor(labels).long(), torch.ones(len(labels)), verbs)


def upt_sample():
    """UPT habit: person-cup with two verbs, each verb its own row with its own slightly different boxes."""
    return sample([H, CUP_BOX, H_DUP, CUP_DUP, BALL_BOX], [PERSON, CUP, PERSON, CUP, BALL],
                  [(0, 1, [1], [11]), (2, 3, [2], [12])])


def test_near_duplicate_rows_are_merged_classwise():
    s = upt_sample()
    rep = merge_instances(s.boxes, s.labels, 0.5)
    assert rep.tolist() == [0, 1, 0, 1, 4]
    # different labels never merge; IoU at or below the threshold does not merge (torchvision: "IoU > thr")
    assert merge_instances(np.asarray([H, H], np.float32), np.asarray([PERSON, CUP]), 0.5).tolist() == [0, 1]
    half = [[0, 0, 10, 10], [0, 0, 10, 20]]  # IoU exactly 0.5
    assert merge_instances(np.asarray(half, np.float32), np.asarray([CUP, CUP]), 0.5).tolist() == [0, 1]
    assert merge_instances(np.zeros((0, 4), np.float32), np.zeros(0, np.int64)).tolist() == []


def test_a_proposal_overlapping_two_annotated_pairs_gets_both_verbs():
    s = upt_sample()
    p = props([H, H_DUP], [CUP_BOX, CUP_DUP], [CUP, CUP])
    t = build_targets(s, p, torch.ones(2), SIZE, RULE)
    assert t.role.tolist() == [SEEN, SEEN]
    assert t.positives == [(11, 12), (11, 12)]
    assert t.interactiveness.tolist() == [1.0, 1.0]
    # the earlier one-to-one rule: one verb each, which is what the real files lose
    old = build_targets(s, p, torch.ones(2), SIZE, RULE, MatcherConfig(targets="one-to-one"))
    assert sorted(old.positives) == [(11,), (12,)]


def test_union_needs_the_same_object_class_and_the_threshold():
    s = upt_sample()
    p = props([H], [CUP_BOX], [BALL])  # right boxes, wrong class
    assert not union_match(p, PairSet(torch.tensor([H], dtype=torch.float32), torch.tensor([CUP_BOX], dtype=torch.float32),
                                      torch.tensor([CUP])), 0.5).any()
    assert build_targets(s, p, torch.ones(1), SIZE, RULE).role.tolist() != [SEEN]
    p = props([H], [[70, 60, 130, 90]], [CUP])  # cup IoU 0.5 exactly: still seen at union_iou 0.5
    assert build_targets(s, p, torch.ones(1), SIZE, RULE).role.tolist() == [SEEN]
    assert build_targets(s, p, torch.ones(1), SIZE, RULE, MatcherConfig(union_iou=0.6)).role.tolist() != [SEEN]


def test_seen_positives_keep_only_seen_classes():
    s = upt_sample()
    rule = TargetRule(PERSON, NO_INT, seen_classes=frozenset({12}))
    t = build_targets(s, props([H], [CUP_BOX], [CUP]), torch.ones(1), SIZE, rule)
    assert t.positives == [(12,)]


def test_no_potential_pair_is_a_duplicate_or_a_self_pair():
    s = upt_sample()
    rep = merge_instances(s.boxes, s.labels)
    h, o = potential_combinations(s, rep, RULE)
    assert list(zip(h.tolist(), o.tolist())) == [(0, 4)]  # person-ball only: no (H, H_DUP), no (H, CUP_DUP)
    # every raw combination proposed (as ground-truth proposals are), person-person included
    boxes, labels = s.boxes, s.labels
    hs, os_ = [], []
    for a in (0, 2):
        for b in range(len(labels)):
            if a != b:
                hs.append(boxes[a]), os_.append(b)
    p = props(np.stack(hs), boxes[os_], labels[os_])
    t = build_targets(s, p, torch.ones(len(os_)), SIZE, RULE)
    pot = t.potential_proposal
    assert pot.numel() == 1
    ann = PairSet(torch.as_tensor(boxes[[0, 2]]), torch.as_tensor(boxes[[1, 3]]), torch.tensor([CUP, CUP]))
    sub = PairSet(p.human_boxes[pot], p.object_boxes[pot], p.object_labels[pot])
    assert (pair_ious(sub, ann) < 0.5).all()
    assert int(p.object_labels[pot]) == BALL
    # the person paired with its own duplicate box is no potential pair: none (it matches no combination)
    self_pair = [i for i, b in enumerate(os_) if labels[b] == PERSON]
    assert all(t.role[i] == NONE for i in self_pair)
    # stage two is one-to-one (EoID): the duplicate person with the ball gets no second combination
    assert t.role.tolist() == [SEEN, NONE, SEEN, POTENTIAL, NONE, SEEN, SEEN, NONE]
    # the earlier rule puts potential slots on duplicates and self-pairs
    old = build_targets(s, p, torch.ones(len(os_)), SIZE, RULE, MatcherConfig(targets="one-to-one"))
    assert int((old.role == POTENTIAL).sum()) == 3


def test_no_interaction_only_pair_does_not_interact():
    s = sample([H, CUP_BOX, H2, BALL_BOX], [PERSON, CUP, PERSON, BALL],
               [(0, 1, [NO_INT], [19]), (2, 3, [3, NO_INT], [23, 29])])
    t = build_targets(s, props([H, H2], [CUP_BOX, BALL_BOX], [CUP, BALL]), torch.ones(2), SIZE, RULE)
    assert t.role.tolist() == [SEEN, SEEN]
    assert t.positives == [(19,), (23, 29)]  # the no-interaction class stays a verb target (DA-HOI answers "no")
    assert t.interactiveness.tolist() == [0.0, 1.0]
    assert t.interactiveness_mask.tolist() == [True, True]


def test_unselected_stage_two_matches_are_ignored_by_the_interactiveness_loss():
    # two people, two balls, nothing annotated but a cup pair: four free combinations, top_k 1
    s = sample([H, CUP_BOX, H2, BALL_BOX, [240, 10, 270, 40]], [PERSON, CUP, PERSON, BALL, BALL],
               [(0, 1, [1], [11])])
    p = props([H, H2, H2], [CUP_BOX, BALL_BOX, [240, 10, 270, 40]], [CUP, BALL, BALL])
    cfg = MatcherConfig(top_k=1)
    t = build_targets(s, p, torch.tensor([0.9, 0.8, 0.7]), SIZE, RULE, cfg)
    assert t.role.tolist() == [SEEN, POTENTIAL, IGNORED]
    assert t.interactiveness.tolist() == [1.0, 1.0, 0.0] and t.interactiveness_mask.tolist() == [True, True, False]
    # below the interactiveness threshold: matched but not potential -> ignored too
    t2 = build_targets(s, p, torch.tensor([0.9, 0.3, 0.2]), SIZE, RULE, cfg)
    assert t2.role.tolist() == [SEEN, IGNORED, IGNORED]

    from hoi_mllm.finetune.config import LossConfig

    def loss(ignored_logit):
        logits = torch.tensor([1.0, -1.0, ignored_logit], requires_grad=True)
        terms = hoi_losses(torch.zeros(3, 2), logits, t.role, torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.bool),
                           torch.zeros(3, 2), torch.ones(3, 2, dtype=torch.bool), LossConfig(),
                           t.interactiveness, t.interactiveness_mask)
        terms.interactiveness.backward()
        return float(terms.interactiveness.detach()), logits.grad
    a, ga = loss(-5.0)
    b, gb = loss(7.0)
    assert a == b and ga[2] == 0 and gb[2] == 0 and ga[0] != 0
    # matcher.unselected_matches=negative: the same matches, now interactiveness negatives (target 0, in the loss)
    t3 = build_targets(s, p, torch.tensor([0.9, 0.8, 0.7]), SIZE, RULE, MatcherConfig(top_k=1,
                                                                                     unselected_matches="negative"))
    assert t3.role.tolist() == t.role.tolist() and t3.interactiveness.tolist() == [1.0, 1.0, 0.0]
    assert t3.interactiveness_mask.tolist() == [True, True, True]


def test_an_image_whose_pairs_were_all_filtered_out_has_no_seen_pair():
    s = sample([H, CUP_BOX], [PERSON, CUP], [])
    t = build_targets(s, props([H], [CUP_BOX], [CUP]), torch.ones(1), SIZE, RULE)
    assert t.role.tolist() in ([NONE], [POTENTIAL]) and t.positives == [()]
    t = build_targets(s, props(np.zeros((0, 4)), np.zeros((0, 4)), []), torch.ones(0), SIZE, RULE)
    assert t.role.numel() == 0 and t.potential_proposal.numel() == 0
    empty = sample(np.zeros((0, 4)), [], [])
    t = build_targets(empty, props([H], [CUP_BOX], [CUP]), torch.ones(1), SIZE, RULE)
    assert t.role.tolist() == [NONE]


@pytest.mark.parametrize("overrides, message", [
    ({"targets": "many"}, "allowed"), ({"union_iou": 0.0}, "matcher.union_iou"), ({"merge_iou": 1.5}, "matcher.merge_iou"),
    ({"unselected_matches": "zero"}, "matcher.unselected_matches.*ignored.*negative"),
])
def test_bad_target_settings_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        MatcherConfig(**overrides)
