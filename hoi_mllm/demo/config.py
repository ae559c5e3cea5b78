"""What the demo does, as frozen dataclasses: the world's size, the detector's training
(:class:`YOLOTrainConfig`), the fine-tuning recipe, the evaluation and the aims it is measured against.

Two presets: :data:`FULL` (``hoi-mllm demo``) and :data:`QUICK` (``hoi-mllm demo --quick``). Any
key can be overridden with dotted ``key=value`` pairs (``train_images=12 yolo.epochs=1
finetune.train.steps=3``); ``finetune.*`` keys are handed to the fine-tuning recipe as its own
overrides (see ``hoi-mllm finetune --help-config``).
"""
from __future__ import annotations

from dataclasses import dataclass

from hoi_mllm.finetune.schema import ConfigError, apply_overrides, build_config, to_dict
from hoi_mllm.finetune.schema import help_field as _help

TINY = "tiny"


@dataclass(frozen=True)
class YOLOTrainConfig:
    """How the demo's detector is trained (ultralytics ``model.train`` arguments we choose)."""

    model: str = _help("'tiny' (YOLOv8 layout at depth/width below, written at run time) or an ultralytics "
                       "model yaml such as yolov8n.yaml (random weights either way)", default=TINY)
    depth: float = _help("tiny: depth multiple of the YOLOv8 layout (yolov8n: 0.33)", default=0.33)
    width: float = _help("tiny: width multiple (yolov8n: 0.25)", default=0.25)
    max_channels: int = _help("tiny: channel cap, applied before the width multiple (yolov8n: 1024)", default=256)
    imgsz: int = _help("training and inference image size (pixels, multiple of 32)", default=192)
    epochs: int = _help("training epochs", default=8)
    batch: int = _help("images per batch", default=16)
    val_images: int = _help("world training images held out for ultralytics' validation (not the test set)",
                            default=50)
    workers: int = _help("data-loader worker processes (0: in the main process)", default=0)
    cache: bool = _help("keep decoded images in RAM", default=True)
    mosaic: float = _help("probability of mosaic augmentation (off: a few minutes of training learn faster on "
                          "whole images, which is also what the test images look like)", default=0.0)
    close_mosaic: int = _help("last epochs trained without mosaic", default=0)
    optimizer: str = _help("ultralytics optimizer name (SGD, AdamW, auto, ...)", default="SGD")
    lr0: float = _help("initial learning rate (0.05: from random weights in under a thousand iterations)",
                       default=0.05)
    warmup_epochs: float = _help("learning-rate warm-up, in epochs (ultralytics: at least 100 iterations)",
                                 default=3.0)
    seed: int = _help("seed of ultralytics' training and of the held-out validation images", default=0)
    score_threshold: float = _help("detector score threshold at evaluation (UPT's 0.2)", default=0.2)

    def __post_init__(self):
        if self.model != TINY and not str(self.model).endswith((".yaml", ".yml")):
            raise ValueError(f"yolo model {self.model!r}: use 'tiny' or an ultralytics model .yaml (trained from "
                             "random weights; a .pt would need a download)")
        if not isinstance(self.imgsz, int) or self.imgsz < 32 or self.imgsz % 32:
            raise ValueError(f"yolo imgsz={self.imgsz!r}: must be a multiple of 32, at least 32")
        for name in ("epochs", "batch"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"yolo {name}={getattr(self, name)!r}: must be an integer >= 1")
        if not isinstance(self.val_images, int) or self.val_images < 1:
            raise ValueError(f"yolo val_images={self.val_images!r}: must be an integer >= 1")


@dataclass(frozen=True)
class DemoConfig:
    """One demo run (see the module docstring)."""

    name: str = _help("preset name, shown in the report", default="full")
    seed: int = _help("seed of the synthetic world (train and test are separate streams of it)", default=0)
    train_images: int = _help("synthetic training images (the recogniser's and the YOLO's)", default=1600)
    test_images: int = _help("synthetic test images (evaluation only; nothing is tuned on them)", default=300)
    image_size: int = _help("side of the square synthetic images in pixels", default=256)
    split: str = _help("zero-shot split of the world (unseen verb-object combinations)", default="uc_a")
    habits: str = _help("annotation habits of the world: hico (every verb row its own jittered boxes, several "
                        "verbs on one pair, same-class objects beside a person, crowded scenes, as HICO-DET's files; hoi_mllm.data.synthetic.HABITS) or clean (exact boxes)",
                        default="hico")
    yolo: YOLOTrainConfig = _help("the detector trained on the world", default_factory=YOLOTrainConfig)
    recipe: str = _help("fine-tuning recipe (built-in name or YAML file)", default="synthetic")
    finetune: dict = _help("overrides of the recipe, as nested keys (finetune.train.steps=3)", default_factory=dict)
    jitter: str = _help("options of the jitter detector (perturbed ground truth), NAME=VALUE,...", default="seed=0")
    baselines: tuple[str, ...] = _help("scorers run on the same boxes as the recogniser", default=("random", "prior"))
    missing_classes: str = _help("classes without test ground truth: skip (out of the means) or zero", default="skip")
    gallery: int = _help("test images drawn in the report's gallery", default=8)
    time_aim_s: float = _help("aim for the whole demo's wall time, seconds", default=900.0)
    threads: int | None = _help("torch CPU threads for every stage. 1 by default so that a run's numbers do not "
                                "depend on the machine: float sums split over threads round differently, and "
                                "training amplifies that. None: one less than the usable CPUs (faster on a "
                                "large machine, other numbers; on a shared 2-core machine a second thread made "
                                "training 5x slower)", default=1)

    def __post_init__(self):
        for key, low in (("train_images", 2), ("test_images", 1), ("gallery", 0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"config key {key!r}: must be an integer >= {low}, got {value!r}")
        if self.yolo.val_images >= self.train_images:
            raise ConfigError(f"config key 'yolo.val_images' ({self.yolo.val_images}) must be below train_images "
                              f"({self.train_images}): the YOLO validation images are held out of the training images")
        if self.habits not in ("clean", "hico"):
            raise ConfigError(f"config key 'habits': {self.habits!r} not allowed; allowed: clean, hico")
        if self.missing_classes not in ("skip", "zero"):
            raise ConfigError(f"config key 'missing_classes': {self.missing_classes!r} not allowed; allowed: skip, zero")

    def to_dict(self) -> dict:
        return to_dict(self)


FULL = DemoConfig()
QUICK = DemoConfig(name="quick", train_images=400, test_images=100, recipe="synthetic_quick", time_aim_s=180.0,
                   yolo=YOLOTrainConfig(width=0.125, max_channels=128, epochs=14, batch=8))
PRESETS = {"full": FULL, "quick": QUICK}


def demo_config(preset: str = "full", overrides: dict | None = None) -> DemoConfig:
    """A preset with dotted overrides applied (``{"yolo.epochs": 1, "finetune.train.steps": 3}``).

    Raises:
        ConfigError: an unknown preset or key (naming the allowed ones), or a bad value.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown demo preset {preset!r}; allowed: {', '.join(PRESETS)}")
    data = apply_overrides(PRESETS[preset].to_dict(), dict(overrides or {}))
    return build_config(DemoConfig, data)


def flatten(nested: dict, prefix: str = "") -> dict:
    """``{"train": {"steps": 3}}`` -> ``{"train.steps": 3}`` (the form recipe overrides take)."""
    out = {}
    for key, value in nested.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
