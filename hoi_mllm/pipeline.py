"""The end-to-end pipeline: any detector, pair proposal, a recogniser, post-processing.

``HOIPipeline(detector, recogniser)(images, file_names)`` returns one :class:`HOITriplets` per
image. The recogniser is an :class:`~hoi_mllm.models.recogniser.HOIRecogniser` (one-pass
deterministic matching) or a :class:`~hoi_mllm.models.likelihood.LikelihoodScorer` (training-free).

Saved folder (``save_pretrained``, read back by ``from_pretrained``)::

    config.json               format "hoi-mllm/recogniser": mode, base model, recogniser config,
                              vocabulary (a built-in name or an embedded copy), pair and
                              post-processing configs, where a peft adapter sits; written last
    recogniser.safetensors    SAP, <match> / <answer> embeddings, cosine scale and bias (matching)
    adapter/                  the LM's LoRA adapter (peft ``save_pretrained``), when the LM is wrapped
    base/                     the whole base backbone, for tiny presets (random, possibly trained
                              fully); real models are named by hub id or local path instead
"""
from __future__ import annotations

import copy
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch

from hoi_mllm.io import atomic_path, atomic_write_json, read_json
from hoi_mllm.models.likelihood import LikelihoodConfig, LikelihoodScorer
from hoi_mllm.models.recogniser import HOIRecogniser, RecogniserConfig
from hoi_mllm.pairs import PairProposalConfig, propose_pairs
from hoi_mllm.postprocess import PostprocessConfig, to_triplets
from hoi_mllm.prompts.vocabulary import BUILTIN, Vocabulary, load_vocabulary
from hoi_mllm.records import Detections, HOITriplets

log = logging.getLogger(__name__)

FORMAT = "hoi-mllm/recogniser"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "recogniser.safetensors"
MODES = ("matching", "training-free")


