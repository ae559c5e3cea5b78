"""``yolo``: ultralytics YOLO detectors (YOLOv8 / YOLO11 / YOLO26 ..., any ``.pt`` or ``.yaml``).

``model`` is a weights file (``runs/train/weights/best.pt``), a release name that ultralytics
downloads on a connected machine (``yolov8x.pt``), or a model ``.yaml`` (random weights; tests).
The model's class names are mapped to the vocabulary's objects by name (COCO names map to the
HICO-DET objects); classes the vocabulary lacks are dropped. A model built from a ``.yaml`` has no
class names (``"0"``, ``"1"``, ...): when it has exactly the COCO class count, the classes are taken
to be COCO's, in ultralytics' contiguous order.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from PIL import Image

from hoi_mllm.detectors.base import Detector, DetectorOptions, class_name_table, map_labels
from hoi_mllm.detectors.registry import register_detector
from hoi_mllm.prompts import Vocabulary, coco_categories
from hoi_mllm.records import Detections

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".pt", ".pth", ".onnx", ".engine", ".torchscript", ".mlpackage", ".tflite")
_TRUE = ("1", "true", "yes", "on")


def _offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("YOLO_OFFLINE", "HF_HUB_OFFLINE"))


def check_yolo_model(model: str | Path) -> str:
    """Fail early, with a clear ``FileNotFoundError``, where ultralytics would try (and fail) to download.

    A path with a folder (or any path when offline) must exist; bare release names are left to
    ultralytics (found in the working folder or its ``weights_dir``, else downloaded).
    """
    model = str(model)
    path = Path(model).expanduser()
    if path.suffix.lower() not in WEIGHT_SUFFIXES + (".yaml", ".yml") or path.exists():
        return str(path) if path.exists() else model
    if path.parent != Path("."):
        raise FileNotFoundError(f"YOLO weights file not found: {path}")
    if path.suffix.lower() in WEIGHT_SUFFIXES and _offline():
        from ultralytics.utils import SETTINGS

        local = Path(SETTINGS.get("weights_dir", "weights")) / path.name
        if local.exists():
            return str(local)
        raise weights_not_found(model, f"checked ./{path.name} and {local}",
                                "the machine is offline (YOLO_OFFLINE / HF_HUB_OFFLINE set)")
    return model


def weights_not_found(model: str, checked: str, why: str) -> FileNotFoundError:
    """The error for a weights name that is neither a local file nor downloadable, saying what is accepted."""
    return FileNotFoundError(
        f"YOLO weights {model!r} not found locally ({checked}) and could not be downloaded: {why.rstrip('. ')}. "
        "Accepted: a path to a .pt weights file (e.g. runs/train/weights/best.pt), a release name such as yolov8x.pt "
        "on a machine connected to the internet, or a model .yaml (e.g. yolov8n.yaml) for random weights")


def yolo_class_table(names: dict[int, str], vocabulary: Vocabulary) -> torch.Tensor:
    """``[C]`` vocabulary object id of each YOLO class (``-1``: dropped); see the module docstring."""
    coco = coco_categories()["names"]
    if all(str(n).isdigit() for n in names.values()) and len(names) == len(coco):
        log.info("YOLO model has no class names (built from a .yaml?): taking its classes as COCO's")
        return class_name_table(coco, vocabulary)
    return class_name_table(names, vocabulary)


@register_detector("yolo", "ultralytics")
class YOLODetector(Detector):
    """ultralytics YOLO.

    Args:
        model: ``.pt`` weights path or release name, or a model ``.yaml`` (random weights).
        imgsz: inference image size (the long side, pixels).
        max_det: most boxes the model returns per image before the shared post-filter.
    """

    def __init__(self, model: str = "yolov8x.pt", *, imgsz: int = 640, max_det: int = 300,
                 vocabulary: str | Vocabulary = "hico-det", options: DetectorOptions | None = None):
        super().__init__(vocabulary, options)
        from hoi_mllm.env import prepare_ultralytics

        prepare_ultralytics()  # before the import: ultralytics reads its settings folder then
        os.environ.setdefault("YOLO_AUTOINSTALL", "false")  # no pip installs behind the user's back
        from ultralytics import YOLO

        if not isinstance(imgsz, int) or imgsz < 32:
            raise ValueError(f"yolo option imgsz={imgsz!r}: must be an integer >= 32")
        self.model_name = str(model)
        source = check_yolo_model(model)
        try:
            self.model = YOLO(source)
        except (FileNotFoundError, ConnectionError) as exc:  # a bare name: not here, not a release, or no network
            if Path(source).suffix.lower() not in WEIGHT_SUFFIXES or Path(source).exists():
                raise
            raise weights_not_found(str(model), f"no file {Path(source).absolute()}",
                                    f"{type(exc).__name__}: {exc}") from exc
        self.imgsz, self.max_det = imgsz, max_det
        self.device = self.options.torch_device()
        self.label_table = yolo_class_table(dict(self.model.names), self.vocabulary)
        if not (self.label_table >= 0).any():
            raise ValueError(f"none of the YOLO model's classes are objects of {self.vocabulary.name}: "
                             f"{list(self.model.names.values())[:10]}")

    def detect_batch(self, images: list[Image.Image], file_names: list[str | None]) -> list[Detections]:
        results = self.model.predict(
            images, conf=self.options.min_score, iou=self.options.nms_iou or 0.7, imgsz=self.imgsz,
            device=str(self.device), max_det=self.max_det, verbose=False,
        )
        out = []
        for image, r in zip(images, results):
            labels, keep = map_labels(r.boxes.cls.cpu(), self.label_table)  # [N], [N]
            out.append(Detections(r.boxes.xyxy.cpu().float()[keep], r.boxes.conf.cpu().float()[keep], labels[keep],
                                  image.size, self.vocabulary.name))
        return out
