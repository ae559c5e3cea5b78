"""Training targets of an image's proposed pairs: ground truth as DA-HOI reads it, potential pairs as EoID mines them.

One rule, used by every recipe (:meth:`hoi_mllm.finetune.step.TrainingStep.image_targets`) and by
``hoi-mllm data targets`` (:mod:`hoi_mllm.finetune.targets_file`), so what a user inspects is what
the trainer trains on. ``matcher.targets`` selects it:

``union`` (default; DA-HOI ``qwenvl/data/data_da_hoi.py``: ``merge_gt`` and ``_get_item``)
    1. duplicate annotated instances of one physical box are merged: class-wise NMS at
       ``matcher.merge_iou`` (0.5) over the image's boxes, all scores equal, earlier rows kept
       (:func:`merge_instances`). UPT-format HICO-DET files give every verb of a pair its own,
       slightly different boxes; this is where they become one instance again;
    2. a proposal is **seen** when some annotated pair of its object class overlaps it at
       min(IoU human, IoU object) >= ``matcher.union_iou`` (0.5), and its positive classes are the
       **union** over every such pair (many-to-one, :func:`union_match`);
    3. the other proposals are matched one-to-one (EoID's stage two,
       :func:`~hoi_mllm.finetune.matcher.stage_two`) to the human-object combinations of the merged
       instances that are no annotated pair, no duplicate of one (same object class, min IoU >=
       ``union_iou``) and no self-pair (:func:`potential_combinations`); of those matches, at most
       ``top_k`` (3) with interactiveness above the threshold (0.5) are **potential**, the other
       matches are **ignored** by the interactiveness loss (EoID ``models/EoID.py``: the
       ``unknown_mask``; ``matcher.unselected_matches=negative``: interactiveness target 0 instead), everything
       else is **none**;
    4. interactiveness targets mean "interacts": 1 for a seen pair with a verb other than the
       vocabulary's no-interaction verb and for potential pairs; 0 for a pair annotated only with the
       no-interaction verb and for none; ignored pairs have no target (mask False).

**Detection-only images** (``detection_only``; EoID's pseudo-V-COCO, :mod:`hoi_mllm.data.coco_detections`): no
annotated pair, so no stage one: every proposal enters stage two against every human-object combination of the
image's (merged) boxes. Which matches are potential (the teacher's soft scores over the whole action set become
their targets) is ``matcher.detection_only_pairs``: ``teacher`` (default) returns every match as potential here,
and the training step keeps those the teacher scores at least ``matcher.pseudo_label_threshold`` (0.1) on some
class, the others ignored (EoID's pseudo-V-COCO labels every prediction of a trained model over 0.1,
``datasets/vcoco_pseudo.py``, ``vcoco_train_pseudo_0.1.json``); ``top-k``: the top-k by interactiveness above the
threshold, as in labelled images. Interactiveness is not trained on them at all (mask False for every proposal):
no label says which of their pairs interact.

``one-to-one`` (the earlier rule, kept for the before/after measurement only)
    Hungarian stage one to the raw annotated pairs; a proposal gets the verbs of its single partner;
    stage two over every unannotated combination of the raw instances; interactiveness 1 for seen and
    potential pairs, 0 elsewhere, none ignored.

Pure functions under ``no_grad``; boxes xyxy pixels; class ids of the vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from hoi_mllm.boxes import merge_instances
from hoi_mllm.data.sample import HOISample
from hoi_mllm.finetune.config import MatcherConfig
from hoi_mllm.finetune.matcher import PairSet, pair_ious, stage_two, two_stage_match, unannotated_combinations

NONE, SEEN, POTENTIAL, IGNORED = 0, 1, 2, 3
NEGATIVE = 4  # set by the training step only: a detection-only match the teacher leaves unselected, trained as a
#               verb negative on every slot (matcher.detection_only_unselected=negative)
ROLE_NAMES = ("none", "seen", "potential", "ignored")  # what build_targets gives (and targets.jsonl shows)


@dataclass(frozen=True)
class TargetRule:
    """What the rule needs to know of the vocabulary and the split.

    Attributes:
        human_label: object id of "person".
        no_interaction_verb: verb id of "no interaction" (``None``: the vocabulary has none).
        seen_classes: class ids that may be positives (``None``: every class).
        human_human: person-person combinations are candidates of stage two.
    """

    human_label: int
    no_interaction_verb: int | None = None
    seen_classes: frozenset[int] | None = None
    human_human: bool = True

    @classmethod
    def of(cls, vocabulary, seen_classes=None, human_human: bool = True) -> "TargetRule":
        return cls(int(vocabulary.human_object), vocabulary.no_interaction_verb,
                   None if seen_classes is None else frozenset(int(c) for c in seen_classes), human_human)


@dataclass
class ProposalTargets:
    """Targets of the ``P`` proposals of one image.

    Attributes:
        role: ``[P]`` int64: 0 none, 1 seen, 2 potential, 3 ignored (:data:`ROLE_NAMES`).
        positives: ``P`` sorted tuples of positive class ids (seen pairs only; seen classes only).
        interactiveness: ``[P]`` float targets (1 interacts, 0 not).
        interactiveness_mask: ``[P]`` bool, False where the interactiveness loss ignores the pair.
        potential_proposal: ``[K]`` proposal rows of the potential pairs (by descending interactiveness).
        potential_human_boxes, potential_object_boxes: ``[K, 4]`` boxes of the matched combinations.
        potential_labels: ``[K]`` object ids of those combinations.
        potential_instances: ``[K, 2]`` (human row, object row) of the combinations in ``sample.boxes``.
    """

    role: Tensor
    positives: list[tuple[int, ...]]
    interactiveness: Tensor
    interactiveness_mask: Tensor
    potential_proposal: Tensor
    potential_human_boxes: Tensor
    potential_object_boxes: Tensor
    potential_labels: Tensor
    potential_instances: Tensor


def annotated_pairs(sample: HOISample, num_verbs: int | None = None) -> tuple[PairSet, np.ndarray]:
    """The sample's annotated pairs that have an object as a :class:`PairSet` (verbs multi-hot ``[G, V]``
    when ``num_verbs`` is given), and their rows in the sample."""
    rows = np.flatnonzero(sample.pair_object >= 0)
    boxes = torch.as_tensor(sample.boxes).float().reshape(-1, 4)
    h, o = torch.as_tensor(sample.pair_human[rows]), torch.as_tensor(sample.pair_object[rows])
    verbs = None if num_verbs is None else torch.as_tensor(sample.verb_matrix(num_verbs)[rows])
    labels = torch.as_tensor(sample.labels).long()
    return PairSet(boxes[h], boxes[o], labels[o], torch.ones(len(rows)), verbs), rows


def union_match(proposals: PairSet, annotated: PairSet, iou: float = 0.5) -> Tensor:
    """``[P, G]`` bool: the annotated pair has the proposal's object class and min(IoU_h, IoU_o) >= ``iou``."""
    if len(proposals) == 0 or len(annotated) == 0:
        return torch.zeros(len(proposals), len(annotated), dtype=torch.bool)
    same = proposals.object_labels.long()[:, None] == annotated.object_labels.long()[None, :]
    return same & (pair_ious(proposals, annotated) >= iou)


