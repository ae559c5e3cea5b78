"""EoID two-stage bipartite matching of proposed pairs to ground truth (Hungarian, scipy).

Stage one matches the proposed pairs of an image to its annotated (seen) ground-truth pairs with
the QPIC / CDN cost: box L1 and -GIoU (each the worse of human and object), object class and
verb. Stage two matches the proposals left over to the image's *unannotated* human-object
combinations (pairs of annotated instances that no annotated pair names) with box and object
costs only. In both stages a match counts only when the human IoU and the object IoU both reach
the threshold. Of the stage-two matches, those with interactiveness above the threshold, at most
``top_k`` of them by interactiveness, become **potential** pairs; every other proposal is "no pair".

All functions are pure, run under ``torch.no_grad`` and return index tensors; boxes are xyxy
pixels, normalised by the image size inside the L1 cost. What the trainer builds from them is
:mod:`hoi_mllm.finetune.targets`: by default stage one is replaced there by DA-HOI's many-to-one
union rule and stage two (:func:`stage_two`) runs over the merged, de-duplicated combinations;
:func:`two_stage_match` as a whole serves the earlier ``one-to-one`` rule.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from hoi_mllm.boxes import box_iou, box_xyxy_to_cxcywh, generalized_box_iou, normalise_boxes
from hoi_mllm.finetune.config import MatcherConfig

NONE, SEEN, POTENTIAL = 0, 1, 2
ROLE_NAMES = ("none", "seen", "potential")
_BLOCKED = 1.0e6  # cost of a pair the IoU gate forbids: any number of allowed matches costs less


@dataclass
class PairSet:
    """Pairs of one image as the matcher sees them.

    Attributes:
        human_boxes, object_boxes: ``[N, 4]`` xyxy pixels.
        object_labels: ``[N]`` int64 object ids.
        object_scores: ``[N]`` confidence of the object label (1 for annotations).
        verbs: ``[N, V]`` multi-hot verb targets (ground truth) or verb probabilities (proposals), or None.
    """

    human_boxes: Tensor
    object_boxes: Tensor
    object_labels: Tensor
    object_scores: Tensor | None = None
    verbs: Tensor | None = None

    def __len__(self) -> int:
        return int(self.human_boxes.shape[0])


@dataclass
class MatchResult:
    """Outcome of two-stage matching for ``P`` proposals.

    Attributes:
        role: ``[P]`` int64, ``0`` none, ``1`` seen, ``2`` potential.
        seen_proposal, seen_target: ``[M1]`` proposal row and annotated-pair row of each stage-one match.
        potential_proposal, potential_target: ``[M2]`` proposal row and combination row of each potential
            pair (``M2 <= top_k``), by descending interactiveness.
        stage_two_proposal, stage_two_target: ``[M]`` every stage-two match that passed the IoU gate
            (before the interactiveness threshold and top-k).
    """

    role: Tensor
    seen_proposal: Tensor
    seen_target: Tensor
    potential_proposal: Tensor
    potential_target: Tensor
    stage_two_proposal: Tensor
    stage_two_target: Tensor

    def target_of(self, role: int) -> Tensor:
        """``[P]`` matched target row of each proposal of ``role`` (-1 elsewhere)."""
        out = torch.full_like(self.role, -1)
        prop, tgt = ((self.seen_proposal, self.seen_target) if role == SEEN
                     else (self.potential_proposal, self.potential_target))
        out[prop] = tgt
        return out


def pair_ious(a: PairSet, b: PairSet) -> Tensor:
    """``[N, M]`` min(IoU human, IoU object) of every pair of ``a`` with every pair of ``b``."""
    return torch.minimum(box_iou(a.human_boxes.float(), b.human_boxes.float()),
                         box_iou(a.object_boxes.float(), b.object_boxes.float()))


def box_cost(a: PairSet, b: PairSet, size: tuple[int, int], costs: MatcherConfig) -> Tensor:
    """``[N, M]`` ``l1 * max(L1_h, L1_o) + giou * max(-GIoU_h, -GIoU_o)`` (QPIC), L1 over normalised cxcywh."""
    def l1(x: Tensor, y: Tensor) -> Tensor:
        return torch.cdist(box_xyxy_to_cxcywh(normalise_boxes(x.float(), size)),
                           box_xyxy_to_cxcywh(normalise_boxes(y.float(), size)), p=1)

    cost_l1 = torch.maximum(l1(a.human_boxes, b.human_boxes), l1(a.object_boxes, b.object_boxes))  # [N, M]
    cost_giou = torch.maximum(-generalized_box_iou(a.human_boxes.float(), b.human_boxes.float()),
                              -generalized_box_iou(a.object_boxes.float(), b.object_boxes.float()))  # [N, M]
    return costs.cost_l1 * cost_l1 + costs.cost_giou * cost_giou


def object_cost(proposals: PairSet, targets: PairSet) -> Tensor:
    """``[N, M]`` ``-p(target object)``: the proposal's label score when labels agree, else 0."""
    scores = proposals.object_scores if proposals.object_scores is not None else torch.ones(len(proposals))
    same = proposals.object_labels[:, None] == targets.object_labels[None, :]  # [N, M]
    return -(same.float() * scores.float()[:, None])


def verb_cost(probs: Tensor, targets: Tensor, eps: float = 1e-6) -> Tensor:
    """CDN's verb cost ``[N, M]``: minus the mean of the hit rate on the target's verbs and on its absent verbs.

    Args:
        probs: ``[N, V]`` predicted verb probabilities of the proposals.
        targets: ``[M, V]`` multi-hot verbs of the annotated pairs.
    """
    probs, targets = probs.float(), targets.float()
    pos = probs @ targets.T / (targets.sum(1)[None, :] + eps)  # [N, M]
    neg = (1 - probs) @ (1 - targets).T / ((1 - targets).sum(1)[None, :] + eps)  # [N, M]
    return -(pos + neg) / 2


