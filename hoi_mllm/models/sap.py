"""Spatial-aware pooling (SAP): the MLLM's own visual tokens, pooled inside a pair's boxes, become pair tokens.

For every human-object pair, RoI-align (torchvision, ``aligned=True``) reads the visual token grid
``[D, Hg, Wg]`` of the backbone inside the human, the object and the union box; an encoding of
the pair's geometry (normalised boxes, relative offset and log scale, overlap, distance and
direction as sin/cos) joins them, and small MLPs fuse everything into ``num_pair_tokens`` tokens
of the language model's width ``D`` (they replace the ``<|pair_i|>`` placeholders of the prompt)
plus one interactiveness logit per pair.

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
    """

    num_pair_tokens: int = field(default=1, metadata={"help": "pair tokens per pair (1 or 3 are typical)"})
    pool_size: int = field(default=3, metadata={"help": "RoI-align output side, in cells"})
    sampling_ratio: int = field(default=2, metadata={"help": "RoI-align samples per cell and axis"})
    hidden_size: int = field(default=256, metadata={"help": "width of the fusion MLPs"})
    min_box_cells: float = field(default=1.0, metadata={"help": "minimum box side in grid cells"})
    dropout: float = field(default=0.0, metadata={"help": "dropout in the fusion MLP"})

    def __post_init__(self):
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
    """

    pair_tokens: Tensor
    interactiveness: Tensor


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
        tokens = self.to_tokens(fused).view(p, cfg.num_pair_tokens, self.embed_dim)  # [P, K, D]
        return SAPOutput(self.token_norm(tokens), self.interactiveness(fused).squeeze(-1))
