"""Losses of the fine-tuning step: verb loss on seen pairs, distillation on potential pairs, interactiveness.

The recogniser scores every candidate phrase of a pair's object, unseen ones included (they are
text, as at inference). Which candidate slots a loss may touch is decided here, explicitly:

* **verb loss** (focal or BCE, sigmoid per candidate) on pairs matched to an annotated pair, over
  the *seen* candidate slots only: a candidate whose class is unseen in the zero-shot split is
  neither a positive (no annotation of it survives the filter) nor a negative (it must not be
  pushed down because the annotation was removed), so its slot is masked out;
* **distillation** (``loss.distill=eoid``, EoID): on seen and potential pairs, the teacher's soft
  scores become the targets of the candidate slots that are not ground-truth positives (unseen ones
  included: the scores carry what is known of unseen classes, from text and pixels, never from unseen
  labels); ``kl`` / ``bce``: on potential pairs only, over all candidate slots;
* **negatives of detection-only images** (``matcher.detection_only_unselected=negative``, the default): a
  stage-two match of a detection-only image that the teacher leaves unselected (no class at
  ``pseudo_label_threshold``) is a verb negative on every candidate slot, unseen ones included, as EoID's
  ``loss_verb_labels`` gives every query its (pseudo-)labels do not match all-zero targets; the teacher's
  "nothing here" is the only negative a new action gets;
* **interactiveness** BCE, "interacts": 1 for interacting seen pairs and potential pairs, 0 for
  pairs annotated only with the no-interaction verb and for "no pair"; stage-two matches not
  selected as potential are left out (EoID's ``unknown_mask``; :mod:`~hoi_mllm.finetune.targets`).

Shapes: ``P`` pairs (of a whole batch, concatenated), ``C`` candidate slots (``-1`` padded).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from hoi_mllm.finetune.config import LossConfig


@dataclass
class LossTerms:
    """The loss of a batch and its parts (each already weighted), plus counts for logging."""

    total: Tensor
    verb: Tensor
    distill: Tensor
    interactiveness: Tensor
    seen_pairs: int = 0
    potential_pairs: int = 0
    pairs: int = 0

    def as_floats(self) -> dict[str, float]:
        return {"loss": float(self.total.detach()), "verb": float(self.verb.detach()),
                "distill": float(self.distill.detach()), "inter": float(self.interactiveness.detach())}


def candidate_mask(candidates: Tensor, classes: Iterable[int] | None) -> Tensor:
    """``[P, C]`` True at real candidate slots whose class is in ``classes`` (None: every real slot)."""
    valid = candidates >= 0
    if classes is None:
        return valid
    allowed = torch.zeros(int(candidates.max().clamp(min=0)) + 1, dtype=torch.bool)
    keep = torch.as_tensor(sorted(c for c in classes if c < allowed.numel()), dtype=torch.long)
    allowed[keep] = True
    return valid & allowed[candidates.clamp(min=0).cpu()].to(candidates.device)


def candidate_targets(candidates: Tensor, positives: Sequence[Iterable[int]]) -> Tensor:
    """``[P, C]`` float 1 where the slot's class is among the pair's positive classes.

    Args:
        candidates: ``[P, C]`` class ids (``-1`` padding).
        positives: ``P`` collections of class ids (empty for pairs without verb targets).
    """
    out = torch.zeros(candidates.shape, dtype=torch.float32)
    cands = candidates.cpu()
    for p, cls in enumerate(positives):
        cls = [c for c in cls if c >= 0]
        if cls:
            out[p] = torch.isin(cands[p], torch.as_tensor(cls, dtype=torch.long)).float()
    return out.to(candidates.device)


def align_scores(candidates: Tensor, source_candidates: Tensor, source_scores: Tensor) -> Tensor:
    """Scores of ``source`` re-ordered onto ``candidates`` by class id: ``[P, C]`` (0 where absent).

    Args:
        candidates: ``[P, C]`` the student's candidate classes (any order, ``-1`` padded).
        source_candidates: ``[P, Cs]`` the teacher's candidate classes.
        source_scores: ``[P, Cs]`` the teacher's scores.
    """
    same = (candidates[:, :, None] == source_candidates[:, None, :].to(candidates.device)) & (candidates >= 0)[..., None]
    return (same.float() * source_scores.to(candidates.device).float()[:, None, :]).sum(-1)  # [P, C]


def focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.5, gamma: float = 2.0) -> Tensor:
    """Sigmoid focal loss (Lin et al. 2017), elementwise: ``[...]`` logits and targets in [0, 1] -> ``[...]``."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    weight = alpha * targets + (1 - alpha) * (1 - targets)
    return weight * (1 - p_t) ** gamma * ce


