"""Qwen2-VL and Qwen2.5-VL adapter (``Qwen2VLForConditionalGeneration``, ``Qwen2_5_VLForConditionalGeneration``).

Image: smart-resized as a whole (aspect ratio kept, both sides multiples of ``patch x merge``, the
pixel count within ``[min_pixels, max_pixels]``), no crop, so original pixel ``x`` lands at grid
``x * Wg / W``. The vision encoder's merged tokens (``Hg x Wg``, LM width) are the grid and, in
row-major order, the ``<|image_pad|>`` tokens of the prefix.

Positions: multimodal rotary positions ``[3, T]`` computed by the model's own ``get_rope_index``
(transformers 5 wants ``mm_token_type_ids``: 1 at image tokens, 0 elsewhere). Visual tokens of an
``Hg x Wg`` image take (t, row, column) positions starting at the running position, and the text
after the image continues from ``max + 1``; so ``next_position = max(prefix positions) + 1``, and
suffix token ``j`` sits at ``next_position + j`` on all three axes.

Prompt: ``<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n`` +
``text_before`` + ``<|vision_start|><|image_pad|>...<|vision_end|>`` + ``text_after``, as the
family's chat template writes it.
"""
from __future__ import annotations

import torch
from torch import Tensor

from hoi_mllm.models.backbone import Backbone, ChatFormat, ImageEncoding, as_pil

FAMILIES = {"qwen2_vl": "qwen2-vl", "qwen2_5_vl": "qwen2.5-vl"}


class QwenVLBackbone(Backbone):
    """Adapter of Qwen2-VL / Qwen2.5-VL. ``min_pixels`` / ``max_pixels`` bound the resized image
    (``None``: the processor's setting); the grid has at most ``max_pixels / (patch * merge)^2`` tokens."""

    position_rank = 3
    VISION_PATH = "model.visual"
    PROJECTOR_PATH = "model.visual.merger"
    HUB_PREFIXES = (("model.language_model.", "model."), ("model.visual.", "visual."))
    chat = ChatFormat(
        user_start="<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
        user_end="<|im_end|>\n",
        assistant_start="<|im_start|>assistant\n",
    )

    def __init__(self, model, tokenizer, processor, num_pair_tokens: int, name_or_path: str = "",
                 min_pixels: int | None = None, max_pixels: int | None = None):
        model_type = model.config.model_type
        if model_type not in FAMILIES:
            raise ValueError(f"QwenVLBackbone takes model types {', '.join(FAMILIES)}, got {model_type!r}")
        self.family = FAMILIES[model_type]
        super().__init__(model, tokenizer, processor, num_pair_tokens, name_or_path)
        size = dict(processor.image_processor.size)
        if min_pixels is not None:
            size["shortest_edge"] = int(min_pixels)
        if max_pixels is not None:
            size["longest_edge"] = int(max_pixels)
        if size["shortest_edge"] > size["longest_edge"]:
            raise ValueError(f"min_pixels {size['shortest_edge']} exceeds max_pixels {size['longest_edge']}")
        self.image_kwargs = {"size": size}
        self.image_token_id = int(model.config.image_token_id)

    @property
    def merge_size(self) -> int:
        return int(self.model.config.vision_config.spatial_merge_size)

    @property
    def patch_size(self) -> int:
        return int(self.model.config.vision_config.patch_size)

    def encode_prefix(self, image, text_before: str = "", text_after: str = "") -> ImageEncoding:
        """Prefix = chat opening + ``text_before`` + the image + ``text_after`` (see the module docstring).

        Returns an :class:`ImageEncoding` with ``grid [D, Hg, Wg]``, ``position_ids [3, T]`` and
        ``extra = {"image_grid_thw": [1, 3], "mm_token_type_ids": [1, T]}``.
        """
        pil = as_pil(image)
        width, height = pil.size
        inputs = self.processor.image_processor(images=[pil], return_tensors="pt", **self.image_kwargs)
        pixel_values = inputs["pixel_values"].to(self.device)
        thw = inputs["image_grid_thw"].to(self.device)  # [1, 3] patches (t, h, w)
        _, gh, gw = (int(v) for v in thw[0])
        hg, wg = gh // self.merge_size, gw // self.merge_size
        visual = self.model.model.get_image_features(pixel_values, thw).pooler_output[0].to(self.dtype)  # [Hg*Wg, D]

        before = self.tokenize(self.chat.user_start + text_before + "<|vision_start|>")
        after = self.tokenize("<|vision_end|>" + text_after)
        pads = torch.full((hg * wg,), self.image_token_id, dtype=torch.long)
        input_ids = torch.cat([before, pads, after]).to(self.device)  # [T]
        is_image = input_ids == self.image_token_id
        if int(is_image.sum()) != hg * wg:
            raise ValueError("the prompt text contains <|image_pad|> tokens; pass the image, not placeholders")
        embeds = self.embed(input_ids).masked_scatter(is_image[:, None], visual)  # [T, D]
        mm_token_type_ids = is_image.int()[None]  # [1, T]
        positions, _ = self.model.model.get_rope_index(input_ids[None], mm_token_type_ids=mm_token_type_ids,
                                                       image_grid_thw=thw)  # [3, 1, T]
        positions = positions[:, 0]
        start = len(before)
        return ImageEncoding(
            input_ids=input_ids,
            inputs_embeds=embeds,
            position_ids=positions,
            next_position=int(positions.max()) + 1,
            grid=visual.view(hg, wg, -1).permute(2, 0, 1),
            image_size=(width, height),
            grid_scale=(wg / width, hg / height),
            extra={"image_grid_thw": thw, "mm_token_type_ids": mm_token_type_ids},
            input_size=(gw * self.patch_size, gh * self.patch_size),
            image_span=(start, start + hg * wg),
        )

    def box_text(self, box: Tensor, enc: ImageEncoding) -> str:
        """A box (xyxy pixels of the original image) in the family's grounding convention.

        Qwen2-VL: ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>`` with integers in ``[0, 1000)``
        (``floor(x / W * 1000)``, clamped), its published referring format. Qwen2.5-VL: absolute
        pixels of the resized input image (the smart-resized ``input_size``), ``x1,y1,x2,y2`` as
        DA-HOI's ``data_da_hoi.py`` writes them: ``int(x / W * input_width)`` (truncated).
        """
        box = torch.as_tensor(box, dtype=torch.float64).flatten().tolist()
        width, height = enc.image_size
        rel = [min(max(v / s, 0.0), 1.0) for v, s in zip(box, (width, height) * 2)]
        if self.family == "qwen2-vl":
            x1, y1, x2, y2 = (min(int(r * 1000), 999) for r in rel)
            return f"<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>"
        in_w, in_h = enc.input_size
        return ",".join(str(int(r * s)) for r, s in zip(rel, (in_w, in_h) * 2))
