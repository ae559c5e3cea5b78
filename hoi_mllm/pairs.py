"""Pair proposal: every human with every other detection (objects and other humans), then the selection
of the pairs that go through the language model.

:func:`propose_pairs` pairs detections (ordered by ``human x object`` score, capped by ``max_pairs``).
At inference the cap is applied by :func:`select_pairs` instead, after an optional cheap first pass:
``PairProposalConfig.select = "interactiveness"`` ranks *all* proposed pairs by
``sigmoid(interactiveness) x human x object`` (SAP's interactiveness logit, computed from the visual grid
the backbone encodes once per image anyway), and ``interactiveness_gate`` drops pairs whose interactiveness
probability is at or below it (DA-HOI does not send pairs with interactiveness <= 0.15 to the MLLM). Pairs
dropped by the gate or the cap are counted (:class:`PairSelection`) and the pipeline writes the counts into
each image's predictions (``pairs_proposed``, ``pairs_gated``, ``pairs_capped``), so none is lost silently.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hoi_mllm.records import Detections, Pairs

SELECTIONS = ("score", "interactiveness")


@dataclass(frozen=True)
class PairProposalConfig:
    """How detections become candidate human-object pairs.

    Attributes:
        min_human_score: humans scoring below are not paired.
        min_object_score: objects (and humans in the object role) scoring below are not paired.
        max_pairs: keep at most this many pairs per image, the highest ``human x object`` score first
            (``None``: keep all).
        human_human: also pair humans with other humans (HICO-DET has person-person classes).
        select: which pairs the cap keeps at inference (:func:`select_pairs`): ``score`` (the highest
            ``human x object`` detector score, the proposal order) or ``interactiveness`` (the highest
            ``sigmoid(interactiveness) x human x object``, after SAP scores every proposed pair).
        interactiveness_gate: at inference, pairs whose interactiveness probability is ``<=`` this are
            not recognised (DA-HOI: 0.15); ``None``: no gate. Needs a recogniser with an
            interactiveness head (the matching mode).
    The training side (``finetune/step.py``) reads only the first four.
    """

    min_human_score: float = field(default=0.0, metadata={"help": "humans scoring below are not paired"})
    min_object_score: float = field(default=0.0, metadata={"help": "objects scoring below are not paired"})
    max_pairs: int | None = field(default=64, metadata={
        "help": "pairs per image recognised at inference (null: all); which ones: select"})
    human_human: bool = field(default=True, metadata={"help": "also pair humans with other humans"})
    select: str = field(default="score", metadata={
        "help": "which pairs max_pairs keeps at inference: score (human x object detector score) | interactiveness "
                "(sigmoid(SAP interactiveness) x human x object, SAP run over every proposed pair first)"})
    interactiveness_gate: float | None = field(default=None, metadata={
        "help": "at inference, pairs with interactiveness probability <= this are not recognised (DA-HOI: 0.15; "
                "null: none); counted as pairs_gated in the predictions"})

    def __post_init__(self):
        if self.select not in SELECTIONS:
            raise ValueError(f"PairProposalConfig.select {self.select!r} not allowed; allowed: {', '.join(SELECTIONS)}")
        if self.max_pairs is not None and int(self.max_pairs) < 1:
            raise ValueError(f"PairProposalConfig.max_pairs must be >= 1 or None, got {self.max_pairs}")
        gate = self.interactiveness_gate
        if gate is not None and not 0.0 <= float(gate) < 1.0:
            raise ValueError(f"PairProposalConfig.interactiveness_gate must lie in [0, 1) or be None, got {gate}")

    @property
    def needs_interactiveness(self) -> bool:
        """True when selection reads the recogniser's interactiveness (a first pass over all pairs)."""
        return self.select == "interactiveness" or self.interactiveness_gate is not None


