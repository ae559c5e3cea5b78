"""LLaVA-style adapters: ``LlavaForConditionalGeneration`` (LLaVA-1.5) and LLaVA-OneVision.

Image: resized to the vision encoder's square input (``image_size x image_size``) without centre
crop or padding, so original pixel ``(x, y)`` lands at grid ``(x * G / W, y * G / H)`` with
``G = image_size / patch_size``. The projected patch features (LM width) are the grid and, in
row-major order, the image tokens of the prefix (a CLS feature, kept by the ``"full"`` feature
strategy of CLIP towers, goes before them in the prompt but not in the grid).

LLaVA-OneVision: only the base (global) view is used. Its processor also cuts the image into
"anyres" tiles at a higher resolution and the model appends them, unpadded and with an
``image_newline`` token per row, after the base view; those tiles are dropped here (and no newline
token is added). The base view alone covers the whole image with one linear box-to-grid map, keeps
the prefix short (``G * G`` tokens), and is what OneVision itself feeds per image in its
multi-image mode. The trade-off: less detail than the anyres tiles would give.

Positions are plain 1D: ``position_ids [1, T] = 0..T-1`` and ``next_position = T``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from hoi_mllm.models.backbone import Backbone, ChatFormat, ImageEncoding, as_pil


class LlavaBackbone(Backbone):
    """Adapter of ``LlavaForConditionalGeneration`` (prompt ``USER: <image>... ASSISTANT:``, BOS first)."""

    family = "llava"
    position_rank = 1
    VISION_PATH = "model.vision_tower"
    PROJECTOR_PATH = "model.multi_modal_projector"
    HUB_PREFIXES = (("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."),
                    ("model.vision_tower.", "vision_tower."), ("model.multi_modal_projector.", "multi_modal_projector."),
                    ("model.image_newline", "image_newline"))
    add_bos = True
    chat = ChatFormat(user_start="USER: ", user_end=" ", assistant_start="ASSISTANT:")

    def __init__(self, model, tokenizer, processor, num_pair_tokens: int, name_or_path: str = ""):
        super().__init__(model, tokenizer, processor, num_pair_tokens, name_or_path)
        vision = model.config.vision_config
        self.input_side = int(vision.image_size)
        self.grid_side = self.input_side // int(vision.patch_size)
        self.image_token_id = int(model.config.image_token_id)

    # ------------------------------------------------------------------ image -> features
    def pixel_values(self, pil) -> Tensor:
        """``[1, 3, S, S]``: the image resized to the square input, no crop, normalised."""
        square = {"height": self.input_side, "width": self.input_side}
        out = self.processor.image_processor(images=[pil], return_tensors="pt", size=square, do_center_crop=False)
        return out["pixel_values"].to(self.device)

    def image_features(self, pixel_values: Tensor) -> Tensor:
        """``[1, 3, S, S]`` -> ``[N, D]`` projected features (``N = G * G``, plus CLS for ``"full"`` CLIP)."""
        cfg = self.model.config
        out = self.model.model.get_image_features(
            pixel_values=pixel_values.to(self.vision_encoder.dtype),
            vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
        )
        return out.pooler_output[0]

    # ------------------------------------------------------------------ prefix
    def encode_prefix(self, image, text_before: str = "", text_after: str = "") -> ImageEncoding:
        """Prefix = [BOS] + chat opening + ``text_before`` + image tokens + ``text_after``.

        Returns an :class:`ImageEncoding` with ``grid [D, G, G]``, ``position_ids [1, T]`` and
        ``next_position = T``.
        """
        pil = as_pil(image)
        width, height = pil.size
        visual = self.image_features(self.pixel_values(pil)).to(self.dtype)  # [N, D]
        G = self.grid_side
        if visual.shape[0] < G * G:
            raise ValueError(f"{self.family}: {visual.shape[0]} image features, expected at least {G}x{G}")
        bos = [self.tokenizer.bos_token_id] if self.add_bos and self.tokenizer.bos_token_id is not None else []
        before = torch.cat([torch.tensor(bos, dtype=torch.long), self.tokenize(self.chat.user_start + text_before)])
        after = self.tokenize(text_after)
        pads = torch.full((visual.shape[0],), self.image_token_id, dtype=torch.long)
        input_ids = torch.cat([before, pads, after]).to(self.device)  # [T]
        is_image = input_ids == self.image_token_id
        if int(is_image.sum()) != visual.shape[0]:
            raise ValueError("the prompt text contains image tokens; pass the image, not placeholders")
        embeds = self.embed(input_ids).masked_scatter(is_image[:, None], visual)  # [T, D]
        T = input_ids.shape[0]
        start = len(before)
        return ImageEncoding(
            input_ids=input_ids,
            inputs_embeds=embeds,
            position_ids=torch.arange(T, device=self.device)[None],
            next_position=T,
            grid=visual[-G * G:].view(G, G, -1).permute(2, 0, 1),
            image_size=(width, height),
            grid_scale=(G / width, G / height),
            input_size=(self.input_side, self.input_side),
            image_span=(start, start + visual.shape[0]),
        )

    def box_text(self, box: Tensor, enc: ImageEncoding) -> str:
        """``[x1, y1, x2, y2]`` normalised to 0..1 (two decimals), as LLaVA-1.5's referring data writes
        boxes (the square resize keeps normalised coordinates)."""
        box = torch.as_tensor(box, dtype=torch.float64).flatten().tolist()
        width, height = enc.image_size
        coords = ", ".join(f"{min(max(v / s, 0.0), 1.0):.2f}" for v, s in zip(box, (width, height) * 2))
        return f"[{coords}]"

class LlavaOnevisionBackbone(LlavaBackbone):
    """Adapter of ``LlavaOnevisionForConditionalGeneration``: base view only (see the module docstring)."""

    family = "llava-onevision"
    add_bos = False
    chat = ChatFormat(user_start="<|im_start|>user\n", user_end="<|im_end|>\n", assistant_start="<|im_start|>assistant\n")

    def pixel_values(self, pil) -> Tensor:
        """``[1, 3, S, S]``: the base view (the whole image resized to the square input), no anyres tiles."""
        square = [[self.input_side, self.input_side]]
        out = self.processor.image_processor(images=[pil], return_tensors="pt", image_grid_pinpoints=square)
        return out["pixel_values"][:, 0].to(self.device)  # first view of each image is the base view

    def image_features(self, pixel_values: Tensor) -> Tensor:
        """Vision tower -> selected layer(s) -> feature strategy -> projector, on the base view only."""
        cfg = self.model.config
        tower = self.vision_encoder
        out = tower(pixel_values.to(tower.dtype), output_hidden_states=True, return_dict=True)
        layer = cfg.vision_feature_layer
        layers = [layer] if isinstance(layer, int) else list(layer)
        selected = torch.cat([out.hidden_states[i] for i in layers], dim=-1)  # [1, N, C]
        if cfg.vision_feature_select_strategy == "default":
            selected = selected[:, 1:]
        return self.projector(selected)[0]
