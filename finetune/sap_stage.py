"""SAP pre-training's output and how the joint stage takes it (DA-HOI's two stages).

A ``train.stage=sap`` run (recipe ``sap_pretrain``) writes, in ``RUN/final``::

    sap.safetensors   SAP's body (``SpatialAwarePooling.body_state_dict``: pooling, fusion, the scene-context
                      decoder, interactiveness) under ``sap.``, and the pre-training verb classifier under
                      ``verb_classifier.`` (kept for inspection; the joint stage does not use it)
    sap.json          what the weights fit: the backbone's hidden width, the SAP config, the base model,
                      the vocabulary's name, fingerprint, verb and class counts

The joint stage names the file in ``sap.pretrained``; :func:`check_pretrained_sap` reads ``sap.json`` before
any weight is built (missing file, another vocabulary, another SAP shape) and :func:`load_pretrained_sap`
checks the backbone width and loads the body once the recogniser exists, before the first step. The
projection from SAP to the language model (``to_tokens``, ``token_norm``) is not in the file: it is
trained in the joint stage, as DA-HOI trains its ``sap_projector`` with the LM adapter.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import torch

from hoi_mllm.finetune.schema import ConfigError
from hoi_mllm.io import atomic_write_json

SAP_WEIGHTS = "sap.safetensors"
SAP_META = "sap.json"
FORMAT = "hoi-mllm/sap-pretrained"
KEY = "sap.pretrained"
# SAPConfig fields that decide the body's parameter shapes (dropout and the LM-side token count do not)
SHAPE_FIELDS = ("pool_size", "hidden_size", "context_layers", "context_heads", "context_ffn")


class PretrainedSAPError(ConfigError):
    """``sap.pretrained`` names no usable SAP checkpoint for this run (the message names the file and the key)."""


def vocabulary_fingerprint(vocabulary) -> str:
    """sha256 of the vocabulary's objects, verbs and classes (what SAP's verb ids and the prior depend on)."""
    text = json.dumps({"objects": list(vocabulary.objects), "verbs": list(vocabulary.verbs),
                       "classes": [list(c) for c in vocabulary.classes]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def save_pretrained_sap(folder: str | Path, recogniser, base: str) -> Path:
    """Write ``sap.safetensors`` and ``sap.json`` of a SAP-stage recogniser into ``folder``; returns the weights path."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {f"sap.{k}": v for k, v in recogniser.sap.body_state_dict().items()}
    if recogniser.sap_verb_classifier is not None:
        weights.update({f"verb_classifier.{k}": v for k, v in recogniser.sap_verb_classifier.state_dict().items()})
    path = folder / SAP_WEIGHTS
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(path))
    vocab = recogniser.vocabulary
    atomic_write_json(folder / SAP_META, {
        "format": FORMAT, "version": 1, "hidden_size": int(recogniser.backbone.hidden_size), "base": base,
        "family": recogniser.backbone.family, "sap": asdict(recogniser.config.sap),
        "vocabulary": vocab.name, "vocabulary_fingerprint": vocabulary_fingerprint(vocab),
        "num_verbs": int(vocab.num_verbs), "num_classes": int(vocab.num_classes)})
    return path


def _meta_path(path: Path) -> Path:
    return path.with_name(SAP_META) if path.suffix == ".safetensors" else path / SAP_META


def resolve(path: str | Path) -> Path:
    """``sap.pretrained`` as the weights file (a run folder or its ``final`` folder is accepted too)."""
    p = Path(path)
    for candidate in (p, p / SAP_WEIGHTS, p / "final" / SAP_WEIGHTS):
        if candidate.is_file():
            return candidate
    raise PretrainedSAPError(f"config key '{KEY}': {p} does not exist (nor {p / SAP_WEIGHTS}); give the "
                             f"RUN/final/{SAP_WEIGHTS} of a train.stage=sap run (hoi-mllm finetune sap_pretrain "
                             "... --output RUN)")


