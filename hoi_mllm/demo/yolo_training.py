"""Train a small ultralytics YOLO on the synthetic world, offline, on CPUs.

The world is converted to the YOLO dataset format in ``FOLDER/dataset``::

    dataset/images/{train,val}/*.png    hard links to the world's training images (copies where links fail)
    dataset/labels/{train,val}/*.txt    one line per instance: ``class cx cy w h`` (normalised to [0, 1])
    dataset/data.yaml                   ``path``, ``train``, ``val`` and ``names``: the world's objects in
                                        vocabulary order, so a YOLO class id is the vocabulary object id and
                                        the ``yolo`` detector maps names back one to one

The validation images are held out of the world's *training* images (never the test set). The model
is built from a yaml written at run time (:func:`model_yaml`: YOLOv8's layout at a scale of our
own, or any ultralytics yaml such as ``yolov8n.yaml``), trained from random weights with AMP, plots
and downloads off, and its best weights are copied to ``FOLDER/best.pt``. An interrupted training
resumes from ultralytics' ``last.pt``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import yaml

from hoi_mllm.boxes import box_xyxy_to_cxcywh, normalise_boxes
from hoi_mllm.data.sample import HOISample
from hoi_mllm.demo.config import TINY, YOLOTrainConfig
from hoi_mllm.io import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

RUN_NAME = "train"


# --------------------------------------------------------------------------- dataset conversion
def yolo_label_rows(boxes: np.ndarray, labels: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """YOLO label rows of one image.

    Args:
        boxes: ``[N, 4]`` xyxy pixels; labels: ``[N]`` class ids; image_size: ``(width, height)``.
    Returns:
        ``[N, 5]`` float64: ``class, cx, cy, w, h`` with the box normalised to [0, 1] (clipped to the image).
    """
    w, h = image_size
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
    b = torch.stack([b[:, 0].clamp(0, w), b[:, 1].clamp(0, h), b[:, 2].clamp(0, w), b[:, 3].clamp(0, h)], 1)
    cxcywh = box_xyxy_to_cxcywh(normalise_boxes(b, (w, h)))  # [N, 4]
    return np.concatenate([np.asarray(labels, dtype=np.float64).reshape(-1, 1), cxcywh.numpy()], axis=1)


def format_label_rows(rows: np.ndarray) -> str:
    """``[N, 5]`` rows -> the text of a YOLO label file (integer class, six decimals)."""
    return "".join(f"{int(r[0])} {r[1]:.6f} {r[2]:.6f} {r[3]:.6f} {r[4]:.6f}\n" for r in rows)


def _link(source: Path, target: Path) -> None:
    if target.exists():
        if target.stat().st_size == source.stat().st_size:
            return
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)


def held_out(num: int, count: int, seed: int) -> np.ndarray:
    """``[count]`` sorted indices of ``num`` training images held out for validation (seeded)."""
    if count >= num:
        raise ValueError(f"cannot hold out {count} of {num} training images for YOLO validation; "
                         f"lower val_images (at most {num - 1})")
    return np.sort(np.random.default_rng(seed).choice(num, size=count, replace=False))


def write_yolo_dataset(samples: Sequence[HOISample], names: Sequence[str], folder: str | Path, val_images: int,
                       seed: int = 0) -> Path:
    """Write the world's training images as a YOLO dataset (see the module docstring); returns ``data.yaml``.

    Args:
        samples: the training annotations (instances ``boxes [B, 4]`` xyxy pixels, ``labels [B]``
            object ids, ``image_size``, images at ``sample.path``).
        names: the object names, by object id (the vocabulary's objects).
        val_images: how many of them are held out for validation.
    """
    from hoi_mllm.finetune.targets import merge_instances

    folder = Path(folder)
    val = set(held_out(len(samples), val_images, seed).tolist())
    lists: dict[str, list[str]] = {"train": [], "val": []}
    for i, s in enumerate(samples):
        part = "val" if i in val else "train"
        if s.image_size is None:
            raise ValueError(f"{s.file_name}: the annotation gives no image size (needed for normalised labels)")
        image = folder / "images" / part / Path(s.file_name).name
        _link(s.path, image)
        # one label per physical instance: the rows of a HICO-habits world repeat each box, jittered
        # (merged as the trainer merges them, class-wise NMS 0.5; exact boxes are untouched)
        keep = np.flatnonzero(merge_instances(s.boxes, s.labels) == np.arange(len(s.labels)))
        rows = yolo_label_rows(s.boxes[keep], s.labels[keep], s.image_size)
        atomic_write_text(folder / "labels" / part / (image.stem + ".txt"), format_label_rows(rows))
        lists[part].append(str(image.absolute()))
    data = {"path": str(folder.absolute()), "train": "images/train", "val": "images/val",
            "names": {i: n for i, n in enumerate(names)}}
    atomic_write_text(folder / "data.yaml", yaml.safe_dump(data, sort_keys=False))
    return folder / "data.yaml"


# --------------------------------------------------------------------------- the model
SCALED_MODULES = ("Conv", "C2f", "SPPF")  # layers whose first argument is their output channels


def scale_layers(layers: list, depth: float, width: float, max_channels: int) -> list:
    """A YOLOv8 layer list at a scale, with concrete repeats and channels (as ultralytics' ``parse_model``
    scales them: repeats ``max(round(n * depth), 1)``, channels ``ceil(min(c, max_channels) * width / 8) * 8``)."""
    out = []
    for source, repeats, module, args in layers:
        repeats = max(round(repeats * depth), 1) if repeats > 1 else repeats
        if module in SCALED_MODULES:
            args = [int(math.ceil(min(args[0], max_channels) * width / 8) * 8), *args[1:]]
        out.append([source, repeats, module, list(args)])
    return out


def model_yaml(config: YOLOTrainConfig, num_classes: int, folder: str | Path) -> str:
    """The model definition to build: for ``tiny``, YOLOv8's layout scaled by ``(depth, width,
    max_channels)`` into concrete layers, written to ``folder/yolo_tiny.yaml``; else ``config.model``
    as given (ultralytics finds its own yamls)."""
    if config.model != TINY:
        return config.model
    from ultralytics.utils import ROOT

    base = yaml.safe_load((ROOT / "cfg" / "models" / "v8" / "yolov8.yaml").read_text())
    lines = [f"# YOLOv8 layout at depth {config.depth}, width {config.width}, max_channels {config.max_channels} "
             "(written by hoi-mllm demo)", f"nc: {int(num_classes)}", "depth_multiple: 1.0", "width_multiple: 1.0"]
    for part in ("backbone", "head"):  # one layer a line, [from, repeats, module, args] (JSON is YAML)
        lines.append(f"{part}:")
        lines += [f"  - {json.dumps(layer)}" for layer in
                  scale_layers(base[part], config.depth, config.width, config.max_channels)]
    path = Path(folder) / "yolo_tiny.yaml"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return str(path)


def train_args(config: YOLOTrainConfig, data_yaml: Path, project: Path) -> dict:
    """The keyword arguments of ``YOLO.train`` (offline, CPU, no AMP, no plots)."""
    return {"data": str(data_yaml), "epochs": config.epochs, "imgsz": config.imgsz, "batch": config.batch,
            "workers": config.workers, "cache": "ram" if config.cache else False, "device": "cpu", "amp": False,
            "plots": False, "val": False, "project": str(project.absolute()), "name": RUN_NAME, "exist_ok": True,
            "seed": config.seed, "pretrained": False, "mosaic": config.mosaic, "close_mosaic": config.close_mosaic,
            "lr0": config.lr0, "warmup_epochs": config.warmup_epochs, "optimizer": config.optimizer, "verbose": False, "patience": config.epochs + 1}


@dataclass
class YOLOTrainResult:
    """What training produced: the weights, ultralytics' final validation (on held-out training images)."""

    weights: str
    seconds: float
    epochs: int
    resumed: bool
    val_metrics: dict

    def to_dict(self) -> dict:
        return asdict(self)


