"""Post-processing: recogniser scores of a pair's candidates -> ranked HOI triplets of one image.

Triplet score = ``verb^a x human^b x object^c x interactiveness^d``: the candidate's verb score
(probability), the detector's human and object scores, and the sigmoid of the recogniser's
interactiveness logit (taken as 1 when the recogniser has none, e.g. the training-free mode).
The top-K triplets per image (default 100) are kept, in original-image pixels (the pairs' boxes).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from hoi_mllm.models.matching import RecognitionOutput
from hoi_mllm.records import HOITriplets, Pairs


@dataclass(frozen=True)
class PostprocessConfig:
    """How candidate scores become triplet scores.

    Attributes:
        verb_exponent: ``a``, exponent of the verb (candidate) score.
        human_exponent: ``b``, exponent of the detector's human score.
        object_exponent: ``c``, exponent of the detector's object score.
        interactiveness_exponent: ``d``, exponent of ``sigmoid(interactiveness)``.
        top_k: triplets kept per image, highest score first (``None``: all).
        min_score: drop triplets scoring below this.
    """

    verb_exponent: float = field(default=1.0, metadata={"help": "exponent a of the verb score"})
    human_exponent: float = field(default=1.0, metadata={"help": "exponent b of the human score"})
    object_exponent: float = field(default=1.0, metadata={"help": "exponent c of the object score"})
    interactiveness_exponent: float = field(default=1.0, metadata={"help": "exponent d of the interactiveness"})
    top_k: int | None = field(default=100, metadata={"help": "triplets kept per image"})
    min_score: float = field(default=0.0, metadata={"help": "drop triplets below this score"})

    def __post_init__(self):
        for name in ("verb_exponent", "human_exponent", "object_exponent", "interactiveness_exponent"):
            if getattr(self, name) < 0:
                raise ValueError(f"PostprocessConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.top_k is not None and int(self.top_k) < 1:
            raise ValueError(f"PostprocessConfig.top_k must be >= 1 or None, got {self.top_k}")


def triplet_scores(verb_scores: Tensor, human_scores: Tensor, object_scores: Tensor,
                   interactiveness: Tensor | None, config: PostprocessConfig = PostprocessConfig()) -> Tensor:
    """``verb^a x human^b x object^c x sigmoid(interactiveness)^d``.

    Args:
        verb_scores: ``[P, C]`` probabilities.
        human_scores, object_scores: ``[P]`` detector scores in ``[0, 1]``.
        interactiveness: ``[P]`` logits, or ``None`` (factor 1).
    Returns:
        ``[P, C]`` float32 scores in ``[0, 1]``.
    """
    s = verb_scores.float().clamp(0, 1) ** config.verb_exponent  # [P, C]
    pair = (human_scores.float().clamp(0, 1) ** config.human_exponent
            * object_scores.float().clamp(0, 1) ** config.object_exponent)  # [P]
    if interactiveness is not None:
        pair = pair * torch.sigmoid(interactiveness.float()) ** config.interactiveness_exponent
    return s * pair[:, None]


def to_triplets(pairs: Pairs, output: RecognitionOutput, vocabulary, config: PostprocessConfig = PostprocessConfig(),
                file_name: str = "", image_size: tuple[int, int] | None = None) -> HOITriplets:
    """One image's pairs and recogniser output -> its top-K :class:`HOITriplets`.

    Args:
        pairs: ``P`` pairs (boxes xyxy pixels of the original image).
        output: the recogniser's :class:`RecognitionOutput` for those pairs (``candidates [P, C]``).
        vocabulary: maps candidate class ids to (object, verb).
    Returns:
        Triplets sorted by descending score (ties: pair order, then candidate order), at most
        ``top_k``; empty when there are no pairs or no candidates.
    """
    size = image_size if image_size is not None else pairs.image_size
    if len(pairs) != len(output):
        raise ValueError(f"{len(pairs)} pairs but a recogniser output for {len(output)}")
    if len(pairs) == 0 or output.candidates.numel() == 0:
        return HOITriplets.empty(file_name, size)
    inter = None if output.interactiveness is None else output.interactiveness.detach().cpu()
    scores = triplet_scores(output.verb_scores.detach().cpu(), torch.as_tensor(pairs.human_scores),
                            torch.as_tensor(pairs.object_scores), inter, config)  # [P, C]
    cands = output.candidates.cpu()
    keep = (cands >= 0) & (scores >= config.min_score)  # [P, C]
    p, c = keep.nonzero(as_tuple=True)  # row-major: pair order, then candidate order
    classes = cands[p, c].numpy()
    flat = scores[p, c].numpy().astype(np.float64)
    order = np.argsort(-flat, kind="stable")
    if config.top_k is not None:
        order = order[: int(config.top_k)]
    p = p.numpy()[order]
    hb = torch.as_tensor(pairs.human_boxes).float().cpu().numpy()[p]
    ob = torch.as_tensor(pairs.object_boxes).float().cpu().numpy()[p]
    return HOITriplets.create(hb, ob, vocabulary.class_objects[classes[order]], vocabulary.class_verbs[classes[order]],
                              flat[order], file_name, size)
