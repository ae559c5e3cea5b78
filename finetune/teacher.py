"""Teachers: soft scores over *all* candidate phrases of a potential pair (unseen classes included, as text).

EoID distils a vision-language model into the interactions it mines. Here a teacher takes the
potential pairs of one image (boxes xyxy pixels, object labels) and returns, for each, the
candidate classes of its object and a probability per candidate. Unseen class *names* enter as
text; no unseen *label* is ever read: a teacher sees the image, the boxes and the vocabulary only.

``likelihood``
    the frozen base MLLM in training-free mode (:class:`~hoi_mllm.models.likelihood.LikelihoodScorer`):
    length-normalised log-likelihood of each phrase as the answer, softmax with a temperature.
    Deterministic, so scores are cached per (image, pair boxes). Without ``teacher.model`` the base is
    the student's own, and where that is exact (:func:`shares_base`) the teacher scores with the
    student's backbone seen as its base (:class:`FrozenBaseView`: LoRA disabled, the other trained base
    weights swapped for copies taken before training) instead of loading the base a second time.
``clip``
    a transformers ``CLIPModel``: the pair's union crop against ``clip_prompt`` texts of the
    candidates, ``softmax(logit_scale * cos / T)`` (EoID's teacher). Cached likewise.
``ema``
    the student's own exponential moving average (a mean teacher), run in eval mode over all
    candidates: for a model without pretraining (the tiny synthetic presets) there is no teacher
    that knows more than the student; the moving average only smooths the student's own guesses
    about unseen phrases, which is self-distillation, not knowledge transfer.
``none``
    no distillation; potential pairs still count as interactive.
``annotations``
    an ORACLE, for measurement only, never a result: the ground-truth verbs that a detection-only source
    dropped (:mod:`hoi_mllm.data.coco_detections`, ``extra["dropped_labels"]``) as one-hot targets of the
    pair's classes (every dropped pair of the same object at min IoU >= 0.5 gives its classes 1); a pair of a
    labelled image, or one no dropped pair overlaps, gets all zeros. It shows that targets flow through the
    detection-only path; it knows what no teacher can.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Hashable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from hoi_mllm.finetune.config import TeacherConfig
from hoi_mllm.models.matching import pad_candidates
from hoi_mllm.records import Pairs


def make_pairs(human_boxes: Tensor, object_boxes: Tensor, object_labels: Tensor, image_size) -> Pairs:
    """:class:`Pairs` of ``K`` boxes (xyxy pixels) with detector scores 1 (no detection rows)."""
    k = int(human_boxes.shape[0])
    idx = torch.arange(k)
    ones = torch.ones(k)
    return Pairs(idx, idx.clone(), torch.as_tensor(human_boxes).float(), torch.as_tensor(object_boxes).float(),
                 ones, ones.clone(), torch.as_tensor(object_labels).long(), tuple(image_size))


def interaction_slots(candidates: Tensor, vocabulary) -> Tensor:
    """``[K, C]`` True at real candidate slots whose verb is not the vocabulary's no-interaction verb."""
    valid = candidates >= 0
    no_int = vocabulary.no_interaction_verb
    if no_int is None:
        return valid
    verbs = torch.as_tensor(vocabulary.class_verbs)[candidates.clamp(min=0)]
    return valid & (verbs != no_int)


def pad_to_square(image, fill=(0, 0, 0)):
    """The PIL image centred on a square canvas of its longer side (EoID ``expand2square``, black padding)."""
    from PIL import Image

    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


