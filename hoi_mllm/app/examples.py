"""Example pictures for the app: a few test images of the synthetic world, generated on first use.

A fresh machine (a Space, a laptop offline) has no photos at hand; the synthetic world draws some
in about a second (:func:`hoi_mllm.data.synthetic.generate_world`, reused when already on disk).
"""
from __future__ import annotations

import logging
from pathlib import Path

from hoi_mllm.env import cache_dir

log = logging.getLogger(__name__)

NUM_EXAMPLES = 4
IMAGE_SIZE = 320
SEED = 0


def default_examples_dir() -> Path:
    return cache_dir() / "app-examples"


def example_images(folder: str | Path | None = None, count: int = NUM_EXAMPLES) -> list[Path]:
    """Paths of ``count`` synthetic test images in ``folder`` (default: ``$HOI_MLLM_CACHE/app-examples``),
    drawing the world there when missing. An error drawing it is logged and gives no examples: the
    app serves without them."""
    from hoi_mllm.data.synthetic import generate_world

    folder = Path(folder) if folder is not None else default_examples_dir()
    try:
        info = generate_world(folder, num_train=1, num_test=count, seed=SEED, image_size=IMAGE_SIZE,
                              progress=False, workers=1)
    except (OSError, ValueError) as exc:
        log.warning("no example pictures: could not draw the synthetic world in %s (%s)", folder, exc)
        return []
    return sorted(info.image_dirs["test"].iterdir())[:count]
