"""What a checkpoint folder must hold, checked before any weight loads.

:func:`check_folder` names the missing file of a local folder (config, tokenizer, processor,
weights, or a shard its index lists); :func:`check_tokenizer` checks that the tokenizer holds the
family's image tokens at the ids the config names, and that our own tokens (``<|pair_i|>``,
``<|match|>``, ``<|answer|>``) do not clash with it: a token of ours already present must be one
special token of its own, not a piece of ordinary text or an id the model uses for something else.
"""
from __future__ import annotations

import json
from pathlib import Path

from hoi_mllm.models.tokenizer import special_tokens

# config attribute -> token, per family (the tokens the adapters put in prompts)
FAMILY_TOKENS = {
    "qwen2_vl": {"image_token_id": "<|image_pad|>", "vision_start_token_id": "<|vision_start|>",
                 "vision_end_token_id": "<|vision_end|>"},
    "llava": {"image_token_id": "<image>"},
    "llava_onevision": {"image_token_id": "<image>"},
}
FAMILY_TOKENS["qwen2_5_vl"] = FAMILY_TOKENS["qwen2_vl"]
TOKENIZER_FILES = ("tokenizer.json", "vocab.json + merges.txt", "tokenizer.model")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_folder(folder: str | Path) -> None:
    """Raise ``FileNotFoundError`` naming what a local checkpoint folder lacks (no weights read)."""
    folder = Path(folder)
    have = {p.name for p in folder.iterdir()}
    if "config.json" not in have:
        raise FileNotFoundError(f"{folder}: config.json is missing (the model config, with its model_type)")
    tokenizer_ok = "tokenizer.json" in have or {"vocab.json", "merges.txt"} <= have or "tokenizer.model" in have
    if not tokenizer_ok:
        raise FileNotFoundError(f"{folder}: no tokenizer files; expected one of: {', '.join(TOKENIZER_FILES)} "
                                "(with tokenizer_config.json)")
    if "tokenizer_config.json" not in have:
        raise FileNotFoundError(f"{folder}: tokenizer_config.json is missing (the tokenizer's special tokens and class)")
    if not any(f in have for f in PROCESSOR_FILES):
        raise FileNotFoundError(f"{folder}: no image processor config; expected {' or '.join(PROCESSOR_FILES)}")
    if "processor_config.json" in have and "preprocessor_config.json" not in have:
        data = json.loads((folder / "processor_config.json").read_text())
        if "image_processor" not in data:
            raise FileNotFoundError(f"{folder}: processor_config.json has no image_processor and "
                                    "preprocessor_config.json is missing")
    weights = [f for f in WEIGHT_FILES if f in have]
    if not weights:
        raise FileNotFoundError(f"{folder}: no weights; expected one of: {', '.join(WEIGHT_FILES)}")
    if weights[0].endswith(".index.json"):
        index = json.loads((folder / weights[0]).read_text())
        missing = sorted(set(index.get("weight_map", {}).values()) - have)
        if missing:
            raise FileNotFoundError(f"{folder}: {weights[0]} lists shard(s) that are missing: {', '.join(missing)}")


def check_tokenizer(tokenizer, config, source: str, num_pair_tokens: int) -> None:
    """Raise ``ValueError`` if ``tokenizer`` cannot serve ``config``'s model with our tokens added."""
    vocab = tokenizer.get_vocab()
    used = {}
    for attr, token in FAMILY_TOKENS.get(config.model_type, {}).items():
        expected = getattr(config, attr, None)
        if token not in vocab:
            raise ValueError(f"{source}: the tokenizer has no {token} token, which {config.model_type} prompts need "
                             f"(config {attr} = {expected}); is tokenizer.json from another model?")
        if expected is not None and vocab[token] != int(expected):
            raise ValueError(f"{source}: the tokenizer puts {token} at id {vocab[token]} but config.json says "
                             f"{attr} = {expected}; tokenizer and config are from different models")
        used[vocab[token]] = token
    special = set(tokenizer.all_special_tokens) | {str(t) for t in getattr(tokenizer, "added_tokens_decoder", {}).values()
                                                   if getattr(t, "special", False)}
    for token in special_tokens(num_pair_tokens):
        if token not in vocab:
            continue
        pieces = tokenizer.encode(token, add_special_tokens=False)
        if token not in special or len(pieces) != 1:
            raise ValueError(f"{source}: the tokenizer already holds {token} as ordinary text (not a special token), "
                             "which clashes with this project's own token of that name; use a tokenizer without it")
        if vocab[token] in used:
            raise ValueError(f"{source}: the tokenizer's {token} has id {vocab[token]}, the id of {used[vocab[token]]}")
        used[vocab[token]] = token
