"""The web app: drop in a photo, see the HOI triplets drawn, swap detectors, add interactions as text.

``session`` holds what the app runs (the recogniser loaded once, one detector at a time, the text
interactions, the checks on uploads) and knows nothing of the web page; ``ui`` builds the Gradio
page on it; ``examples`` makes the synthetic-world pictures offered as examples. ``hoi-mllm app``
(:mod:`hoi_mllm.cli.app`) and the Hugging Face Space entry (``app.py`` at the repository root) both
call :func:`hoi_mllm.app.ui.launch`.
"""
from __future__ import annotations

from hoi_mllm.app.session import AppError, AppSession, RunOutput  # noqa: F401
