"""Shared test utilities: generated images and annotations, tiny random-weight detection models.

Every model here is a real transformers class built from a small config with random weights and
saved to a folder with its processor (tokenizers made in code), so adapters load it the way they
load a hub checkpoint, offline. Import with ``from helpers import ...`` (pytest puts ``tests/`` on
the path).
"""
from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
from PIL import Image

from hoi_mllm.data.sample import HOISample


def scene_image(size: tuple[int, int] = (96, 64), seed: int = 0, boxes=None) -> Image.Image:
    """An RGB image of ``size = (w, h)``: a noisy background with filled rectangles at ``boxes`` (xyxy)."""
    rng = np.random.default_rng(seed)
    w, h = size
    pixels = rng.integers(60, 120, size=(h, w, 3), dtype=np.uint8)
    for k, box in enumerate(boxes if boxes is not None else []):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        pixels[y1:y2, x1:x2] = rng.integers(0, 255, size=3, dtype=np.uint8) if k else (220, 180, 140)
    return Image.fromarray(pixels, "RGB")


def make_sample(file_name: str, image_size, boxes, labels, pairs=(), verbs=None) -> HOISample:
    """An :class:`HOISample` with instances ``boxes`` / ``labels`` and ``pairs = [(human_row, object_row), ...]``."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    pairs = list(pairs)
    verbs = verbs if verbs is not None else [(0,)] * len(pairs)
    return HOISample(
        file_name=file_name,
        image_size=tuple(image_size) if image_size is not None else None,
        boxes=boxes,
        labels=np.asarray(labels, dtype=np.int64).reshape(-1),
        pair_human=np.asarray([p[0] for p in pairs], dtype=np.int64),
        pair_object=np.asarray([p[1] for p in pairs], dtype=np.int64),
        pair_verbs=[tuple(v) for v in verbs],
        pair_classes=[tuple(-1 for _ in v) for v in verbs],
    )


def save_images(folder: Path, specs: dict[str, tuple[tuple[int, int], int]]) -> dict[str, Path]:
    """Write ``name -> (size, seed)`` scene images into ``folder``; return name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (size, seed) in specs.items():
        path = folder / name
        scene_image(size, seed).save(path)
        out[name] = path
    return out


def _tiny_resnet(config_cls, out_features):
    return config_cls(num_channels=3, embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1],
                      out_features=out_features, layer_type="basic")


def tiny_detr(folder: Path, names: list[str]) -> Path:
    """A random ``DetrForObjectDetection`` (tiny ResNet backbone, no timm, no hub weights) + processor."""
    from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor, ResNetConfig

    config = DetrConfig(
        backbone_config=_tiny_resnet(ResNetConfig, ["stage4"]), d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16, num_queries=12,
        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
    )
    DetrForObjectDetection(config).eval().save_pretrained(folder)
    DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(folder)
    return folder


def tiny_rtdetr(folder: Path, names: list[str]) -> Path:
    """A random ``RTDetrForObjectDetection`` (tiny RT-DETR ResNet backbone) + processor."""
    from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrImageProcessor, RTDetrResNetConfig

    config = RTDetrConfig(
        backbone_config=_tiny_resnet(RTDetrResNetConfig, ["stage2", "stage3", "stage4"]),
        encoder_in_channels=[16, 16, 32], encoder_hidden_dim=16, d_model=16, encoder_ffn_dim=16, decoder_ffn_dim=16,
        encoder_attention_heads=2, decoder_attention_heads=2, decoder_layers=1, num_queries=12,
        decoder_in_channels=[16, 16, 16], num_denoising=0,
        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
    )
    RTDetrForObjectDetection(config).eval().save_pretrained(folder)
    RTDetrImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


CHARS = string.ascii_lowercase + string.digits + ".,'-_"


def clip_tokenizer(folder: Path, max_length: int = 16):
    """A character-level ``CLIPTokenizer`` (BPE with no merges) written to ``folder``."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate(CHARS)}
    vocab.update({c + "</w>": len(CHARS) + i for i, c in enumerate(CHARS)})
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>",
                         model_max_length=max_length)


def tiny_owlv2(folder: Path, grid_boxes: bool = True) -> Path:
    """A random ``Owlv2ForObjectDetection`` (64 px, 16 px patches) + ``Owlv2Processor`` with a tokenizer made in code.

    ``grid_boxes`` zeroes the last layer of the box head, so that each patch predicts OWLv2's prior
    box: centred on the patch (of the square, padded image), a quarter of its side.
    """
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    tok = clip_tokenizer(folder / "tokenizer_src", max_length=16)
    text = dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16, bos_token_id=tok.convert_tokens_to_ids("<|startoftext|>"),
                eos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=64, patch_size=16)
    model = Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision, projection_dim=16)).eval()
    if grid_boxes:
        with torch.no_grad():
            model.box_head.dense2.weight.zero_()
            model.box_head.dense2.bias.zero_()
    model.save_pretrained(folder)
    Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 64, "width": 64}), tokenizer=tok).save_pretrained(folder)
    return folder


def tiny_grounding_dino(folder: Path, max_text_len: int = 256, whole_words: bool = True) -> Path:
    """A random ``GroundingDinoForObjectDetection`` (tiny ResNet + BERT) + processor with a WordPiece tokenizer made in code.

    The tokenizer knows the words of the HICO-DET object names when ``whole_words`` (the 80 names
    then fit one caption); otherwise it spells words letter by letter (several captions).
    """
    from transformers import (BertConfig, BertTokenizer, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessor, GroundingDinoProcessor, ResNetConfig)

    src = folder / "tokenizer_src"
    src.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "'", "-", "_"] + list(string.ascii_lowercase)
    words += ["##" + c for c in string.ascii_lowercase]
    if whole_words:
        from hoi_mllm.prompts import load_vocabulary

        vocab = load_vocabulary("hico-det")
        names = {w for o in range(vocab.num_objects) for w in vocab.object_name(o).split()}
        words += sorted(names - set(words))
    (src / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = BertTokenizer(str(src / "vocab.txt"))
    config = GroundingDinoConfig(
        backbone_config=_tiny_resnet(ResNetConfig, ["stage2", "stage3", "stage4"]),
        text_config=BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=max_text_len),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=16, decoder_ffn_dim=16, num_queries=10, num_feature_levels=4, max_text_len=max_text_len,
        encoder_n_points=2, decoder_n_points=2, disable_custom_kernels=True,
    )
    GroundingDinoForObjectDetection(config).eval().save_pretrained(folder)
    GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}),
                           tokenizer=tok).save_pretrained(folder)
    return folder
