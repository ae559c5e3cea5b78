"""Process environment that third-party libraries read at import time.

ultralytics downloads a font (Arial.ttf) into its settings folder the first time it draws, which
fails on a machine without internet. :func:`prepare_ultralytics` gives it a settings folder owned
by this project (``$YOLO_CONFIG_DIR`` if set, else ``~/.cache/hoi_mllm/ultralytics``) holding a copy
of matplotlib's DejaVuSans under the names it looks for. Call it before importing ultralytics.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")


def cache_dir() -> Path:
    return Path(os.environ.get("HOI_MLLM_CACHE", Path.home() / ".cache" / "hoi_mllm"))


def prepare_ultralytics() -> Path:
    """Point ultralytics at a settings folder with its fonts present; return that folder."""
    folder = Path(os.environ.setdefault("YOLO_CONFIG_DIR", str(cache_dir() / "ultralytics")))
    folder.mkdir(parents=True, exist_ok=True)
    missing = [n for n in FONT_NAMES if not (folder / n).exists()]
    if missing:
        import matplotlib

        source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        for name in missing:
            tmp = folder / f".{name}.tmp"
            shutil.copyfile(source, tmp)
            os.replace(tmp, folder / name)
    return folder


def set_offline() -> None:
    """Tell Hugging Face and ultralytics not to reach the network (everything is local)."""
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "YOLO_OFFLINE"):
        os.environ.setdefault(key, "1")
