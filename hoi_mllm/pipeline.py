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
from hoi_mllm.pairs import PairProposalConfig, propose_pairs, select_pairs
from hoi_mllm.pipeline_config import FORMAT, MODES, PipelineConfig, PipelineConfigError  # noqa: F401
from hoi_mllm.postprocess import PostprocessConfig, to_triplets
from hoi_mllm.prompts.vocabulary import BUILTIN, Vocabulary, load_vocabulary
from hoi_mllm.records import Detections, HOITriplets

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "recogniser.safetensors"


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
        pair_config: :class:`PairProposalConfig` (which humans and objects are paired, and which pairs
            are recognised: ``max_pairs``, ``select``, ``interactiveness_gate``).
        post_config: :class:`PostprocessConfig` (score exponents, top-K).

    Attributes:
        pair_counts: running totals over the images recognised so far of ``pairs_proposed``,
            ``pairs_gated`` and ``pairs_capped`` (each image's own counts are in its triplets' ``extra``).
    """

    def __init__(self, detector, recogniser, pair_config: PairProposalConfig | None = None,
                 post_config: PostprocessConfig | None = None):
        self.detector = detector
        self.recogniser = recogniser
        self.pair_config = pair_config or PairProposalConfig()
        self.post_config = post_config or PostprocessConfig()
        self.vocabulary: Vocabulary = recogniser.vocabulary
        self.interaction_report = None  # what load_pipeline(interactions=...) added
        self.pair_counts = {"pairs_proposed": 0, "pairs_gated": 0, "pairs_capped": 0}
        self._check_detector(detector)
        if self.pair_config.needs_interactiveness and not hasattr(recogniser, "pair_interactiveness"):
            raise ValueError(f"pair selection select={self.pair_config.select!r}, interactiveness_gate="
                             f"{self.pair_config.interactiveness_gate!r} needs an interactiveness head, which the "
                             f"{self.mode} recogniser has not; use select='score' and interactiveness_gate=None "
                             "(hoi-mllm detect --select score --interactiveness-gate none)")

    @property
    def mode(self) -> str:
        return "training-free" if isinstance(self.recogniser, LikelihoodScorer) else "matching"

    def _check_detector(self, detector) -> None:
        dv = getattr(detector, "vocabulary", None)
        same = dv is not None and (dv.name == self.vocabulary.name  # or the vocabulary it extends with interactions
                                   or self.vocabulary.name.startswith(f"{dv.name}+"))
        if dv is not None and (not same or dv.objects != self.vocabulary.objects):
            raise ValueError(f"the detector labels objects of {dv.name!r} but the recogniser's vocabulary is "
                             f"{self.vocabulary.name!r}; build the detector with vocabulary={self.vocabulary.name!r}")

    def recognise_detections(self, image, dets: Detections, file_name: str = "") -> HOITriplets:
        """Triplets of one image from its detections (an image with no person or nothing to pair gives none).

        Every pair is proposed, :func:`~hoi_mllm.pairs.select_pairs` picks those the recogniser sees
        (:meth:`proposals`); the triplets' ``extra`` says how many were proposed and how many the gate
        and the cap left out."""
        pairs, selection, image = self.proposals(image, dets)
        kept = pairs[selection.index] if len(selection.index) < len(pairs) else pairs
        if len(kept) == 0:
            triplets = HOITriplets.empty(file_name, dets.image_size)
        else:
            output = self.recogniser.recognise(image, kept)
            triplets = to_triplets(kept, output, self.vocabulary, self.post_config, file_name, dets.image_size)
        triplets.extra.update(selection.counts())
        return triplets

    def proposals(self, image, dets: Detections) -> tuple:
        """``(all proposed pairs, PairSelection, image or its encoding)`` of one image under ``pair_config``.

        With ``select="interactiveness"`` or a gate, the image is encoded once here and SAP scores every
        proposed pair (no language model); the encoding is returned for the recogniser to reuse.
        """
        from dataclasses import replace

        pairs = propose_pairs(dets, self.vocabulary.human_object, replace(self.pair_config, max_pairs=None))
        logits = None
        if len(pairs) and self.pair_config.needs_interactiveness:
            image = self.recogniser.encode(image)
            logits = self.recogniser.pair_interactiveness(image, pairs)
        selection = select_pairs(pairs, self.pair_config, logits)
        for key, value in selection.counts().items():
            self.pair_counts[key] += value
        if selection.gated or selection.capped:
            log.debug("%d of %d proposed pairs not recognised (%d gated, %d over max_pairs %s)",
                      selection.gated + selection.capped, selection.proposed, selection.gated, selection.capped,
                      self.pair_config.max_pairs)
        return pairs, selection, image

    def __call__(self, images, file_names: Sequence[str] | None = None, prefetch: int = 0):
        """Detect HOI triplets in an image or a list of them.

        Args:
            images: a path, a PIL image, an ``HxWx3`` uint8 array, or a list of them (paths are opened
                with their EXIF orientation applied).
            file_names: one name per image (default: the path, a PIL image's ``filename``, else ``image_<i>``).
            prefetch: images decoded and detected ahead by a background thread while the recogniser runs.
        Returns:
            one :class:`~hoi_mllm.results.HOIResult` (boxes, verbs, phrases, scores; ``plot``,
            ``to_json``, ``save``) per image, or one result for a single image. This is the very loop
            of ``hoi-mllm detect`` (:func:`hoi_mllm.runner.recognise`), so both give the same triplets.
        Raises:
            ValueError: no detector, or an image the detector or recogniser cannot process.
        """
        from hoi_mllm.results import HOIResult
        from hoi_mllm.runner import items_from_images, recognise

        if self.detector is None:
            raise ValueError("this pipeline has no detector: pass detector=... to load_pipeline, from_pretrained "
                             "or the constructor")
        single = not isinstance(images, (list, tuple))
        items = items_from_images([images] if single else list(images),
                                  None if file_names is None else ([file_names] if isinstance(file_names, str)
                                                                   else list(file_names)))
        skipped: list[dict] = []
        results = [HOIResult(t, self.vocabulary, im)
                   for _, im, t in recognise(self, items, skipped, prefetch=prefetch, timed=False)]
        if skipped:
            raise ValueError("could not process " + "; ".join(f"{s['file_name']}: {s['error']}" for s in skipped))
        return results[0] if single else results

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
        config = PipelineConfig(
            mode=self.mode,
            base_model={"name_or_path": "base" if saved_base else base_name, "origin": base_name,
                        "family": getattr(backbone, "family", ""), "num_pair_tokens": backbone.num_pair_tokens},
            vocabulary=_vocabulary_entry(self.vocabulary),
            recogniser=rec.config.to_dict() if isinstance(rec, HOIRecogniser) else None,
            likelihood=asdict(rec.config) if isinstance(rec, LikelihoodScorer) else None,
            adapter=adapter, pair_config=self.pair_config, post_config=self.post_config).to_dict()
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
            PipelineConfigError (a ValueError): not a recogniser folder, or one of a newer format version.
        """
        from hoi_mllm.models.loading import load_backbone

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"no such recogniser folder: {path}")
        config = PipelineConfig.read(path)
        base = config.base_model
        source = path / "base" if base["name_or_path"] == "base" else base["name_or_path"]
        backbone = load_backbone(source, dtype=dtype, device_map=str(device),
                                 num_pair_tokens=int(base.get("num_pair_tokens", 8)))
        adapter = config.adapter
        if adapter:
            from peft import PeftModel

            inner = backbone.get_submodule(adapter["module"])
            wrapped = PeftModel.from_pretrained(inner, str(path / adapter["folder"]), is_trainable=not merge_adapter)
            _set_submodule(backbone, adapter["module"], wrapped.merge_and_unload() if merge_adapter else wrapped)
        vocabulary = _read_vocabulary(config.vocabulary)
        if config.mode == "matching":
            recogniser = HOIRecogniser(backbone, vocabulary, RecogniserConfig.from_dict(config.recogniser))
            from safetensors.torch import load_file

            state = load_file(str(path / WEIGHTS_NAME), device=str(backbone.device))
            missing, unexpected = recogniser.load_state_dict(state, strict=False)
            missing = [k for k in missing if not k.startswith("backbone.")]
            if missing or unexpected:
                raise ValueError(f"{path / WEIGHTS_NAME}: missing weights {missing[:5]}, unexpected {unexpected[:5]}")
            recogniser.eval()
        else:
            recogniser = LikelihoodScorer(backbone, vocabulary, LikelihoodConfig(**config.likelihood))
        return cls(detector, recogniser, pair_config or config.pair_config, post_config or config.post_config)


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


