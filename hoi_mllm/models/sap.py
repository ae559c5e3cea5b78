"""Spatial-aware pooling (SAP): the MLLM's own visual tokens, pooled inside a pair's boxes, become pair tokens.

For every human-object pair, RoI-align (torchvision, ``aligned=True``) reads the visual token grid
``[D, Hg, Wg]`` of the backbone inside the human, the object and the union box; an encoding of
the pair's geometry (normalised boxes, relative offset and log scale, overlap, distance and
direction as sin/cos) joins them, and small MLPs fuse everything into ``num_pair_tokens`` tokens
of the language model's width ``D`` (they replace the ``<|pair_i|>`` placeholders of the prompt)
plus one interactiveness logit per pair.

With ``context_layers > 0`` (DA-HOI's choice: 2), the fused pair feature then queries the whole
visual grid through that many layers of conditional cross-attention (DA-HOI's
``qwenvl/model/attention.py``: per head, the content part of query and key is concatenated with a
sinusoidal position part: the human's and the object's box centres for the query, the grid cell's
centre for the key; residual + LayerNorm, then a feed-forward block), so pair tokens and
interactiveness see the scene beyond the three regions.

Boxes are xyxy pixels of the original image; the encoding's ``grid_scale = (sx, sy)`` maps them to
grid coordinates, where grid cell ``(i, j)`` covers ``[j, j + 1] x [i, i + 1]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align

from hoi_mllm.boxes import (
    box_area,
    box_iou_aligned,
    box_xyxy_to_cxcywh,
    intersection_box,
    normalise_boxes,
    union_box,
)

NUM_REGIONS = 3  # human, object, union


@dataclass(frozen=True)
class SAPConfig:
    """Spatial-aware pooling.

    Attributes:
        num_pair_tokens: pair tokens per pair fed to the language model (``<|pair_0|>`` ...); the
            hidden state at the last one is the pair's query in suffix placement.
        pool_size: RoI-align output is ``pool_size x pool_size`` cells per box.
        sampling_ratio: RoI-align sampling points per cell and axis (fixed, so zero-area or tiny
            boxes still sample the grid).
        hidden_size: width of the fusion MLPs.
        min_box_cells: boxes narrower or shorter than this many grid cells are widened about
            their centre (a zero-area box then reads the cell it sits in).
        dropout: dropout inside the fusion MLP (training only).
        context_layers: layers of the scene-context decoder (cross-attention from the pair feature
            to every grid cell); 0 turns it off (pair features see only the three regions).
        context_heads: attention heads of that decoder (``hidden_size`` must be divisible by it).
        context_ffn: width of the decoder's feed-forward block (DA-HOI: 4 x its 512).
        context_dropout: dropout in the decoder (DA-HOI: 0.1; training only).
    """

    num_pair_tokens: int = field(default=1, metadata={"help": "pair tokens per pair (1 or 3 are typical)"})
    pool_size: int = field(default=3, metadata={"help": "RoI-align output side, in cells"})
    sampling_ratio: int = field(default=2, metadata={"help": "RoI-align samples per cell and axis"})
    hidden_size: int = field(default=256, metadata={"help": "width of the fusion MLPs"})
    min_box_cells: float = field(default=1.0, metadata={"help": "minimum box side in grid cells"})
    dropout: float = field(default=0.0, metadata={"help": "dropout in the fusion MLP"})
    context_layers: int = field(default=0, metadata={
        "help": "scene-context decoder layers (cross-attention pair -> whole grid, DA-HOI: 2); 0: off"})
    context_heads: int = field(default=8, metadata={"help": "heads of the scene-context decoder (DA-HOI: 8)"})
    context_ffn: int | None = field(default=None, metadata={
        "help": "feed-forward width of the scene-context decoder (null: 4 x hidden_size, as DA-HOI's 2048 = 4 x 512)"})
    context_dropout: float = field(default=0.1, metadata={"help": "dropout in the scene-context decoder (DA-HOI: 0.1)"})

    def __post_init__(self):
        if int(self.context_layers) < 0:
            raise ValueError(f"SAPConfig.context_layers must be >= 0, got {self.context_layers!r}")
        if int(self.context_heads) < 1 or (self.context_layers and int(self.hidden_size) % int(self.context_heads)):
            raise ValueError(f"SAPConfig.context_heads ({self.context_heads!r}) must be >= 1 and divide "
                             f"hidden_size ({self.hidden_size!r})")
        if self.context_ffn is not None and int(self.context_ffn) < 1:
            raise ValueError(f"SAPConfig.context_ffn must be >= 1 or null, got {self.context_ffn!r}")
        if not 0.0 <= self.context_dropout < 1.0:
            raise ValueError(f"SAPConfig.context_dropout must be in [0, 1), got {self.context_dropout!r}")
        for name in ("num_pair_tokens", "pool_size", "sampling_ratio", "hidden_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SAPConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.min_box_cells <= 0:
            raise ValueError(f"SAPConfig.min_box_cells must be > 0, got {self.min_box_cells!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SAPConfig.dropout must be in [0, 1), got {self.dropout!r}")


# --------------------------------------------------------------------------- pure functions
SPATIAL_FEATURES = 25


def pair_spatial_features(human: Tensor, obj: Tensor, image_size: tuple[int, int], eps: float = 1.0) -> Tensor:
    """Geometry of each pair, invariant to the image's pixel scale.

    Args:
        human, obj: ``[P, 4]`` xyxy pixels.
        image_size: ``(width, height)``.
        eps: pixels added to sides before logs and divisions (zero-area boxes stay finite).
    Returns:
        ``[P, SPATIAL_FEATURES]`` (25): normalised human, object and union boxes (12), relative
        centre offset in units of the human's size (2), log width / height / area ratios object
        over human (3), IoU and intersection over each area (3), normalised areas (2), centre
        distance over the image diagonal (1), direction human -> object as sin, cos (2; both 0
        when the centres coincide).
    """
    human, obj = human.float(), obj.float()
    w, h = float(image_size[0]), float(image_size[1])
    union = union_box(human, obj)
    hc, oc = box_xyxy_to_cxcywh(human), box_xyxy_to_cxcywh(obj)  # [P, 4] cx, cy, w, h
    hw, hh = hc[:, 2] + eps, hc[:, 3] + eps
    ow, oh = oc[:, 2] + eps, oc[:, 3] + eps
    dx, dy = oc[:, 0] - hc[:, 0], oc[:, 1] - hc[:, 1]
    area_h, area_o = box_area(human), box_area(obj)
    inter = box_area(intersection_box(human, obj))
    diag = math.hypot(w, h)
    dist = torch.sqrt(dx * dx + dy * dy)
    angle = torch.atan2(dy, dx)
    feats = [
        normalise_boxes(human, (w, h)), normalise_boxes(obj, (w, h)), normalise_boxes(union, (w, h)),  # 12
        torch.stack([dx / hw, dy / hh], 1),  # 2: offset in human units
        torch.stack([torch.log(ow / hw), torch.log(oh / hh), torch.log((ow * oh) / (hw * hh))], 1),  # 3
        torch.stack([box_iou_aligned(human, obj), inter / (area_h + eps), inter / (area_o + eps)], 1),  # 3
        torch.stack([area_h / (w * h), area_o / (w * h)], 1),  # 2
        (dist / diag)[:, None],  # 1
        torch.where(dist > 0, torch.sin(angle), torch.zeros_like(angle))[:, None],  # 1 (0 when centres coincide)
        torch.where(dist > 0, torch.cos(angle), torch.zeros_like(angle))[:, None],  # 1
    ]
    return torch.cat(feats, 1)  # [P, 25]


def boxes_to_grid(boxes: Tensor, grid_scale: tuple[float, float], grid_hw: tuple[int, int],
                  min_side: float = 1.0) -> Tensor:
    """Pixel boxes -> grid-cell coordinates, clipped to the grid, each side at least ``min_side``.

    Args:
        boxes: ``[N, 4]`` xyxy pixels of the original image.
        grid_scale: ``(sx, sy)`` grid cells per pixel.
        grid_hw: ``(Hg, Wg)``.
    Returns:
        ``[N, 4]`` xyxy in grid cells, within ``[0, Wg] x [0, Hg]``; a box smaller than ``min_side``
        (including a zero-area or inverted one) is widened about its centre, kept inside the grid.
    """
    hg, wg = float(grid_hw[0]), float(grid_hw[1])
    b = boxes.float() * boxes.new_tensor([grid_scale[0], grid_scale[1], grid_scale[0], grid_scale[1]]).float()
    b = torch.stack([b[:, [0, 2]].min(1).values, b[:, [1, 3]].min(1).values,
                     b[:, [0, 2]].max(1).values, b[:, [1, 3]].max(1).values], 1)  # repair inverted boxes
    limits = b.new_tensor([wg, hg, wg, hg])
    b = torch.minimum(b.clamp(min=0), limits)
    out = []
    for lo, hi, size in ((0, 2, wg), (1, 3, hg)):
        side = min(min_side, size)
        centre = (b[:, lo] + b[:, hi]) / 2
        half = torch.clamp((b[:, hi] - b[:, lo]) / 2, min=side / 2)
        start = torch.clamp(centre - half, min=0.0)
        end = torch.clamp(start + 2 * half, max=size)
        start = torch.clamp(end - 2 * half, min=0.0)
        out.append((start, end))
    return torch.stack([out[0][0], out[1][0], out[0][1], out[1][1]], 1)


def pool_regions(grid: Tensor, boxes: Tensor, pool_size: int, sampling_ratio: int) -> Tensor:
    """RoI-align a ``[D, Hg, Wg]`` grid inside ``[N, 4]`` grid-coordinate boxes -> ``[N, pool*pool, D]``."""
    rois = torch.cat([boxes.new_zeros(boxes.shape[0], 1), boxes], 1).to(grid.dtype)  # [N, 5] batch index 0
    pooled = roi_align(grid[None], rois, output_size=pool_size, spatial_scale=1.0,
                       sampling_ratio=sampling_ratio, aligned=True)  # [N, D, S, S]
    return pooled.flatten(2).transpose(1, 2)  # [N, S*S, D]


def sinusoidal_embedding(coords: Tensor, dim: int, temperature: float = 20.0) -> Tensor:
    """Sine/cosine features of coordinates in ``[0, 1]``: ``[N, k] -> [N, k * dim]``.

    Each coordinate (scaled by ``2 pi``) is divided by ``temperature ** (2 floor(i / 2) / dim)``,
    even features take the sine, odd the cosine (DA-HOI's ``compute_sinusoidal_pe``, temperature 20).
    """
    if dim % 2:
        raise ValueError(f"sinusoidal_embedding needs an even dim, got {dim}")
    i = torch.arange(dim, dtype=torch.float32, device=coords.device)
    freq = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / dim)  # [dim]
    x = coords.float()[..., None] * (2 * math.pi) / freq  # [N, k, dim]
    return torch.stack([x[..., 0::2].sin(), x[..., 1::2].cos()], -1).flatten(-2).flatten(-2)  # [N, k * dim]


def grid_cell_centres(grid_hw: tuple[int, int], device=None) -> Tensor:
    """``[Hg * Wg, 2]`` normalised ``(x, y)`` centres of the grid's cells, row-major."""
    hg, wg = grid_hw
    ys = (torch.arange(hg, dtype=torch.float32, device=device) + 0.5) / hg
    xs = (torch.arange(wg, dtype=torch.float32, device=device) + 0.5) / wg
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], 1)


