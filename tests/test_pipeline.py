"""Post-processing, the pipeline, and save_pretrained / from_pretrained round trips (plain, LoRA, training-free)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from hoi_mllm.io import atomic_write_json
from hoi_mllm.models.likelihood import LikelihoodScorer
from hoi_mllm.models.loading import load_backbone
from hoi_mllm.models.matching import PAD_LOGIT, RecognitionOutput
from hoi_mllm.models.recogniser import HOIRecogniser, RecogniserConfig
from hoi_mllm.models.sap import SAPConfig
from hoi_mllm.pairs import propose_pairs
from hoi_mllm.pipeline import HOIPipeline, is_pretrained_dir, load_recogniser
from hoi_mllm.postprocess import PostprocessConfig, to_triplets, triplet_scores
from hoi_mllm.prompts import Vocabulary, load_vocabulary
from hoi_mllm.records import Detections

VOCAB = load_vocabulary("hico-det")
PERSON, BICYCLE, CUP = VOCAB.human_object, VOCAB.object_index("bicycle"), VOCAB.object_index("cup")


class FixedDetector:
    """Returns the same detections for every image (labels in ``vocabulary``)."""

    def __init__(self, dets_by_name, vocabulary=VOCAB):
        self.vocabulary = vocabulary
        self.dets_by_name = dets_by_name

    def __call__(self, images, file_names=None):
        return [self.dets_by_name[n] for n in file_names]


def scene():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8))
    dets = Detections.create([[10, 10, 100, 190], [120, 30, 250, 150], [60, 60, 80, 90]], [0.9, 0.8, 0.6],
                             [PERSON, BICYCLE, CUP], (300, 200))
    no_person = Detections.create([[120, 30, 250, 150]], [0.8], [BICYCLE], (300, 200))
    return image, {"a.jpg": dets, "b.jpg": no_person, "c.jpg": Detections.empty((300, 200))}


# ------------------------------------------------------------------ post-processing
def test_triplet_scores_formula():
    verb = torch.tensor([[0.5, 0.25], [1.0, 0.0]])
    human, obj, inter = torch.tensor([0.9, 0.4]), torch.tensor([0.8, 1.0]), torch.tensor([0.0, 2.0])
    cfg = PostprocessConfig(verb_exponent=2.0, human_exponent=1.0, object_exponent=0.5, interactiveness_exponent=3.0)
    s = triplet_scores(verb, human, obj, inter, cfg)
    expect = verb ** 2 * (human * obj ** 0.5 * torch.sigmoid(inter) ** 3)[:, None]
    assert torch.allclose(s, expect)
    assert torch.allclose(triplet_scores(verb, human, obj, None), verb * (human * obj)[:, None])


def test_to_triplets_top_k_and_order():
    _, dets = scene()
    pairs = propose_pairs(dets["a.jpg"], PERSON)
    lists = [list(VOCAB.classes_for_object(int(o))) for o in pairs.object_labels]
    width = max(map(len, lists))
    cands = torch.full((len(pairs), width), -1)
    for i, c in enumerate(lists):
        cands[i, : len(c)] = torch.tensor(c)
    scores = torch.rand(cands.shape) * (cands >= 0)
    logits = torch.where(cands >= 0, torch.logit(scores.clamp(1e-4, 1 - 1e-4)), torch.tensor(PAD_LOGIT))
    out = RecognitionOutput(cands, logits, scores, torch.zeros(len(pairs)))
    t = to_triplets(pairs, out, VOCAB, PostprocessConfig(top_k=5), "a.jpg")
    assert len(t) == 5 and t.file_name == "a.jpg" and t.image_size == (300, 200)
    assert (np.diff(t.scores) <= 0).all()
    every = to_triplets(pairs, out, VOCAB, PostprocessConfig(top_k=None))
    assert len(every) == int((cands >= 0).sum())
    assert np.allclose(every.scores[:5], t.scores)
    # the separate cap: the top 5 of the interactions and the top 5 of the no-interaction triplets, merged
    ni = VOCAB.no_interaction_verb
    sep = to_triplets(pairs, out, VOCAB, PostprocessConfig(top_k=5, no_interaction_cap="separate"), "a.jpg")
    for is_none in (True, False):
        assert np.allclose(sep.scores[(sep.verbs == ni) == is_none], every.scores[(every.verbs == ni) == is_none][:5])
    assert (np.diff(sep.scores) <= 0).all() and len(sep) == 5 + min(5, int((every.verbs == ni).sum()))
    for i in range(len(t)):  # object and verb of each triplet are a class of the pair's object
        assert VOCAB.class_of(int(t.verbs[i]), int(t.objects[i])) is not None
        p = int(np.flatnonzero((pairs.object_boxes.numpy() == t.object_boxes[i]).all(1))[0])
        assert t.objects[i] == pairs.object_labels[p]
    assert len(to_triplets(pairs[[]], RecognitionOutput.empty(), VOCAB)) == 0


# ------------------------------------------------------------------ the pipeline
@pytest.fixture(scope="module")
def recogniser():
    backbone = load_backbone("tiny-qwen2-vl")  # a fresh one: these tests save and wrap it
    config = RecogniserConfig(sap=SAPConfig(num_pair_tokens=2, hidden_size=32), candidate_placement="prefix")
    return HOIRecogniser(backbone, VOCAB, config).eval()


def test_pipeline_runs_and_handles_empty_images(recogniser):
    image, dets = scene()
    pipe = HOIPipeline(FixedDetector(dets), recogniser, post_config=PostprocessConfig(top_k=20))
    out = pipe([image, image, image], ["a.jpg", "b.jpg", "c.jpg"])
    assert [o.file_name for o in out] == ["a.jpg", "b.jpg", "c.jpg"]
    assert len(out[0]) == 20 and (out[0].scores > 0).all() and (out[0].scores <= 1).all()
    assert len(out[1]) == 0 and len(out[2]) == 0  # no person / nothing at all: empty, not an error
    assert set(out[0].objects.tolist()) <= {BICYCLE, CUP}
    with pytest.raises(ValueError, match="vocabulary"):
        HOIPipeline(FixedDetector(dets, load_vocabulary("vcoco")), recogniser)


def perturb(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def test_save_load_round_trip(recogniser, tmp_path):
    image, dets = scene()
    perturb(recogniser.sap)  # trained-looking weights, not the seeded initial ones
    with torch.no_grad():
        recogniser.match_head.scale.fill_(17.0)
    pipe = HOIPipeline(FixedDetector(dets), recogniser, post_config=PostprocessConfig(top_k=30, verb_exponent=2.0))
    before = pipe([image], ["a.jpg"])[0]
    folder = pipe.save_pretrained(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    assert config["base_model"]["name_or_path"] == "base" and config["vocabulary"] == "hico-det"
    assert (folder / "recogniser.safetensors").exists() and (folder / "base" / "config.json").exists()
    assert is_pretrained_dir(folder)
    loaded = HOIPipeline.from_pretrained(folder, detector=FixedDetector(dets))
    assert loaded.post_config.verb_exponent == 2.0
    assert loaded.recogniser.config == recogniser.config
    after = loaded([image], ["a.jpg"])[0]
    assert np.array_equal(before.scores, after.scores) and np.array_equal(before.verbs, after.verbs)
    assert np.array_equal(before.human_boxes, after.human_boxes)
    # an untrained preset base can be named instead of saved: the seeded preset rebuilds the same weights
    named = pipe.save_pretrained(tmp_path / "named", save_base=False)
    assert not (named / "base").exists()
    assert json.loads((named / "config.json").read_text())["base_model"]["name_or_path"] == "tiny-qwen2-vl"
    again = HOIPipeline.from_pretrained(named, detector=FixedDetector(dets))([image], ["a.jpg"])[0]
    assert np.array_equal(before.scores, again.scores)


def test_save_load_with_lora_adapter(tmp_path):
    from peft import LoraConfig, get_peft_model

    image, dets = scene()
    backbone = load_backbone("tiny-qwen2-vl")
    rec = HOIRecogniser(backbone, VOCAB, RecogniserConfig(sap=SAPConfig(hidden_size=32))).eval()
    pairs = propose_pairs(dets["a.jpg"], PERSON)
    plain = rec.recognise(image, pairs)
    lm = backbone.model.model.language_model
    backbone.model.model.language_model = get_peft_model(lm, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    perturb(backbone.model.model.language_model.base_model.model.layers[0].self_attn.q_proj.lora_B, seed=1)
    adapted = rec.recognise(image, pairs)
    assert (adapted.verb_logits - plain.verb_logits)[plain.valid].abs().max() > 1e-4  # the adapter matters
    folder = HOIPipeline(None, rec).save_pretrained(tmp_path / "lora")
    assert (folder / "adapter" / "adapter_config.json").exists()
    from safetensors import safe_open

    with safe_open(str(folder / "base" / "model.safetensors"), "pt") as f:
        base_keys = list(f.keys())
    assert base_keys and not any("lora" in k or "base_layer" in k for k in base_keys)
    for merge in (True, False):
        loaded = HOIPipeline.from_pretrained(folder, merge_adapter=merge)
        again = loaded.recogniser.recognise(image, pairs)
        assert (again.verb_logits - adapted.verb_logits)[plain.valid].abs().max() < 1e-4, merge
    # the base saved under base/ is the un-adapted model
    base_only = HOIRecogniser(load_backbone(folder / "base"), VOCAB, rec.config).eval()
    base_only.load_state_dict(rec.own_state_dict(), strict=False)
    assert (base_only.recognise(image, pairs).verb_logits - plain.verb_logits)[plain.valid].abs().max() < 1e-4


def test_training_free_and_custom_vocabulary_round_trip(tmp_path):
    image, _ = scene()
    data = VOCAB.to_dict()
    data["name"] = "mini"
    data["splits"] = {}
    vocab = Vocabulary.from_dict(data)
    rec, none = load_recogniser("tiny-qwen2-vl", vocabulary=vocab, mode="training-free")
    assert none is None and isinstance(rec, LikelihoodScorer)
    rec.config = type(rec.config)(temperature=2.0)
    dets = Detections.create([[10, 10, 100, 190], [60, 60, 80, 90]], [0.9, 0.6], [PERSON, CUP], (300, 200))
    pipe = HOIPipeline(FixedDetector({"a.jpg": dets}, vocab), rec)
    before = pipe([image], ["a.jpg"])[0]
    folder = pipe.save_pretrained(tmp_path / "tf")
    config = json.loads((folder / "config.json").read_text())
    assert config["mode"] == "training-free" and config["vocabulary"]["embedded"]["name"] == "mini"
    loaded_rec, loaded = load_recogniser(folder)
    assert isinstance(loaded_rec, LikelihoodScorer) and loaded_rec.config.temperature == 2.0
    assert loaded.vocabulary.name == "mini"
    loaded.detector = FixedDetector({"a.jpg": dets}, loaded.vocabulary)
    after = loaded([image], ["a.jpg"])[0]
    assert np.allclose(before.scores, after.scores, atol=1e-6)
    with pytest.raises(ValueError, match="training-free"):
        load_recogniser(folder, mode="matching")


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such recogniser folder"):
        HOIPipeline.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="recogniser config not found"):
        HOIPipeline.from_pretrained(tmp_path)
    atomic_write_json(tmp_path / "config.json", {"format": "something-else"})
    with pytest.raises(ValueError, match="hoi-mllm/recogniser"):
        HOIPipeline.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="supported families"):
        load_recogniser(tmp_path / "nope")
    with pytest.raises(ValueError, match="mode"):
        load_recogniser("tiny-qwen2-vl", mode="generate")


def test_a_base_checkpoint_defaults_to_training_free(tmp_path, caplog):
    load_backbone("tiny-qwen2-vl").save_pretrained(tmp_path / "base")  # a local checkpoint, not a recogniser
    assert isinstance(load_recogniser("tiny-qwen2-vl")[0], HOIRecogniser)  # a preset: the smoke-test recogniser
    rec, saved = load_recogniser(tmp_path / "base")
    assert saved is None and isinstance(rec, LikelihoodScorer)
    with caplog.at_level("WARNING", logger="hoi_mllm.pipeline"):
        rec, _ = load_recogniser(tmp_path / "base", mode="matching")
    assert isinstance(rec, HOIRecogniser) and "untrained" in caplog.text
