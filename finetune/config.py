"""The fine-tuning config: nested frozen dataclasses, each field with its help text.

Read with :func:`load_config` (a recipe of ``finetune/configs/`` or any YAML file, plus
``key.sub=value`` overrides), validated once (types, ranges, allowed values, cross-section rules),
then passed to the trainer and never changed. ``hoi-mllm finetune --help-config`` lists every key.

Sections: ``model`` (base MLLM, precision, quantization, the recogniser), ``adapter`` (LoRA / full
/ frozen language model, which other parts train), ``data`` (annotations, zero-shot split,
held-out validation images), ``pairs`` (where training pairs come from), ``matcher`` (EoID
two-stage matching), ``teacher`` (soft targets of potential pairs), ``loss``, ``optim``, ``train``
(stage, steps, batch, accumulation, precision, checkpoints), ``eval`` (periodic validation mAP) and
``sap`` (a pre-trained SAP from a ``train.stage=sap`` run: loaded, frozen or slowed; finetune/sap_stage.py).
"""
from __future__ import annotations

import math

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from hoi_mllm.finetune.schema import (
    ConfigError,
    apply_overrides,
    build_config,
    check_choice,
    check_range,
    describe,
    help_field as _help,
    read_yaml,
    to_dict,
)
from hoi_mllm.models.presets import PRESETS, tiny_spec
from hoi_mllm.models.recogniser import RecogniserConfig
from hoi_mllm.pairs import PairProposalConfig

DTYPES = ("float32", "bfloat16", "float16")
QUANTIZATION = (None, "4bit", "8bit")
ADAPTER_METHODS = ("lora", "full", "frozen")
PAIR_SOURCES = ("ground-truth", "detector", "both")
TEACHERS = ("likelihood", "clip", "ema", "none", "annotations")
VERB_LOSSES = ("focal", "bce")
DISTILL_LOSSES = ("eoid", "kl", "bce")
TARGET_RULES = ("union", "one-to-one")
DETECTION_ONLY_PAIRS = ("teacher", "top-k")
UNSELECTED_MATCHES = ("ignored", "negative")
SCHEDULERS = ("cosine", "linear", "constant")
MIXED_PRECISION = ("no", "bf16", "fp16")
MISSING_CLASSES = ("skip", "zero")
STAGES = ("joint", "sap")
# projection / merger modules of each family (trained fully unless adapter.train_projector is false)
QWEN_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class ModelConfig:
    """The base MLLM and the recogniser on top of it."""

    base: str = _help("preset (tiny-qwen2-vl, ...), hub id or local path of the base MLLM",
                      default="Qwen/Qwen2.5-VL-3B-Instruct")
    dtype: str = _help("weights dtype of the base model: float32, bfloat16, float16", default="bfloat16")
    quantization: str | None = _help("bitsandbytes quantization of the base weights: null, 4bit (QLoRA), 8bit",
                                     default=None)
    attn_implementation: str = _help("attention kernel: sdpa or eager (the packed training path needs one)",
                                     default="sdpa")
    preset_overrides: dict = _help("sizes of a tiny preset (fields of presets.TinySpec)", default_factory=dict)
    num_pair_tokens: int = _help("<|pair_i|> tokens added to the tokenizer (>= recogniser.sap.num_pair_tokens)",
                                 default=8)
    min_pixels: int | None = _help("Qwen: lower bound of the resized image's pixel count (null: processor's)",
                                   default=None)
    max_pixels: int | None = _help("Qwen: upper bound of the resized image's pixel count (null: processor's)",
                                   default=None)
    gradient_checkpointing: bool = _help("recompute decoder activations in backward (saves memory)", default=True)
    pair_token_gain: float | None = _help("initial gain of SAP's pair-token norm (null: the LM's embedding scale, as "
                                          "the recogniser sets it); a random tiny LM needs pair tokens as large as "
                                          "its residual stream to steer the query", default=None)
    pretrain_steps: int = _help("tiny random presets only: next-token warm-up of the LM on the vocabulary's prompts "
                                "before fine-tuning (finetune/language.py); 0 for pretrained checkpoints", default=0)
    pretrain_lr: float = _help("learning rate of that warm-up", default=1e-2)
    pretrain_separation: float = _help("weight of the warm-up term that spreads the <|match|> states of an object's "
                                       "candidates apart (mean squared cosine)", default=0.0)
    recogniser: RecogniserConfig = _help("SAP and one-pass matching (hoi_mllm.models.recogniser)",
                                         default_factory=RecogniserConfig)

    def __post_init__(self):
        check_choice(self.dtype, DTYPES, "model.dtype")
        check_choice(self.quantization, QUANTIZATION, "model.quantization")
        check_choice(self.attn_implementation, ("sdpa", "eager"), "model.attn_implementation")
        if not self.base:
            raise ConfigError("config key 'model.base' is empty; give a preset, hub id or local path")
        check_range(self.pretrain_steps, "model.pretrain_steps", 0)
        if self.pretrain_steps and self.base not in PRESETS:
            raise ConfigError("model.pretrain_steps is for tiny random presets; a checkpoint is pretrained already")
        if self.base in PRESETS:
            try:  # here, not when the model is built: a typo should stop the run before any data is read
                tiny_spec(self.preset_overrides)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"model.preset_overrides: {exc}") from exc
        if self.recogniser.sap.num_pair_tokens > self.num_pair_tokens:
            raise ConfigError(f"model.recogniser.sap.num_pair_tokens ({self.recogniser.sap.num_pair_tokens}) "
                              f"exceeds model.num_pair_tokens ({self.num_pair_tokens})")