def assign(cost: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
    """Hungarian assignment on ``cost [N, M]`` using only ``allowed [N, M]`` entries.

    Returns ``(rows [K], cols [K])`` int64: a one-to-one matching with the most allowed matches
    possible and, among those, the lowest total cost; forbidden entries are never returned.
    """
    if cost.numel() == 0 or not bool(allowed.any()):
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty.clone()
    cost = cost.double()
    # a non-finite cost (a diverged model's scores) ranks as the worst allowed one; the loss then says so
    cost = torch.where(torch.isfinite(cost), cost, torch.full_like(cost, _BLOCKED / 2))
    c = torch.where(allowed, cost, torch.full_like(cost, _BLOCKED))
    rows, cols = linear_sum_assignment(c.cpu().numpy())
    rows, cols = torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)
    keep = allowed.cpu()[rows, cols]
    return rows[keep], cols[keep]


@torch.no_grad()
def two_stage_match(proposals: PairSet, annotated: PairSet, combinations: PairSet, interactiveness: Tensor,
                    image_size: tuple[int, int], costs: MatcherConfig = MatcherConfig()) -> MatchResult:
    """EoID two-stage matching of one image (see the module docstring).

    Args:
        proposals: ``P`` proposed pairs; ``verbs [P, V]`` their predicted verb probabilities (needed
            when ``costs.cost_verb > 0`` and there are annotated pairs).
        annotated: ``G`` annotated (seen) pairs; ``verbs [G, V]`` multi-hot.
        combinations: ``U`` unannotated human-object combinations of the annotated instances.
        interactiveness: ``[P]`` predicted interactiveness probabilities in [0, 1] of the proposals.
        image_size: ``(width, height)`` for the normalised L1 cost.
    Returns:
        :class:`MatchResult`; no proposal is used twice, annotated pairs are matched first.
    """
    p = len(proposals)
    role = torch.zeros(p, dtype=torch.long)
    empty = torch.zeros(0, dtype=torch.long)
    seen_rows, seen_cols = empty, empty
    if len(annotated) and p:
        cost = box_cost(proposals, annotated, image_size, costs) + costs.cost_object * object_cost(proposals, annotated)
        if costs.cost_verb and proposals.verbs is not None and annotated.verbs is not None:
            cost = cost + costs.cost_verb * verb_cost(proposals.verbs, annotated.verbs)
        seen_rows, seen_cols = assign(cost, pair_ious(proposals, annotated) >= costs.iou_threshold)
        role[seen_rows] = SEEN
    rest = torch.nonzero(role == NONE).flatten()  # [R] proposals still free
    two_rows, two_cols, pot_rows, pot_cols = stage_two(proposals, rest, combinations, interactiveness, image_size,
                                                       costs)
    role[pot_rows] = POTENTIAL
    return MatchResult(role, seen_rows, seen_cols, pot_rows, pot_cols, two_rows, two_cols)


@torch.no_grad()
def stage_two(proposals: PairSet, free: Tensor, combinations: PairSet, interactiveness: Tensor,
              image_size: tuple[int, int], costs: MatcherConfig = MatcherConfig()) -> tuple[Tensor, ...]:
    """EoID's second stage: the ``free [R]`` proposal rows matched one-to-one to ``combinations``.

    Box and object costs only, the IoU gate of ``costs.iou_threshold``; of the matches, those with
    interactiveness above ``costs.interactiveness_threshold``, at most ``costs.top_k`` by descending
    interactiveness, are potential pairs.

    Returns:
        ``(matched_rows [M], matched_cols [M], potential_rows [K], potential_cols [K])`` int64: proposal
        rows and combination rows of every gated match, then of the potential ones (``K <= top_k``).
    """
    empty = torch.zeros(0, dtype=torch.long)
    two_rows, two_cols = empty, empty
    if len(combinations) and free.numel():
        sub = PairSet(proposals.human_boxes[free], proposals.object_boxes[free], proposals.object_labels[free],
                      None if proposals.object_scores is None else proposals.object_scores[free])
        cost = box_cost(sub, combinations, image_size, costs) + costs.cost_object * object_cost(sub, combinations)
        rows, two_cols = assign(cost, pair_ious(sub, combinations) >= costs.iou_threshold)
        two_rows = free[rows]
    inter = interactiveness.detach().float().cpu()
    score = inter[two_rows] if two_rows.numel() else torch.zeros(0)
    order = torch.sort(score, descending=True, stable=True).indices
    order = order[score[order] > costs.interactiveness_threshold][: costs.top_k]
    return two_rows, two_cols, two_rows[order], two_cols[order]


def unannotated_combinations(labels: np.ndarray, pair_human: np.ndarray, pair_object: np.ndarray,
                             human_label: int, human_human: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of annotated instances that no annotated pair names.

    Args:
        labels: ``[B]`` object ids of the instances.
        pair_human, pair_object: ``[G]`` instance rows of the annotated pairs (``-1`` objects ignored).
        human_label: object id of "person".
        human_human: include person-person combinations.
    Returns:
        ``(human_rows [U], object_rows [U])`` int64, ordered by (human row, object row).
    """
    b = labels.shape[0]
    is_human = labels == human_label
    ok = is_human[:, None] & ~np.eye(b, dtype=bool)  # [B, B] human x other instance
    if not human_human:
        ok &= ~is_human[None, :]
    has = pair_object >= 0
    ok[pair_human[has], pair_object[has]] = False
    h, o = np.nonzero(ok)
    return h.astype(np.int64), o.astype(np.int64)
