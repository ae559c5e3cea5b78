"""Backbone adapters on the tiny presets of every family: run paths agree, positions, grid, loading."""
import re

import numpy as np
import pytest
import torch

from hoi_mllm.models.backbone import as_pil, block_mask
from hoi_mllm.models.loading import load_backbone
from hoi_mllm.models.presets import PRESETS
from hoi_mllm.models.tokenizer import build_tokenizer, special_tokens

QWEN = ("tiny-qwen2-vl", "tiny-qwen2.5-vl")
SUFFIXES = (
    "<|pair_0|><|pair_1|> riding a bicycle <|match|> holding a bicycle <|match|>",
    "<|pair_0|> eat",
    "<|pair_0|><|pair_1|> What is the person doing? no interaction <|match|>",
)


@pytest.fixture(scope="module")
def backbones():
    return {name: load_backbone(name) for name in PRESETS}


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)  # H=200, W=300


def suffix_batch(bb, texts=SUFFIXES):
    """``[P, L]`` right-padded ids (pad 0) and ``[P]`` lengths."""
    ids = [bb.tokenize(t) for t in texts]
    lengths = torch.tensor([len(i) for i in ids])
    padded = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)
    for row, i in zip(padded, ids):
        row[: len(i)] = i
    return padded, lengths


def real(lengths, L):
    return torch.arange(L)[None, :] < lengths[:, None]  # [P, L]


@pytest.mark.parametrize("name", PRESETS)
@torch.no_grad()
def test_shared_prefix_and_packed_equal_unshared(backbones, image, name):
    bb = backbones[name]
    enc = bb.encode_prefix(image, "Look. ", "\nWhat is the person doing with the object?")
    ids, lengths = suffix_batch(bb)
    embeds = bb.embed(ids)
    valid = real(lengths, ids.shape[1])
    reference = bb.run_unshared(enc, embeds)  # [P, L, D]
    state = bb.run_prefix(enc)
    cached = bb.run_suffixes(state, embeds)
    chunked = bb.run_suffixes(state, embeds, chunk_size=2)  # the state is reusable, chunks agree
    packed, prefix_hidden = bb.run_packed(enc, embeds, lengths, return_prefix=True)
    assert prefix_hidden.shape == (enc.length, bb.hidden_size)
    assert (prefix_hidden - state.hidden).abs().max() < 1e-4
    assert cached.shape == packed.shape == reference.shape == (3, ids.shape[1], bb.hidden_size)
    for out in (cached, chunked, packed):
        assert (out - reference)[valid].abs().max() < 1e-4
    assert (packed[~valid] == 0).all()
    # different suffixes give different states, and the positions matter
    assert (reference[0, 0] - reference[1, 0]).abs().max() < 1e-6  # same first token <|pair_0|>, same state
    assert (reference[0, 1] - reference[1, 1]).abs().max() > 1e-3
    state.next_position += 3
    shifted = bb.run_suffixes(state, embeds)
    assert (shifted - reference)[valid].abs().max() > 1e-4


@pytest.mark.parametrize("name", ("tiny-qwen2.5-vl", "tiny-llava"))
@torch.no_grad()
def test_run_paths_agree_with_eager_attention(image, name):
    bb = load_backbone(name, attn_implementation="eager")
    assert bb.text_config._attn_implementation == "eager"
    enc = bb.encode_prefix(image, "", "question")
    ids, lengths = suffix_batch(bb)
    embeds = bb.embed(ids)
    valid = real(lengths, ids.shape[1])
    reference = bb.run_unshared(enc, embeds)
    assert (bb.run_packed(enc, embeds, lengths) - reference)[valid].abs().max() < 1e-4
    assert (bb.run_suffixes(bb.run_prefix(enc), embeds) - reference)[valid].abs().max() < 1e-4