@dataclass(frozen=True)
class AdapterConfig:
    """What trains in the base model (peft LoRA on the language model, or full, or nothing)."""

    method: str = _help("language model: lora (peft), full (every weight) or frozen", default="lora")
    rank: int = _help("LoRA rank r", default=16)
    alpha: float = _help("LoRA alpha (scaling alpha / r)", default=32.0)
    dropout: float = _help("dropout on the LoRA input", default=0.05)
    target_modules: list[str] = _help("LoRA targets: module-name suffixes inside the language model",
                                      default_factory=lambda: list(QWEN_LORA_TARGETS))
    target_regex: str | None = _help("LoRA targets as a regex over full module names (replaces target_modules)",
                                     default=None)
    train_projector: bool = _help("train the vision-to-language projector / merger fully", default=True)
    train_vision: bool = _help("train the vision encoder fully (a tiny random preset needs it)", default=False)
    train_embeddings: bool = _help("train the language model's token embedding matrix fully", default=False)

    def __post_init__(self):
        check_choice(self.method, ADAPTER_METHODS, "adapter.method")
        check_range(self.rank, "adapter.rank", 1)
        check_range(self.alpha, "adapter.alpha", 0, low_open=True)
        check_range(self.dropout, "adapter.dropout", 0, 1, high_open=True)
        if self.method == "lora" and not self.target_modules and not self.target_regex:
            raise ConfigError("adapter.method is lora but adapter.target_modules is empty and no target_regex is set")


@dataclass(frozen=True)
class DataConfig:
    """Training annotations, the zero-shot split and the held-out validation images."""

    train: str = _help("training annotation file (HICO-DET, V-COCO or synthetic instances_train.json)", default="")
    vocabulary: str | None = _help("vocabulary name or file (null: vocabulary.json beside the annotations, "
                                   "else the format's built-in one)", default=None)
    image_root: str | None = _help("folder the image file names are relative to (null: found beside the file)",
                                   default=None)
    split: str | None = _help("zero-shot split of the vocabulary (null or default: the default setting)",
                              default=None)
    repair_boxes: bool = _help("clip / swap bad annotation boxes instead of failing", default=False)
    max_images: int | None = _help("use at most this many training images (first ones; null: all)", default=None)
    val_images: int = _help("training images held out (never trained on) for periodic evaluation", default=0)
    val_annotations: str | None = _help("a separate validation annotation file (instead of held-out images)",
                                        default=None)
    seed: int = _help("seed of the held-out image choice", default=0)
    # -- several training sources (issue 16: EoID's detection-only data; finetune/data.py: SOURCE_KEYS)
    sources: list[dict] = _help("more training sources beside data.train, each a mapping {file, labels (true: "
                                "annotated, filtered by data.split as data.train; false: detection-only, a COCO "
                                "instances_*.json or an HOI file with its labels dropped), ratio (share of the "
                                "sampled images, beside data.train_ratio), image_root, vocabulary (the file's own), "
                                "include_crowd, skip_degenerate}", default_factory=list)
    train_ratio: float = _help("share of the sampled images drawn from data.train when data.sources is set",
                               default=1.0)

    def __post_init__(self):
        from hoi_mllm.finetune.data import check_sources

        check_sources(self.sources)
        check_range(self.train_ratio, "data.train_ratio", 0, low_open=True)
        check_range(self.val_images, "data.val_images", 0)
        if self.max_images is not None:
            check_range(self.max_images, "data.max_images", 1)


