"""Evaluation: HICO-DET mAP, V-COCO role AP and unseen-pair recall, as the official protocols compute them.

Three steps as pycocotools / torchmetrics: ``update()`` matches the triplets of some images
(:mod:`~hoi_mllm.eval.matching`), ``compute()`` ranks and accumulates precision/recall per class
(:mod:`~hoi_mllm.eval.ap`) and summarises; :mod:`~hoi_mllm.eval.tables` formats the numbers and
:mod:`~hoi_mllm.eval.plots` draws precision-recall curves. Ground truth is ``list[HOISample]``;
predictions a :class:`~hoi_mllm.predictions.PredictionsFile` or any iterable of ``HOITriplets``.
"""
from hoi_mllm.eval.ap import MATLAB_RECALL_THRESHOLDS, accumulate, ap_11point, ap_voc
from hoi_mllm.eval.hicodet import (
    HICODetConfig,
    HICODetEvaluator,
    HICODetResult,
    SettingResult,
    evaluate_hicodet,
    parse_settings,
)
from hoi_mllm.eval.inputs import FlatPredictions, flatten_predictions
from hoi_mllm.eval.recall import UnseenPairRecall, unseen_pair_recall
from hoi_mllm.eval.tables import hicodet_report, hicodet_table, render_table, vcoco_report, vcoco_table
from hoi_mllm.eval.vcoco import VCOCOConfig, VCOCOEvaluator, VCOCOResult, evaluate_vcoco

__all__ = [
    "MATLAB_RECALL_THRESHOLDS", "accumulate", "ap_11point", "ap_voc",
    "HICODetConfig", "HICODetEvaluator", "HICODetResult", "SettingResult", "evaluate_hicodet", "parse_settings",
    "FlatPredictions", "flatten_predictions", "UnseenPairRecall", "unseen_pair_recall",
    "hicodet_report", "hicodet_table", "render_table", "vcoco_report", "vcoco_table",
    "VCOCOConfig", "VCOCOEvaluator", "VCOCOResult", "evaluate_vcoco",
]
