"""Pair proposal: every human with every other detection (objects and other humans)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from hoi_mllm.records import Detections, Pairs


@dataclass(frozen=True)
class PairProposalConfig:
    """How detections become candidate human-object pairs.

    Attributes:
        min_human_score: humans scoring below are not paired.
        min_object_score: objects (and humans in the object role) scoring below are not paired.
        max_pairs: keep at most this many pairs per image, the highest ``human x object`` score first
            (``None``: keep all).
        human_human: also pair humans with other humans (HICO-DET has person-person classes).
    """

    min_human_score: float = 0.0
    min_object_score: float = 0.0
    max_pairs: int | None = 64
    human_human: bool = True


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
