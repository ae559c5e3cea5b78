"""The model a run trains: base MLLM (optionally 4-bit), LoRA / full / frozen language model, recogniser.

:func:`build_student` loads the base through :func:`~hoi_mllm.models.loading.load_backbone`
(bitsandbytes 4-bit + peft ``prepare_model_for_kbit_training`` for QLoRA), wraps the language
model in a peft ``PeftModel`` with a ``LoraConfig`` (so ``HOIPipeline.save_pretrained`` writes the
adapter), sets which base parts train (projector / merger, vision encoder, embeddings), turns on
gradient checkpointing, and puts an :class:`~hoi_mllm.models.recogniser.HOIRecogniser` on top
(its SAP, ``<match>`` / ``<answer>`` embeddings, scale and bias always train).
"""
from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import nn

from hoi_mllm.finetune.config import AdapterConfig, FinetuneConfig, ModelConfig
from hoi_mllm.models.backbone import Backbone
from hoi_mllm.models.presets import PRESETS
from hoi_mllm.models.recogniser import HOIRecogniser

log = logging.getLogger(__name__)

def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def base_loader(config: ModelConfig, vocabulary, device: torch.device | str = "cpu") -> Callable[[str | None], Backbone]:
    """``load(name=None) -> Backbone``: the configured base model (or another one by name), on ``device``.

    A tiny preset's tokenizer is trained on the built-in vocabularies plus the run's vocabulary,
    so the run's phrases are whole tokens.
    """
    from hoi_mllm.models.loading import load_backbone

    def load(name: str | None = None) -> Backbone:
        name = name or config.base
        preset = name in PRESETS
        kwargs = dict(dtype=_dtype(config.dtype), attn_implementation=config.attn_implementation,
                      num_pair_tokens=config.num_pair_tokens, min_pixels=config.min_pixels,
                      max_pixels=config.max_pixels, device_map=str(device))
        if preset:
            kwargs.update(overrides=config.preset_overrides or None,
                          vocabularies=("hico-det", "vcoco", vocabulary))
        else:
            kwargs["quantization"] = config.quantization
        return load_backbone(name, **kwargs)

    return load


def lora_config(adapter: AdapterConfig):
    """The peft ``LoraConfig`` of an adapter section (targets by suffix list, or a regex)."""
    from peft import LoraConfig

    targets = adapter.target_regex if adapter.target_regex else list(adapter.target_modules)
    return LoraConfig(r=adapter.rank, lora_alpha=adapter.alpha, lora_dropout=adapter.dropout, bias="none",
                      target_modules=targets,
                      modules_to_save=["embed_tokens"] if adapter.train_embeddings else None)


def apply_adapter(backbone: Backbone, adapter: AdapterConfig, quantized: bool, checkpointing: bool) -> None:
    """Freeze the base, then make trainable what ``adapter`` asks for (in place).

    Raises:
        ValueError: LoRA targets that match no module of the language model.
    """
    model = backbone.model
    if quantized:
        from peft import prepare_model_for_kbit_training

        prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing,
                                        gradient_checkpointing_kwargs={"use_reentrant": False})
    elif checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for p in model.parameters():
        p.requires_grad_(False)
    lm = backbone.language_model  # the adapter knows where each part of its family sits
    if adapter.method == "lora":
        from peft import get_peft_model

        try:
            wrapped = get_peft_model(lm, lora_config(adapter))
        except ValueError as exc:
            names = sorted({n.rsplit(".", 1)[-1] for n, m in lm.named_modules() if isinstance(m, nn.Linear)})
            raise ValueError(f"adapter.target_modules / target_regex match no layer of the language model ({exc}); "
                             f"linear layers there end in: {', '.join(names)}") from exc
        backbone.set_language_model(wrapped)
    elif adapter.method == "full":
        for p in lm.parameters():
            p.requires_grad_(True)
    if adapter.train_embeddings and adapter.method != "lora":
        lm.get_input_embeddings().weight.requires_grad_(True)
    # the projector's switch comes last and wins: Qwen's merger sits inside its vision encoder, so
    # train_vision true with train_projector false trains the tower and keeps the merger frozen
    for wanted, part, what in ((adapter.train_vision, "vision_encoder", "train_vision"),
                               (adapter.train_projector, "projector", "train_projector")):
        try:
            module = getattr(backbone, part)
        except AttributeError as exc:
            if not wanted:
                continue
            raise ValueError(f"adapter.{what}: the {backbone.family} model has no {part} ({exc})") from exc
        for p in module.parameters():
            p.requires_grad_(wanted)