class ContextLayer(nn.Module):
    """One conditional cross-attention layer: pair queries ``[P, H]`` attend to memory ``[M, H]``.

    Per head, the query is ``[content_h, position_h]`` and the key ``[content_h, position_h]``
    (the positions projected from sinusoidal features), so content and position each add their
    own dot product; values are content only. Residual + LayerNorm, feed-forward, residual +
    LayerNorm (DA-HOI's ``TransformerDecoderLayer``, whose self-attention among queries is
    commented out in the released code, hence none here either: pairs stay independent).
    """

    def __init__(self, hidden: int, heads: int, ffn: int, query_pos: int, key_pos: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)
        self.q_pos = nn.Linear(query_pos, hidden)
        self.k_pos = nn.Linear(key_pos, hidden)
        self.out = nn.Linear(hidden, hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, hidden))
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.dropout = dropout

    def _split(self, x: Tensor) -> Tensor:  # [N, H] -> [heads, N, H / heads]
        return x.view(x.shape[0], self.heads, -1).transpose(0, 1)

    def forward(self, queries: Tensor, memory: Tensor, query_pos: Tensor, key_pos: Tensor) -> Tensor:
        q = torch.cat([self._split(self.q(queries)), self._split(self.q_pos(query_pos))], -1)  # [h, P, 2d]
        k = torch.cat([self._split(self.k(memory)), self._split(self.k_pos(key_pos))], -1)  # [h, M, 2d]
        v = self._split(self.v(memory))  # [h, M, d]
        att = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0)  # [h, P, d]
        queries = self.norm1(queries + self.drop1(self.out(att.transpose(0, 1).flatten(1))))
        return self.norm2(queries + self.drop2(self.ffn(queries)))