DAHOI_SCALES = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)  # DA-HOI's multi-scale resize


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation (``hoi_mllm.finetune.augment``, DA-HOI's ``qwen_augmentation``); all off by default."""

    flip: bool = _help("horizontal flip with its boxes, probability 0.5 (DA-HOI: on)", default=False)
    color_jitter: float = _help("brightness / contrast / saturation jitter strength (DA-HOI: 0.4; 0: off)",
                                default=0.0)
    scales: list[int] = _help("shorter sides of the multi-scale resize, longer side at most 1333 (DA-HOI: 480..800 "
                              "in steps of 32; empty: off)", default_factory=list)
    crop: bool = _help("half the time: resize to 400/500/600, a 384..600 crop holding every annotated box, then "
                       "the multi-scale resize (DA-HOI: on)", default=False)

    def __post_init__(self):
        check_range(self.color_jitter, "augment.color_jitter", 0, 1)
        for s in self.scales:
            check_range(s, "augment.scales[]", 1)

    @property
    def active(self) -> bool:
        return bool(self.flip or self.color_jitter > 0 or self.scales or self.crop)


@dataclass(frozen=True)
class PairsConfig:
    """Training pairs: proposed from ground-truth boxes, a detector's boxes, or both."""

    source: str = _help("ground-truth | detector | both", default="ground-truth")
    detector: str | None = _help("detector spec NAME[:key=value,...] (see hoi_mllm.detectors) for detector/both",
                                 default=None)
    cache: str | None = _help("detections cache (hoi-mllm/detections file; null: one per detector and dataset, "
                              "shared by runs: $HOI_MLLM_CACHE/pairs/<detector>_<data>_<hash>.json, "
                              "HOI_MLLM_CACHE defaulting to ~/.cache/hoi_mllm)", default=None)
    recompute: bool = _help("run the detector again on every image even when the cache has them (rewrites it)",
                            default=False)
    dedupe_iou: float = _help("both: drop a detected box overlapping a same-label annotated box at this IoU",
                              default=0.7)
    merge_duplicates: bool = _help("ground-truth / both: propose pairs from the annotated instances merged as DA-HOI's "
                                   "merge_gt does (class-wise NMS at IoU 0.5; a UPT file repeats each box, jittered, "
                                   "once per verb row); false: from every annotated row's boxes (the earlier way)",
                                   default=True)
    max_train_pairs: int | None = _help("pairs per image kept for a training step (all seen first, then a "
                                        "seeded sample of the rest; null: all)", default=None)
    proposal: PairProposalConfig = _help("pair proposal (hoi_mllm.pairs.PairProposalConfig)",
                                         default_factory=PairProposalConfig)

    def __post_init__(self):
        check_choice(self.source, PAIR_SOURCES, "pairs.source")
        check_range(self.dedupe_iou, "pairs.dedupe_iou", 0, 1, low_open=True)
        if self.source != "ground-truth" and not self.detector:
            raise ConfigError(f"pairs.source is {self.source!r} but pairs.detector is not set; give a detector spec "
                              "such as 'yolo:model=yolov8x.pt' or use pairs.source=ground-truth")
        if self.max_train_pairs is not None:
            check_range(self.max_train_pairs, "pairs.max_train_pairs", 1)


@dataclass(frozen=True)
class MatcherConfig:
    """EoID two-stage bipartite matching (costs as CDN / EoID: class 1, L1 2.5, GIoU 1, verb 1)."""

    cost_l1: float = _help("weight of the L1 box cost (normalised cxcywh, the worse of human and object)",
                           default=2.5)
    cost_giou: float = _help("weight of the -GIoU box cost (the worse of human and object)", default=1.0)
    cost_object: float = _help("weight of the object-class cost", default=1.0)
    cost_verb: float = _help("weight of the verb cost (stage one only)", default=1.0)
    iou_threshold: float = _help("a match counts only when human and object IoU both reach this", default=0.5)
    top_k: int = _help("stage two: at most this many potential pairs per image (EoID: 3)", default=3)
    interactiveness_threshold: float = _help("stage two: potential only above this interactiveness (EoID: 0.5)",
                                             default=0.5)
    targets: str = _help("union: DA-HOI's ground truth (duplicate instances merged, a proposal's verbs the union over "
                         "every annotated pair it overlaps; finetune/targets.py); one-to-one: the earlier rule (each "
                         "proposal the verbs of its single Hungarian partner), kept for the before/after comparison",
                         default="union")
    union_iou: float = _help("union: an annotated pair gives its verbs to every proposal of its object class whose "
                             "min(IoU human, IoU object) with it reaches this (DA-HOI: 0.5)", default=0.5)
    merge_iou: float = _help("union: class-wise NMS IoU merging duplicate annotated instances (DA-HOI merge_gt: 0.5)",
                             default=0.5)
    unselected_matches: str = _help("union: the interactiveness target of a stage-two match not selected as potential. "
                                    "ignored (EoID models/EoID.py unknown_mask: no target) or negative (0, as a "
                                    "proposal matching nothing). With ground-truth proposals only (pairs.source="
                                    "ground-truth) nearly every unannotated proposal is such a match, so under "
                                    "ignored only pairs annotated no-interaction teach 'does not interact' (README)",
                                    default="ignored")
    detection_only_pairs: str = _help("which stage-two matches of a detection-only image take the teacher's targets. "
                                      "teacher: every match the teacher scores at least pseudo_label_threshold on "
                                      "some class (EoID's pseudo-V-COCO: a trained model's predictions over 0.1 "
                                      "written as labels, datasets/vcoco_pseudo.py); top-k: the top_k by "
                                      "interactiveness above interactiveness_threshold, as in labelled images",
                                      default="teacher")
    detection_only_unselected: str = _help("detection_only_pairs=teacher: what a match of a detection-only image whose "
                                           "teacher scores stay under pseudo_label_threshold becomes. negative: a verb "
                                           "negative on every candidate slot, never an interactiveness term (EoID: "
                                           "loss_verb_labels gives every query its pseudo-labels do not match all-zero "
                                           "verb targets); ignored: no term. The oracle's rows of pairs no dropped label "
                                           "annotates are all zero, so under ignored a held-out verb gets positives and "
                                           "almost no negatives (README)",
                                           default="negative")
    pseudo_label_threshold: float = _help("detection_only_pairs=teacher: a match is potential when the teacher "
                                          "scores some class at least this (EoID: 0.1, vcoco_train_pseudo_0.1.json)",
                                          default=0.1)

    def __post_init__(self):
        for name in ("cost_l1", "cost_giou", "cost_object", "cost_verb"):
            check_range(getattr(self, name), f"matcher.{name}", 0)
        check_range(self.iou_threshold, "matcher.iou_threshold", 0, 1)
        check_range(self.top_k, "matcher.top_k", 0)
        check_range(self.interactiveness_threshold, "matcher.interactiveness_threshold", 0, 1)
        check_choice(self.targets, TARGET_RULES, "matcher.targets")
        check_range(self.union_iou, "matcher.union_iou", 0, 1, low_open=True)
        check_range(self.merge_iou, "matcher.merge_iou", 0, 1, low_open=True)
        check_choice(self.unselected_matches, UNSELECTED_MATCHES, "matcher.unselected_matches")
        check_choice(self.detection_only_pairs, DETECTION_ONLY_PAIRS, "matcher.detection_only_pairs")
        check_choice(self.detection_only_unselected, UNSELECTED_MATCHES, "matcher.detection_only_unselected")
        check_range(self.pseudo_label_threshold, "matcher.pseudo_label_threshold", 0, 1)


@dataclass(frozen=True)
class TeacherConfig:
    """Soft targets of potential pairs, over all candidate phrases (unseen ones included, as text)."""

    kind: str = _help("likelihood (frozen base MLLM, training-free) | clip | ema (the student's moving average) "
                      "| none | annotations (an ORACLE for measurement only: the dropped ground-truth verbs of "
                      "detection-only sources as one-hot targets; never a result)", default="likelihood")
    model: str | None = _help("likelihood: teacher MLLM (null: model.base); clip: CLIP id or path", default=None)
    temperature: float = _help("temperature of the teacher's softmax (higher: softer targets)", default=1.0)
    ema_decay: float = _help("ema: decay of the moving average per optimiser step", default=0.99)
    clip_prompt: str = _help("clip: text of a candidate ({phrase}, {verb}, {object})",
                             default="a photo of a person {phrase}")
    max_rows_per_pass: int = _help("likelihood: (pair, candidate) rows per forward", default=64)

    def __post_init__(self):
        check_choice(self.kind, TEACHERS, "teacher.kind")
        check_range(self.temperature, "teacher.temperature", 0, low_open=True)
        check_range(self.ema_decay, "teacher.ema_decay", 0, 1)
        if self.kind == "clip" and not self.model:
            raise ConfigError("teacher.kind is clip but teacher.model is not set (e.g. openai/clip-vit-base-patch32)")


@dataclass(frozen=True)
class LossConfig:
    """Verb loss on seen pairs, distillation on potential pairs, interactiveness on all."""

    verb: str = _help("focal | bce, over the pair's seen candidates", default="focal")
    focal_alpha: float = _help("focal loss alpha (weight of positives)", default=0.5)
    sap_branch_weight: float = _help("weight of the second (SAP) branch's verb loss when model.recogniser.sap_branch "
                                     "is on (DA-HOI: 1, added to the total; logged inside 'verb')", default=1.0)
    focal_gamma: float = _help("focal loss gamma", default=2.0)
    verb_weight: float = _help("weight of the verb loss", default=1.0)
    distill: str = _help("eoid (EoID loss_verb_labels: on every matched pair, seen and potential, the teacher's "
                         "probabilities become soft labels of the candidates that are not ground-truth positives, "
                         "BCE summed over those slots / (pairs x vocabulary verbs)) | kl (softmax over the candidates, "
                         "potential pairs only) | bce (teacher probabilities as targets, potential pairs only)",
                         default="eoid")
    distill_weight: float = _help("weight of the distillation loss (EoID: clip_loss_coef 700)", default=700.0)
    distill_temperature: float = _help("temperature of the student's softmax in kl distillation", default=1.0)
    interactiveness_weight: float = _help("weight of the interactiveness BCE (seen, potential = 1; none = 0)",
                                          default=1.0)

    def __post_init__(self):
        check_choice(self.verb, VERB_LOSSES, "loss.verb")
        check_choice(self.distill, DISTILL_LOSSES, "loss.distill")
        check_range(self.focal_alpha, "loss.focal_alpha", 0, 1)
        check_range(self.focal_gamma, "loss.focal_gamma", 0)
        for name in ("verb_weight", "distill_weight", "interactiveness_weight"):
            check_range(getattr(self, name), f"loss.{name}", 0)
        check_range(self.distill_temperature, "loss.distill_temperature", 0, low_open=True)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with warm-up and a schedule."""

    lr: float = _help("learning rate of the LoRA / language-model weights (DA-HOI: 1e-4)", default=1e-4)
    head_lr: float | None = _help("learning rate of SAP, special embeddings, projector, vision (null: lr)",
                                  default=None)
    weight_decay: float = _help("AdamW weight decay (not on biases, norms, embeddings)", default=0.0)
    betas: list[float] = _help("AdamW betas", default_factory=lambda: [0.9, 0.999])
    grad_clip: float | None = _help("clip the gradient norm to this (null: no clipping)", default=1.0)
    scheduler: str = _help("cosine | linear | constant (after warm-up)", default="cosine")
    warmup_steps: int = _help("linear warm-up steps", default=0)

    def __post_init__(self):
        check_range(self.lr, "optim.lr", 0, low_open=True)
        if self.head_lr is not None:
            check_range(self.head_lr, "optim.head_lr", 0, low_open=True)
        check_choice(self.scheduler, SCHEDULERS, "optim.scheduler")
        check_range(self.warmup_steps, "optim.warmup_steps", 0)
        if len(self.betas) != 2:
            raise ConfigError(f"config key 'optim.betas' takes two numbers, got {self.betas}")


@dataclass(frozen=True)
class TrainConfig:
    """The loop: steps, batch, accumulation, precision, logging and checkpoints."""

    stage: str = _help("joint: the recogniser end to end (LoRA, SAP, projection to the LM, match embedding); sap: DA-HOI's "
                       "SAP pre-training, SAP and a verb classifier alone on the frozen visual grid (no language-model "
                       "forward; RUN/final/sap.safetensors, loaded by the next stage's sap.pretrained)", default="joint")
    steps: int = _help("optimiser steps (derived from train.epochs when that is set)", default=1000)
    epochs: float | None = _help("schedule length in epochs over the training images (DA-HOI: 16); when set, "
                                 "train.steps = ceil(epochs * images / (batch_size * gradient_accumulation * "
                                 "processes)); null: train.steps as given", default=None)
    batch_size: int = _help("images per forward, per process", default=8)
    gradient_accumulation: int = _help("forwards per optimiser step", default=1)
    mixed_precision: str = _help("accelerate mixed precision: no, bf16, fp16", default="no")
    seed: int = _help("seed of weights, data order, dropout and candidate shuffling", default=0)
    log_every: int = _help("log the loss terms every this many steps", default=10)
    checkpoint_every: int = _help("write a checkpoint every this many steps (0: none but the last)", default=500)
    keep_checkpoints: int = _help("keep the last K checkpoints", default=2)
    tensorboard: bool = _help("write TensorBoard logs to RUN/tensorboard", default=True)
    cpu: bool = _help("run on the CPU even when a GPU is present", default=False)
    threads: int | None = _help("torch CPU threads (null: torch's default)", default=None)

    def __post_init__(self):
        for name, low in (("steps", 1), ("batch_size", 1), ("gradient_accumulation", 1), ("log_every", 1),
                          ("checkpoint_every", 0), ("keep_checkpoints", 1)):
            check_range(getattr(self, name), f"train.{name}", low)
        if self.epochs is not None:
            check_range(self.epochs, "train.epochs", 0, low_open=True)
        check_choice(self.mixed_precision, MIXED_PRECISION, "train.mixed_precision")
        check_choice(self.stage, STAGES, "train.stage")


def steps_of_epochs(train: TrainConfig, images: int, processes: int = 1) -> int:
    """Optimiser steps of ``train.epochs`` epochs over ``images`` training images (``train.steps`` when unset)."""
    if train.epochs is None:
        return train.steps
    per_step = train.batch_size * train.gradient_accumulation * processes
    return max(1, math.ceil(train.epochs * images / per_step))


@dataclass(frozen=True)
class SAPStageConfig:
    """A pre-trained SAP (``train.stage=sap``'s output) in the joint stage: loaded, then frozen or slowed."""

    pretrained: str | None = _help("RUN/final/sap.safetensors of a train.stage=sap run (recipe sap_pretrain): its SAP "
                                   "body (pooling, fusion, context decoder, interactiveness) is loaded before training; "
                                   "the projection to the LM still trains (null: SAP starts from scratch)",
                                   default=None)
    freeze: bool = _help("with sap.pretrained: keep the loaded SAP body frozen (DA-HOI); false: train it at "
                         "sap.lr_scale x optim.head_lr", default=True)
    lr_scale: float = _help("with sap.pretrained and sap.freeze false: the SAP body's learning rate as a multiple of "
                            "optim.head_lr", default=0.1)

    def __post_init__(self):
        check_range(self.lr_scale, "sap.lr_scale", 0, low_open=True)
        if self.pretrained is not None and not str(self.pretrained).strip():
            raise ConfigError("config key 'sap.pretrained' is empty; give RUN/final/sap.safetensors or null")


@dataclass(frozen=True)
class EvalConfig:
    """Periodic evaluation on the held-out images (ground-truth boxes, HICO-DET protocol, seen / unseen mAP)."""

    every: int = _help("evaluate every this many steps (0: only at the end)", default=0)
    at_end: bool = _help("evaluate after the last step", default=True)
    max_images: int | None = _help("evaluate on at most this many held-out images", default=None)
    missing_classes: str = _help("classes absent from the held-out images: skip (out of the means) or zero",
                                 default="skip")

    def __post_init__(self):
        check_range(self.every, "eval.every", 0)
        check_choice(self.missing_classes, MISSING_CLASSES, "eval.missing_classes")


@dataclass(frozen=True)
class FinetuneConfig:
    """A whole fine-tuning run (see the module docstring for the sections)."""

    name: str = _help("run name (used in the default output folder)", default="run")
    model: ModelConfig = _help("base model and recogniser", default_factory=ModelConfig)
    adapter: AdapterConfig = _help("what trains in the base model", default_factory=AdapterConfig)
    data: DataConfig = _help("training data", default_factory=DataConfig)
    pairs: PairsConfig = _help("training pairs", default_factory=PairsConfig)
    augment: AugmentConfig = _help("training augmentation", default_factory=AugmentConfig)
    matcher: MatcherConfig = _help("two-stage matching", default_factory=MatcherConfig)
    teacher: TeacherConfig = _help("soft targets of potential pairs", default_factory=TeacherConfig)
    loss: LossConfig = _help("loss terms and weights", default_factory=LossConfig)
    optim: OptimConfig = _help("optimiser and schedule", default_factory=OptimConfig)
    train: TrainConfig = _help("training loop", default_factory=TrainConfig)
    eval: EvalConfig = _help("periodic evaluation", default_factory=EvalConfig)
    sap: SAPStageConfig = _help("a pre-trained SAP in the joint stage", default_factory=SAPStageConfig)

    def __post_init__(self):
        if self.train.stage == "sap":
            if self.sap.pretrained:
                raise ConfigError("sap.pretrained is for the joint stage (train.stage=joint); the SAP stage "
                                  "(train.stage=sap) trains SAP from scratch: set sap.pretrained=null")
            if self.eval.every:
                raise ConfigError("eval.every is set but train.stage=sap has no verb scores to evaluate (the "
                                  "language model is not run): set eval.every=0")
        if not self.data.train:
            raise ConfigError("config key 'data.train' is not set: give the training annotation file "
                              "(e.g. data.train=hicodet/instances_train2015.json)")
        if self.model.quantization is not None and self.adapter.method == "full":
            raise ConfigError("model.quantization needs adapter.method=lora (quantized weights cannot be trained "
                              "fully); use model.quantization=null for full fine-tuning")
        if self.model.quantization is not None and self.model.base.startswith("tiny-"):
            raise ConfigError("model.quantization applies to checkpoints: save the preset with save_pretrained and "
                              "give that folder as model.base")
        if self.teacher.kind == "annotations" and not any(not s.get("labels", False) for s in self.data.sources):
            raise ConfigError("teacher.kind is annotations (the oracle of detection-only sources) but data.sources "
                              "has no detection-only source (labels: false)")
        if self.eval.every and not (self.data.val_images or self.data.val_annotations):
            raise ConfigError("eval.every is set but there are no validation images: set data.val_images or "
                              "data.val_annotations")

    def to_dict(self) -> dict:
        return to_dict(self)


def recipes_dir() -> Path:
    """The folder of built-in recipes (``finetune/configs``)."""
    return Path(str(resources.files("hoi_mllm.finetune").joinpath("configs")))


def builtin_recipes() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml") if not p.stem.startswith("accelerate_"))


def load_config(recipe: str | Path | None = None, overrides: dict | None = None, data: dict | None = None
                ) -> FinetuneConfig:
    """Read a recipe (path or built-in name), apply ``{"a.b": value}`` overrides, build and validate.

    Args:
        recipe: a YAML file or a built-in recipe name (``hico_det``, ``rare_first``, ``synthetic``, ...).
        overrides: dotted keys to values (from ``key=value`` on the command line, YAML-parsed).
        data: a dict to start from instead of (or under) the recipe.
    Raises:
        ConfigError: an unknown key (naming close ones), a bad value (naming the allowed ones).
        FileNotFoundError: no such recipe.
    """
    merged = dict(data or {})
    if recipe is not None:
        from hoi_mllm.finetune.schema import deep_merge

        merged = deep_merge(merged, read_yaml(recipe, recipes_dir()))
    merged = apply_overrides(merged, overrides or {})
    return build_config(FinetuneConfig, merged)


def config_help() -> str:
    """Every key with its default and help, one per line."""
    rows = describe(FinetuneConfig)
    width = max(len(k) for k, _, _ in rows)
    return "\n".join(f"{k:<{width}}  {h}  [default {d}]" for k, d, h in rows)