def propose_pairs(dets: Detections, human_label: int, config: PairProposalConfig = PairProposalConfig()) -> Pairs:
    """Every human x every other detection, filtered by score, ordered, capped; deterministic.

    Order: descending ``human_score * object_score``, ties broken by (human row, object row).
    An image with no human (or nothing to pair with) gives empty :class:`Pairs`.

    Args:
        dets: detections of one image (``labels`` in the vocabulary whose person id is ``human_label``).
        human_label: object id of "person".
    Returns:
        :class:`Pairs` with ``P <= max_pairs`` rows.
    """
    labels = torch.as_tensor(dets.labels)
    scores = torch.as_tensor(dets.scores).float()
    n = labels.shape[0]
    is_human = labels == human_label
    human_ok = is_human & (scores >= config.min_human_score)
    object_ok = scores >= config.min_object_score
    if not config.human_human:
        object_ok = object_ok & ~is_human
    valid = human_ok[:, None] & object_ok[None, :] & ~torch.eye(n, dtype=torch.bool)  # [N, N]
    h, o = valid.nonzero(as_tuple=True)  # row-major: sorted by (h, o)
    if h.numel() == 0:
        return Pairs.empty(dets.image_size)
    joint = scores[h] * scores[o]
    order = torch.sort(joint, descending=True, stable=True).indices
    if config.max_pairs is not None:
        order = order[: config.max_pairs]
    return Pairs.from_detections(dets, h[order], o[order])


@dataclass(frozen=True)
class PairSelection:
    """Which proposed pairs go through the language model, and how many were left out and why.

    Attributes:
        index: ``[K]`` int64 rows of the proposed pairs kept, in the order they are recognised.
        proposed: pairs proposed (before gate and cap).
        gated: pairs dropped by ``interactiveness_gate``.
        capped: pairs dropped by ``max_pairs`` (after the gate).
    """

    index: torch.Tensor
    proposed: int
    gated: int = 0
    capped: int = 0

    def counts(self) -> dict[str, int]:
        """The per-image keys the pipeline writes into :attr:`HOITriplets.extra`."""
        return {"pairs_proposed": self.proposed, "pairs_gated": self.gated, "pairs_capped": self.capped}


def select_pairs(pairs: Pairs, config: PairProposalConfig, interactiveness: torch.Tensor | None = None) -> PairSelection:
    """The pairs of one image to recognise: gate, rank, cap (see the module docstring).

    Args:
        pairs: every proposed pair, in :func:`propose_pairs` order (``max_pairs=None``).
        config: ``select``, ``interactiveness_gate`` and ``max_pairs`` are read.
        interactiveness: ``[P]`` logits of the pairs (SAP's head); required when
            ``config.needs_interactiveness``.
    Returns:
        :class:`PairSelection`. With ``select="score"`` and no gate the kept rows are the first
        ``max_pairs``, i.e. exactly what ``propose_pairs`` with the cap keeps.
    Raises:
        ValueError: interactiveness needed but not given, or not one logit per pair.
    """
    n = len(pairs)
    keep = torch.arange(n)
    gated = 0
    if config.needs_interactiveness:
        if interactiveness is None:
            raise ValueError(f"pair selection select={config.select!r}, interactiveness_gate="
                             f"{config.interactiveness_gate!r} needs interactiveness logits (a matching recogniser)")
        prob = torch.sigmoid(torch.as_tensor(interactiveness).detach().float().cpu().reshape(-1))
        if prob.numel() != n:
            raise ValueError(f"{prob.numel()} interactiveness logits for {n} pairs")
        if config.interactiveness_gate is not None:
            keep = keep[prob > float(config.interactiveness_gate)]
            gated = n - int(keep.numel())
        if config.select == "interactiveness":
            joint = (prob * torch.as_tensor(pairs.human_scores).float().cpu()
                     * torch.as_tensor(pairs.object_scores).float().cpu())
            keep = keep[torch.sort(joint[keep], descending=True, stable=True).indices]
    capped = 0
    if config.max_pairs is not None and keep.numel() > config.max_pairs:
        capped = int(keep.numel()) - int(config.max_pairs)
        keep = keep[: config.max_pairs]
    return PairSelection(keep, n, gated, capped)


def dropped_pairs(triplets) -> dict[str, int]:
    """Totals of :meth:`PairSelection.counts` over images' triplets (their ``extra``; 0 where absent)."""
    keys = ("pairs_proposed", "pairs_gated", "pairs_capped")
    return {k: sum(int(t.extra.get(k, 0)) for t in triplets) for k in keys}