# --------------------------------------------------------------------------- the module
def _mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.GELU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


@dataclass
class SAPOutput:
    """Outputs of :class:`SpatialAwarePooling` for ``P`` pairs.

    Attributes:
        pair_tokens: ``[P, K, D]`` tokens in the language model's embedding space (``K`` =
            ``num_pair_tokens``).
        interactiveness: ``[P]`` logits: does this human interact with this object at all?
        features: ``[P, H]`` the pair feature both come from (after the context decoder when on):
            what the pre-training verb classifier and the second branch read.
    """

    pair_tokens: Tensor
    interactiveness: Tensor
    features: Tensor | None = None


class SpatialAwarePooling(nn.Module):
    """Pair tokens and interactiveness from the visual grid and the pair's geometry.

    Per region (human, object, union): the ``S x S`` RoI cells are projected ``D -> H`` (a shared
    projection plus a learned embedding of region and cell), flattened and reduced to ``H``; the
    three regions and the spatial encoding (``SPATIAL_FEATURES -> H``) are fused by an MLP into
    ``H``, from which a linear layer makes ``K`` tokens of width ``D`` (layer-normalised, with a
    gain set to the language model's embedding scale) and a head makes the interactiveness logit.
    """

    def __init__(self, config: SAPConfig, embed_dim: int, embed_scale: float = 1.0):
        super().__init__()
        self.config = config
        self.embed_dim = embed_dim
        s2, hdim = config.pool_size ** 2, config.hidden_size
        self.cell_proj = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, hdim))
        self.cell_embed = nn.Parameter(torch.zeros(NUM_REGIONS, s2, hdim))
        nn.init.normal_(self.cell_embed, std=0.02)
        self.region_reduce = _mlp([s2 * hdim, hdim])
        self.spatial = _mlp([SPATIAL_FEATURES + 1, hdim, hdim])
        self.fuse = _mlp([(NUM_REGIONS + 1) * hdim, 2 * hdim, hdim], config.dropout)
        self.to_tokens = nn.Linear(hdim, config.num_pair_tokens * embed_dim)
        self.token_norm = nn.LayerNorm(embed_dim)
        with torch.no_grad():
            self.token_norm.weight.fill_(float(embed_scale))
        self.interactiveness = _mlp([hdim, hdim // 2 or 1, 1])
        self.context = None
        if config.context_layers:
            half = hdim // 2 + hdim // 2 % 2  # even sinusoid width per coordinate
            self.memory_proj = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, hdim))
            self.context = nn.ModuleList(
                ContextLayer(hdim, config.context_heads, config.context_ffn or 4 * hdim, 4 * half, 2 * half,
                             config.context_dropout) for _ in range(config.context_layers))
            self._pos_dim = half

    # parameters of the SAP body (what SAP pre-training trains and a later stage may freeze); the token
    # projection to the language model (to_tokens, token_norm) trains with the language model
    LM_PROJECTION = ("to_tokens.", "token_norm.")

    def body_state_dict(self) -> dict[str, Tensor]:
        """The SAP body's weights (everything but the projection to the language model)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(self.LM_PROJECTION)}

    def body_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith(self.LM_PROJECTION)]

    def _with_context(self, fused: Tensor, grid: Tensor, human: Tensor, obj: Tensor,
                      image_size: tuple[int, int]) -> Tensor:
        """``fused [P, H]`` after the scene-context decoder (queries positioned at the two box centres)."""
        dtype = fused.dtype
        memory = self.memory_proj(grid.flatten(1).t().to(dtype))  # [Hg*Wg, H]
        key_pos = sinusoidal_embedding(grid_cell_centres(tuple(grid.shape[1:]), grid.device), self._pos_dim).to(dtype)
        w, h = float(image_size[0]), float(image_size[1])
        scale = human.new_tensor([w, h])
        centres = torch.cat([(human[:, :2] + human[:, 2:]) / 2 / scale, (obj[:, :2] + obj[:, 2:]) / 2 / scale], 1)
        query_pos = sinusoidal_embedding(centres.clamp(0, 1), self._pos_dim).to(dtype)  # [P, 4 * half]
        for layer in self.context:
            fused = layer(fused, memory, query_pos, key_pos)
        return fused

    def forward(self, grid: Tensor, human_boxes: Tensor, object_boxes: Tensor,
                image_size: tuple[int, int], grid_scale: tuple[float, float]) -> SAPOutput:
        """Pool one image's grid for ``P`` pairs.

        Args:
            grid: ``[D, Hg, Wg]`` visual tokens in the language model's width.
            human_boxes, object_boxes: ``[P, 4]`` xyxy pixels of the original image.
            image_size: ``(width, height)`` of the original image.
            grid_scale: ``(sx, sy)`` pixel -> grid multipliers.
        Returns:
            :class:`SAPOutput` with ``pair_tokens [P, K, D]`` and ``interactiveness [P]`` (the
            module's parameter dtype; ``P = 0`` gives empty tensors).
        """
        if grid.dim() != 3 or grid.shape[0] != self.embed_dim:
            raise ValueError(f"grid must be [D={self.embed_dim}, Hg, Wg], got {tuple(grid.shape)}")
        if human_boxes.shape != object_boxes.shape or human_boxes.dim() != 2 or human_boxes.shape[-1] != 4:
            raise ValueError(f"human_boxes and object_boxes must both be [P, 4], got {tuple(human_boxes.shape)} "
                             f"and {tuple(object_boxes.shape)}")
        cfg = self.config
        dtype = self.to_tokens.weight.dtype
        device = self.to_tokens.weight.device
        p = human_boxes.shape[0]
        human_boxes = human_boxes.to(device=device, dtype=torch.float32)
        object_boxes = object_boxes.to(device=device, dtype=torch.float32)
        regions = torch.cat([human_boxes, object_boxes, union_box(human_boxes, object_boxes)])  # [3P, 4]
        grid_boxes = boxes_to_grid(regions, grid_scale, tuple(grid.shape[1:]), cfg.min_box_cells)
        cells = pool_regions(grid.to(device=device, dtype=dtype), grid_boxes.to(dtype),
                             cfg.pool_size, cfg.sampling_ratio)  # [3P, S*S, D]
        cells = self.cell_proj(cells).view(NUM_REGIONS, p, cfg.pool_size ** 2, cfg.hidden_size)  # [3, P, S*S, H]
        cells = cells + self.cell_embed[:, None]
        region = self.region_reduce(cells.flatten(2))  # [3, P, H]
        spatial = pair_spatial_features(human_boxes, object_boxes, image_size)  # [P, F]
        degenerate = (box_area(human_boxes) <= 0) | (box_area(object_boxes) <= 0)  # [P]
        spatial = torch.cat([spatial, degenerate[:, None].float()], 1).to(dtype)  # [P, F + 1]
        fused = self.fuse(torch.cat([region.permute(1, 0, 2).flatten(1), self.spatial(spatial)], 1))  # [P, H]
        if self.context is not None and p:
            fused = self._with_context(fused, grid.to(device=device), human_boxes, object_boxes, image_size)
        tokens = self.to_tokens(fused).view(p, cfg.num_pair_tokens, self.embed_dim)  # [P, K, D]
        return SAPOutput(self.token_norm(tokens), self.interactiveness(fused).squeeze(-1), fused)
