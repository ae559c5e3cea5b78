"""Open-vocabulary detection: OWL-ViT / OWLv2 and Grounding DINO queried with the vocabulary's object names.

Every object of the vocabulary becomes a text query (``query_template`` formats its name, e.g.
``"a photo of a {}"``), so objects no detector was trained on (the unseen objects of a zero-shot
split) can still be found.

- OWL-ViT / OWLv2 (``Owlv2ForObjectDetection`` + ``Owlv2Processor``): one query per object; the
  class of a box is its best-scoring query. OWLv2 pads each image to a square at the bottom and
  right before resizing, so its normalised boxes are scaled by the padded side.
- Grounding DINO (``AutoModelForZeroShotObjectDetection``): the names are joined into captions
  ``"person. bicycle. cup."`` of at most ``config.max_text_len`` tokens (several captions when the
  vocabulary is long); the score of (box, object) is the mean sigmoid score over the object name's
  tokens (a positive map from the tokenizer's character offsets).
"""
from __future__ import annotations

import torch
from PIL import Image
from torchvision.ops import box_convert

from hoi_mllm.detectors.base import Detector, DetectorOptions
from hoi_mllm.detectors.hf import load_pretrained, parse_dtype
from hoi_mllm.detectors.registry import register_detector
from hoi_mllm.prompts import Vocabulary
from hoi_mllm.records import Detections

OWL_TYPES = ("owlv2", "owlvit")
GDINO_TYPES = ("grounding-dino", "mm-grounding-dino")
DEFAULT_TEMPLATES = {"owlv2": "a photo of a {}", "owlvit": "a photo of a {}"}


def caption_chunks(names: list[str], tokenize, max_tokens: int) -> list[tuple[str, list[int], list[tuple[int, int]]]]:
    """Split names into captions ``"a. b. c."`` of at most ``max_tokens`` tokens each.

    Args:
        tokenize: ``str -> number of tokens`` (special tokens included).
    Returns:
        ``(caption, name indices, character span of each name in the caption)`` per caption.
    """
    chunks: list[tuple[str, list[int], list[tuple[int, int]]]] = []
    text, idx, spans = "", [], []
    for i, name in enumerate(names):
        start = len(text) + (1 if text else 0)
        candidate = (text + " " if text else "") + name + "."
        if text and tokenize(candidate) > max_tokens:
            chunks.append((text, idx, spans))
            text, idx, spans, start, candidate = "", [], [], 0, name + "."
        if tokenize(candidate) > max_tokens:
            raise ValueError(f"object name {name!r} alone is longer than the model's {max_tokens} text tokens")
        text = candidate
        idx.append(i)
        spans.append((start, start + len(name)))
    if text:
        chunks.append((text, idx, spans))
    return chunks


def positive_map(offsets: list[tuple[int, int]], spans: list[tuple[int, int]], length: int) -> torch.Tensor:
    """``[C, length]`` row-normalised map: token ``t`` belongs to name ``c`` when its characters lie in the span.

    ``offsets`` are the tokenizer's ``(start, end)`` per token (``(0, 0)`` for special tokens).
    """
    pos = torch.zeros(len(spans), length)
    for t, (s, e) in enumerate(offsets[:length]):
        if e <= s:
            continue
        for c, (cs, ce) in enumerate(spans):
            if s >= cs and e <= ce:
                pos[c, t] = 1.0
    if (pos.sum(1) == 0).any():
        raise ValueError("an object name has no tokens in its caption (truncated?)")
    return pos / pos.sum(1, keepdim=True)


