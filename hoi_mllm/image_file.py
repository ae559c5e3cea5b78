"""Opening an image file: the one place that makes "PIL cannot read this" an ``OSError``.

PIL raises ``UnidentifiedImageError`` (an ``OSError``) for a file it cannot read. Once ultralytics is imported
it patches ``PIL.Image.open`` to retry such a file with ``pi_heif``, which is absent offline, so the same file
then raises ``ImportError``. Every reader of image files (annotated samples, ``hoi-mllm detect``'s inputs, the
app's uploads) opens them through :func:`open_file`, so a caller catches ``OSError`` alone, whatever was imported.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def open_file(path: str | Path) -> Iterator:
    """``PIL.Image.open(path)`` as a context manager; a file PIL cannot read (in the ``with`` body too, where the
    pixels are decoded) raises ``OSError`` naming the path, never ultralytics' ``pi_heif`` ``ImportError``."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            yield im
    except ImportError as exc:
        raise OSError(f"{path}: not an image format PIL can read ({exc})") from exc
