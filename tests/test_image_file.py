"""Opening image files: what PIL cannot read is an OSError everywhere, whatever patched ``PIL.Image.open``."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hoi_mllm.data.sample import HOISample
from hoi_mllm.image_file import open_file
from hoi_mllm.runner import open_image


def _raise_like_pi_heif(*args, **kwargs):
    """What ultralytics' patched ``Image.open`` does offline on a file PIL cannot identify."""
    raise ImportError("No module named 'pi_heif'")


@pytest.fixture
def garbage(tmp_path):
    path = tmp_path / "not_an_image.jpg"
    path.write_bytes(b"these bytes are no picture" * 10)
    return path


def _sample(path) -> HOISample:
    empty = np.zeros((0,), dtype=np.int64)
    return HOISample(file_name=path.name, image_size=None, boxes=np.zeros((0, 4)), labels=empty, pair_human=empty,
                     pair_object=empty, pair_verbs=[], pair_classes=[], image_root=path.parent)


def test_an_unreadable_file_is_an_oserror_naming_the_path(garbage, monkeypatch):
    with pytest.raises(OSError):  # PIL's own UnidentifiedImageError
        with open_file(garbage):
            pass
    monkeypatch.setattr(Image, "open", _raise_like_pi_heif)
    for read in (lambda p: open_file(p).__enter__(), open_image,
                 lambda p: _sample(p).load_image()):
        with pytest.raises(OSError, match="not_an_image.jpg"):
            read(garbage)


def test_a_readable_file_opens_unchanged(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (12, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    with open_file(tmp_path / "a.png") as im:
        assert im.size == (20, 12)
        assert np.array_equal(np.asarray(im.convert("RGB")), pixels)
    assert np.array_equal(np.asarray(open_image(tmp_path / "a.png")), pixels)
