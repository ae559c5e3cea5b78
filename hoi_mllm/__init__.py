"""hoi_mllm: zero-shot human-object interaction detection with any detector and a multimodal LLM.

Data flow: a detector gives :class:`Detections`; :func:`propose_pairs` gives :class:`Pairs`; the
recogniser scores candidate verb phrases per pair in one deterministic pass and returns
:class:`HOITriplets`, written as a predictions file that the evaluators read.
"""
from hoi_mllm.pairs import PairProposalConfig, propose_pairs
from hoi_mllm.predictions import PredictionsFile, PredictionsWriter, read_predictions, write_predictions
from hoi_mllm.records import Detections, HOITriplets, Pairs

__version__ = "0.1.0"

__all__ = [
    "Detections", "HOITriplets", "Pairs", "PairProposalConfig", "PredictionsFile", "PredictionsWriter",
    "propose_pairs", "read_predictions", "write_predictions", "__version__",
]
