"""Evaluation during training: the recogniser on held-out images, ground-truth boxes, HICO-DET protocol.

Pairs are proposed from the annotated instances of each held-out image, recognised with the
inference path (cached prefix) and post-processed into triplets exactly as ``hoi-mllm detect``
does (:meth:`~hoi_mllm.pipeline.HOIPipeline.recognise_detections`); the triplets are scored with
the HICO-DET evaluator (:mod:`hoi_mllm.eval`), with Unseen / Seen means for the run's split; a
recogniser of the ``vcoco`` vocabulary is scored with V-COCO role AP instead (``full`` is Scenario 1).
"""
from __future__ import annotations

import time
from typing import Sequence

import torch
from tqdm.auto import tqdm

from hoi_mllm.data.sample import HOISample
from hoi_mllm.detectors.ground_truth import MERGE_IOU
from hoi_mllm.finetune.data import annotated_detections
from hoi_mllm.pairs import PairProposalConfig, dropped_pairs
from hoi_mllm.postprocess import PostprocessConfig


def predict_ground_truth_boxes(recogniser, samples: Sequence[HOISample], pair_config: PairProposalConfig,
                               post_config: PostprocessConfig | None = None, progress: bool = False) -> list:
    """One :class:`~hoi_mllm.records.HOITriplets` per sample, from its annotated boxes (score 1), duplicate
    rows of one instance merged as the ``ground-truth`` detector does.

    Raises:
        ValueError: some image could not be read or recognised (wrong image root, a corrupt file): naming the
            first few. An evaluation that left them out would count their annotated triplets as misses."""
    from hoi_mllm.pipeline import HOIPipeline
    from hoi_mllm.runner import describe_skipped, items_from_samples, recognise

    pipe = HOIPipeline(None, recogniser, pair_config, post_config)
    was_training = recogniser.training
    recogniser.eval()
    by_name = {s.file_name: s for s in samples}
    skipped: list[dict] = []

    def annotated(images, names):  # the detector of this evaluation: each image's annotated instances
        return [annotated_detections(by_name[n], im.size, recogniser.vocabulary.name, MERGE_IOU)
                for im, n in zip(images, names)]

    pipe.detector = annotated
    try:
        with tqdm(total=len(samples), desc="evaluating", unit="img", disable=not progress, leave=False) as bar:
            out = [t for _, _, t in recognise(pipe, items_from_samples(samples), skipped, bar=bar, timed=False)]
    finally:
        recogniser.train(was_training)
    if skipped:
        raise ValueError(f"{len(skipped)} of {len(samples)} annotated images could not be evaluated (their "
                         "annotations would count as misses): " + describe_skipped(skipped))
    return out


@torch.no_grad()
def evaluate_recogniser(recogniser, samples: Sequence[HOISample], split: str | None,
                        pair_config: PairProposalConfig = PairProposalConfig(max_pairs=None),
                        post_config: PostprocessConfig | None = None, missing_classes: str = "skip",
                        progress: bool = False) -> dict:
    """mAP (in percent) of a recogniser on ``samples`` with ground-truth boxes.

    Returns:
        ``{"full", "rare", "non_rare", "seen", "unseen" (with a split), "images", "seconds_per_image",
        "pairs_proposed", "pairs_gated", "pairs_capped"}`` (the last three: totals of the pairs proposed and
        of those ``pair_config``'s gate and cap left out);
        a group without any class present in ``samples`` is ``None``. For the ``vcoco`` vocabulary:
        ``{"full" (role AP, Scenario 1), "role_ap_scenario_1", "role_ap_scenario_2", "images",
        "seconds_per_image"}``.
    """
    from hoi_mllm.eval import HICODetConfig, evaluate_hicodet, evaluate_vcoco

    start = time.perf_counter()
    predictions = predict_ground_truth_boxes(recogniser, samples, pair_config, post_config, progress)
    seconds = time.perf_counter() - start
    if recogniser.vocabulary.name == "vcoco":
        result = evaluate_vcoco(list(samples), predictions, recogniser.vocabulary)
        means = {k: r.mean for k, r in result.scenarios.items()}  # scenario_1, scenario_2
        out = {f"role_ap_{k}": (None if v is None else 100.0 * v) for k, v in means.items()}
        out["full"] = out["role_ap_scenario_1"]
    else:
        result = evaluate_hicodet(list(samples), predictions, recogniser.vocabulary,
                                  HICODetConfig(split=split, settings=("default",), missing_classes=missing_classes))
        out = {k: (None if v is None else 100.0 * v) for k, v in result.settings["default"].summary.items()}
    out.update(images=len(samples), seconds_per_image=seconds / max(1, len(samples)), **dropped_pairs(predictions))
    return out