@register_detector("hf-open-vocab", "open-vocab", "owl", "owlv2", "owlvit")
class OpenVocabDetector(Detector):
    """OWL-ViT / OWLv2 or Grounding DINO with the vocabulary's object names as queries.

    Args:
        model: hub id or local folder of an OWL-ViT, OWLv2 or Grounding DINO checkpoint (the family
            is read from its ``config.json``).
        query_template: format string for each object name (default: ``"a photo of a {}"`` for OWL,
            ``"{}"`` for Grounding DINO).
        revision: hub revision.
        dtype: ``float32``, ``float16`` or ``bfloat16``.
    """

    def __init__(self, model: str = "google/owlv2-base-patch16-ensemble", *, query_template: str | None = None,
                 revision: str | None = None, dtype: str = "float32",
                 vocabulary: str | Vocabulary = "hico-det", options: DetectorOptions | None = None):
        super().__init__(vocabulary, options)
        from transformers import AutoConfig, AutoModelForZeroShotObjectDetection, AutoProcessor

        kw = {"revision": revision} if revision else {}
        config = load_pretrained(AutoConfig.from_pretrained, model, "model config", **kw)
        self.family = config.model_type
        if self.family not in OWL_TYPES + GDINO_TYPES:
            raise ValueError(f"open-vocabulary detector {model!r} is a {self.family!r} model; "
                             f"supported: {', '.join(OWL_TYPES + GDINO_TYPES)}")
        self.model_name = str(model)
        self.device, self.dtype = self.options.torch_device(), parse_dtype(dtype)
        self.processor = load_pretrained(AutoProcessor.from_pretrained, model, "processor", **kw)
        self.model = load_pretrained(AutoModelForZeroShotObjectDetection.from_pretrained, model,
                                     "zero-shot detection model", dtype=self.dtype, **kw).to(self.device).eval()
        template = query_template or DEFAULT_TEMPLATES.get(self.family, "{}")
        if "{}" not in template:
            raise ValueError(f"query_template {template!r} must contain {{}} where the object name goes")
        self.queries = [template.format(self.vocabulary.object_name(o)) for o in range(self.vocabulary.num_objects)]
        if self.family in OWL_TYPES:
            length = self.model.config.text_config.max_position_embeddings
            self.text = self.processor.tokenizer(self.queries, padding="max_length", truncation=True,
                                                 max_length=length, return_tensors="pt").to(self.device)
        else:
            self._prepare_captions()

    def _prepare_captions(self) -> None:
        tok = self.processor.tokenizer
        max_len = int(self.model.config.max_text_len)
        self.captions = []  # (tokenizer output [1, T], object ids [C], positive map [C, T])
        for text, idx, spans in caption_chunks(self.queries, lambda s: len(tok(s)["input_ids"]), max_len):
            enc = tok(text, return_offsets_mapping=True)
            pos = positive_map(enc.pop("offset_mapping"), spans, len(enc["input_ids"]))
            self.captions.append((tok(text, return_tensors="pt").to(self.device), torch.tensor(idx), pos.to(self.device)))

    def _pixels(self, images: list[Image.Image]) -> dict:
        pixels = self.processor.image_processor(images=images, return_tensors="pt").to(self.device)
        pixels["pixel_values"] = pixels["pixel_values"].to(self.dtype)
        return dict(pixels)

    @torch.inference_mode()
    def detect_batch(self, images: list[Image.Image], file_names: list[str | None]) -> list[Detections]:
        return self._detect_owl(images) if self.family in OWL_TYPES else self._detect_grounding(images)

    def _detect_owl(self, images: list[Image.Image]) -> list[Detections]:
        b = len(images)
        outputs = self.model(input_ids=self.text["input_ids"].repeat(b, 1),
                             attention_mask=self.text["attention_mask"].repeat(b, 1), **self._pixels(images))
        if self.family == "owlv2":  # boxes are relative to the image padded to a square
            sizes = [(max(im.size), max(im.size)) for im in images]
        else:
            sizes = [(im.height, im.width) for im in images]
        results = self.processor.image_processor.post_process_object_detection(
            outputs, threshold=self.options.min_score, target_sizes=sizes)
        return [Detections(r["boxes"].float().cpu(), r["scores"].float().cpu(), r["labels"].long().cpu(),
                           im.size, self.vocabulary.name) for r, im in zip(results, images)]

    def _detect_grounding(self, images: list[Image.Image]) -> list[Detections]:
        b = len(images)
        pixels = self._pixels(images)
        scale = torch.tensor([[im.width, im.height, im.width, im.height] for im in images], dtype=torch.float32)  # [B, 4]
        per_image: list[list[Detections]] = [[] for _ in images]
        for text, object_ids, pos in self.captions:
            outputs = self.model(**pixels, **{k: v.expand(b, -1) for k, v in text.items()})
            prob = outputs.logits[..., : pos.shape[1]].float().sigmoid()  # [B, Q, T]
            scores = (prob @ pos.T).cpu()  # [B, Q, C] mean over each name's tokens
            boxes = box_convert(outputs.pred_boxes.float().cpu(), "cxcywh", "xyxy") * scale[:, None]  # [B, Q, 4]
            num_q, num_c = scores.shape[1:]
            k = min(num_q, num_q * num_c)
            top, flat = scores.reshape(b, -1).topk(k, dim=1)  # [B, k]
            for i in range(b):
                keep = top[i] >= self.options.min_score
                q, c = flat[i][keep] // num_c, flat[i][keep] % num_c
                per_image[i].append(Detections(boxes[i, q], top[i][keep], object_ids[c], images[i].size, self.vocabulary.name))
        return [Detections.cat(d) for d in per_image]


@register_detector("grounding-dino", "gdino", "mm-grounding-dino")
class GroundingDinoDetector(OpenVocabDetector):
    """Grounding DINO (the same adapter as ``hf-open-vocab``, with a Grounding DINO checkpoint by default)."""

    def __init__(self, model: str = "IDEA-Research/grounding-dino-base", *, query_template: str | None = None,
                 revision: str | None = None, dtype: str = "float32",
                 vocabulary: str | Vocabulary = "hico-det", options: DetectorOptions | None = None):
        super().__init__(model, query_template=query_template, revision=revision, dtype=dtype,
                         vocabulary=vocabulary, options=options)
