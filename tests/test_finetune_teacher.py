"""Teachers: the likelihood teacher that shares the student's backbone scores exactly as a separately loaded
base (before and after training steps), when that sharing is allowed (CLIP's teacher: test_finetune_clip_teacher.py)."""
from pathlib import Path

import pytest
import torch

from hoi_mllm.finetune.config import load_config
from hoi_mllm.finetune.teacher import LikelihoodTeacher, build_teacher, make_pairs, shares_base


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from hoi_mllm.data.synthetic import generate_world

    folder = tmp_path_factory.mktemp("teacher_world")
    generate_world(folder, 8, 2, seed=5, image_size=128, progress=False, workers=1)
    return folder


def test_the_shared_base_rule():
    assert shares_base(load_config("zero_shot"))  # LoRA + projector: the recipes with a teacher share
    assert shares_base(load_config("rare_first"))
    for overrides in ({"adapter.method": "full"}, {"model.quantization": "4bit"}, {"teacher.model": "other/mllm"},
                      {"teacher.kind": "ema"}):
        assert not shares_base(load_config("zero_shot", overrides)), overrides
    assert not shares_base(load_config("synthetic", {"teacher.kind": "likelihood"}))  # its warm-up changes the base


def test_teacher_sharing_the_student_scores_as_the_separately_loaded_base(world):
    from hoi_mllm.data import load_annotations
    from hoi_mllm.finetune.data import load_training_data, training_detections
    from hoi_mllm.finetune.model import base_loader, build_student
    from hoi_mllm.finetune.step import TrainingStep, TrainItem

    # the synthetic recipe without its language warm-up trains LoRA, projector and the vision tower
    cfg = load_config("synthetic", {"data.train": str(world / "instances_train.json"), "data.val_images": 0,
                                    "model.pretrain_steps": 0, "teacher.kind": "likelihood",
                                    "model.recogniser.sap.hidden_size": 32, "adapter.dropout": 0.1})
    assert shares_base(cfg) and cfg.adapter.train_vision and cfg.adapter.train_projector
    vocab = load_training_data(cfg.data).vocabulary
    student = build_student(cfg, vocab)
    shared = build_teacher(cfg.teacher, vocab, student, share_base=True)
    assert shared.view is not None and shared.view.frozen  # copies of the projector and vision weights
    separate = LikelihoodTeacher(base_loader(cfg.model, vocab)(), vocab, cfg.teacher.temperature)
    samples = load_annotations(world / "instances_train.json")[:3]
    images = [s.load_image() for s in samples]

    def scores(teacher):
        out = []
        for s, image in zip(samples, images):
            b = torch.as_tensor(s.boxes).float()
            h, o = torch.as_tensor(s.pair_human), torch.as_tensor(s.pair_object)
            out.append(teacher.score(image, make_pairs(b[h], b[o], torch.as_tensor(s.labels)[o], image.size)))
        return out

    def close(a, b):
        for (ca, pa), (cb, pb) in zip(a, b):
            assert torch.equal(ca, cb)
            assert float((pa - pb).abs().max()) <= 1e-5, float((pa - pb).abs().max())

    close(scores(shared), scores(separate))  # step 0
    # a few real training steps, the shared teacher inside the forward (its swap must not disturb backward)
    step = TrainingStep(student, vocab.seen_classes(None), cfg.pairs, cfg.matcher, cfg.loss, shared)
    params = [p for p in student.parameters() if p.requires_grad]
    before = {id(p): p.detach().clone() for p in params}
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    items = [TrainItem(i, s, image, training_detections(cfg.pairs, s, image.size, None))
             for i, (s, image) in enumerate(zip(samples, images))]
    for k in range(3):
        terms = step(items, step_seed=k)
        terms.total.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert student.training
    moved = {n for n, p in student.named_parameters() if p.requires_grad and not torch.equal(p, before[id(p)])}
    assert any("lora_B" in n for n in moved) and any(".visual." in n for n in moved), sorted(moved)[:5]
    close(scores(shared), scores(separate))  # after training: still the base
    assert all(p.requires_grad for p in params)  # the student's own parameters are back and still train
    # ... and the student itself, adapters on, now scores otherwise: the view is what makes it the base
    student_as_is = LikelihoodTeacher(student.backbone, vocab, cfg.teacher.temperature)  # freezes the student
    differs = max(float((a[1] - b[1]).abs().max()) for a, b in zip(scores(student_as_is), scores(separate)))
    assert differs > 1e-3, differs
