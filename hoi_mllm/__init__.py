"""hoi_mllm: zero-shot human-object interaction detection with any detector and a multimodal LLM.

Data flow: a detector gives :class:`Detections`; :func:`propose_pairs` gives :class:`Pairs`; the
recogniser scores candidate verb phrases per pair in one deterministic pass and returns
:class:`HOITriplets`, written as a predictions file that the evaluators read.

Every public name is imported on first use (``EXPORTS``: name -> module), so ``import hoi_mllm``
loads neither torch nor transformers: the command line starts fast and evaluation never needs them.
Adding an export is one entry in ``EXPORTS``.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it
EXPORTS: dict[str, str] = {
    "Detections": "hoi_mllm.records",
    "HOITriplets": "hoi_mllm.records",
    "Pairs": "hoi_mllm.records",
    "PairProposalConfig": "hoi_mllm.pairs",
    "propose_pairs": "hoi_mllm.pairs",
    "PredictionsFile": "hoi_mllm.predictions",
    "PredictionsWriter": "hoi_mllm.predictions",
    "write_predictions": "hoi_mllm.predictions",
    "read_predictions": "hoi_mllm.predictions",
    "PredictionColumns": "hoi_mllm.predictions_reader",
    "HOIPipeline": "hoi_mllm.pipeline",
    "load_pipeline": "hoi_mllm.pipeline",
    "PipelineConfig": "hoi_mllm.pipeline_config",
    "HOIResult": "hoi_mllm.results",
    "run_detector": "hoi_mllm.runner",
    "read_prediction_columns": "hoi_mllm.predictions_reader",
}

__all__ = [*EXPORTS, "__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names come from __getattr__
    from hoi_mllm.pairs import PairProposalConfig, propose_pairs
    from hoi_mllm.pipeline import HOIPipeline, load_pipeline
    from hoi_mllm.pipeline_config import PipelineConfig
    from hoi_mllm.predictions import PredictionsFile, PredictionsWriter, read_predictions, write_predictions
    from hoi_mllm.predictions_reader import PredictionColumns, read_prediction_columns
    from hoi_mllm.records import Detections, HOITriplets, Pairs
    from hoi_mllm.results import HOIResult
    from hoi_mllm.runner import run_detector


def __getattr__(name: str):
    module = EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hoi_mllm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(EXPORTS))
