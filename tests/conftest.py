"""Test setup: everything offline, ultralytics in a project-owned settings folder, seeded."""
import os
import tempfile
from pathlib import Path

for _key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "YOLO_OFFLINE"):
    os.environ[_key] = "1"
os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "hoi_mllm_tests_yolo"))
# caches the code shares across runs (detector pairs) go to a folder of this test session, not ~/.cache
os.environ["HOI_MLLM_CACHE"] = tempfile.mkdtemp(prefix="hoi_mllm_tests_cache_")
# the real Qwen tokenizer built offline (2 s) is the same for every session: share its cache
os.environ.setdefault("HOI_MLLM_TOKENIZERS", str(Path(tempfile.gettempdir()) / "hoi_mllm_tests_tokenizers"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hoi_mllm.env import prepare_ultralytics  # noqa: E402

prepare_ultralytics()

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``$HOI_MLLM_SHARED_DATA``); tests using it skip when it is absent."""
    path = Path(os.environ.get("HOI_MLLM_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not (path / "hicodet" / "instances_test2015.json").exists():
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def tiny_qwen2_vl():
    """The ``tiny-qwen2-vl`` backbone, built once per session; tests must not modify it (wrap a fresh one)."""
    from hoi_mllm.models.loading import load_backbone

    return load_backbone("tiny-qwen2-vl")


@pytest.fixture(scope="session")
def noise_image() -> np.ndarray:
    """A ``[200, 300, 3]`` uint8 random image (H=200, W=300)."""
    return np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