@pytest.mark.parametrize("name", QWEN)
@torch.no_grad()
def test_qwen_positions_continue_from_max_plus_one(backbones, image, name):
    bb = backbones[name]
    enc = bb.encode_prefix(image, "before ", " after the image")
    ids, lengths = suffix_batch(bb, SUFFIXES[:1])
    full = torch.cat([enc.input_ids, ids[0]])[None]  # [1, T + L]
    mm = (full == bb.image_token_id).int()
    expected, _ = bb.model.model.get_rope_index(full, mm_token_type_ids=mm, image_grid_thw=enc.extra["image_grid_thw"])
    ours = torch.cat([enc.position_ids, bb.text_positions(enc.next_position, ids.shape[1])[:, 0]], dim=1)
    assert torch.equal(ours, expected[:, 0])
    # the image of Hg x Wg tokens advances positions by max(Hg, Wg), not by Hg * Wg
    _, hg, wg = enc.grid.shape
    start, end = enc.image_span
    assert enc.next_position == start + max(hg, wg) + (enc.length - end)
    assert enc.next_position < enc.length


@pytest.mark.parametrize("name", ("tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-llava"))
@torch.no_grad()
def test_unshared_equals_the_models_own_forward(backbones, image, name):
    """The adapter's prompt (features scattered, explicit positions) = the model's native forward."""
    bb = backbones[name]
    enc = bb.encode_prefix(image, "Look. ", "\nWhat?")
    ids, _ = suffix_batch(bb, SUFFIXES[:1])
    full = torch.cat([enc.input_ids, ids[0]])[None]
    pil = as_pil(image)
    if name in QWEN:
        pixels = bb.processor.image_processor(images=[pil], return_tensors="pt", **bb.image_kwargs)
        out = bb.model.model(input_ids=full, pixel_values=pixels["pixel_values"], image_grid_thw=pixels["image_grid_thw"],
                             mm_token_type_ids=(full == bb.image_token_id).int())
        bb.model.model.rope_deltas = None
    else:
        out = bb.model.model(input_ids=full, pixel_values=bb.pixel_values(pil))
    native = out.last_hidden_state[0, enc.length:]
    ours = bb.run_unshared(enc, bb.embed(ids))[0]
    assert (native - ours).abs().max() < 1e-4


@pytest.mark.parametrize("name", ("tiny-qwen2-vl", "tiny-llava-onevision"))
def test_packed_gradients_with_checkpointing(image, name):
    bb = load_backbone(name)
    ids, lengths = suffix_batch(bb)
    valid = real(lengths, ids.shape[1])

    def grads(checkpointing: bool):
        bb.model.zero_grad()
        if checkpointing:
            bb.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        bb.model.train()
        calls = []
        hook = bb.language_model.layers[0].self_attn.register_forward_hook(lambda *a: calls.append(1))
        try:
            enc = bb.encode_prefix(image, "", "question")
            embeds = bb.embed(ids).detach().requires_grad_(True)
            out = bb.run_packed(enc, embeds, lengths)
            (out[valid] ** 2).sum().backward()
        finally:
            hook.remove()
            bb.model.activation_checkpointing_disable()
            bb.model.eval()
        weight = bb.language_model.layers[0].mlp.up_proj.weight.grad
        vision = next(p for p in bb.model.model.multi_modal_projector.parameters()).grad if hasattr(
            bb.model.model, "multi_modal_projector") else bb.model.model.visual.merger.mlp[0].weight.grad
        return embeds.grad.clone(), weight.clone(), vision.clone(), len(calls)

    g_embeds, g_weight, g_vision, calls = grads(checkpointing=True)
    assert calls == 2  # layer 0 (its attention) ran again in the backward pass: checkpointing was on
    assert g_embeds[valid].abs().sum() > 0 and (g_embeds[~valid] == 0).all()
    assert g_weight.abs().sum() > 0 and g_vision.abs().sum() > 0  # into the LM and through the grid's encoder
    r_embeds, r_weight, _, calls = grads(checkpointing=False)
    assert calls == 1
    assert torch.allclose(g_embeds, r_embeds, atol=1e-5) and torch.allclose(g_weight, r_weight, atol=1e-5)


def test_run_suffixes_refuses_checkpointed_training(image):
    bb = load_backbone("tiny-llava")
    with torch.no_grad():
        state = bb.run_prefix(bb.encode_prefix(image))
    bb.model.activation_checkpointing_enable()
    bb.model.train()
    with pytest.raises(ValueError, match="run_packed"):
        bb.run_suffixes(state, bb.embed(bb.tokenize("ride")[None]))


