"""Post-processing: recogniser scores of a pair's candidates -> ranked HOI triplets of one image.

Triplet score = ``verb^a x human^b x object^c x interactiveness^d``: the candidate's verb score
(probability), the detector's human and object scores, and the sigmoid of the recogniser's
interactiveness logit (taken as 1 when the recogniser has none, e.g. the training-free mode).

**No-interaction classes.** Interactiveness is trained as "interacts" (DA-HOI and EoID: a pair
annotated only with the no-interaction verb has target 0; ``finetune/targets.py``), so for a
candidate whose verb is the vocabulary's no-interaction verb (HICO-DET's 80 ``no_interaction``
classes of the 600) the factor is ``(1 - sigmoid(interactiveness))^d``: the pairs the model says do
not interact are the ones that should rank first there. Multiplying by the interactiveness itself
would rank them last, under the very pairs that interact. ``no_interaction="same"`` keeps the
earlier factor.
The top-K triplets per image (default 100) are kept, in original-image pixels (the pairs' boxes):
one cap over every triplet (``no_interaction_cap="shared"``, the default: ``top_k`` is the number of
triplets a caller gets). Scored with the complement, the no-interaction triplets of the many pairs
that do not interact rank high and push interactions out of that top K; ``no_interaction_cap=
"separate"`` gives them a cap of their own instead (up to K interacting and up to K no-interaction
triplets), so the interactions rank as if the no-interaction classes did not exist (as in DA-HOI,
which scores none of them) and the official 600-class protocol, which caps nothing per image, still
gets its 80 classes. Measured on the demo's model (README, "Training targets"): with one shared cap
of 100 the complement cost the interacting classes 4.8 mAP and Unseen 6.4, the separate cap none;
use it for the official evaluation (``hoi-mllm detect --no-interaction-cap separate``).

**V-COCO role-less triplets.** ``vsrl_eval`` credits a person who does a two-role action with no
object for one role (eats, no instrument) only through a detection whose role box is empty
(Scenario 1). A recogniser scores human-object pairs, so it never says that by itself. For a
vocabulary whose actions have several roles (``Vocabulary.verb_action_ids``: ``vcoco``'s eat, cut,
hit), :func:`role_less_triplets` adds, for each human and each role ``r`` of such an action, one
triplet with an all-zero role box (``vsrl_eval``'s "no role"; object id -1) scored
``max(other roles of the action) x (1 - max(r))``, both maxima over the human's pairs: the evidence
that the person does the action, times the evidence that no object fills ``r``. This is this
project's rule (DA-HOI and EoID publish no V-COCO role-less output); ``role_less=False`` turns it off.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from hoi_mllm.models.matching import RecognitionOutput
from hoi_mllm.records import HOITriplets, Pairs


NO_INTERACTION_CAPS = ("shared", "separate")  # PostprocessConfig.no_interaction_cap


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
        role_less: add V-COCO's role-less triplets (module doc); no effect for single-role vocabularies.
    """

    verb_exponent: float = field(default=1.0, metadata={"help": "exponent a of the verb score"})
    human_exponent: float = field(default=1.0, metadata={"help": "exponent b of the human score"})
    object_exponent: float = field(default=1.0, metadata={"help": "exponent c of the object score"})
    interactiveness_exponent: float = field(default=1.0, metadata={"help": "exponent d of the interactiveness"})
    top_k: int | None = field(default=100, metadata={"help": "triplets kept per image"})
    min_score: float = field(default=0.0, metadata={"help": "drop triplets below this score"})
    no_interaction: str = field(default="complement", metadata={
        "help": "factor of the no-interaction candidates: complement (1 - interactiveness, the default: "
                "interactiveness means 'interacts') or same (interactiveness, as for every other candidate)"})
    no_interaction_cap: str = field(default="shared", metadata={
        "help": "shared (one top-k cap over every triplet, the default) or separate (the no-interaction triplets "
                "have a top-k cap of their own, so they never push an interaction out: for the official evaluation)"})
    role_less: bool = field(default=True, metadata={
        "help": "V-COCO (actions with several roles): add per human and role a triplet with an empty role box, "
                "scored max(other roles) x (1 - max(this role)) over the human's pairs (vsrl_eval Scenario 1)"})

    def __post_init__(self):
        for name in ("verb_exponent", "human_exponent", "object_exponent", "interactiveness_exponent"):
            if getattr(self, name) < 0:
                raise ValueError(f"PostprocessConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.no_interaction not in ("complement", "same"):
            raise ValueError(f"PostprocessConfig.no_interaction must be one of complement, same; got {self.no_interaction!r}")
        if self.no_interaction_cap not in NO_INTERACTION_CAPS:
            raise ValueError(f"PostprocessConfig.no_interaction_cap must be one of {', '.join(NO_INTERACTION_CAPS)}; "
                             f"got {self.no_interaction_cap!r}")
        if self.top_k is not None and int(self.top_k) < 1:
            raise ValueError(f"PostprocessConfig.top_k must be >= 1 or None, got {self.top_k}")


def triplet_scores(verb_scores: Tensor, human_scores: Tensor, object_scores: Tensor,
                   interactiveness: Tensor | None, config: PostprocessConfig = PostprocessConfig(),
                   no_interaction: Tensor | None = None) -> Tensor:
    """``verb^a x human^b x object^c x sigmoid(interactiveness)^d`` (``1 - sigmoid`` at no-interaction slots).

    Args:
        verb_scores: ``[P, C]`` probabilities.
        human_scores, object_scores: ``[P]`` detector scores in ``[0, 1]``.
        interactiveness: ``[P]`` logits, or ``None`` (factor 1).
        no_interaction: ``[P, C]`` bool, True at candidates of the no-interaction verb (None: none);
            used when ``config.no_interaction`` is ``complement`` (module docstring).
    Returns:
        ``[P, C]`` float32 scores in ``[0, 1]``.
    """
    s = verb_scores.float().clamp(0, 1) ** config.verb_exponent  # [P, C]
    pair = (human_scores.float().clamp(0, 1) ** config.human_exponent
            * object_scores.float().clamp(0, 1) ** config.object_exponent)  # [P]
    if interactiveness is None:
        return s * pair[:, None]
    p_inter = torch.sigmoid(interactiveness.float())  # [P]
    factor = (p_inter ** config.interactiveness_exponent)[:, None].expand_as(s)  # [P, C]
    if no_interaction is not None and config.no_interaction == "complement":
        factor = torch.where(no_interaction, ((1 - p_inter) ** config.interactiveness_exponent)[:, None], factor)
    return s * pair[:, None] * factor


def role_less_triplets(human_index: Tensor, scores: Tensor, verbs: Tensor, vocabulary) -> tuple[np.ndarray, ...]:
    """Triplets with an empty role box for the roles of multi-role actions (module doc).

    Args:
        human_index: ``[P]`` the human of each pair (rows of the detections).
        scores: ``[P, C]`` triplet scores of the candidates. verbs: ``[P, C]`` their verb ids (-1: no candidate).
        vocabulary: gives the actions of the verbs.
    Returns:
        ``(pair [R], verb [R], score [R])``: a pair of the human (for its box), the role, the score
        (only scores above 0).
    """
    verb_action, _ = vocabulary.verb_action_ids
    groups = [np.flatnonzero(verb_action == a) for a in np.unique(verb_action)]
    groups = [g for g in groups if g.size > 1]
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0))
    if not groups or scores.numel() == 0:
        return empty
    num_verbs = vocabulary.num_verbs
    per_pair = torch.zeros(scores.shape[0], num_verbs + 1)  # [P, V + 1]: best score of each verb, column V: none
    per_pair.scatter_reduce_(1, torch.where(verbs >= 0, verbs, num_verbs), scores.float(), "amax")
    humans, first, inverse = np.unique(human_index.numpy(), return_index=True, return_inverse=True)
    per_human = torch.zeros(humans.shape[0], num_verbs + 1)  # [H, V + 1]
    per_human.index_reduce_(0, torch.as_tensor(inverse, dtype=torch.int64), per_pair, "amax")
    pair, verb, score = [], [], []
    for g in groups:
        best = per_human[:, g]  # [H, |g|]
        for k, v in enumerate(g.tolist()):
            others = torch.cat([best[:, :k], best[:, k + 1:]], 1).amax(1)  # [H] the person does the action
            s = (others * (1.0 - best[:, k])).numpy().astype(np.float64)  # ... and nothing fills this role
            some = s > 0  # a person with no score for the action gets no role-less triplet
            pair.append(first[some]), verb.append(np.full(int(some.sum()), v)), score.append(s[some])
    return np.concatenate(pair), np.concatenate(verb), np.concatenate(score)