def potential_combinations(sample: HOISample, rep: np.ndarray, rule: TargetRule,
                           union_iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Human-object combinations of the merged instances that may become potential pairs.

    Kept: a kept (representative) human row and another kept row, that no annotated pair names after
    merging, that duplicates no annotated pair (same object class, min IoU >= ``union_iou``), and that is
    not a person with its own duplicate box (both rows merged into one).

    Returns:
        ``(human_rows [U], object_rows [U])`` int64 rows of ``sample.boxes``, ordered by (human, object).
    """
    labels = np.asarray(sample.labels)
    kept = np.flatnonzero(rep == np.arange(labels.shape[0]))
    humans = kept[labels[kept] == rule.human_label]
    others = kept if rule.human_human else kept[labels[kept] != rule.human_label]
    h, o = np.meshgrid(humans, others, indexing="ij")
    h, o = h.ravel(), o.ravel()
    ok = rep[h] != rep[o]
    has = sample.pair_object >= 0
    named = set(zip(rep[sample.pair_human[has]].tolist(), rep[sample.pair_object[has]].tolist()))
    ok &= np.asarray([(a, b) not in named for a, b in zip(h.tolist(), o.tolist())], dtype=bool)
    h, o = h[ok], o[ok]
    annotated, _ = annotated_pairs(sample)
    if h.size and len(annotated):
        boxes = torch.as_tensor(sample.boxes).float().reshape(-1, 4)
        combos = PairSet(boxes[torch.as_tensor(h)], boxes[torch.as_tensor(o)], torch.as_tensor(labels[o]).long())
        dup = union_match(combos, annotated, union_iou).any(1).numpy()
        h, o = h[~dup], o[~dup]
    order = np.lexsort((o, h))
    return h[order].astype(np.int64), o[order].astype(np.int64)


def _seen(classes, rule: TargetRule) -> list[int]:
    return [int(c) for c in classes if c >= 0 and (rule.seen_classes is None or c in rule.seen_classes)]


@torch.no_grad()
def build_targets(sample: HOISample, proposals: PairSet, interactiveness: Tensor, image_size: tuple[int, int],
                  rule: TargetRule, config: MatcherConfig = MatcherConfig(), detection_only: bool = False
                  ) -> ProposalTargets:
    """The targets of one image's proposals (rule of ``config.targets``, module docstring).

    Args:
        sample: the image's annotation (after any zero-shot filter).
        proposals: ``P`` proposed pairs; ``verbs [P, V]`` their predicted verb probabilities (stage one's
            verb cost of the ``one-to-one`` rule; may be None).
        interactiveness: ``[P]`` predicted interactiveness probabilities (picks the potential pairs).
        image_size: ``(width, height)``, for the normalised L1 cost.
        detection_only: the image comes from a detection-only source: it must have no annotated pair; no
            interactiveness target reaches a loss (module docstring).
    """
    if detection_only and sample.num_pairs:
        raise ValueError(f"{sample.file_name}: a detection-only image with {sample.num_pairs} annotated pairs")
    p = len(proposals)
    labels = torch.as_tensor(sample.labels).long()
    boxes = torch.as_tensor(sample.boxes).float().reshape(-1, 4)
    positives: list[tuple[int, ...]] = [() for _ in range(p)]
    if detection_only and config.detection_only_pairs == "teacher":  # every match potential: the teacher selects
        config = replace(config, top_k=max(p, 1), interactiveness_threshold=0.0)
    if config.targets == "one-to-one":
        annotated, rows = annotated_pairs(sample, None if proposals.verbs is None else proposals.verbs.shape[1])
        ch, co = unannotated_combinations(np.asarray(sample.labels), sample.pair_human, sample.pair_object,
                                          rule.human_label, rule.human_human)
        combos = PairSet(boxes[torch.as_tensor(ch)], boxes[torch.as_tensor(co)], labels[torch.as_tensor(co)])
        match = two_stage_match(proposals, annotated, combos, interactiveness, image_size, config)
        role = match.role.clone()
        for q, g in zip(match.seen_proposal.tolist(), match.seen_target.tolist()):
            positives[q] = tuple(sorted(set(_seen(sample.pair_classes[rows[g]], rule))))
        inter = (role > 0).float()
        mask = torch.ones(p, dtype=torch.bool)
        pot, pot_cols = match.potential_proposal, match.potential_target
    else:
        annotated, rows = annotated_pairs(sample)
        matched = union_match(proposals, annotated, config.union_iou)  # [P, G]
        seen = matched.any(1) if matched.numel() else torch.zeros(p, dtype=torch.bool)
        inter = torch.zeros(p)
        for q in torch.nonzero(seen).flatten().tolist():
            gs = rows[torch.nonzero(matched[q]).flatten().numpy()]
            positives[q] = tuple(sorted({c for g in gs for c in _seen(sample.pair_classes[g], rule)}))
            inter[q] = float(any(v != rule.no_interaction_verb for g in gs for v in sample.pair_verbs[g]))
        rep = merge_instances(np.asarray(sample.boxes).reshape(-1, 4), np.asarray(sample.labels), config.merge_iou)
        ch, co = potential_combinations(sample, rep, rule, config.union_iou)
        combos = PairSet(boxes[torch.as_tensor(ch)], boxes[torch.as_tensor(co)], labels[torch.as_tensor(co)])
        role = seen.long() * SEEN
        free = torch.nonzero(~seen).flatten()
        two_rows, _, pot, pot_cols = stage_two(proposals, free, combos, interactiveness, image_size, config)
        role[two_rows] = IGNORED
        role[pot] = POTENTIAL
        inter[pot] = 1.0
        mask = role != IGNORED if config.unselected_matches == "ignored" else torch.ones(p, dtype=torch.bool)
    if detection_only:
        mask = torch.zeros(p, dtype=torch.bool)
    cols = torch.as_tensor(pot_cols, dtype=torch.long)
    return ProposalTargets(role, positives, inter, mask, pot, combos.human_boxes[cols], combos.object_boxes[cols],
                           combos.object_labels[cols],
                           torch.stack([torch.as_tensor(ch)[cols], torch.as_tensor(co)[cols]], 1).long())


def soft_label_classes(vocabulary, split: str | None = None) -> frozenset[int]:
    """Classes whose candidate slots may take the teacher's soft labels (EoID's ``seen_mask``).

    Every class but those of the no-interaction verb (the teacher's softmax leaves it out); under an
    unseen-verb split, the unseen classes only (EoID ``hico_ua_st``: ``seen_mask[ua] = 1``).
    """
    classes = frozenset(range(vocabulary.num_classes))
    if split not in (None, "", "default", "none") and vocabulary.split(split).kind == "unseen_verb":
        classes = vocabulary.unseen_classes(split)
    no_int = vocabulary.no_interaction_verb
    return frozenset(c for c in classes if no_int is None or int(vocabulary.class_verbs[c]) != no_int)