@pytest.mark.parametrize("name,grid_hw", [("tiny-qwen2-vl", (7, 11)), ("tiny-qwen2.5-vl", (7, 11)),
                                          ("tiny-llava", (8, 8)), ("tiny-llava-onevision", (8, 8))])
@torch.no_grad()
def test_grid_shape_and_scale(backbones, image, name, grid_hw):
    bb = backbones[name]
    enc = bb.encode_prefix(image, "", "")
    assert enc.image_size == (300, 200)
    assert tuple(enc.grid.shape) == (bb.hidden_size, *grid_hw)
    sx, sy = enc.grid_scale
    border = torch.tensor([0.0, 0.0, 300.0, 200.0]) * torch.tensor([sx, sy, sx, sy])
    assert torch.allclose(border, torch.tensor([0.0, 0.0, grid_hw[1], grid_hw[0]], dtype=torch.float32))
    # the grid is the visual tokens of the prefix, in row-major order
    start, end = enc.image_span
    tokens = enc.inputs_embeds[start:end][-grid_hw[0] * grid_hw[1]:]
    assert torch.equal(tokens, enc.grid.flatten(1).T)


def test_llava_real_processor_settings_resize_without_crop(image):
    """Real checkpoints ship processors that crop (LLaVA-1.5: shortest edge + centre crop) or tile
    (OneVision: anyres pinpoints); the adapter still feeds the whole image resized to the square input."""
    from transformers import CLIPImageProcessor, LlavaOnevisionImageProcessor

    ramp = np.zeros((200, 300, 3), dtype=np.uint8)
    ramp[..., 0] = np.linspace(0, 255, 300).round().astype(np.uint8)[None, :]  # red grows left to right
    pil = as_pil(ramp)
    llava = load_backbone("tiny-llava")
    square = llava.pixel_values(pil)
    llava.processor.image_processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                                                         do_center_crop=True)
    assert torch.allclose(llava.pixel_values(pil), square)
    # the whole width is there: after undoing the normalisation, red spans 0..255 across the columns
    ip = llava.processor.image_processor
    red = square[0, 0] * ip.image_std[0] + ip.image_mean[0]  # [224, 224] in 0..1
    assert red[:, 0].mean() < 0.02 and red[:, -1].mean() > 0.98
    assert torch.allclose(red[:, 112].mean(), torch.tensor(0.5), atol=0.02)
    one = load_backbone("tiny-llava-onevision")
    base = one.pixel_values(pil)
    one.processor.image_processor = LlavaOnevisionImageProcessor(size={"height": 224, "width": 224})  # real pinpoints
    assert torch.allclose(one.pixel_values(pil), base) and base.shape == (1, 3, 224, 224)


def test_qwen_min_max_pixels_bound_the_grid(image):
    bb = load_backbone("tiny-qwen2-vl", max_pixels=4 * 28 * 28 * 6, min_pixels=28 * 28)
    with torch.no_grad():
        enc = bb.encode_prefix(image)
    _, hg, wg = enc.grid.shape
    assert hg * wg <= 24 and wg > hg
    with pytest.raises(ValueError, match="min_pixels"):
        load_backbone("tiny-qwen2-vl", min_pixels=10**6, max_pixels=10**4)


