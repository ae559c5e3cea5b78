"""Spatial-aware pooling: shapes, gradients, the grid coordinate convention, degenerate boxes, geometry."""
import math

import pytest
import torch

from hoi_mllm.models.sap import (
    SPATIAL_FEATURES,
    SAPConfig,
    SpatialAwarePooling,
    boxes_to_grid,
    pair_spatial_features,
    pool_regions,
)

D, HG, WG = 32, 7, 11
IMAGE = (330, 210)  # (w, h): 30 px per grid cell on both axes
SCALE = (WG / IMAGE[0], HG / IMAGE[1])


def boxes(p: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(2, p, 2, generator=g) * torch.tensor(IMAGE) * 0.6
    wh = torch.rand(2, p, 2, generator=g) * torch.tensor(IMAGE) * 0.4 + 5
    b = torch.cat([xy, xy + wh], -1)
    return b[0], b[1]


@pytest.mark.parametrize("k", [1, 3])
def test_shapes_and_gradients(k):
    sap = SpatialAwarePooling(SAPConfig(num_pair_tokens=k, pool_size=2, hidden_size=16), D, embed_scale=0.02)
    grid = torch.randn(D, HG, WG, requires_grad=True)
    h, o = boxes(5)
    out = sap(grid, h, o, IMAGE, SCALE)
    assert out.pair_tokens.shape == (5, k, D)
    assert out.interactiveness.shape == (5,)
    assert torch.isfinite(out.pair_tokens).all() and torch.isfinite(out.interactiveness).all()
    (out.pair_tokens.square().sum() + out.interactiveness.sum()).backward()
    assert grid.grad is not None and grid.grad.abs().sum() > 0  # gradients reach the visual tokens
    for name, p in sap.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_pair_tokens_are_per_pair_and_scaled():
    sap = SpatialAwarePooling(SAPConfig(num_pair_tokens=2), D, embed_scale=0.5)
    grid = torch.randn(D, HG, WG)
    h, o = boxes(4)
    tokens = sap(grid, h, o, IMAGE, SCALE).pair_tokens
    # layer-normalised with the LM's embedding scale: per-token std about embed_scale
    assert torch.allclose(tokens.std(-1, unbiased=False), torch.full((4, 2), 0.5), atol=1e-2)
    # a pair's tokens depend on its own boxes only
    again = sap(grid, h[[2, 0]], o[[2, 0]], IMAGE, SCALE).pair_tokens
    assert torch.allclose(again, tokens[[2, 0]], atol=1e-6)


def test_empty_pairs():
    sap = SpatialAwarePooling(SAPConfig(), D)
    out = sap(torch.randn(D, HG, WG), torch.zeros(0, 4), torch.zeros(0, 4), IMAGE, SCALE)
    assert out.pair_tokens.shape == (0, 1, D) and out.interactiveness.shape == (0,)


def test_pooling_follows_grid_coordinates():
    # grid value = x index of the cell: bilinear RoI-align (aligned=True, cell j centred at j + 0.5)
    # of a box [x1, x2] in cell units averages to its centre minus half a cell
    grid = torch.arange(WG, dtype=torch.float32).view(1, 1, WG).expand(D, HG, WG).contiguous()
    b = torch.tensor([[2.0, 1.0, 6.0, 4.0], [3.5, 0.5, 8.5, 6.0]])
    pooled = pool_regions(grid, b, pool_size=3, sampling_ratio=2)  # [2, 9, D]
    assert pooled.shape == (2, 9, D)
    centre = (b[:, 0] + b[:, 2]) / 2 - 0.5
    assert torch.allclose(pooled.mean(1)[:, 0], centre, atol=1e-5)


def test_boxes_to_grid_scales_clips_and_repairs():
    px = torch.tensor([
        [30.0, 30.0, 90.0, 150.0],    # ordinary: cells [1, 1, 3, 5]
        [60.0, 60.0, 60.0, 60.0],     # zero area: a one-cell box about the point
        [-50.0, -10.0, 400.0, 300.0],  # outside the image: clipped to the grid
        [90.0, 150.0, 30.0, 30.0],    # inverted: repaired
        [330.0, 210.0, 330.0, 210.0],  # zero area at the far corner: kept inside
    ])
    g = boxes_to_grid(px, SCALE, (HG, WG), min_side=1.0)
    assert torch.allclose(g[0], torch.tensor([1.0, 1.0, 3.0, 5.0]), atol=1e-5)
    assert torch.allclose(g[1], torch.tensor([1.5, 1.5, 2.5, 2.5]), atol=1e-5)
    assert torch.allclose(g[2], torch.tensor([0.0, 0.0, WG, HG]), atol=1e-5)
    assert torch.allclose(g[3], g[0])
    assert torch.allclose(g[4], torch.tensor([WG - 1.0, HG - 1.0, WG, HG]), atol=1e-5)


def test_zero_area_boxes_give_finite_outputs_and_gradients():
    sap = SpatialAwarePooling(SAPConfig(num_pair_tokens=3, pool_size=3), D)
    grid = torch.randn(D, HG, WG, requires_grad=True)
    h = torch.tensor([[50.0, 50.0, 50.0, 50.0], [10.0, 10.0, 100.0, 100.0]])
    o = torch.tensor([[50.0, 50.0, 50.0, 50.0], [200.0, 20.0, 200.0, 90.0]])  # a point; a zero-width box
    out = sap(grid, h, o, IMAGE, SCALE)
    assert torch.isfinite(out.pair_tokens).all() and torch.isfinite(out.interactiveness).all()
    # a random weighting: the plain sum of a LayerNorm's outputs does not depend on its input
    torch.manual_seed(0)
    (out.pair_tokens * torch.randn_like(out.pair_tokens)).sum().backward()
    assert torch.isfinite(grid.grad).all() and grid.grad.abs().sum() > 0


def test_spatial_features_geometry():
    h = torch.tensor([[100.0, 100.0, 200.0, 300.0], [100.0, 100.0, 200.0, 300.0], [10.0, 10.0, 10.0, 10.0]])
    o = torch.tensor([[300.0, 150.0, 400.0, 250.0],  # to the right: direction angle 0
                      [100.0, 100.0, 200.0, 300.0],  # the same box: IoU 1, distance 0
                      [10.0, 10.0, 10.0, 10.0]])     # zero-area boxes
    f = pair_spatial_features(h, o, (640, 480))
    assert f.shape == (3, SPATIAL_FEATURES)
    assert torch.isfinite(f).all()
    sin, cos, dist, iou = f[:, -2], f[:, -1], f[:, -3], f[:, 17]
    assert torch.allclose(torch.stack([sin[0], cos[0]]), torch.tensor([0.0, 1.0]), atol=1e-6)
    assert dist[0] == pytest.approx(200 / math.hypot(640, 480), rel=1e-5)
    assert iou[0] == 0 and iou[1] == pytest.approx(1.0)
    assert sin[1] == 0 and cos[1] == 0 and dist[1] == 0  # no direction when the centres coincide
    # pixel-scale invariance: doubling the image and its boxes changes nothing but the +1 eps terms
    f2 = pair_spatial_features(h[:2] * 100, o[:2] * 100, (64000, 48000))
    f1 = pair_spatial_features(h[:2], o[:2], (640, 480), eps=0.01)
    assert torch.allclose(f2, f1, atol=1e-3)


def test_config_validation():
    with pytest.raises(ValueError, match="num_pair_tokens"):
        SAPConfig(num_pair_tokens=0)
    with pytest.raises(ValueError, match="dropout"):
        SAPConfig(dropout=1.5)
    sap = SpatialAwarePooling(SAPConfig(), D)
    with pytest.raises(ValueError, match="grid must be"):
        sap(torch.randn(D + 1, HG, WG), *boxes(2), IMAGE, SCALE)


@pytest.mark.parametrize("layers", [0, 2])
def test_context_decoder_sees_features_outside_the_three_regions(layers):
    """With the scene-context decoder on, changing grid cells outside the human, object and union boxes
    changes pair tokens and interactiveness; with it off (context_layers=0) nothing changes."""
    torch.manual_seed(0)
    sap = SpatialAwarePooling(SAPConfig(pool_size=2, hidden_size=16, context_layers=layers, context_heads=4), D,
                              embed_scale=0.02).eval()
    grid = torch.randn(D, HG, WG)
    human = torch.tensor([[0.0, 0.0, 60.0, 60.0]])  # grid cells x 0..2, y 0..2 (30 px per cell)
    obj = torch.tensor([[30.0, 30.0, 90.0, 90.0]])  # union: cells x 0..3, y 0..3
    before = sap(grid, human, obj, IMAGE, SCALE)
    changed = grid.clone()
    changed[:, 5:, 6:] += 3.0 * torch.randn(D, HG - 5, WG - 6)  # far outside all three regions (RoI reads stay inside)
    after = sap(changed, human, obj, IMAGE, SCALE)
    differs = not torch.allclose(before.pair_tokens, after.pair_tokens, atol=1e-6)
    assert differs == bool(layers)
    assert (not torch.allclose(before.interactiveness, after.interactiveness, atol=1e-6)) == bool(layers)
    assert before.features.shape == (1, 16)


def test_context_decoder_gradients_and_config():
    sap = SpatialAwarePooling(SAPConfig(pool_size=2, hidden_size=16, context_layers=2, context_heads=4), D)
    grid = torch.randn(D, HG, WG, requires_grad=True)
    h, o = boxes(4)
    out = sap(grid, h, o, IMAGE, SCALE)
    (out.pair_tokens.square().sum() + out.interactiveness.sum()).backward()
    assert all(p.grad is not None for p in sap.context.parameters())
    assert set(sap.body_state_dict()) == {k for k in sap.state_dict() if not k.startswith(("to_tokens", "token_norm"))}
    with pytest.raises(ValueError, match="context_heads"):
        SAPConfig(hidden_size=18, context_layers=2, context_heads=4)
    SAPConfig(hidden_size=18, context_layers=0, context_heads=4)  # unused heads need not divide
