"""The web app as a Hugging Face Space entry (``sdk: gradio``, ``app_file: app.py``); also ``python app.py`` here.

Settings come from the environment (a Space's "Variables"):

- ``HOI_MLLM_MODEL``: a saved recogniser folder, a hub id or a preset (default ``tiny-qwen2-vl``, an
  untrained smoke-test recogniser that runs anywhere);
- ``HOI_MLLM_DETECTORS``: detector specs separated by ``;`` (default ``yolo:model=yolov8n.pt``);
- ``HOI_MLLM_DEVICE``: ``auto`` (default), ``cpu``, ``cuda``;
- ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``: where to listen (a Space sets ``0.0.0.0``;
  default here ``127.0.0.1:7860``, this machine only).

The same as ``hoi-mllm app --model M --detector SPEC ...``.
"""
from __future__ import annotations

import logging
import os


def main() -> None:
    from hoi_mllm.app.ui import DEFAULT_HOST, DEFAULT_PORT, launch
    from hoi_mllm.detectors.registry import split_detector_specs

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    launch(os.environ.get("HOI_MLLM_MODEL", "tiny-qwen2-vl"),
           split_detector_specs(os.environ.get("HOI_MLLM_DETECTORS", "yolo:model=yolov8n.pt")),
           host=os.environ.get("GRADIO_SERVER_NAME", DEFAULT_HOST),
           port=int(os.environ.get("GRADIO_SERVER_PORT", DEFAULT_PORT)),
           device=os.environ.get("HOI_MLLM_DEVICE", "auto"))


if __name__ == "__main__":
    main()