def _split_overrides(overrides: dict) -> tuple[dict, dict]:
    """``(pair_config fields, post_config fields)`` of ``load_pipeline``'s keyword overrides."""
    from dataclasses import fields

    pair_names = {f.name for f in fields(PairProposalConfig)}
    post_names = {f.name for f in fields(PostprocessConfig)}
    unknown = sorted(set(overrides) - pair_names - post_names)
    if unknown:
        raise TypeError(f"load_pipeline got unknown option(s) {', '.join(map(repr, unknown))}; allowed: "
                        f"{', '.join(sorted(pair_names | post_names))} (pair proposal and post-processing settings)")
    return ({k: v for k, v in overrides.items() if k in pair_names},
            {k: v for k, v in overrides.items() if k in post_names})


def load_pipeline(model: str | Path, *, detector=None, vocabulary=None, mode: str | None = None,
                  device: str = "auto", dtype: torch.dtype | str | None = None, detector_options: dict | None = None,
                  interactions=None, **overrides) -> HOIPipeline:
    """The one way to build a ready pipeline (what ``hoi-mllm detect`` runs).

    >>> from hoi_mllm import load_pipeline                      # doctest: +SKIP
    >>> pipe = load_pipeline("out/model", detector="yolo")
    >>> result = pipe("photo.jpg")
    >>> result.phrases[:3], result.scores[:3]
    >>> result.save("photo_hoi.jpg")

    Args:
        model: a folder of :meth:`HOIPipeline.save_pretrained`, a preset (``tiny-qwen2-vl`` ...), a hub
            id or a local checkpoint (see :func:`load_recogniser`).
        detector: a detector spec (``"yolo"``, ``"yolo:model=best.pt"``, ``"ground-truth:annotations=F"``),
            a detector object, or None (then only :meth:`HOIPipeline.recognise_detections` works). A spec
            is checked before any model loads.
        vocabulary, mode: as :func:`load_recogniser` (default: the saved model's).
        device: ``auto`` (CUDA when present, else cpu), ``cpu``, ``cuda``, ``cuda:N``; for the
            recogniser and for a detector spec that names no device.
        dtype: backbone precision (default: float32 on cpu, the checkpoint's otherwise).
        detector_options: options of a detector spec (``{"score_threshold": 0.3}``).
        interactions: new verb-object phrases to score, no training (``["feed giraffe", "repair
            bicycle"]``, mappings, or a YAML / JSON file of them; see :mod:`hoi_mllm.interactions`).
            The pipeline's vocabulary becomes the extended one; ``pipe.interaction_report`` says what
            was added and what was already there.
        **overrides: pair-proposal and post-processing settings (``top_k=``, ``max_pairs=``,
            ``select=``, ``interactiveness_gate=``, ``verb_exponent=`` ...): applied over the saved model's own values, which are kept otherwise.
    Raises:
        TypeError: an unknown override (naming the allowed ones). ValueError / FileNotFoundError: a bad
        spec, device, mode, vocabulary or model.
    """
    from dataclasses import replace

    from hoi_mllm.device import resolve_device

    pair_overrides, post_overrides = _split_overrides(overrides)
    device = resolve_device(device)
    spec, spec_options = None, dict(detector_options or {})
    if isinstance(detector, str):
        from hoi_mllm.detectors.registry import resolve_detector

        spec = detector
        if "device" not in resolve_detector(spec, **spec_options)[1]:  # a bad spec fails before the model loads
            spec_options["device"] = device
    elif detector_options:
        raise ValueError("detector_options are for a detector spec (a string), not a detector object")
    if interactions is not None:
        from hoi_mllm.interactions import read_interactions

        if isinstance(interactions, (str, Path)):
            interactions = read_interactions(interactions)
        interactions = list(interactions)
    recogniser, saved = load_recogniser(model, vocabulary, mode, device, dtype)
    report = None
    if interactions:
        from hoi_mllm.interactions import add_interactions, use_vocabulary

        extended, report = add_interactions(recogniser.vocabulary, interactions)
        use_vocabulary(recogniser, extended)
    pair_config = saved.pair_config if saved is not None else PairProposalConfig()
    post_config = saved.post_config if saved is not None else PostprocessConfig()
    pair_config, post_config = replace(pair_config, **pair_overrides), replace(post_config, **post_overrides)
    if spec is not None:
        from hoi_mllm.detectors import build_detector

        detector = build_detector(spec, vocabulary=recogniser.vocabulary, **spec_options)
    pipe = HOIPipeline(detector, recogniser, pair_config, post_config)
    pipe.interaction_report = report
    return pipe