def capped(order: np.ndarray, verbs: np.ndarray, no_interaction_verb: int | None,
           config: PostprocessConfig) -> np.ndarray:
    """The first ``config.top_k`` of ``order`` (triplet indices, best first); with ``no_interaction_cap=
    "separate"`` the first ``top_k`` interacting ones and the first ``top_k`` of ``no_interaction_verb``, merged in
    ``order``'s order."""
    k = int(config.top_k)
    if config.no_interaction_cap == "shared" or no_interaction_verb is None:
        return order[:k]
    is_none = verbs[order] == no_interaction_verb
    rank = np.where(is_none, np.cumsum(is_none), np.cumsum(~is_none))  # 1-based rank within its own kind
    return order[rank <= k]


def to_triplets(pairs: Pairs, output: RecognitionOutput, vocabulary, config: PostprocessConfig = PostprocessConfig(),
                file_name: str = "", image_size: tuple[int, int] | None = None) -> HOITriplets:
    """One image's pairs and recogniser output -> its top-K :class:`HOITriplets`.

    Args:
        pairs: ``P`` pairs (boxes xyxy pixels of the original image).
        output: the recogniser's :class:`RecognitionOutput` for those pairs (``candidates [P, C]``).
        vocabulary: maps candidate class ids to (object, verb).
    Returns:
        Triplets sorted by descending score (ties: pair order, then candidate order), at most
        ``top_k`` (of each kind with ``no_interaction_cap="separate"``: :func:`capped`); empty when there are
        no pairs or no candidates.
    """
    size = image_size if image_size is not None else pairs.image_size
    if len(pairs) != len(output):
        raise ValueError(f"{len(pairs)} pairs but a recogniser output for {len(output)}")
    if len(pairs) == 0 or output.candidates.numel() == 0:
        return HOITriplets.empty(file_name, size)
    inter = None if output.interactiveness is None else output.interactiveness.detach().cpu()
    cands = output.candidates.cpu()
    no_int = None
    if getattr(vocabulary, "no_interaction_verb", None) is not None:
        no_int = (cands >= 0) & torch.as_tensor(vocabulary.class_verbs[np.maximum(cands.numpy(), 0)]
                                                == vocabulary.no_interaction_verb)
    scores = triplet_scores(output.verb_scores.detach().cpu(), torch.as_tensor(pairs.human_scores),
                            torch.as_tensor(pairs.object_scores), inter, config, no_int)  # [P, C]
    keep = (cands >= 0) & (scores >= config.min_score)  # [P, C]
    p, c = keep.nonzero(as_tuple=True)  # row-major: pair order, then candidate order
    classes = cands[p, c].numpy()
    p = p.numpy()
    hb_all = torch.as_tensor(pairs.human_boxes).float().cpu().numpy()
    ob_all = torch.as_tensor(pairs.object_boxes).float().cpu().numpy()
    flat = scores[p, c].numpy().astype(np.float64)
    objects, verbs = vocabulary.class_objects[classes], vocabulary.class_verbs[classes]
    ob = ob_all[p]
    if config.role_less:
        cand_verbs = torch.as_tensor(np.where(cands.numpy() >= 0, vocabulary.class_verbs[np.maximum(cands.numpy(), 0)], -1))
        rp, rv, rs = role_less_triplets(torch.as_tensor(pairs.human_index).cpu(), scores, cand_verbs, vocabulary)
        ok = rs >= config.min_score
        p, verbs, flat = np.r_[p, rp[ok]], np.r_[verbs, rv[ok]], np.r_[flat, rs[ok]]
        objects, ob = np.r_[objects, np.full(int(ok.sum()), -1)], np.concatenate([ob, np.zeros((int(ok.sum()), 4))])
    order = np.argsort(-flat, kind="stable")
    if config.top_k is not None:
        order = capped(order, verbs, getattr(vocabulary, "no_interaction_verb", None), config)
    return HOITriplets.create(hb_all[p[order]], ob[order], objects[order], verbs[order], flat[order], file_name, size)
