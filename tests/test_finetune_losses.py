"""Loss terms: which candidate slots each loss touches, focal / BCE / KL values, teacher alignment."""
import pytest
import torch
import torch.nn.functional as F

from hoi_mllm.finetune.config import LossConfig
from hoi_mllm.finetune.losses import (
    align_scores,
    candidate_mask,
    candidate_targets,
    distillation_loss,
    focal_loss,
    hoi_losses,
)

CANDS = torch.tensor([[3, 5, 7, -1], [5, 9, -1, -1], [7, 3, 5, 9]])  # [P=3, C=4]


def test_candidate_mask_and_targets():
    seen = {3, 5, 9}
    mask = candidate_mask(CANDS, seen)
    assert mask.tolist() == [[True, True, False, False], [True, True, False, False], [False, True, True, True]]
    assert candidate_mask(CANDS, None).tolist() == (CANDS >= 0).tolist()
    t = candidate_targets(CANDS, [[5], [], [7, 9, -1]])
    assert t.tolist() == [[0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1]]


def test_focal_loss_matches_its_definition():
    x = torch.tensor([2.0, -1.0, 0.5])
    t = torch.tensor([1.0, 0.0, 0.0])
    p = torch.sigmoid(x)
    expected = torch.stack([0.25 * (1 - p[0]) ** 2 * -torch.log(p[0]),
                            0.75 * p[1] ** 2 * -torch.log(1 - p[1]),
                            0.75 * p[2] ** 2 * -torch.log(1 - p[2])])
    assert torch.allclose(focal_loss(x, t, alpha=0.25, gamma=2.0), expected, atol=1e-6)
    # gamma 0, alpha 0.5: half the BCE
    assert torch.allclose(focal_loss(x, t, 0.5, 0.0), 0.5 * F.binary_cross_entropy_with_logits(x, t, reduction="none"))


@pytest.mark.parametrize("verb", ["focal", "bce"])
def test_unseen_candidate_slots_get_no_verb_gradient(verb):
    """A seen pair's unseen candidates are neither positives nor negatives: zero gradient there."""
    seen_classes = {3, 5, 9}  # 7 is unseen
    logits = torch.randn(3, 4, requires_grad=True)
    role = torch.tensor([1, 1, 0])  # two seen pairs, one "no pair"
    targets = candidate_targets(CANDS, [[5], [9], []])
    terms = hoi_losses(logits, torch.zeros(3, requires_grad=True), role, targets, candidate_mask(CANDS, seen_classes),
                       torch.zeros(3, 4), CANDS >= 0, LossConfig(verb=verb))
    terms.total.backward()
    g = logits.grad
    assert g[0, 2] == 0 and g[0, 3] == 0  # unseen class 7 and padding of a seen pair
    assert g[0, 0] != 0 and g[0, 1] != 0 and g[1, 0] != 0 and g[1, 1] != 0
    assert (g[2] == 0).all()  # "no pair": no verb loss at all
    assert terms.seen_pairs == 2 and terms.potential_pairs == 0


def test_distillation_on_potential_pairs_over_all_candidates():
    logits = torch.zeros(3, 4, requires_grad=True)
    role = torch.tensor([2, 0, 2])  # potential, none, potential (the last has no teacher row)
    teacher = torch.tensor([[0.1, 0.2, 0.7, 0.0], [0.5, 0.5, 0, 0], [0, 0, 0, 0]])
    terms = hoi_losses(logits, torch.zeros(3), role, torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.bool),
                       teacher, CANDS >= 0, LossConfig(distill="kl", distill_weight=1.0))
    terms.total.backward()
    g = logits.grad
    assert g[0, 2] != 0  # the unseen class 7 is distilled (text and teacher only, no label)
    assert g[0, 3] == 0 and (g[1] == 0).all() and (g[2] == 0).all()
    # KL against a uniform student over 3 candidates
    t = teacher[0, :3]
    assert terms.distill.item() == pytest.approx(float((t * (t.log() - torch.log(torch.tensor(1 / 3)))).sum()), abs=1e-5)
    valid = torch.tensor([[True, True, True, False]])
    bce = distillation_loss(torch.zeros(1, 4), teacher[:1], valid, LossConfig(distill="bce"))
    assert bce.item() == pytest.approx(float(F.binary_cross_entropy(torch.full((3,), 0.5), t)), abs=1e-6)


def test_interactiveness_targets_and_weights():
    inter = torch.tensor([3.0, -3.0, 0.0])
    role = torch.tensor([1, 0, 2])
    config = LossConfig(verb_weight=0.0, distill_weight=0.0, interactiveness_weight=2.0)
    terms = hoi_losses(torch.zeros(3, 4), inter, role, torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.bool),
                       torch.zeros(3, 4), CANDS >= 0, config)
    expected = 2.0 * F.binary_cross_entropy_with_logits(inter, torch.tensor([1.0, 0.0, 1.0]))
    assert terms.total.item() == pytest.approx(expected.item(), abs=1e-6)
    assert terms.verb.item() == 0 and terms.distill.item() == 0


def test_align_scores_by_class_id():
    student = torch.tensor([[7, 3, 5, -1]])
    teacher_cands = torch.tensor([[3, 5, 7, 9]])
    teacher_probs = torch.tensor([[0.1, 0.2, 0.6, 0.1]])
    assert align_scores(student, teacher_cands, teacher_probs)[0].tolist() == pytest.approx([0.6, 0.1, 0.2, 0.0])


@pytest.mark.parametrize("distill", ["eoid", "bce"])
def test_a_negative_row_is_a_verb_negative_on_every_real_slot_and_has_no_interactiveness(distill):
    """Role 4 (a detection-only match the teacher leaves unselected, matcher.detection_only_unselected=negative):
    every real slot, the unseen class 7 included, is pushed down; padding is not; a mask keeps interactiveness out."""
    logits = torch.zeros(3, 4, requires_grad=True)
    inter = torch.zeros(3, requires_grad=True)
    role = torch.tensor([4, 0, 3])  # negative, none, ignored
    terms = hoi_losses(logits, inter, role, torch.zeros(3, 4), candidate_mask(CANDS, {3, 5, 9}), torch.zeros(3, 4),
                       CANDS >= 0, LossConfig(distill=distill), torch.zeros(3), torch.tensor([False, True, False]))
    terms.total.backward()
    g = logits.grad
    assert (g[0, :3] > 0).all() and g[0, 3] == 0  # a positive gradient lowers the logit: negatives, 7 included
    assert (g[1:] == 0).all()
    assert inter.grad[0] == 0 and inter.grad[2] == 0 and inter.grad[1] != 0