def verb_loss(logits: Tensor, targets: Tensor, mask: Tensor, config: LossConfig) -> Tensor:
    """Verb loss over the ``mask [P, C]`` slots (seen candidates of seen pairs).

    Focal: summed and divided by the number of positive slots (at least 1), as DETR-style HOI
    detectors normalise; BCE: mean over the slots. 0 when no slot is masked in.
    """
    if not bool(mask.any()):
        return logits.sum() * 0.0
    x, t = logits.float()[mask], targets.float()[mask]
    if config.verb == "focal":
        return focal_loss(x, t, config.focal_alpha, config.focal_gamma).sum() / t.sum().clamp(min=1.0)
    return F.binary_cross_entropy_with_logits(x, t)


def distillation_loss(logits: Tensor, teacher: Tensor, valid: Tensor, config: LossConfig) -> Tensor:
    """Distillation of ``teacher [P, C]`` probabilities into ``logits [P, C]`` over ``valid`` slots.

    ``kl``: ``KL(teacher || softmax(logits / T))`` over each pair's valid slots (teacher rows
    renormalised), mean over pairs; ``bce``: BCE of ``sigmoid(logits)`` against the teacher's
    probabilities, mean over the valid slots. 0 without pairs.
    """
    rows = valid.any(1)
    if not bool(rows.any()):
        return logits.sum() * 0.0
    logits, teacher, valid = logits[rows].float(), teacher[rows].float(), valid[rows]
    if config.distill == "bce":
        return F.binary_cross_entropy_with_logits(logits[valid], teacher[valid].clamp(0, 1))
    t = teacher.clamp(min=0) * valid
    t = t / t.sum(1, keepdim=True).clamp(min=1e-12)
    log_s = torch.log_softmax((logits / config.distill_temperature).masked_fill(~valid, float("-inf")), dim=1)
    kl = torch.where(t > 0, t * (torch.log(t.clamp(min=1e-12)) - log_s), torch.zeros_like(t))
    return kl.sum(1).mean()


def soft_label_loss(logits: Tensor, soft: Tensor, mask: Tensor, denominator: float) -> Tensor:
    """EoID's soft-label term: BCE of ``sigmoid(logits)`` against ``soft`` summed over ``mask [P, C]``, divided
    by ``denominator`` (EoID: the mean over every query and verb of the batch; here pairs x vocabulary verbs)."""
    if not bool(mask.any()):
        return logits.sum() * 0.0
    bce = F.binary_cross_entropy_with_logits(logits.float()[mask], soft.float()[mask].clamp(0, 1), reduction="sum")
    return bce / max(float(denominator), 1.0)


def interactiveness_loss(logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """BCE with logits, mean over the ``mask [P]`` pairs (None: all): ``[P]``, ``[P]`` -> scalar (0 without pairs).

    The mask is EoID's ``unknown_mask``: stage-two matches not selected as potential have no target."""
    if mask is not None:
        mask = mask.to(logits.device)
        logits, targets = logits[mask], targets.to(logits.device)[mask]
    if logits.numel() == 0:
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float())