def keep_torch_threads(threads: int | None = None) -> None:
    """Make ultralytics leave torch's CPU threads at ``threads`` (default: the current number).

    Its device selection (in every ``train`` and ``predict``) sets them to ``cpu_count - 1``: one
    thread on a 2-core machine, which would also slow everything that runs after it in this process.
    Also prepares ultralytics' offline settings (fonts, no downloads, no pip installs).
    """
    from hoi_mllm.env import prepare_ultralytics, set_offline

    set_offline()
    prepare_ultralytics()
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    from ultralytics.utils import torch_utils

    torch_utils.NUM_THREADS = int(threads or torch.get_num_threads())
    torch.set_num_threads(torch_utils.NUM_THREADS)


def train_yolo(config: YOLOTrainConfig, data_yaml: Path, num_classes: int, folder: str | Path,
               progress: bool = True) -> YOLOTrainResult:
    """Train (or resume) the demo's YOLO in ``folder``; copy its best weights to ``folder/best.pt``.

    Args:
        data_yaml: from :func:`write_yolo_dataset`; num_classes: its number of names.
    Returns:
        :class:`YOLOTrainResult` (``val_metrics``: precision, recall, mAP50, mAP50-95 in percent).
    """
    threads = torch.get_num_threads()
    keep_torch_threads(threads)
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    folder = Path(folder)
    last = folder / RUN_NAME / "weights" / "last.pt"
    level = LOGGER.level
    if not progress:
        LOGGER.setLevel(logging.ERROR)
    start = time.perf_counter()
    try:
        resumed = last.is_file() and _resumable(last)
        if resumed:
            log.info("resuming YOLO training from %s", last)
            model = YOLO(str(last))
            model.train(resume=True)
        else:
            shutil.rmtree(folder / RUN_NAME, ignore_errors=True)
            model = YOLO(model_yaml(config, num_classes, folder))
            model.train(**train_args(config, data_yaml, folder))
    finally:
        keep_torch_threads(threads)
        LOGGER.setLevel(level)
    seconds = time.perf_counter() - start
    best = folder / RUN_NAME / "weights" / "best.pt"
    if not best.is_file():
        best = last
    if not best.is_file():
        raise RuntimeError(f"YOLO training in {folder / RUN_NAME} ended without weights (no best.pt or last.pt)")
    with atomic_path(folder / "best.pt") as tmp:
        shutil.copyfile(best, tmp)
    metrics = getattr(getattr(model, "trainer", None), "metrics", None) or {}
    return YOLOTrainResult(str(folder / "best.pt"), seconds, config.epochs, resumed, _val_metrics(metrics))


def _resumable(last: Path) -> bool:
    """True when ``last.pt`` is an unfinished run (ultralytics clears ``epoch`` to -1 at the end)."""
    try:
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated file: start again
        log.warning("cannot read %s (%s): training again", last, exc)
        return False
    return int(ckpt.get("epoch", -1)) >= 0


def _val_metrics(metrics: dict) -> dict:
    keys = {"metrics/precision(B)": "precision", "metrics/recall(B)": "recall", "metrics/mAP50(B)": "mAP50",
            "metrics/mAP50-95(B)": "mAP50-95"}
    return {short: round(100.0 * float(metrics[k]), 2) for k, short in keys.items() if k in metrics}
