"""One training forward: proposals -> recogniser (packed) -> two-stage matching -> targets -> losses.

Per image of a batch, read top to bottom:

1. pairs are proposed from the image's training boxes (:func:`hoi_mllm.pairs.propose_pairs`);
2. the recogniser scores every candidate phrase of every pair in one packed forward (gradient
   checkpointing works there), unseen phrases included, as at inference;
3. under ``no_grad``, proposals are matched in two stages (:mod:`~hoi_mllm.finetune.matcher`)
   to the annotated pairs, then to the unannotated human-object combinations;
4. seen pairs get the verb targets of their annotated pair, potential pairs the teacher's scores
   on the matched combination's boxes, every pair an interactiveness target.

The batch's pairs are then concatenated and :func:`~hoi_mllm.finetune.losses.hoi_losses` computes
the terms once. The module wraps the recogniser so that ``accelerate.prepare`` (DDP) sees one
forward per step; the teacher is held outside the module tree (never synchronised or trained).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from hoi_mllm.data.sample import HOISample
from hoi_mllm.finetune.config import LossConfig, MatcherConfig, PairsConfig
from hoi_mllm.finetune.losses import LossTerms, align_scores, candidate_mask, candidate_targets, hoi_losses
from hoi_mllm.finetune.matcher import PairSet, two_stage_match, unannotated_combinations
from hoi_mllm.finetune.teacher import Teacher, make_pairs
from hoi_mllm.models.matching import RecognitionOutput
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

    role: Tensor           # [P] 0 none, 1 seen, 2 potential
    verb_targets: Tensor   # [P, C]
    teacher: Tensor        # [P, C]


def annotated_pairs(sample: HOISample, num_verbs: int) -> tuple[PairSet, np.ndarray]:
    """The sample's annotated pairs that have an object, as a :class:`PairSet` (verbs multi-hot ``[G, V]``),
    and their rows in the sample."""
    rows = np.flatnonzero(sample.pair_object >= 0)
    boxes = torch.as_tensor(sample.boxes).float()
    h, o = torch.as_tensor(sample.pair_human[rows]), torch.as_tensor(sample.pair_object[rows])
    verbs = torch.as_tensor(sample.verb_matrix(num_verbs)[rows])
    return PairSet(boxes[h], boxes[o], torch.as_tensor(sample.labels)[o], torch.ones(len(rows)), verbs), rows


def verb_probabilities(output: RecognitionOutput, class_verbs: Tensor, num_verbs: int, slots: Tensor) -> Tensor:
    """``[P, V]`` predicted probability of each verb: candidate scores scattered by verb, ``slots [P, C]`` only."""
    probs = torch.zeros(len(output), num_verbs)
    scores = (output.verb_scores.detach().float().cpu() * slots).clamp(0, 1)  # [P, C]
    verbs = class_verbs[output.candidates.clamp(min=0).cpu()]  # [P, C]
    return probs.scatter_reduce(1, verbs, scores, reduce="amax")


class TrainingStep(nn.Module):
    """``step(batch: list[TrainItem]) -> LossTerms`` (see the module docstring).

    Args:
        recogniser: the student.
        seen_classes: class ids whose labels may train (all classes in the default setting).
        pairs, matcher, loss: config sections.
        teacher: soft targets of potential pairs (kept outside the module tree).
        seed: seed of the per-image pair subsampling (``pairs.max_train_pairs``).
    """

    def __init__(self, recogniser: HOIRecogniser, seen_classes: frozenset[int], pairs: PairsConfig,
                 matcher: MatcherConfig, loss: LossConfig, teacher: Teacher, seed: int = 0):
        super().__init__()
        self.recogniser = recogniser
        self.vocabulary = recogniser.vocabulary
        self.seen_classes = frozenset(seen_classes)
        self.pairs_config, self.matcher_config, self.loss_config = pairs, matcher, loss
        self._teacher = [teacher]  # a list: not a submodule
        self.seed = seed
        self.class_verbs = torch.as_tensor(self.vocabulary.class_verbs)
        self.everything = frozenset(range(self.vocabulary.num_classes))
        self.last_images: list[str] = []

    @property
    def teacher(self) -> Teacher:
        return self._teacher[0]

    def proposals(self, item: TrainItem, step_seed: int) -> Pairs:
        """Proposed pairs of an image, capped at ``pairs.max_train_pairs`` (gated seen-able pairs first)."""
        pairs = propose_pairs(item.detections, self.vocabulary.human_object, self.pairs_config.proposal)
        cap = self.pairs_config.max_train_pairs
        if cap is None or len(pairs) <= cap:
            return pairs
        annotated, _ = annotated_pairs(item.sample, self.vocabulary.num_verbs)
        from hoi_mllm.finetune.matcher import pair_ious

        props = PairSet(torch.as_tensor(pairs.human_boxes), torch.as_tensor(pairs.object_boxes),
                        torch.as_tensor(pairs.object_labels))
        near = (pair_ious(props, annotated) >= self.matcher_config.iou_threshold).any(1) if len(annotated) else \
            torch.zeros(len(pairs), dtype=torch.bool)
        rng = np.random.default_rng([self.seed, step_seed, item.index])
        order = np.concatenate([rng.permutation(np.flatnonzero(near.numpy())),
                                rng.permutation(np.flatnonzero(~near.numpy()))])[:cap]
        return pairs[np.sort(order)]

    def image_targets(self, item: TrainItem, pairs: Pairs, output: RecognitionOutput) -> ImageTargets:
        """Match the proposals of one image and build their targets (no gradients)."""
        vocab, cfg = self.vocabulary, self.matcher_config
        sample = item.sample
        cands = output.candidates.cpu()
        seen_slots = candidate_mask(cands, self.seen_classes)
        annotated, rows = annotated_pairs(sample, vocab.num_verbs)
        ch, co = unannotated_combinations(np.asarray(sample.labels), sample.pair_human, sample.pair_object,
                                          vocab.human_object, self.pairs_config.proposal.human_human)
        boxes = torch.as_tensor(sample.boxes).float()
        combos = PairSet(boxes[torch.as_tensor(ch)], boxes[torch.as_tensor(co)], torch.as_tensor(sample.labels)[torch.as_tensor(co)])
        inter = torch.sigmoid(output.interactiveness.detach().float().cpu())
        props = PairSet(torch.as_tensor(pairs.human_boxes).float(), torch.as_tensor(pairs.object_boxes).float(),
                        torch.as_tensor(pairs.object_labels).long(), torch.as_tensor(pairs.object_scores).float(),
                        verb_probabilities(output, self.class_verbs, vocab.num_verbs, seen_slots))
        match = two_stage_match(props, annotated, combos, inter, pairs.image_size, cfg)
        positives: list[list[int]] = [[] for _ in range(len(pairs))]
        for p, g in zip(match.seen_proposal.tolist(), match.seen_target.tolist()):
            positives[p] = [c for c in sample.pair_classes[rows[g]] if c in self.seen_classes]
        verb_targets = candidate_targets(cands, positives)
        teacher = torch.zeros(cands.shape)
        if match.potential_proposal.numel():
            u = match.potential_target
            keys = [(sample.file_name, int(ch[k]), int(co[k])) for k in u.tolist()]
            t_cands, t_probs = self.teacher(item.image, make_pairs(combos.human_boxes[u], combos.object_boxes[u],
                                                                   combos.object_labels[u], pairs.image_size), keys)
            if t_cands.numel():
                teacher[match.potential_proposal] = align_scores(cands[match.potential_proposal], t_cands, t_probs)
        return ImageTargets(match.role, verb_targets, teacher)

    def forward(self, batch: list[TrainItem], step_seed: int = 0) -> LossTerms:
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
        return hoi_losses(out.verb_logits, out.interactiveness, role, verb_targets,
                          candidate_mask(cands, self.seen_classes), teacher, cands >= 0, self.loss_config)