def check_pretrained_sap(path: str | Path, vocabulary, sap_config) -> dict:
    """Read ``sap.json`` beside ``path`` and check it fits the run (before any weight is built).

    Raises:
        PretrainedSAPError: missing weights or metadata; another vocabulary (fingerprint, verb or class count);
            another SAP shape (``SHAPE_FIELDS`` of ``model.recogniser.sap``). The message names the file and the key.
    """
    weights = resolve(path)
    meta_file = _meta_path(weights)
    if not meta_file.is_file():
        raise PretrainedSAPError(f"config key '{KEY}': {weights} has no {SAP_META} beside it (written with the "
                                 "weights by a train.stage=sap run); cannot tell which backbone and vocabulary it fits")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as exc:
        raise PretrainedSAPError(f"config key '{KEY}': {meta_file} is not valid JSON ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise PretrainedSAPError(f"config key '{KEY}': {meta_file} is no {FORMAT} file (format {meta.get('format')!r})")
    theirs = (meta.get("vocabulary"), meta.get("num_verbs"), meta.get("num_classes"))
    ours = (vocabulary.name, int(vocabulary.num_verbs), int(vocabulary.num_classes))
    if meta.get("vocabulary_fingerprint") != vocabulary_fingerprint(vocabulary):
        raise PretrainedSAPError(
            f"config key '{KEY}': {weights} was pre-trained on another vocabulary (vocabulary {theirs[0]!r}, "
            f"{theirs[1]} verbs, {theirs[2]} classes; this run: {ours[0]!r}, {ours[1]} verbs, {ours[2]} classes, "
            "or the same counts with other names or classes): pre-train SAP on this run's data.train / data.vocabulary")
    saved = meta.get("sap", {})
    diff = [f"{k}: checkpoint {saved.get(k)!r}, model.recogniser.sap.{k} {getattr(sap_config, k)!r}"
            for k in SHAPE_FIELDS if saved.get(k) != getattr(sap_config, k)]
    if diff:
        raise PretrainedSAPError(f"config key '{KEY}': {weights} has another SAP shape ({'; '.join(diff)}); set "
                                 "model.recogniser.sap as in the SAP stage's config")
    return {**meta, "weights": str(weights)}


def load_pretrained_sap(recogniser, path: str | Path, freeze: bool = True) -> dict:
    """Load a pre-trained SAP body into ``recogniser.sap`` (the projection to the LM stays as built), then
    freeze it (``freeze``). Returns the metadata.

    Raises:
        PretrainedSAPError: as :func:`check_pretrained_sap`, or a backbone of another hidden width, or weights
            that are not this SAP's (missing / unexpected keys, other shapes).
    """
    from safetensors.torch import load_file

    meta = check_pretrained_sap(path, recogniser.vocabulary, recogniser.config.sap)
    weights_file = meta["weights"]
    width = int(recogniser.backbone.hidden_size)
    if int(meta["hidden_size"]) != width:
        raise PretrainedSAPError(f"config key '{KEY}': {weights_file} was pre-trained on a backbone of hidden width "
                                 f"{meta['hidden_size']} (base {meta.get('base')!r}), model.base {width} wide; "
                                 "pre-train SAP on this run's model.base")
    saved = {k[len("sap."):]: v for k, v in load_file(weights_file).items() if k.startswith("sap.")}
    body = recogniser.sap.body_state_dict()
    missing, unexpected = sorted(set(body) - set(saved)), sorted(set(saved) - set(body))
    bad = [k for k in body if k in saved and tuple(saved[k].shape) != tuple(body[k].shape)]
    if missing or unexpected or bad:
        raise PretrainedSAPError(f"config key '{KEY}': {weights_file} holds other SAP weights than this model's "
                                 f"(missing {missing[:3]}, unexpected {unexpected[:3]}, other shapes {bad[:3]})")
    with torch.no_grad():
        state = recogniser.sap.state_dict()
        for k, v in saved.items():
            state[k].copy_(v.to(state[k].device, state[k].dtype))
    if freeze:
        for p in recogniser.sap.body_parameters():
            p.requires_grad_(False)
    return meta


def sap_body_names(recogniser) -> set[str]:
    """Recogniser parameter names of SAP's body (what ``sap.lr_scale`` slows)."""
    prefixes = recogniser.sap.LM_PROJECTION
    return {f"sap.{n}" for n, _ in recogniser.sap.named_parameters() if not n.startswith(prefixes)}