def hoi_losses(verb_logits: Tensor, interactiveness: Tensor, role: Tensor, verb_targets: Tensor,
               seen_slots: Tensor, teacher: Tensor, valid: Tensor, config: LossConfig,
               interactiveness_targets: Tensor | None = None, interactiveness_mask: Tensor | None = None,
               soft_slots: Tensor | None = None, verbs_per_pair: int = 1) -> LossTerms:
    """All loss terms of a batch.

    Args:
        verb_logits: ``[P, C]`` recogniser logits.
        interactiveness: ``[P]`` logits.
        role: ``[P]`` 0 none, 1 seen, 2 potential (:mod:`hoi_mllm.finetune.matcher`), 3 ignored, 4 negative (a verb
            negative on every real slot: :data:`hoi_mllm.finetune.targets.NEGATIVE`).
        verb_targets: ``[P, C]`` multi-hot targets of seen pairs (rows of other pairs ignored).
        seen_slots: ``[P, C]`` True at candidate slots of seen classes.
        teacher: ``[P, C]`` teacher probabilities of potential pairs (rows of other pairs ignored; a
            potential pair whose row is all zero, e.g. without a teacher, has no distillation term).
        valid: ``[P, C]`` True at real candidate slots.
        interactiveness_targets: ``[P]`` (None: 1 for seen and potential pairs, 0 for the rest).
        interactiveness_mask: ``[P]`` False where the pair has no interactiveness term (None: every pair).
        soft_slots: ``[P, C]`` slots that may take the teacher's soft labels (``loss.distill=eoid``; None: every
            valid slot). verbs_per_pair: the vocabulary's verb count (``eoid``'s denominator, module doc).

    ``loss.distill=eoid`` (EoID ``SetCriterionHOI.loss_verb_labels`` / ``_bce_focal_loss``): on every seen
    and potential pair the teacher's probability becomes the target of each ``soft_slots`` slot that is
    not a ground-truth positive (those stay 1); slots with a soft target strictly between 0 and 1 leave the
    focal loss's negatives and enter the soft BCE instead; as in EoID's ``_bce_focal_loss`` (which sorts
    targets by value: 1 positive, 0 negative, between soft), a teacher value of 1 is a focal positive and a
    potential pair's other valid slots (teacher 0, or not a soft slot) focal negatives, where its teacher row
    is not all zero (such a row has no term). The teacher rows are given for seen and potential pairs.
    """
    device = verb_logits.device
    role = role.to(device)
    seen, potential = role == 1, role == 2
    teacher, verb_targets, valid = teacher.to(device), verb_targets.to(device), valid.to(device)
    hard = seen[:, None] & seen_slots.to(device)  # [P, C]
    # role 4: a detection-only match the teacher left unselected (matcher.detection_only_unselected=negative): a
    # verb negative on every real slot (its verb_targets row is all zero)
    hard = hard | (role == 4)[:, None] & valid
    if config.distill == "eoid":
        allowed = valid if soft_slots is None else valid & soft_slots.to(device)
        matched = (seen | potential)[:, None] & allowed
        positive = seen[:, None] & (verb_targets == 1)
        soft_mask = matched & (teacher > 0) & (teacher < 1) & ~positive  # [P, C]
        # EoID's _bce_focal_loss: a teacher value of exactly 1 is a focal positive, and every other slot of a
        # taught potential pair (teacher 0, or outside the soft slots) a focal negative; a potential pair whose
        # teacher row is all zero (no teacher, or the oracle on a pair no dropped label annotates) has no term
        taught_one = matched & (teacher >= 1)
        taught = potential & (teacher.sum(1) > 0)
        focal = (hard | taught[:, None] & valid | taught_one) & ~soft_mask
        v = verb_loss(verb_logits, torch.maximum(verb_targets, taught_one.to(verb_targets.dtype)), focal, config)
        d = soft_label_loss(verb_logits, teacher, soft_mask, role.numel() * verbs_per_pair)
    else:
        v = verb_loss(verb_logits, verb_targets, hard, config)
        taught = potential & (teacher.sum(1) > 0)  # [P]
        d = distillation_loss(verb_logits, teacher, taught[:, None] & valid, config)
    if interactiveness_targets is None:
        interactiveness_targets = ((role == 1) | (role == 2)).float()
    i = interactiveness_loss(interactiveness, interactiveness_targets, interactiveness_mask)
    v, d, i = config.verb_weight * v, config.distill_weight * d, config.interactiveness_weight * i
    return LossTerms(v + d + i, v, d, i, int(seen.sum()), int(potential.sum()), int(role.numel()))


def sap_stage_losses(verb_logits: Tensor, interactiveness: Tensor, candidates: Tensor, class_verbs: Tensor,
                     verb_targets: Tensor, slots: Tensor, interactiveness_targets: Tensor,
                     interactiveness_mask: Tensor, config: LossConfig, seen_pairs: int = 0) -> LossTerms:
    """SAP pre-training's two terms (``train.stage=sap``; DA-HOI ``SAP/models/interaction.py``).

    * **verb**: the verb classifier's ``verb_logits [P, V]`` read at each candidate slot's verb
      (``class_verbs[candidates]``: the object-verb prior, so only the verbs of the pair's object count),
      focal (``loss.verb``, ``loss.focal_alpha`` / ``focal_gamma``; DA-HOI: binary focal, alpha 0.5, gamma 2)
      over the ``slots [P, C]`` mask (every pair's seen candidate slots: unseen classes are neither positive nor
      negative), summed and divided by the positive slots, as DA-HOI divides by ``n_p``;
    * **interactiveness**: binary focal on ``interactiveness [P]`` logits against the targets over
      ``interactiveness_mask``, summed and divided by the positive pairs (DA-HOI: ``n_interaction``).

    Each term is weighted by ``loss.verb_weight`` / ``loss.interactiveness_weight``; ``distill`` is 0.
    """
    device = verb_logits.device
    cands = candidates.to(device)
    slot_verbs = class_verbs.to(device)[cands.clamp(min=0)]  # [P, C]
    logits = verb_logits.gather(1, slot_verbs)  # [P, C]
    v = verb_loss(logits, verb_targets.to(device), slots.to(device) & (cands >= 0), config)
    mask = interactiveness_mask.to(interactiveness.device)
    x, t = interactiveness.float()[mask], interactiveness_targets.to(interactiveness.device).float()[mask]
    if x.numel():
        i = focal_loss(x, t, config.focal_alpha, config.focal_gamma).sum() / t.sum().clamp(min=1.0)
    else:
        i = interactiveness.sum() * 0.0
    v, i = config.verb_weight * v, config.interactiveness_weight * i.to(device)
    zero = v * 0.0
    return LossTerms(v + i, v, zero, i, seen_pairs, 0, int(interactiveness.numel()))
