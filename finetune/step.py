"""One training forward: proposals -> recogniser (packed) -> two-stage matching -> targets -> losses.

Per image of a batch, read top to bottom:

1. pairs are proposed from the image's training boxes (:func:`hoi_mllm.pairs.propose_pairs`);
2. the recogniser scores every candidate phrase of every pair in one packed forward (gradient
   checkpointing works there), unseen phrases included, as at inference;
3. under ``no_grad``, proposals are matched in two stages (:mod:`~hoi_mllm.finetune.matcher`)
   to the annotated pairs, then to the unannotated human-object combinations;
4. targets follow :mod:`~hoi_mllm.finetune.targets` (``matcher.targets``; DA-HOI's union of the
   verbs of every overlapping annotated pair by default); potential pairs get the teacher's scores
   on the matched combination's boxes; every pair but the ignored ones an interactiveness target. In a
   detection-only image under ``matcher.detection_only_pairs=teacher`` the teacher scores every stage-two
   match, and those it scores under ``matcher.pseudo_label_threshold`` on every class become ignored.

The batch's pairs are then concatenated and :func:`~hoi_mllm.finetune.losses.hoi_losses` computes
the terms once.

``stage="sap"`` (``train.stage=sap``, DA-HOI's SAP pre-training) replaces 2: the visual grid is
computed under ``no_grad`` (vision tower and merger frozen, the language model never runs), SAP
pools the proposals and its verb classifier (``HOIRecogniser.sap_verb_classifier``) scores the
vocabulary's verbs; 3 and 4 are the same :func:`~hoi_mllm.finetune.targets.build_targets` (union
rule, seen classes only), of which the seen pairs' positives and interactiveness are used (every
other pair is a negative, as in DA-HOI; no teacher); :func:`~hoi_mllm.finetune.losses.sap_stage_losses`. The module wraps the recogniser so that ``accelerate.prepare`` (DDP) sees one
forward per step; the teacher is held outside the module tree (never synchronised or trained).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from hoi_mllm.data.coco_detections import is_detection_only
from hoi_mllm.data.sample import HOISample
from hoi_mllm.finetune.config import LossConfig, MatcherConfig, PairsConfig
from hoi_mllm.finetune.losses import (
    LossTerms,
    align_scores,
    candidate_mask,
    candidate_targets,
    hoi_losses,
    sap_stage_losses,
    verb_loss,
)
from hoi_mllm.finetune.matcher import PairSet, pair_ious
from hoi_mllm.finetune.targets import (
    IGNORED,
    NEGATIVE,
    SEEN,
    TargetRule,
    annotated_pairs,
    build_targets,
    soft_label_classes,
)
from hoi_mllm.finetune.teacher import Teacher, make_pairs
from hoi_mllm.models.matching import RecognitionOutput, candidate_lists, pad_candidates
from hoi_mllm.models.recogniser import HOIRecogniser
from hoi_mllm.pairs import propose_pairs
from hoi_mllm.records import Detections, Pairs


@dataclass
class TrainItem:
    """One training image: its (filtered) annotation, the decoded image and the boxes pairs come from."""

    index: int
    sample: HOISample
    image: object
    detections: Detections


@dataclass
class ImageTargets:
    """Targets of the ``P`` proposals of one image (CPU tensors)."""

    role: Tensor             # [P] 0 none, 1 seen, 2 potential, 3 ignored, 4 negative (finetune/targets.py)
    verb_targets: Tensor     # [P, C]
    teacher: Tensor          # [P, C]
    interactiveness: Tensor  # [P] target
    interactiveness_mask: Tensor  # [P] False: no interactiveness loss


def verb_probabilities(output: RecognitionOutput, class_verbs: Tensor, num_verbs: int, slots: Tensor) -> Tensor:
    """``[P, V]`` predicted probability of each verb: candidate scores scattered by verb, ``slots [P, C]`` only."""
    probs = torch.zeros(len(output), num_verbs)
    scores = (output.verb_scores.detach().float().cpu() * slots).clamp(0, 1)  # [P, C]
    verbs = class_verbs[output.candidates.clamp(min=0).cpu()]  # [P, C]
    return probs.scatter_reduce(1, verbs, scores, reduce="amax")


def training_proposals(detections: Detections, sample: HOISample, human_label: int, config: PairsConfig,
                       iou: float, seed, max_train_pairs: int | None = None) -> Pairs:
    """The pairs one training image trains on.

    Every pair :func:`~hoi_mllm.pairs.propose_pairs` makes from ``detections`` (``proposal.max_pairs``
    lifted), then, where more than the cap (the smaller of ``proposal.max_pairs`` and
    ``max_train_pairs``), the pairs overlapping an annotated pair (both IoUs >= ``iou``) first and the
    rest after, each group in an order seeded by ``seed``. Capping by detector score alone dropped
    annotated pairs of crowded images before matching (HICO-DET test: 11 % of the triplets with the
    default ``max_pairs`` 64).
    """
    from dataclasses import replace

    pairs = propose_pairs(detections, human_label, replace(config.proposal, max_pairs=None))
    caps = [c for c in (config.proposal.max_pairs, max_train_pairs) if c is not None]
    cap = min(caps) if caps else None
    if cap is None or len(pairs) <= cap:
        return pairs
    annotated, _ = annotated_pairs(sample)
    props = PairSet(torch.as_tensor(pairs.human_boxes), torch.as_tensor(pairs.object_boxes),
                    torch.as_tensor(pairs.object_labels))
    near = (pair_ious(props, annotated) >= iou).any(1) if len(annotated) else torch.zeros(len(pairs), dtype=torch.bool)
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(near.numpy())),
                            rng.permutation(np.flatnonzero(~near.numpy()))])[:cap]
    return pairs[np.sort(order)]


class TrainingStep(nn.Module):
    """``step(batch: list[TrainItem]) -> LossTerms`` (see the module docstring).

    Args:
        recogniser: the student.
        seen_classes: class ids whose labels may train (all classes in the default setting).
        pairs, matcher, loss: config sections.
        teacher: soft targets of potential pairs (kept outside the module tree).
        seed: seed of the per-image pair subsampling (``pairs.max_train_pairs``).
        distill_classes: classes whose slots take the teacher's soft labels under ``loss.distill=eoid``
            (:func:`~hoi_mllm.finetune.targets.soft_label_classes`; None: every class but no-interaction).
        stage: ``joint`` or ``sap`` (SAP pre-training; the recogniser must have its ``sap_verb_classifier``).
    """

    def __init__(self, recogniser: HOIRecogniser, seen_classes: frozenset[int], pairs: PairsConfig,
                 matcher: MatcherConfig, loss: LossConfig, teacher: Teacher, seed: int = 0,
                 distill_classes: frozenset[int] | None = None, stage: str = "joint"):
        super().__init__()
        if stage == "sap" and recogniser.sap_verb_classifier is None:
            raise ValueError("stage 'sap' needs the recogniser's verb classifier (HOIRecogniser.add_verb_classifier)")
        self.stage = stage
        self.recogniser = recogniser
        self.vocabulary = recogniser.vocabulary
        self.seen_classes = frozenset(seen_classes)
        self.pairs_config, self.matcher_config, self.loss_config = pairs, matcher, loss
        self._teacher = [teacher]  # a list: not a submodule
        self.seed = seed
        self.class_verbs = torch.as_tensor(self.vocabulary.class_verbs)
        self.everything = frozenset(range(self.vocabulary.num_classes))
        self.last_images: list[str] = []
        self.rule = TargetRule.of(self.vocabulary, self.seen_classes, pairs.proposal.human_human)
        self.distill_classes = soft_label_classes(self.vocabulary) if distill_classes is None else distill_classes

    @property
    def teacher(self) -> Teacher:
        return self._teacher[0]

    def proposals(self, item: TrainItem, step_seed: int) -> Pairs:
        """Proposed pairs of an image (:func:`training_proposals`), seeded by ``(seed, step_seed, image)``."""
        return training_proposals(item.detections, item.sample, self.vocabulary.human_object, self.pairs_config,
                                  self.matcher_config.iou_threshold, [self.seed, step_seed, item.index],
                                  self.pairs_config.max_train_pairs)

    def image_targets(self, item: TrainItem, pairs: Pairs, output: RecognitionOutput) -> ImageTargets:
        """Targets of the proposals of one image (no gradients): :func:`~hoi_mllm.finetune.targets.build_targets`
        on the model's interactiveness and verb probabilities, then the teacher on the potential pairs."""
        vocab = self.vocabulary
        cands = output.candidates.cpu()
        seen_slots = candidate_mask(cands, self.seen_classes)
        inter = torch.sigmoid(output.interactiveness.detach().float().cpu())
        props = PairSet(torch.as_tensor(pairs.human_boxes).float(), torch.as_tensor(pairs.object_boxes).float(),
                        torch.as_tensor(pairs.object_labels).long(), torch.as_tensor(pairs.object_scores).float(),
                        verb_probabilities(output, self.class_verbs, vocab.num_verbs, seen_slots))
        detection_only = is_detection_only(item.sample)
        t = build_targets(item.sample, props, inter, pairs.image_size, self.rule, self.matcher_config,
                          detection_only=detection_only)
        verb_targets = candidate_targets(cands, t.positives)
        teacher = torch.zeros(cands.shape)
        rows, hb, ob, lab = t.potential_proposal, t.potential_human_boxes, t.potential_object_boxes, t.potential_labels
        keys = [(item.sample.file_name, int(h), int(o)) for h, o in t.potential_instances.tolist()]
        if self.loss_config.distill == "eoid":  # EoID: every matched pair, seen ones on their own boxes
            seen = torch.nonzero(t.role == SEEN).flatten()
            rows = torch.cat([seen, rows])
            hb = torch.cat([props.human_boxes[seen], hb])
            ob = torch.cat([props.object_boxes[seen], ob])
            lab = torch.cat([props.object_labels[seen], lab])
            keys = [(item.sample.file_name, tuple(round(float(v), 1) for v in (*h, *o)))
                    for h, o in zip(props.human_boxes[seen].tolist(), props.object_boxes[seen].tolist())] + keys
        if rows.numel():
            t_cands, t_probs = self.teacher(item.image, make_pairs(hb, ob, lab, pairs.image_size), keys)
            if t_cands.numel():
                teacher[rows] = align_scores(cands[rows], t_cands, t_probs)
        role = t.role
        if detection_only and self.matcher_config.detection_only_pairs == "teacher" and t.potential_proposal.numel():
            # EoID's pseudo-labels: a match is potential when the teacher scores some class at least the threshold
            pot = t.potential_proposal
            low = pot[teacher[pot].amax(1) < self.matcher_config.pseudo_label_threshold]
            role = role.clone()
            negative = self.matcher_config.detection_only_unselected == "negative"
            role[low] = NEGATIVE if negative else IGNORED
            teacher[low] = 0.0
            mask = t.interactiveness_mask.clone()
            mask[low] = False  # no label says whether a detection-only pair interacts
            return ImageTargets(role, verb_targets, teacher, t.interactiveness, mask)
        return ImageTargets(role, verb_targets, teacher, t.interactiveness, t.interactiveness_mask)

    def sap_forward(self, batch: list[TrainItem], step_seed: int = 0) -> LossTerms:
        """SAP pre-training's step (module docstring): frozen grid, SAP, verb classifier, the same targets."""
        rec, vocab = self.recogniser, self.vocabulary
        verb_logits, inter_logits, cands, targets, slots, inter_t, inter_m = [], [], [], [], [], [], []
        seen_pairs = 0
        for item in batch:
            pairs = self.proposals(item, step_seed)
            if len(pairs) == 0:
                continue
            with torch.no_grad():  # vision tower + merger frozen; the language model never runs
                enc = rec.encode(item.image)
            out = rec.sap(enc.grid.detach(), torch.as_tensor(pairs.human_boxes), torch.as_tensor(pairs.object_boxes),
                          enc.image_size, enc.grid_scale)
            objects = rec.check_objects(pairs.object_labels)
            c = pad_candidates(candidate_lists(vocab, objects, self.everything, None))  # [P, C] the prior's classes
            if c.numel() == 0:  # no object of this image has a class in the vocabulary
                continue
            props = PairSet(torch.as_tensor(pairs.human_boxes).float(), torch.as_tensor(pairs.object_boxes).float(),
                            torch.as_tensor(pairs.object_labels).long(), torch.as_tensor(pairs.object_scores).float())
            detection_only = is_detection_only(item.sample)
            t = build_targets(item.sample, props, torch.sigmoid(out.interactiveness.detach().float().cpu()),
                              pairs.image_size, self.rule, self.matcher_config, detection_only=detection_only)
            seen = t.role == SEEN
            seen_pairs += int(seen.sum())
            verb_logits.append(rec.sap_verb_classifier(out.features))
            inter_logits.append(out.interactiveness)
            cands.append(c)
            targets.append(candidate_targets(c, t.positives))
            # DA-HOI: every pair counts, the unmatched ones as negatives; a detection-only image has no labels
            slots.append(candidate_mask(c, self.seen_classes) & (not detection_only))
            inter_t.append(t.interactiveness * seen.float())
            inter_m.append(torch.full((len(pairs),), not detection_only, dtype=torch.bool))
        if not verb_logits:
            zero = sum(p.sum() * 0.0 for p in rec.parameters() if p.requires_grad)
            return LossTerms(zero, zero, zero, zero)
        width = max(c.shape[1] for c in cands)

        def pad(x: Tensor, value=0) -> Tensor:
            return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)

        return sap_stage_losses(torch.cat(verb_logits), torch.cat(inter_logits),
                                torch.cat([pad(c, -1) for c in cands]), self.class_verbs,
                                torch.cat([pad(t) for t in targets]), torch.cat([pad(m, False) for m in slots]),
                                torch.cat(inter_t), torch.cat(inter_m), self.loss_config, seen_pairs)

    def forward(self, batch: list[TrainItem], step_seed: int = 0) -> LossTerms:
        if self.stage == "sap":
            self.last_images = [item.sample.file_name for item in batch]
            return self.sap_forward(batch, step_seed)
        outputs, targets = [], []
        self.last_images = [item.sample.file_name for item in batch]
        for item in batch:
            pairs = self.proposals(item, step_seed)
            if len(pairs) == 0:
                continue
            enc = self.recogniser.encode(item.image)
            out = self.recogniser(enc, pairs, mode="packed", allowed_classes=self.everything)
            outputs.append(out)
            targets.append(self.image_targets(item, pairs, out))
        if not outputs:  # no pair in the whole batch: a zero loss that still touches every trainable weight
            zero = sum(p.sum() * 0.0 for p in self.recogniser.parameters() if p.requires_grad)
            return LossTerms(zero, zero, zero, zero)
        out = RecognitionOutput.cat(outputs)
        width = out.candidates.shape[1]

        def pad(x: Tensor) -> Tensor:
            return torch.nn.functional.pad(x, (0, width - x.shape[1]))

        role = torch.cat([t.role for t in targets])
        verb_targets = torch.cat([pad(t.verb_targets) for t in targets])
        teacher = torch.cat([pad(t.teacher) for t in targets])
        cands = out.candidates.cpu()
        inter = torch.cat([t.interactiveness for t in targets])
        inter_mask = torch.cat([t.interactiveness_mask for t in targets])
        terms = hoi_losses(out.verb_logits, out.interactiveness, role, verb_targets,
                           candidate_mask(cands, self.seen_classes), teacher, cands >= 0, self.loss_config,
                           inter, inter_mask, candidate_mask(cands, self.distill_classes), self.vocabulary.num_verbs)
        if out.sap_verb_logits is not None:  # DA-HOI's sap_verb_loss: the same verb targets on the second branch
            hard = ((role == 1)[:, None] & candidate_mask(cands, self.seen_classes)
                    | (role == NEGATIVE)[:, None] & (cands >= 0)).to(out.sap_verb_logits.device)
            extra = self.loss_config.sap_branch_weight * verb_loss(out.sap_verb_logits, verb_targets.to(
                out.sap_verb_logits.device), hard, self.loss_config)
            terms.total = terms.total + extra
            terms.verb = terms.verb + extra
        return terms