# --------------------------------------------------------------------------- peft helpers
def find_peft(module: torch.nn.Module) -> tuple[str, torch.nn.Module] | None:
    """``(dotted path, PeftModel)`` of the first peft wrapper inside ``module``, or None."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return None
    for name, m in module.named_modules():
        if isinstance(m, PeftModel):
            return name, m
    return None


def _set_submodule(root: torch.nn.Module, path: str, value: torch.nn.Module) -> None:
    parent, _, attr = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, value)


def _vocabulary_entry(vocab: Vocabulary):
    """A built-in vocabulary by name, anything else embedded whole."""
    if vocab.name in BUILTIN and load_vocabulary(vocab.name).to_dict() == vocab.to_dict():
        return vocab.name
    return {"embedded": vocab.to_dict()}


def _read_vocabulary(entry) -> Vocabulary:
    if isinstance(entry, dict) and "embedded" in entry:
        return Vocabulary.from_dict(entry["embedded"], origin="embedded vocabulary")
    return load_vocabulary(entry)


def is_pretrained_dir(path: str | Path) -> bool:
    """True when ``path`` is a folder written by :meth:`HOIPipeline.save_pretrained`."""
    config = Path(path) / CONFIG_NAME
    if not config.is_file():
        return False
    try:
        return read_json(config).get("format") == FORMAT
    except (ValueError, AttributeError):
        return False


# --------------------------------------------------------------------------- the pipeline
class HOIPipeline:
    """Detector -> pairs -> recogniser -> triplets.

    Args:
        detector: ``detector(images, file_names) -> list[Detections]`` with labels in the
            recogniser's vocabulary (may be ``None`` when only :meth:`recognise_detections` is used).
        recogniser: :class:`HOIRecogniser` or :class:`LikelihoodScorer`.
        pair_config: :class:`PairProposalConfig` (which humans and objects are paired).
        post_config: :class:`PostprocessConfig` (score exponents, top-K).
    """

    def __init__(self, detector, recogniser, pair_config: PairProposalConfig | None = None,
                 post_config: PostprocessConfig | None = None):
        self.detector = detector
        self.recogniser = recogniser
        self.pair_config = pair_config or PairProposalConfig()
        self.post_config = post_config or PostprocessConfig()
        self.vocabulary: Vocabulary = recogniser.vocabulary
        self._check_detector(detector)

    @property
    def mode(self) -> str:
        return "training-free" if isinstance(self.recogniser, LikelihoodScorer) else "matching"

    def _check_detector(self, detector) -> None:
        dv = getattr(detector, "vocabulary", None)
        if dv is not None and (dv.name != self.vocabulary.name or dv.objects != self.vocabulary.objects):
            raise ValueError(f"the detector labels objects of {dv.name!r} but the recogniser's vocabulary is "
                             f"{self.vocabulary.name!r}; build the detector with vocabulary={self.vocabulary.name!r}")

    def recognise_detections(self, image, dets: Detections, file_name: str = "") -> HOITriplets:
        """Triplets of one image from its detections (an image with no person or nothing to pair gives none)."""
        pairs = propose_pairs(dets, self.vocabulary.human_object, self.pair_config)
        if len(pairs) == 0:
            return HOITriplets.empty(file_name, dets.image_size)
        output = self.recogniser.recognise(image, pairs)
        return to_triplets(pairs, output, self.vocabulary, self.post_config, file_name, dets.image_size)

    def __call__(self, images: Sequence, file_names: Sequence[str] | None = None) -> list[HOITriplets]:
        """Detect HOI triplets: ``images`` (PIL images) -> one :class:`HOITriplets` each, boxes xyxy pixels."""
        if self.detector is None:
            raise ValueError("this pipeline has no detector: pass detector=... to from_pretrained or the constructor")
        images = list(images)
        names = [str(n) for n in file_names] if file_names is not None else [
            str(getattr(im, "filename", "") or "") for im in images]
        detections = self.detector(images, names if file_names is not None else None)
        return [self.recognise_detections(im, d, n) for im, d, n in zip(images, detections, names)]

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, path: str | Path, save_base: bool | None = None) -> Path:
        """Write the folder described in the module docstring (``config.json`` last).

        Args:
            save_base: write the whole base backbone under ``base/`` (``None``: only for tiny presets
                and backbones without a name; pass True after training a real model's weights fully).
        """
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        rec = self.recogniser
        backbone = rec.backbone
        peft = find_peft(backbone)
        base_name = str(getattr(backbone, "name_or_path", "") or "")
        from hoi_mllm.models.presets import PRESETS

        saved_base = (base_name in PRESETS or not base_name) if save_base is None else bool(save_base)
        if saved_base:
            self._save_base(path / "base", peft)
        adapter = None
        if peft is not None:
            peft[1].save_pretrained(str(path / "adapter"))
            adapter = {"module": peft[0], "folder": "adapter"}
        if isinstance(rec, HOIRecogniser):
            state = {k: v.detach().cpu().contiguous() for k, v in rec.own_state_dict().items()}
            with atomic_path(path / WEIGHTS_NAME) as tmp:
                save_file(state, str(tmp), metadata={"format": FORMAT})
        config = {
            "format": FORMAT, "version": 1, "mode": self.mode,
            "base_model": {"name_or_path": "base" if saved_base else base_name, "origin": base_name,
                           "family": getattr(backbone, "family", ""), "num_pair_tokens": backbone.num_pair_tokens},
            "adapter": adapter,
            "vocabulary": _vocabulary_entry(self.vocabulary),
            "recogniser": rec.config.to_dict() if isinstance(rec, HOIRecogniser) else None,
            "likelihood": asdict(rec.config) if isinstance(rec, LikelihoodScorer) else None,
            "pair_config": asdict(self.pair_config),
            "post_config": asdict(self.post_config),
        }
        atomic_write_json(path / CONFIG_NAME, config)
        return path

    def _save_base(self, folder: Path, peft) -> None:
        """The base backbone without any adapter (a copy is un-wrapped when the LM carries LoRA)."""
        backbone = self.recogniser.backbone
        if peft is not None:
            backbone = copy.deepcopy(backbone)
            module_path, wrapper = peft[0], backbone.get_submodule(peft[0])
            _set_submodule(backbone, module_path, wrapper.unload())
        backbone.save_pretrained(folder)

    @classmethod
    def from_pretrained(cls, path: str | Path, detector=None, device: str | torch.device = "cpu",
                        dtype: torch.dtype | str | None = None, merge_adapter: bool = True,
                        post_config: PostprocessConfig | None = None,
                        pair_config: PairProposalConfig | None = None) -> "HOIPipeline":
        """Load a folder written by :meth:`save_pretrained`.

        Args:
            detector: the detector to run (labels in the saved vocabulary), or None.
            device, dtype: where and in which precision the backbone runs (the recogniser's own
                weights stay float32).
            merge_adapter: merge a LoRA adapter into the LM weights (inference); False keeps the
                peft wrapper (to continue training).
            post_config, pair_config: override the saved ones.
        Raises:
            FileNotFoundError: no such folder or no ``config.json`` in it.
            ValueError: not a recogniser folder, or a newer format.
        """
        from hoi_mllm.models.loading import load_backbone

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"no such recogniser folder: {path}")
        config = read_json(path / CONFIG_NAME, "recogniser config")
        if config.get("format") != FORMAT:
            raise ValueError(f"{path / CONFIG_NAME}: 'format' is {config.get('format')!r}, expected {FORMAT!r} "
                             "(a folder written by HOIPipeline.save_pretrained)")
        if config.get("version") != 1 or config.get("mode") not in MODES:
            raise ValueError(f"{path / CONFIG_NAME}: version {config.get('version')!r} / mode {config.get('mode')!r} "
                             f"not supported (version 1, modes {', '.join(MODES)})")
        base = config["base_model"]
        source = path / "base" if base["name_or_path"] == "base" else base["name_or_path"]
        backbone = load_backbone(source, dtype=dtype, device_map=str(device),
                                 num_pair_tokens=int(base.get("num_pair_tokens", 8)))
        adapter = config.get("adapter")
        if adapter:
            from peft import PeftModel

            inner = backbone.get_submodule(adapter["module"])
            wrapped = PeftModel.from_pretrained(inner, str(path / adapter["folder"]), is_trainable=not merge_adapter)
            _set_submodule(backbone, adapter["module"], wrapped.merge_and_unload() if merge_adapter else wrapped)
        vocabulary = _read_vocabulary(config["vocabulary"])
        if config["mode"] == "matching":
            recogniser = HOIRecogniser(backbone, vocabulary, RecogniserConfig.from_dict(config["recogniser"]))
            from safetensors.torch import load_file

            state = load_file(str(path / WEIGHTS_NAME), device=str(backbone.device))
            missing, unexpected = recogniser.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith("backbone.")]
            if missing or unexpected:
                raise ValueError(f"{path / WEIGHTS_NAME}: missing weights {missing[:5]}, unexpected {unexpected[:5]}")
            recogniser.eval()
        else:
            recogniser = LikelihoodScorer(backbone, vocabulary, LikelihoodConfig(**config["likelihood"]))
        return cls(detector, recogniser,
                   pair_config or PairProposalConfig(**config.get("pair_config", {})),
                   post_config or PostprocessConfig(**config.get("post_config", {})))


def load_recogniser(model: str | Path, vocabulary=None, mode: str | None = None, device: str = "cpu",
                    dtype: torch.dtype | str | None = None, config: RecogniserConfig | None = None):
    """A recogniser from a saved folder, or an untrained one on a backbone (preset, hub id, local path).

    Args:
        model: a folder of :meth:`HOIPipeline.save_pretrained`, a preset name (``tiny-qwen2-vl`` ...:
            an untrained recogniser, for smoke tests), a hub id or a local transformers checkpoint.
        vocabulary: required for a bare backbone (default ``hico-det``); for a saved folder it must
            agree with the saved one when given.
        mode: ``matching`` or ``training-free``; ``None``: a saved folder's own mode, ``matching`` for a
            preset (an untrained smoke-test recogniser), ``training-free`` for a hub id or checkpoint (a
            pretrained MLLM without fine-tuning has no trained matching weights; asking for ``matching``
            on one warns that its pair and match weights are random). A saved matching folder can be
            run ``training-free``: its fine-tuned language model (LoRA merged) scores likelihoods.
    Returns:
        ``(recogniser, pipeline config or None)``: the saved pipeline's :class:`HOIPipeline` (no
        detector) when loading a folder, else None.
    Raises:
        FileNotFoundError / ValueError from ``load_backbone`` (a missing path, an unsupported
        family, naming the supported ones), or a vocabulary / mode conflict.
    """
    if mode is not None and mode not in MODES:
        raise ValueError(f"mode {mode!r} not allowed; allowed: {', '.join(MODES)}")
    if is_pretrained_dir(model):
        pipe = HOIPipeline.from_pretrained(model, device=device, dtype=dtype)
        if vocabulary is not None and load_vocabulary(vocabulary).to_dict() != pipe.vocabulary.to_dict():
            raise ValueError(f"{model} was saved for vocabulary {pipe.vocabulary.name!r}, not {str(vocabulary)!r}")
        if mode is not None and mode != pipe.mode:
            if mode == "matching":
                raise ValueError(f"{model} is a training-free recogniser; it has no matching weights")
            pipe.recogniser = LikelihoodScorer(pipe.recogniser.backbone, pipe.vocabulary)
        return pipe.recogniser, pipe
    from hoi_mllm.models.loading import load_backbone

    from hoi_mllm.models.presets import PRESETS

    vocab = load_vocabulary(vocabulary or "hico-det")
    backbone = load_backbone(model, dtype=dtype, device_map=str(device))
    if str(model) not in PRESETS:
        if mode is None:
            mode = "training-free"
            log.info("%s is a base checkpoint, not a fine-tuned recogniser: scoring training-free", model)
        elif mode == "matching":
            log.warning("%s is a base checkpoint: its spatial pooling and match weights are untrained (random); "
                        "fine-tune it (hoi-mllm finetune) or use --mode training-free", model)
    if mode == "training-free":
        return LikelihoodScorer(backbone, vocab), None
    return HOIRecogniser(backbone, vocab, config or RecogniserConfig()).eval(), None
