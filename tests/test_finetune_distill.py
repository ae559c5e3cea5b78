"""EoID distillation (loss.distill=eoid): teacher soft labels on every matched pair, ground-truth positives kept."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hoi_mllm.finetune.config import LossConfig
from hoi_mllm.finetune.losses import hoi_losses
from hoi_mllm.finetune.targets import soft_label_classes
from hoi_mllm.finetune.teacher import pad_to_square
from hoi_mllm.prompts import load_vocabulary

CANDS = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]])
VALID = CANDS >= 0


def run(role, targets, teacher, soft_slots=None, **cfg):
    logits = torch.zeros(3, 4, requires_grad=True)
    terms = hoi_losses(logits, torch.zeros(3), torch.tensor(role), targets, VALID, teacher, VALID,
                       LossConfig(**{"distill": "eoid", "distill_weight": 1.0, "verb": "bce", **cfg}),
                       soft_slots=soft_slots, verbs_per_pair=4)
    terms.total.backward()
    return terms, logits.grad


def test_soft_labels_on_seen_and_potential_pairs_positives_stay_one():
    targets = torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    teacher = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
    terms, g = run([1, 2, 0], targets, teacher)
    # seen pair: slot 0 is a ground-truth positive (hard, BCE target 1), slots 1 and 2 soft, slot 3 hard negative
    soft = F.binary_cross_entropy_with_logits(torch.zeros(5), torch.tensor([0.3, 0.2, 0.1, 0.2, 0.3]), reduction="sum")
    soft = soft + F.binary_cross_entropy_with_logits(torch.zeros(1), torch.tensor([0.4]), reduction="sum")
    assert terms.distill.item() == pytest.approx(soft.item() / (3 * 4), abs=1e-6)
    hard = F.binary_cross_entropy_with_logits(torch.zeros(2), torch.tensor([1.0, 0.0]))
    assert terms.verb.item() == pytest.approx(hard.item(), abs=1e-6)
    assert (g[2] == 0).all()  # a "none" pair has no verb term, whatever its teacher row says
    assert g[0, 0] < 0  # pushed up towards its positive label
    assert g[1].abs().sum() > 0  # the potential pair is distilled


def test_a_teacher_value_of_one_is_a_positive_and_a_potential_pairs_zero_slots_are_negatives():
    """EoID's _bce_focal_loss sorts targets by value: 1 a (focal) positive, 0 a negative, in between soft. A one-hot
    teacher row (the annotations oracle) on a potential pair is then a hard positive and three hard negatives,
    with no soft term; a soft-slot restriction leaves the potential pair's other slots negatives."""
    targets = torch.zeros(3, 4)
    teacher = torch.tensor([[0.0, 0, 0, 0], [0.0, 1.0, 0, 0], [0, 0, 0, 0]])
    terms, g = run([0, 2, 0], targets, teacher)
    assert terms.distill.item() == 0.0
    hard = F.binary_cross_entropy_with_logits(torch.zeros(4), torch.tensor([0.0, 1.0, 0.0, 0.0]))
    assert terms.verb.item() == pytest.approx(hard.item(), abs=1e-6)
    assert g[1, 1] < 0 and (g[1, [0, 2, 3]] > 0).all() and (g[[0, 2]] == 0).all()
    slots = torch.tensor([[False, True, True, False]] * 3)
    teacher = torch.tensor([[0.0, 0, 0, 0], [0.0, 0.6, 0, 0], [0, 0, 0, 0]])
    terms, g = run([0, 2, 0], targets, teacher, slots)
    soft = F.binary_cross_entropy_with_logits(torch.zeros(1), torch.tensor([0.6]), reduction="sum") / (3 * 4)
    assert terms.distill.item() == pytest.approx(soft.item(), abs=1e-6)
    assert (g[1, [0, 2, 3]] > 0).all()  # slots outside the soft ones and the zero soft slot: negatives
    terms, g = run([2, 2, 0], targets, torch.zeros(3, 4))  # potential pairs without a teacher row: no term
    assert (g == 0).all() and terms.verb.item() == 0.0 and terms.distill.item() == 0.0


def test_soft_slots_restrict_the_teacher():
    teacher = torch.full((3, 4), 0.25)
    slots = torch.tensor([[False, True, True, False]] * 3)  # e.g. no-interaction slots 0 and 3 left out
    terms, g = run([2, 2, 2], torch.zeros(3, 4), teacher, slots)
    soft = F.binary_cross_entropy_with_logits(torch.zeros(6), torch.full((6,), 0.25), reduction="sum") / (3 * 4)
    assert terms.distill.item() == pytest.approx(soft.item(), abs=1e-6)  # the soft term on slots 1 and 2 only
    assert (g[:, 0] > 0).all() and (g[:, 3] > 0).all() and (g[:, 1:3] != 0).all()  # 0 and 3: negatives (EoID)


def test_without_a_teacher_the_verb_loss_is_the_plain_one():
    targets = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    a, _ = run([1, 1, 0], targets, torch.zeros(3, 4))
    b, _ = run([1, 1, 0], targets, torch.zeros(3, 4), distill="kl")
    assert a.verb.item() == b.verb.item() and a.distill.item() == 0


def test_soft_label_classes_leave_out_no_interaction_and_keep_unseen_verbs_only_under_unseen_verb():
    vocab = load_vocabulary("hico-det")
    every = soft_label_classes(vocab)
    no_int = {c for c in range(vocab.num_classes) if vocab.class_verbs[c] == vocab.no_interaction_verb}
    assert len(no_int) == 80 and every == frozenset(range(vocab.num_classes)) - no_int
    uv = next(n for n, s in vocab.splits.items() if s.kind == "unseen_verb")
    assert soft_label_classes(vocab, uv) == vocab.unseen_classes(uv) - no_int
    uc = next(n for n, s in vocab.splits.items() if s.kind == "unseen_combination")
    assert soft_label_classes(vocab, uc) == every


def test_pad_to_square_centres_the_crop_on_black():
    crop = Image.fromarray(np.full((10, 30, 3), 200, np.uint8))
    sq = np.asarray(pad_to_square(crop))
    assert sq.shape == (30, 30, 3)
    assert (sq[10:20] == 200).all() and (sq[:10] == 0).all() and (sq[20:] == 0).all()
    assert pad_to_square(Image.new("RGB", (8, 8))).size == (8, 8)
