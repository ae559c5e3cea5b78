"""``targets.jsonl``: what the trainer trains on, image by image (``hoi-mllm data targets``).

For every image of an annotation file (after the zero-shot filter of ``split``, as
:func:`hoi_mllm.finetune.data.load_training_data` applies it), the training pairs are proposed
exactly as the trainer proposes them (:func:`hoi_mllm.finetune.data.training_detections` and
:func:`hoi_mllm.finetune.step.training_proposals`, from the annotated boxes or a detector's) and their targets
built by :func:`hoi_mllm.finetune.targets.build_targets`, the function the training step calls.
Two things differ from a training step, both stated in the summary: there is no model, so every
proposal's interactiveness is taken as 1 (stage two's top-k then picks its matches in proposal
order: the most potential pairs the rule allows), and ``pairs.max_train_pairs`` (a per-step random
subsample) is not applied (``proposal.max_pairs`` is, seeded by the image's position).

One JSON line per image::

    {"file_name": str, "proposals": [{"human_box": [x1, y1, x2, y2], "object_box": [...], "object": str,
      "role": "seen" | "potential" | "none" | "ignored", "verbs": [verb ids], "interactiveness": 1 | 0 | null}]}

The summary counts proposals by role, positive verbs per seen proposal, and three checks on the
rule (each against the annotations directly, not through the rule): annotated verbs a proposal
should carry (DA-HOI: every same-object pair at min IoU >= 0.5) that its targets miss; proposals
duplicating an annotated interacting pair whose interactiveness target is 0; potential pairs that
duplicate an annotated pair or pair a person with its own duplicate box. It also counts the
interactiveness negatives (target 0 with the loss on): with ground-truth proposals only, under EoID's
unknown mask (``matcher.unselected_matches=ignored``), nearly all of them are pairs annotated no-interaction.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from hoi_mllm.finetune.config import MatcherConfig, PairsConfig
from hoi_mllm.finetune.matcher import PairSet
from hoi_mllm.finetune.targets import (
    ROLE_NAMES,
    SEEN,
    TargetRule,
    annotated_pairs,
    build_targets,
    merge_instances,
    union_match,
)
from hoi_mllm.io import atomic_path, atomic_write_json

CHECK_IOU = 0.5  # DA-HOI's rule, the yardstick of the checks whatever matcher.union_iou is


@dataclass
class TargetsSummary:
    """Counts over the images of a ``targets.jsonl`` (see the module docstring)."""

    rule: str
    images: int = 0
    proposals: int = 0
    roles: dict = field(default_factory=lambda: {name: 0 for name in ROLE_NAMES})
    positive_verbs: int = 0
    expected_verbs: int = 0
    missing_verbs: int = 0
    duplicate_proposals: int = 0
    duplicates_not_interacting: int = 0
    potential_duplicates: int = 0
    potential_self_pairs: int = 0
    interactiveness_negatives: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        seen = self.roles["seen"]
        pot = self.roles["potential"]
        share = lambda a, b: round(a / b, 4) if b else 0.0  # noqa: E731
        return {"rule": self.rule, "images": self.images, "proposals": self.proposals, "roles": dict(self.roles),
                "positive_verbs_per_seen_proposal": share(self.positive_verbs, seen),
                "expected_verbs": self.expected_verbs, "missing_verbs": self.missing_verbs,
                "missing_verbs_share": share(self.missing_verbs, self.expected_verbs),
                "duplicate_proposals": self.duplicate_proposals,
                "duplicates_not_interacting": self.duplicates_not_interacting,
                "duplicates_not_interacting_share": share(self.duplicates_not_interacting, self.duplicate_proposals),
                "potential_duplicates": self.potential_duplicates, "potential_self_pairs": self.potential_self_pairs,
                "potential_on_duplicates_share": share(self.potential_duplicates + self.potential_self_pairs, pot),
                "interactiveness_negatives": self.interactiveness_negatives, "seconds": round(self.seconds, 1)}


def _image_size(sample) -> tuple[int, int]:
    if sample.image_size is not None:
        return tuple(int(v) for v in sample.image_size)
    if sample.boxes.size == 0:
        return (1, 1)
    return (int(np.ceil(sample.boxes[:, 2].max())) + 1, int(np.ceil(sample.boxes[:, 3].max())) + 1)


def _check(summary: TargetsSummary, sample, props: PairSet, t, rule: TargetRule, vocab) -> None:
    """Add one image's checks to ``summary`` (annotations read directly, module docstring)."""
    annotated, rows = annotated_pairs(sample)
    hit = union_match(props, annotated, CHECK_IOU).numpy()  # [P, G]
    for q in range(len(props)):
        gs = rows[np.flatnonzero(hit[q])] if hit.size else []
        expected = {c for g in gs for c in sample.pair_classes[g]
                    if c >= 0 and (rule.seen_classes is None or c in rule.seen_classes)}
        summary.expected_verbs += len(expected)
        summary.missing_verbs += len(expected - set(t.positives[q]))
        interacting = any(v != rule.no_interaction_verb for g in gs for v in sample.pair_verbs[g])
        if interacting:
            summary.duplicate_proposals += 1
            summary.duplicates_not_interacting += bool(t.interactiveness_mask[q]) and float(t.interactiveness[q]) == 0
    if t.potential_proposal.numel():
        rep = merge_instances(np.asarray(sample.boxes).reshape(-1, 4), np.asarray(sample.labels), CHECK_IOU)
        h, o = t.potential_instances[:, 0].numpy(), t.potential_instances[:, 1].numpy()
        self_pair = rep[h] == rep[o]
        pot = t.potential_proposal
        combos = PairSet(t.potential_human_boxes, t.potential_object_boxes, t.potential_labels)
        sub = PairSet(props.human_boxes[pot], props.object_boxes[pot], props.object_labels[pot])
        has = sample.pair_object >= 0
        named = set(zip(rep[sample.pair_human[has]].tolist(), rep[sample.pair_object[has]].tolist()))
        dup = (union_match(combos, annotated, CHECK_IOU).any(1) | union_match(sub, annotated, CHECK_IOU).any(1)).numpy()
        dup |= np.asarray([(a, b) in named for a, b in zip(rep[h].tolist(), rep[o].tolist())], dtype=bool)
        summary.potential_self_pairs += int(self_pair.sum())
        summary.potential_duplicates += int((dup & ~self_pair).sum())


