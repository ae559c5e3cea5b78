"""Detectors: any source of boxes behind one protocol and a registry.

``detector(images, file_names=None) -> list[Detections]`` (boxes xyxy pixels of the original image,
scores, labels as object ids of ``detector.vocabulary``). Built by name::

    from hoi_mllm.detectors import build_detector
    det = build_detector("yolo", model="yolov8x.pt", score_threshold=0.3)
    det = build_detector("hf:model=facebook/detr-resnet-101,max_humans=10")
    det = build_detector("ground-truth", annotations="hicodet/instances_test2015.json")

Adapters: ``yolo`` (ultralytics), ``hf`` (transformers object detection: DETR, RT-DETR, ...),
``hf-open-vocab`` / ``owlv2`` / ``grounding-dino`` (text-queried with the vocabulary's objects),
``ground-truth``, ``file`` (a detections JSON file) and ``jitter`` (perturbed ground truth).
Heavy libraries are imported only when an adapter is built.
"""
from hoi_mllm.detectors.base import (
    Detector,
    DetectorOptions,
    DetectorProtocol,
    FileIndex,
    check_images,
    class_name_table,
    filter_detections,
    map_labels,
)
from hoi_mllm.detectors.registry import (
    available_detectors,
    build_detector,
    detector_class,
    parse_detector_spec,
    register_detector,
    resolve_detector,
    split_detector_specs,
)
from hoi_mllm.detectors.yolo import YOLODetector  # noqa: E402  (registers "yolo")
from hoi_mllm.detectors.hf import HFDetector  # noqa: E402
from hoi_mllm.detectors.open_vocab import GroundingDinoDetector, OpenVocabDetector  # noqa: E402
from hoi_mllm.detectors.ground_truth import GroundTruthDetector  # noqa: E402
from hoi_mllm.detectors.jitter import JitterDetector  # noqa: E402
from hoi_mllm.detectors.file import (  # noqa: E402
    FORMAT as DETECTIONS_FORMAT,
    DetectionsFileError,
    FileDetector,
    read_detections_file,
    write_detections_file,
)

__all__ = [
    "DETECTIONS_FORMAT", "DetectionsFileError", "Detector", "DetectorOptions", "DetectorProtocol", "FileDetector",
    "FileIndex", "GroundTruthDetector", "GroundingDinoDetector", "HFDetector", "JitterDetector", "OpenVocabDetector",
    "YOLODetector", "available_detectors", "build_detector", "check_images", "class_name_table", "detector_class",
    "filter_detections", "map_labels", "parse_detector_spec", "read_detections_file", "register_detector",
    "resolve_detector", "split_detector_specs", "write_detections_file",
]
