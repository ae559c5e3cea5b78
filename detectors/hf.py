"""``hf``: any transformers object-detection model (DETR, Deformable DETR, Conditional DETR, RT-DETR, ...).

Loads ``AutoModelForObjectDetection`` and ``AutoImageProcessor`` from a hub id (on a connected
machine, or from the local cache) or a local folder, runs the processor's own
``post_process_object_detection`` and maps the model's ``config.id2label`` names to the vocabulary's
objects (COCO names map to HICO-DET objects; DETR's ``N/A`` slots and unknown names are dropped).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from hoi_mllm.detectors.base import Detector, DetectorOptions, class_name_table, map_labels
from hoi_mllm.detectors.registry import register_detector
from hoi_mllm.prompts import Vocabulary
from hoi_mllm.records import Detections

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else is a local path."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def load_pretrained(loader: Callable, model: str, what: str, **kwargs):
    """``loader(model, **kwargs)`` (a ``from_pretrained``) with a ``FileNotFoundError`` naming the model.

    A local folder must exist; a hub id that is neither cached nor downloadable (offline) is
    reported with the way out rather than transformers' long ``OSError``.
    """
    path = Path(model).expanduser()
    if path.exists():
        model = str(path)
    elif _looks_like_path(str(model)):
        raise FileNotFoundError(f"{what} folder not found: {path}")
    try:
        return loader(model, **kwargs)
    except OSError as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        raise FileNotFoundError(
            f"cannot load {what} {str(model)!r}: not a local folder and not in the Hugging Face cache"
            + (" (HF_HUB_OFFLINE is set)" if offline else "") + f"; pass a folder holding config.json and weights ({exc})"
        ) from exc


def parse_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} not supported; allowed: {', '.join(DTYPES)}")
    return DTYPES[dtype]


@register_detector("hf", "transformers", "detr", "rt-detr")
class HFDetector(Detector):
    """A transformers object-detection model.

    Args:
        model: hub id (``facebook/detr-resnet-50``, ``PekingU/rtdetr_r50vd``, ``SenseTime/deformable-detr``)
            or a local folder with ``config.json``, weights and ``preprocessor_config.json``.
        revision: hub revision (branch, tag or commit).
        dtype: ``float32``, ``float16`` or ``bfloat16`` (half precision on a GPU).
    """

    def __init__(self, model: str = "facebook/detr-resnet-101", *, revision: str | None = None, dtype: str = "float32",
                 vocabulary: str | Vocabulary = "hico-det", options: DetectorOptions | None = None):
        super().__init__(vocabulary, options)
        from transformers import AutoImageProcessor, AutoModelForObjectDetection

        self.model_name = str(model)
        self.device, self.dtype = self.options.torch_device(), parse_dtype(dtype)
        kw = {"revision": revision} if revision else {}
        self.processor = load_pretrained(AutoImageProcessor.from_pretrained, model, "image processor", **kw)
        self.model = load_pretrained(AutoModelForObjectDetection.from_pretrained, model, "object-detection model",
                                     dtype=self.dtype, **kw).to(self.device).eval()
        self.label_table = class_name_table(self.model.config.id2label, self.vocabulary)
        if not (self.label_table >= 0).any():
            names = list(self.model.config.id2label.values())[:10]
            raise ValueError(f"none of the model's labels are objects of {self.vocabulary.name}: {names}")

    @torch.inference_mode()
    def detect_batch(self, images: list[Image.Image], file_names: list[str | None]) -> list[Detections]:
        inputs = self.processor(images=images, return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        outputs = self.model(**inputs)
        sizes = [(im.height, im.width) for im in images]
        results = self.processor.post_process_object_detection(outputs, threshold=self.options.min_score, target_sizes=sizes)
        out = []
        for image, r in zip(images, results):
            labels, keep = map_labels(r["labels"], self.label_table)  # [N], [N]
            out.append(Detections(r["boxes"].float().cpu()[keep], r["scores"].float().cpu()[keep], labels[keep],
                                  image.size, self.vocabulary.name))
        return out