def build_student(config: FinetuneConfig, vocabulary, device: torch.device | str = "cpu") -> HOIRecogniser:
    """The recogniser to train, on ``device``, with the trainable parameters set (seeded: same config, same weights)."""
    torch.manual_seed(config.train.seed)
    backbone = base_loader(config.model, vocabulary, device)()
    recogniser = HOIRecogniser(backbone, vocabulary, config.model.recogniser)
    if config.model.pair_token_gain is not None:
        with torch.no_grad():
            recogniser.sap.token_norm.weight.fill_(config.model.pair_token_gain)
    if config.train.stage == "sap":  # DA-HOI's SAP pre-training: SAP's body + a verb classifier, nothing else
        return sap_stage_student(recogniser, vocabulary)
    if config.model.pretrain_steps:
        from hoi_mllm.finetune.language import pretrain_language_model

        losses = pretrain_language_model(recogniser, config.model.pretrain_steps, config.model.pretrain_lr,
                                         config.model.pretrain_separation)
        log.info("language warm-up: prompt loss %.3f -> %.3f in %d steps", losses[0], losses[-1], len(losses))
    apply_adapter(backbone, config.adapter, config.model.quantization is not None, config.model.gradient_checkpointing)
    if config.sap.pretrained:
        from hoi_mllm.finetune.sap_stage import load_pretrained_sap

        meta = load_pretrained_sap(recogniser, config.sap.pretrained, freeze=config.sap.freeze)
        log.info("SAP body loaded from %s (%s)", meta["weights"],
                 "frozen" if config.sap.freeze else f"trained at {config.sap.lr_scale} x head_lr")
    recogniser.train()
    counts = parameter_counts(recogniser)
    log.info("trainable parameters: %s of %s (%.2f%%)", f"{counts['trainable']:,}", f"{counts['total']:,}",
             100 * counts["trainable"] / max(1, counts["total"]))
    return recogniser


def sap_stage_student(recogniser: HOIRecogniser, vocabulary) -> HOIRecogniser:
    """The ``train.stage=sap`` student: every weight frozen (vision tower, merger, language model, the projection
    to the LM, match embeddings) but SAP's body and the verb classifier over the vocabulary's verbs. The
    language warm-up of tiny presets (``model.pretrain_steps``) is skipped: the language model is not used."""
    for p in recogniser.parameters():
        p.requires_grad_(False)
    recogniser.add_verb_classifier(vocabulary.num_verbs)
    for p in [*recogniser.sap.body_parameters(), *recogniser.sap_verb_classifier.parameters()]:
        p.requires_grad_(True)
    recogniser.train()
    counts = parameter_counts(recogniser)
    log.info("SAP pre-training: %s trainable parameters of %s", f"{counts['trainable']:,}", f"{counts['total']:,}")
    return recogniser


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Total and trainable parameter counts (4-bit weights counted as stored elements x 2)."""
    total = trainable = 0
    for p in model.parameters():
        n = p.numel() * (2 if p.__class__.__name__ == "Params4bit" else 1)
        total += n
        trainable += n if p.requires_grad else 0
    return {"total": total, "trainable": trainable}


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable parameter by name (what a checkpoint stores)."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def base_fingerprint(recogniser: HOIRecogniser, config: ModelConfig) -> dict:
    """What identifies the base model a checkpoint was trained from."""
    backbone = recogniser.backbone
    text = backbone.text_config
    return {"base": config.base, "family": backbone.family, "hidden_size": int(text.hidden_size),
            "layers": int(text.num_hidden_layers), "vocab_size": int(text.vocab_size),
            "preset_overrides": dict(config.preset_overrides), "quantization": config.quantization}
