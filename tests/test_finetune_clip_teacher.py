"""CLIPTeacher (EoID's teacher) on a tiny random transformers CLIPModel, offline.

Checks what finetune/teacher.py promises: per pair, the candidates of its object (``-1`` padded)
and ``softmax(logit_scale * cos / T)`` over them, computed on the pair's *union* crop against one
prompt per class; unseen classes enter as text only; scores are cached per key.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import clip_tokenizer
from hoi_mllm.boxes import union_box
from hoi_mllm.finetune.teacher import CLIPTeacher, make_pairs
from hoi_mllm.models.matching import pad_candidates
from hoi_mllm.prompts.vocabulary import FORMAT, Vocabulary

MAX_LEN = 32
PROMPT = "{verb} {object}"  # short, so that the character-level tokenizer never truncates two prompts alike


def vocab_dict(hold_kite_phrase: str = "hold kite") -> dict:
    # objects: person 0, bicycle 1 (3 classes), kite 2 (2 classes), cup 3 (1 class); person has no class
    classes = [[1, 0], [1, 1], [1, 4], [2, 2], [2, 1], [3, 3]]
    phrases = ["ride bicycle", "hold bicycle", "no interaction bicycle", "fly kite", hold_kite_phrase, "drink with cup"]
    return {"format": FORMAT, "name": "tiny", "objects": ["person", "bicycle", "kite", "cup"],
            "verbs": ["ride", "hold", "fly", "drink_with", "no_interaction"], "classes": classes, "phrases": phrases,
            "human_object": 0, "no_interaction_verb": 4,
            "splits": {"uc": {"kind": "unseen_combination", "unseen": [4]}}}  # "hold kite" is unseen


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(0)
    tok = clip_tokenizer(tmp_path_factory.mktemp("clip_tok"), max_length=MAX_LEN)
    text = dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=MAX_LEN, bos_token_id=tok.convert_tokens_to_ids("<|startoftext|>"),
                eos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    # like OpenAI's CLIP processor: shortest edge resized, then a centre square
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tok)


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary.from_dict(vocab_dict())


def image(seed=0, size=(96, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8), "RGB")


def pairs_of(humans, objects, labels, size=(96, 64)):
    return make_pairs(torch.tensor(humans, dtype=torch.float), torch.tensor(objects, dtype=torch.float),
                      torch.tensor(labels), size)


H = [[4, 4, 20, 36], [4, 4, 20, 36], [50, 10, 70, 50], [4, 4, 20, 36]]
O = [[14, 10, 36, 30], [14, 10, 36, 30], [60, 20, 90, 60], [30, 30, 40, 40]]
LABELS = [1, 1, 2, 3]  # bicycle (3 candidates), bicycle, kite (2), cup (1)


def test_shapes_valid_mask_and_formula(clip, vocab):
    model, processor = clip
    teacher = CLIPTeacher(model, processor, vocab, prompt=PROMPT, temperature=0.5)
    assert teacher.texts == ["ride bicycle", "hold bicycle", "no interaction bicycle", "fly kite", "hold kite",
                             "drink with cup"]  # prompt filled with verb/object names, underscores as spaces
    assert all(not p.requires_grad for p in model.parameters()) and not model.training
    img = image()
    cands, probs = teacher.score(img, pairs_of(H, O, LABELS))
    assert cands.dtype == torch.long and cands.shape == probs.shape == (4, 3)
    assert cands.tolist() == [[0, 1, 2], [0, 1, 2], [4, 3, -1], [5, -1, -1]]  # classes_for_object, by verb id
    valid = cands >= 0
    valid[:, 2] &= cands[:, 2] != 2  # class 2 (no interaction bicycle) is left out of the softmax (EoID)
    assert torch.all(probs[~valid] == 0)
    assert torch.all((probs >= 0) & (probs <= 1))
    torch.testing.assert_close(probs.sum(1), torch.ones(4))
    assert probs[3, 0] == pytest.approx(1.0)  # a single candidate gets all the mass

    # independent reference: CLIPModel's own logits_per_image on the union crops
    union = union_box(torch.tensor(H, dtype=torch.float), torch.tensor(O, dtype=torch.float)).int().tolist()
    crops = []
    for b in union:  # EoID's expand2square: the crop centred on a black square of its longer side
        c = img.crop(tuple(b))
        side = max(c.size)
        sq = Image.new("RGB", (side, side), (0, 0, 0))
        sq.paste(c, ((side - c.size[0]) // 2, (side - c.size[1]) // 2))
        crops.append(sq)
    tok = processor.tokenizer(teacher.texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**tok, pixel_values=processor.image_processor(images=crops, return_tensors="pt")["pixel_values"]
                       ).logits_per_image  # [K, num_classes], logit_scale * cos
    ref = torch.softmax(torch.gather(logits, 1, cands.clamp(min=0)).div(0.5).masked_fill(~valid, float("-inf")), 1)
    torch.testing.assert_close(probs, torch.nan_to_num(ref) * valid, atol=1e-5, rtol=1e-4)


def test_temperature_sharpens_as_documented(clip, vocab):
    model, processor = clip
    img, pairs = image(1), pairs_of(H[:3], O[:3], LABELS[:3])
    out = {}
    for t in (0.2, 1.0, 5.0):
        cands, out[t] = CLIPTeacher(model, processor, vocab, prompt=PROMPT, temperature=t).score(img, pairs)
    cold, base, hot = out[0.2], out[1.0], out[5.0]
    valid = cands >= 0
    # softmax(z / T) is the normalised p_1 ** (1 / T)
    for t, p in ((0.2, cold), (5.0, hot)):
        pw = torch.where(valid, base ** (1 / t), torch.zeros(()))
        torch.testing.assert_close(p, pw / pw.sum(1, keepdim=True), atol=1e-5, rtol=1e-4)
    for row in range(3):
        n = int(valid[row].sum())
        assert cold[row].max() > base[row].max() > hot[row].max() > 1 / n  # colder: sharper; hotter: towards uniform
        assert cold[row].argmax() == base[row].argmax() == hot[row].argmax()  # the ranking does not change
        spread = {t: float(p[row, :n].max() - p[row, :n].min()) for t, p in out.items()}
        assert spread[0.2] > spread[1.0] > spread[5.0]


def test_scores_the_union_crop(clip, vocab):
    model, processor = clip
    teacher = CLIPTeacher(model, processor, vocab, prompt=PROMPT)
    h, o = [10, 8, 30, 40], [24, 16, 44, 44]  # union (10, 8, 44, 44): a 34 x 36 box, (nearly) square
    pairs = pairs_of([h, h], [o, o], [1, 1])
    img = image(2)
    cands, base = teacher.score(img, pairs)
    torch.testing.assert_close(base[0], base[1], atol=1e-6, rtol=1e-5)  # same boxes on the same image: same targets

    def edited(region, seed, source=img):
        arr = np.array(source)
        x1, y1, x2, y2 = region
        arr[y1:y2, x1:x2] = np.random.default_rng(seed).integers(0, 255, size=(y2 - y1, x2 - x1, 3))
        return Image.fromarray(arr, "RGB")

    # pixels far outside the union (right half and bottom rows) change nothing
    far = edited((0, 50, 96, 64), 4, source=edited((60, 0, 96, 64), 3))
    torch.testing.assert_close(teacher.score(far, pairs)[1], base, atol=0, rtol=0)
    # pixels inside the union but in neither box (the gap between them) do change the targets
    gap = edited((32, 10, 44, 16), 5)
    assert not torch.allclose(teacher.score(gap, pairs)[1], base, atol=1e-6)
    # the same crop, cut out beforehand with boxes moved to its origin, gives the same targets
    crop = img.crop((10, 8, 44, 44))
    shifted = pairs_of([[0, 0, 20, 32]], [[14, 8, 34, 36]], [1], size=crop.size)
    torch.testing.assert_close(teacher.score(crop, shifted)[1], base[:1], atol=1e-6, rtol=1e-5)
    # a different pair (boxes elsewhere) on the same image scores differently
    other = pairs_of([[50, 10, 70, 40]], [[60, 20, 90, 60]], [1])
    assert not torch.allclose(teacher.score(img, other)[1], base[:1], atol=1e-6)


def test_unseen_classes_enter_as_text_only(clip, vocab):
    model, processor = clip
    unseen = vocab.unseen_classes("uc")
    assert unseen == {4}
    teacher = CLIPTeacher(model, processor, vocab, prompt="{phrase}")
    assert teacher.texts[4] == "hold kite"  # the unseen class's name is a text like any other
    img, pairs = image(3), pairs_of([H[2]], [O[2]], [2])  # a kite pair: candidates (hold kite, fly kite)
    cands, probs = teacher.score(img, pairs)
    assert cands.tolist() == [[4, 3]] and probs[0, 0] > 0  # the unseen class gets a soft target
    # renaming the unseen class changes its text, hence the targets: the name is what CLIP reads
    renamed = Vocabulary.from_dict(vocab_dict(hold_kite_phrase="grasp kite string"))
    other = CLIPTeacher(model, processor, renamed, prompt="{phrase}")
    assert other.texts[:4] == teacher.texts[:4] and other.texts[5] == teacher.texts[5]
    cands2, probs2 = other.score(img, pairs)
    assert torch.equal(cands, cands2) and not torch.allclose(probs, probs2, atol=1e-6)
    # the text of seen classes is unaffected: a bicycle pair scores the same under both vocabularies
    bike = pairs_of([H[0]], [O[0]], [1])
    torch.testing.assert_close(teacher.score(img, bike)[1], other.score(img, bike)[1], atol=0, rtol=0)
    # the only inputs are the image, the boxes and the object labels: Pairs carries no verb or class label
    assert not any("verb" in f or "class" in f for f in getattr(pairs, "__dataclass_fields__", {}))


def test_object_without_classes_and_cache(clip, vocab):
    model, processor = clip
    teacher = CLIPTeacher(model, processor, vocab, prompt=PROMPT)
    img = image(4)
    # an object with no class (a person as the object): an all-padding row, probabilities 0, no NaN
    cands, probs = teacher.score(img, pairs_of([H[0], H[3]], [O[0], O[3]], [0, 3]))
    assert cands.tolist() == [[-1], [5]]
    assert probs[0, 0] == 0 and probs[1, 0] == pytest.approx(1.0) and not torch.isnan(probs).any()
    # empty pairs
    c0, p0 = teacher(img, pairs_of(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros(0, dtype=np.int64)))
    assert c0.shape == p0.shape == (0, 0)
    # cached per key: the same as scoring directly, and computed once (a changed image is not re-read)
    pairs = pairs_of(H, O, LABELS)
    keys = [("img", i) for i in range(4)]
    direct = teacher.score(img, pairs)
    first = teacher(img, pairs[torch.tensor([0, 2])], [keys[0], keys[2]])
    cached = teacher(img, pairs, keys)
    assert torch.equal(cached[0], direct[0]) and torch.allclose(cached[1], direct[1], atol=1e-6)
    assert torch.allclose(first[1], direct[1][[0, 2]], atol=1e-6)
    again = teacher(image(9), pairs, keys)
    assert torch.equal(again[1], cached[1])
    assert torch.equal(pad_candidates([vocab.classes_for_object(o) for o in LABELS]), cached[0])