def write_targets(annotations: str | Path, output: str | Path, split: str | None = None,
                  pairs: str = "ground-truth", matcher: MatcherConfig = MatcherConfig(),
                  pairs_config: PairsConfig | None = None, vocabulary=None, repair_boxes: bool = False,
                  progress: bool = True, merge_duplicates: bool | None = None) -> TargetsSummary:
    """Write ``output/targets.jsonl`` and ``output/summary.json`` (atomically) and return the summary.

    Args:
        annotations: training annotation file (any format the loaders read).
        output: folder to write into (created).
        split: zero-shot split of the vocabulary (None: the default setting).
        pairs: ``ground-truth`` (the annotated boxes) or a detector spec ``NAME[:key=value,...]``.
        matcher: the matcher section (``targets`` selects the rule).
        pairs_config: the pairs section (proposal settings; ``source``/``detector`` are set from ``pairs``).
        merge_duplicates: ``pairs.merge_duplicates`` (None: on with the ``union`` rule, off with
            ``one-to-one``, so that the earlier rule is measured as it trained).
    Raises:
        ValueError: an unknown split or a bad detector spec (naming the allowed values).
    """
    from dataclasses import replace

    from hoi_mllm.data import filter_zero_shot, read_annotations, resolve_vocabulary
    from hoi_mllm.finetune.data import cache_path, detector_detections, normalise_split, training_detections
    from hoi_mllm.finetune.step import training_proposals

    start = time.perf_counter()
    samples, report = read_annotations(annotations, vocabulary, None, repair_boxes, progress=progress)
    vocab = resolve_vocabulary(annotations, report.format, vocabulary)
    split = normalise_split(split)
    seen = None
    if split is not None:
        seen = vocab.seen_classes(split)  # an unknown split fails here, naming the allowed ones
        samples = filter_zero_shot(samples, vocab, split)[0]
    cfg = pairs_config or PairsConfig()
    merge = (matcher.targets == "union") if merge_duplicates is None else bool(merge_duplicates)
    cfg = replace(cfg, merge_duplicates=merge)
    if pairs == "ground-truth":
        cfg = replace(cfg, source="ground-truth", detector=None)
        detected = None
    else:
        cfg = replace(cfg, source="detector", detector=pairs)
        detected = detector_detections(cfg, samples, vocab, cache_path(cfg, str(annotations)), progress)
    rule = TargetRule.of(vocab, seen, cfg.proposal.human_human)
    summary = TargetsSummary(matcher.targets)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "targets.jsonl") as tmp, open(tmp, "w") as f:
        for index, sample in enumerate(tqdm(samples, desc="targets", unit="image", disable=not progress)):
            size = _image_size(sample)
            found = training_proposals(training_detections(cfg, sample, size, detected, vocab.name), sample,
                                       vocab.human_object, cfg, matcher.iou_threshold, [0, index])
            props = PairSet(torch.as_tensor(found.human_boxes).float().reshape(-1, 4),
                            torch.as_tensor(found.object_boxes).float().reshape(-1, 4),
                            torch.as_tensor(found.object_labels).long().reshape(-1),
                            torch.as_tensor(found.object_scores).float().reshape(-1))
            t = build_targets(sample, props, torch.ones(len(props)), size, rule, matcher)
            _check(summary, sample, props, t, rule, vocab)
            summary.interactiveness_negatives += int((t.interactiveness_mask & (t.interactiveness == 0)).sum())
            summary.images += 1
            summary.proposals += len(props)
            rows = []
            for q, role in enumerate(t.role.tolist()):
                summary.roles[ROLE_NAMES[role]] += 1
                verbs = sorted({int(vocab.class_verbs[c]) for c in t.positives[q]})
                summary.positive_verbs += len(verbs) if role == SEEN else 0
                rows.append({"human_box": [round(float(v), 2) for v in props.human_boxes[q]],
                             "object_box": [round(float(v), 2) for v in props.object_boxes[q]],
                             "object": vocab.objects[int(props.object_labels[q])], "role": ROLE_NAMES[role],
                             "verbs": verbs, "interactiveness": int(t.interactiveness[q]) if bool(t.interactiveness_mask[q]) else None})
            f.write(json.dumps({"file_name": sample.file_name, "proposals": rows}) + "\n")
    summary.seconds = time.perf_counter() - start
    atomic_write_json(out / "summary.json", {"annotations": str(annotations), "split": split, "pairs": pairs,
                                            "interactiveness": "taken as 1 for every proposal (no model)",
                                            "max_train_pairs": "not applied", "merge_duplicates": merge,
                                            **summary.as_dict()})
    return summary