class Teacher:
    """Base class: ``teacher(image, pairs, keys) -> (candidates [K, C], probabilities [K, C])``.

    ``keys`` name the pairs for the cache (e.g. ``(file_name, human_row, object_row)``); teachers
    whose scores never change (``cacheable``) compute each key once per run.
    """

    cacheable = True

    def __init__(self, vocabulary):
        self.vocabulary = vocabulary
        self._cache: dict[Hashable, tuple[list[int], list[float]]] = {}

    def score(self, image, pairs: Pairs) -> tuple[Tensor, Tensor]:
        """``(candidates [K, C] int64, probabilities [K, C])`` of ``K`` pairs of one image."""
        raise NotImplementedError

    def __call__(self, image, pairs: Pairs, keys: Sequence[Hashable] | None = None) -> tuple[Tensor, Tensor]:
        if len(pairs) == 0:
            return torch.zeros(0, 0, dtype=torch.long), torch.zeros(0, 0)
        if not self.cacheable or keys is None:
            return self.score(image, pairs)
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        if missing:
            cands, probs = self.score(image, pairs[torch.as_tensor(missing)])
            for row, i in enumerate(missing):
                valid = cands[row] >= 0
                self._cache[keys[i]] = (cands[row][valid].tolist(), probs[row][valid].tolist())
        lists = [self._cache[k] for k in keys]
        cands = pad_candidates([c for c, _ in lists])
        probs = torch.zeros(cands.shape)
        for row, (_, p) in enumerate(lists):
            probs[row, : len(p)] = torch.as_tensor(p)
        return cands, probs

    def update(self, model: nn.Module) -> None:
        """Called after every optimiser step with the (unwrapped) student recogniser."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class NoTeacher(Teacher):
    """No distillation targets (every probability 0, so the distillation loss has no rows)."""

    def score(self, image, pairs: Pairs) -> tuple[Tensor, Tensor]:
        k = len(pairs)
        return torch.full((k, 0), -1, dtype=torch.long), torch.zeros(k, 0)


def shares_base(config) -> bool:
    """Whether the likelihood teacher can score with the student's own backbone (:class:`FrozenBaseView`) and
    give exactly the scores of a separately loaded base (``config``: a ``FinetuneConfig``).

    Exact when the teacher's base is the student's (``teacher.model`` null), the language model trains
    through LoRA only (disabling the adapter gives back the base; ``full`` changes the base itself), no
    language warm-up changed the base before training (``model.pretrain_steps`` 0) and the base is not
    quantized (``prepare_model_for_kbit_training`` casts the student's norms to float32, so its scores
    differ from a freshly loaded 4-bit base's in the last digits). Otherwise a second copy is loaded.
    """
    return (config.teacher.kind == "likelihood" and config.teacher.model is None and config.adapter.method == "lora"
            and not config.model.pretrain_steps and config.model.quantization is None)


class FrozenBaseView:
    """The student's backbone as its frozen base: a context in which it computes what the base did.

    Inside :meth:`active`, every peft adapter of the model is disabled (LoRA and ``modules_to_save``
    give the original weights) and every other base weight that trains (projector, vision tower) is
    replaced, in its module's parameter table, by a frozen copy taken when the view was made, i.e.
    before training; the model is in eval mode. On leaving, the student's own parameter objects go
    back, untouched (its autograd graph still holds them), and the mode is restored. The copies cost
    what those parts weigh (a projector: a few percent of the base), not a second base.
    """

    def __init__(self, backbone):
        from peft import PeftModel

        self.backbone = backbone
        model = backbone.model
        self.adapters = [m for m in model.modules() if isinstance(m, PeftModel)]
        # (module, name) -> frozen copy; LoRA and modules_to_save weights are the adapters' business
        self.frozen: dict[tuple[nn.Module, str], nn.Parameter] = {}
        for module_name, module in model.named_modules():
            if "lora_" in module_name or "modules_to_save" in module_name:
                continue
            for name, p in module.named_parameters(recurse=False):
                if p.requires_grad:
                    self.frozen[(module, name)] = nn.Parameter(p.detach().clone(), requires_grad=False)

    @contextmanager
    def active(self):
        model = self.backbone.model
        was_training = model.training
        own = {}
        try:
            with torch.no_grad():
                for (module, name), copy in self.frozen.items():
                    own[(module, name)] = current = module._parameters[name]
                    if copy.dtype != current.dtype or copy.device != current.device:  # e.g. cast by an engine
                        copy.data = copy.data.to(current.device, current.dtype)
                    module._parameters[name] = copy
            model.eval()
            with _disabled(self.adapters):
                yield self.backbone
        finally:
            for (module, name), param in own.items():
                module._parameters[name] = param
            model.train(was_training)


@contextmanager
def _disabled(adapters: list):
    if not adapters:
        yield
        return
    with adapters[0].disable_adapter(), _disabled(adapters[1:]):
        yield


class LikelihoodTeacher(Teacher):
    """The frozen base MLLM in training-free mode (softmax over a pair's candidates, temperature ``T``,
    renormalised without the no-interaction candidate, as EoID's teacher leaves it out).

    ``backbone`` is a separately loaded base (frozen here), or ``view`` the student's backbone seen as
    its base (:class:`FrozenBaseView`; the student's weights are left as they are).
    """

    def __init__(self, backbone, vocabulary, temperature: float = 1.0, max_rows_per_pass: int = 64,
                 view: FrozenBaseView | None = None):
        from hoi_mllm.models.likelihood import LikelihoodConfig, LikelihoodScorer

        super().__init__(vocabulary)
        self.view = view
        if view is None:
            for p in backbone.parameters():
                p.requires_grad_(False)
            backbone.eval()
        self.scorer = LikelihoodScorer(backbone, vocabulary, LikelihoodConfig(
            normalisation="softmax", temperature=temperature, max_rows_per_pass=max_rows_per_pass))
        self.everything = frozenset(range(vocabulary.num_classes))

    @torch.no_grad()
    def score(self, image, pairs: Pairs) -> tuple[Tensor, Tensor]:
        with self.view.active() if self.view is not None else nullcontext():
            out = self.scorer.recognise(image, pairs, allowed_classes=self.everything)
        cands = out.candidates.cpu()
        probs = out.verb_scores.float().cpu() * interaction_slots(cands, self.vocabulary)
        return cands, probs / probs.sum(1, keepdim=True).clamp(min=1e-12)


class CLIPTeacher(Teacher):
    """CLIP on the pair's union crop against one text per candidate class (EoID).

    As EoID's ``loss_verb_labels``: the union crop is padded to a square (black, ``expand2square``)
    before CLIP's processor, so its resize and centre crop keep the whole crop; the softmax runs over
    the object's classes without the no-interaction class (EoID's ``nointer_mask``).

    Args:
        model: a transformers ``CLIPModel``; processor: its ``CLIPProcessor`` (image processor + tokenizer).
        prompt: text of a candidate, with ``{phrase}``, ``{verb}``, ``{object}``.
        temperature: the softmax is over ``logit_scale * cos / temperature``.
    """

    def __init__(self, model, processor, vocabulary, prompt: str = "a photo of a person {phrase}",
                 temperature: float = 1.0):
        super().__init__(vocabulary)
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.processor = processor
        self.temperature = float(temperature)
        v = vocabulary
        self.texts = [prompt.format(phrase=v.phrases[c], verb=v.verb_name(v.classes[c][1]),
                                    object=v.object_name(v.classes[c][0])) for c in range(v.num_classes)]
        self._text_features: Tensor | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def text_features(self) -> Tensor:
        """``[num_classes, E]`` L2-normalised text embeddings of every class (computed once)."""
        if self._text_features is None:
            tok = self.processor.tokenizer(self.texts, padding=True, truncation=True, return_tensors="pt")
            feats = self.model.get_text_features(**{k: v.to(self.device) for k, v in tok.items()}).pooler_output
            self._text_features = torch.nn.functional.normalize(feats.float(), dim=-1)
        return self._text_features

    @torch.no_grad()
    def score(self, image, pairs: Pairs) -> tuple[Tensor, Tensor]:
        from hoi_mllm.boxes import union_box
        from hoi_mllm.models.backbone import as_pil

        pil = as_pil(image)
        w, h = pil.size
        union = union_box(torch.as_tensor(pairs.human_boxes).float(), torch.as_tensor(pairs.object_boxes).float())
        crops = []
        for x1, y1, x2, y2 in union.tolist():
            x1, y1 = max(0, int(x1)), max(0, int(y1))
            x2, y2 = min(w, max(x1 + 1, int(round(x2)))), min(h, max(y1 + 1, int(round(y2))))
            crops.append(pad_to_square(pil.crop((x1, y1, x2, y2))))
        pixels = self.processor.image_processor(images=crops, return_tensors="pt")["pixel_values"].to(self.device)
        image_feats = torch.nn.functional.normalize(self.model.get_image_features(pixels).pooler_output.float(), dim=-1)
        logits = self.model.logit_scale.exp().float() * image_feats @ self.text_features().T  # [K, num_classes]
        cands = pad_candidates([self.vocabulary.classes_for_object(int(o)) for o in torch.as_tensor(pairs.object_labels)])
        valid = interaction_slots(cands, self.vocabulary)
        picked = torch.gather(logits.cpu(), 1, cands.clamp(min=0)) / self.temperature  # [K, C]
        probs = torch.softmax(picked.masked_fill(~valid, float("-inf")), dim=1)
        return cands, torch.nan_to_num(probs, nan=0.0) * valid


class EMATeacher(Teacher):
    """The exponential moving average of the student's trainable weights, run in eval mode.

    A frozen copy of the student (made when the teacher is built) whose trainable weights follow
    ``shadow = decay * shadow + (1 - decay) * student`` after every optimiser step; it scores all
    candidates (sigmoid scores). A copy, not weights swapped into the student, so the student's
    autograd graph is never touched. Not cached (it changes every step).
    """

    cacheable = False

    def __init__(self, recogniser: nn.Module, vocabulary, decay: float = 0.99):
        import copy

        super().__init__(vocabulary)
        self.decay = float(decay)
        self.everything = frozenset(range(vocabulary.num_classes))
        self.names = [n for n, p in recogniser.named_parameters() if p.requires_grad]
        self.model = copy.deepcopy(recogniser).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        params = dict(self.model.named_parameters())
        self.shadow = {n: params[n] for n in self.names}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for n in self.names:
            self.shadow[n].lerp_(params[n].detach().to(self.shadow[n].dtype), 1.0 - self.decay)

    @torch.no_grad()
    def score(self, image, pairs: Pairs) -> tuple[Tensor, Tensor]:
        out = self.model(image, pairs, mode="cache", allowed_classes=self.everything, shuffle=False)
        return out.candidates.cpu(), out.verb_scores.float().cpu()

    def state_dict(self) -> dict:
        return {"shadow": {n: t.detach().cpu().clone() for n, t in self.shadow.items()}}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        unknown = sorted(set(state["shadow"]) - set(self.shadow))
        if unknown:
            raise ValueError(f"EMA teacher state has weights the student does not train: {unknown[:3]}")
        for n, t in state["shadow"].items():
            self.shadow[n].copy_(t)


class AnnotationsTeacher(Teacher):
    """The oracle of detection-only sources (module docstring): reads the labels they dropped.

    Args:
        samples: training samples; those of detection-only sources carrying ``extra["dropped_labels"]`` are read,
            keyed by file name (the teacher's ``keys`` start with the file name).
        iou: min(IoU human, IoU object) at which a dropped pair names a pair's verbs.
    """

    cacheable = False

    def __init__(self, vocabulary, samples, iou: float = 0.5):
        from hoi_mllm.data.coco_detections import is_detection_only

        super().__init__(vocabulary)
        self.iou = float(iou)
        self.labels = {s.file_name: s.extra["dropped_labels"] for s in samples
                       if is_detection_only(s) and "dropped_labels" in s.extra}
        self.source_vocabulary = next((s.extra["dropped_vocabulary"] for s in samples
                                       if is_detection_only(s) and "dropped_vocabulary" in s.extra), None)
        if not self.labels:
            raise ValueError("teacher.kind=annotations: no detection-only image carries dropped labels (a COCO "
                             "detection file has none: the oracle needs an HOI file with its labels dropped)")

    def _classes(self, verb_names, obj: int) -> list[int]:
        from hoi_mllm.prompts.vocabulary import normalise_name

        by_name = {normalise_name(v): i for i, v in enumerate(self.vocabulary.verbs)}
        out = []
        for name in verb_names:
            v = by_name.get(normalise_name(name))
            c = None if v is None else self.vocabulary.class_of(v, obj)
            if c is not None and v != self.vocabulary.no_interaction_verb:
                out.append(int(c))
        return out

    def __call__(self, image, pairs: Pairs, keys: Sequence[Hashable] | None = None) -> tuple[Tensor, Tensor]:
        from hoi_mllm.boxes import box_iou

        k = len(pairs)
        objects = torch.as_tensor(pairs.object_labels).long()
        cands = pad_candidates([self.vocabulary.classes_for_object(int(o)) for o in objects]) if k else \
            torch.zeros(0, 0, dtype=torch.long)
        probs = torch.zeros(cands.shape)
        for i in range(k):
            dropped = self.labels.get(keys[i][0]) if keys is not None else None
            if dropped is None or dropped.num_pairs == 0:
                continue
            src = self.source_vocabulary
            names = [src.objects[int(o)] if o >= 0 else None for o in dropped.object_labels]
            same = torch.as_tensor([n is not None and self.vocabulary.object_index_or_none(n) == int(objects[i])
                                    for n in names])
            h = box_iou(torch.as_tensor(pairs.human_boxes[i:i + 1]).float(),
                        torch.as_tensor(dropped.human_boxes).float())[0]
            o = box_iou(torch.as_tensor(pairs.object_boxes[i:i + 1]).float(),
                        torch.as_tensor(np.nan_to_num(dropped.object_boxes)).float())[0]
            hits = torch.nonzero(same & (torch.minimum(h, o) >= self.iou)).flatten().tolist()
            positive = {c for g in hits for c in self._classes([src.verbs[v] for v in dropped.pair_verbs[g]],
                                                                int(objects[i]))}
            for slot, c in enumerate(cands[i].tolist()):
                probs[i, slot] = float(c in positive)
        return cands, probs


def build_teacher(config: TeacherConfig, vocabulary, recogniser: nn.Module, load_base=None,
                  share_base: bool = False, annotations=None) -> Teacher:
    """The teacher a config asks for.

    Args:
        config: :class:`~hoi_mllm.finetune.config.TeacherConfig`.
        recogniser: the student (for ``ema``, and ``likelihood`` with ``share_base``).
        load_base: ``load_base(name_or_None) -> Backbone``: loads the teacher MLLM (``likelihood``);
            ``None`` means the student's base model, as configured.
        share_base: ``likelihood``: score with the student's backbone as its base (:class:`FrozenBaseView`)
            instead of loading it again; only where :func:`shares_base` says that is exact. Build the teacher
            before training moves any weight: the view copies the trained base weights as they are.
        annotations: ``annotations``: the training samples (the oracle reads the detection-only ones' dropped labels).
    """
    if config.kind == "none":
        return NoTeacher(vocabulary)
    if config.kind == "ema":
        return EMATeacher(recogniser, vocabulary, config.ema_decay)
    if config.kind == "annotations":
        return AnnotationsTeacher(vocabulary, annotations or [])
    if config.kind == "likelihood":
        if share_base:
            backbone = recogniser.backbone
            return LikelihoodTeacher(backbone, vocabulary, config.temperature, config.max_rows_per_pass,
                                     view=FrozenBaseView(backbone))
        if load_base is None:
            raise ValueError("the likelihood teacher needs a loader of its base model")
        return LikelihoodTeacher(load_base(config.model), vocabulary, config.temperature, config.max_rows_per_pass)
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(config.model)
    processor = CLIPProcessor.from_pretrained(config.model)
    device = next(recogniser.parameters()).device
    return CLIPTeacher(model.to(device), processor, vocabulary, config.clip_prompt, config.temperature)