@pytest.mark.parametrize("size", [(200, 300), (480, 640), (333, 500)])
@torch.no_grad()
def test_box_text_round_trips(backbones, size):
    """Box -> the family's grounding text -> the numbers the family's processor implies for the resized image."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    h, w = size
    image = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    box = torch.tensor([0.1 * w, 0.1 * h + 0.3, 0.5 * w + 0.7, 0.999 * h])
    rel = (box / torch.tensor([w, h, w, h], dtype=box.dtype)).double().tolist()
    # Qwen2-VL: integers in [0, 1000) inside its box tokens, independent of the resize
    q2 = backbones["tiny-qwen2-vl"]
    text = q2.box_text(box, q2.encode_prefix(image))
    m = re.fullmatch(r"<\|box_start\|>\((\d+),(\d+)\),\((\d+),(\d+)\)<\|box_end\|>", text)
    assert m, text
    assert [int(v) for v in m.groups()] == [min(int(r * 1000), 999) for r in rel]
    assert all(0 <= int(v) < 1000 for v in m.groups())
    # Qwen2.5-VL: pixels of the smart-resized input (DA-HOI: int(x / W * resized width))
    q25 = backbones["tiny-qwen2.5-vl"]
    enc = q25.encode_prefix(image)
    size_cfg = q25.image_kwargs["size"]
    rh, rw = smart_resize(h, w, factor=q25.patch_size * q25.merge_size, min_pixels=size_cfg["shortest_edge"],
                          max_pixels=size_cfg["longest_edge"])
    assert enc.input_size == (rw, rh)
    numbers = [int(v) for v in q25.box_text(box, enc).split(",")]
    assert numbers == [int(r * s) for r, s in zip(rel, (rw, rh, rw, rh))]
    assert all(0 <= n <= s for n, s in zip(numbers, (rw, rh, rw, rh)))
    # LLaVA-style: normalised coordinates (the square resize keeps them), two decimals
    for name in ("tiny-llava", "tiny-llava-onevision"):
        bb = backbones[name]
        text = bb.box_text(box, bb.encode_prefix(image))
        m = re.fullmatch(r"\[([\d.]+), ([\d.]+), ([\d.]+), ([\d.]+)\]", text)
        assert m, text
        assert [float(v) for v in m.groups()] == pytest.approx(rel, abs=0.005 + 1e-9)


@torch.no_grad()
def test_box_text_formats(backbones, image):
    box = torch.tensor([30.0, 20.0, 150.0, 200.0])
    q2 = backbones["tiny-qwen2-vl"]
    assert q2.box_text(box, q2.encode_prefix(image)) == "<|box_start|>(100,100),(500,999)<|box_end|>"
    q25 = backbones["tiny-qwen2.5-vl"]
    enc = q25.encode_prefix(image)
    assert enc.input_size == (308, 196)
    assert q25.box_text(box, enc) == "30,19,154,196"
    llava = backbones["tiny-llava"]
    assert llava.box_text(box, llava.encode_prefix(image)) == "[0.10, 0.10, 0.50, 1.00]"


def test_special_tokens_in_every_tokenizer(backbones):
    for name, bb in backbones.items():
        ids = [bb.special_token_id(t) for t in special_tokens(bb.num_pair_tokens)]
        assert len(set(ids)) == len(ids) and max(ids) < bb.model.get_input_embeddings().num_embeddings
        for t in (bb.MATCH_TOKEN, bb.ANSWER_TOKEN, bb.PAIR_TOKEN.format(i=3)):
            assert len(bb.tokenize(f"a {t} b")) == 5 or len(bb.tokenize(f"a{t}b")) == 3
        assert bb.pair_token_ids() == ids[: bb.num_pair_tokens]
    q = backbones["tiny-qwen2-vl"].tokenizer
    for t in ("<|im_start|>", "<|vision_start|>", "<|image_pad|>", "<|box_start|>", "<|object_ref_end|>"):
        assert len(q(t, add_special_tokens=False)["input_ids"]) == 1
    assert len(backbones["tiny-llava"].tokenizer("<image>", add_special_tokens=False)["input_ids"]) == 1


def test_tokenizer_is_deterministic_and_learns_the_corpus():
    a = build_tokenizer("qwen")
    b = build_tokenizer("qwen")
    assert a.get_vocab() == b.get_vocab()
    assert len(a.tokenize("riding a bicycle")) <= 3
    text = "zorbulating a quintaflex"
    c = build_tokenizer("qwen", extra_texts=[text] * 50)
    assert len(c.tokenize(text)) < len(a.tokenize(text))
    assert a.decode(a(text)["input_ids"]) == text  # bytes fall back: any text round-trips
    with pytest.raises(ValueError, match="allowed: qwen, llava, onevision"):
        build_tokenizer("gpt")


def test_presets_are_seeded_and_overridable():
    a = load_backbone("tiny-llava")
    b = load_backbone("tiny-llava")
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert torch.equal(p, q), n
    c = load_backbone("tiny-llava", overrides={"seed": 1})
    assert not torch.equal(a.model.lm_head.weight, c.model.lm_head.weight)
    small = load_backbone("tiny-qwen2-vl", overrides={"hidden_size": 32, "num_hidden_layers": 1, "max_grid": 6})
    assert small.hidden_size == 32 and len(small.language_model.layers) == 1
    with pytest.raises(ValueError, match="allowed:.*hidden_size"):
        load_backbone("tiny-qwen2-vl", overrides={"width": 3})


@pytest.mark.parametrize("name", PRESETS)
@torch.no_grad()
def test_save_and_reload_give_identical_states(backbones, image, tmp_path, name):
    bb = backbones[name]
    bb.save_pretrained(tmp_path)
    again = load_backbone(tmp_path)
    assert type(again) is type(bb) and again.family == bb.family
    assert again.tokenizer.get_vocab() == bb.tokenizer.get_vocab()
    ids, _ = suffix_batch(bb)
    outs = []
    for b in (bb, again):
        enc = b.encode_prefix(image, "Look. ", "\nWhat?")
        outs.append(b.run_suffixes(b.run_prefix(enc), b.embed(ids)))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("quantization,layer", [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
@torch.no_grad()
def test_quantized_loading_on_cpu(backbones, image, tmp_path, quantization, layer):
    bb = backbones["tiny-qwen2-vl"]
    bb.save_pretrained(tmp_path)
    q = load_backbone(tmp_path, quantization=quantization)
    assert type(q.language_model.layers[0].mlp.up_proj).__name__ == layer
    assert type(q.model.model.visual.blocks[0].mlp.fc1).__name__ == "Linear"  # vision stays unquantized
    ids, lengths = suffix_batch(bb)
    valid = real(lengths, ids.shape[1])
    outs = []
    for b in (bb, q):
        enc = b.encode_prefix(image, "", "What?")
        outs.append(b.run_suffixes(b.run_prefix(enc), b.embed(ids))[valid])
    assert outs[1].isfinite().all()
    assert torch.nn.functional.cosine_similarity(outs[0].flatten(), outs[1].flatten(), dim=0) > 0.98


def test_reload_adds_missing_special_tokens_and_grows_embeddings(backbones, tmp_path):
    bb = backbones["tiny-llava"]
    bb.save_pretrained(tmp_path)
    rows = bb.model.get_input_embeddings().num_embeddings
    more = load_backbone(tmp_path, num_pair_tokens=rows)  # more pair tokens than the matrix has room for
    ids = more.pair_token_ids()
    assert len(set(ids)) == rows and max(ids) >= rows
    assert more.model.get_input_embeddings().num_embeddings == len(more.tokenizer) > max(ids)
    assert len(more.tokenize(more.PAIR_TOKEN.format(i=rows - 1))) == 1


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"qwen2-vl.*tiny-llava"):
        load_backbone(tmp_path / "no-such-model")
    with pytest.raises(ValueError, match="presets: tiny-qwen2-vl"):
        load_backbone("tiny-gpt")
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match=r"'gpt2' model, which is not supported.*qwen2\.5-vl.*llava-onevision"):
        load_backbone(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="allowed: none, 4bit, 8bit"):
        load_backbone(tmp_path / "gpt2", quantization="3bit")
    with pytest.raises(ValueError, match="save the preset"):
        load_backbone("tiny-llava", quantization="4bit")
    with pytest.raises(ValueError, match="allowed: auto"):
        load_backbone("tiny-llava", dtype="float8")


@torch.no_grad()
def test_bad_inputs(backbones, image):
    bb = backbones["tiny-llava"]
    enc = bb.encode_prefix(image)
    ids, lengths = suffix_batch(bb)
    with pytest.raises(ValueError, match="lengths"):
        bb.run_packed(enc, bb.embed(ids), lengths + 100)
    with pytest.raises(ValueError, match=r"embeds must be \[P, L, 64\]"):
        bb.run_suffixes(bb.run_prefix(enc), bb.embed(ids)[0])
    with pytest.raises(ValueError, match="PIL image"):
        bb.encode_prefix("not an image")
    float_image = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    assert torch.equal(bb.encode_prefix(float_image).grid, enc.grid)


def test_block_mask_structure():
    mask = block_mask(2, torch.tensor([2, 1]), torch.float32)[0, 0] == 0  # [5, 5] allowed
    expected = torch.tensor([
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 0, 0, 1],
    ], dtype=torch.bool)
    assert torch.equal(mask, expected)
