"""The recogniser's V-COCO output: role-less triplets (an empty role box) for the roles of multi-role actions."""
import numpy as np
import pytest
import torch

from hoi_mllm.models.matching import RecognitionOutput
from hoi_mllm.postprocess import PostprocessConfig, to_triplets
from hoi_mllm.prompts import load_vocabulary
from hoi_mllm.records import Detections, Pairs


def test_vcoco_output_adds_role_less_triplets_with_an_empty_role_box():
    vc = load_vocabulary("vcoco")
    eat_obj, eat_instr, hold = (vc.verbs.index(n) for n in ("eat obj", "eat instr", "hold obj"))
    apple, knife = vc.object_index("apple"), vc.object_index("knife")
    dets = Detections.create([[10, 10, 60, 110], [30, 40, 50, 60], [70, 40, 90, 60]], [1.0, 1.0, 1.0],
                             [vc.human_object, apple, knife], (300, 200))
    pairs = Pairs.from_detections(dets, [0, 0], [1, 2])  # the person with the apple, with the knife
    cands = torch.tensor([[vc.class_of(eat_obj, apple), vc.class_of(hold, apple)],
                          [vc.class_of(eat_instr, knife), vc.class_of(hold, knife)]])
    scores = torch.tensor([[0.8, 0.1], [0.25, 0.5]])
    out = RecognitionOutput(cands, torch.logit(scores), scores, None)
    t = to_triplets(pairs, out, vc, PostprocessConfig(top_k=None))
    empty = (t.object_boxes == 0).all(1)
    assert len(t) == 4 + 2 and empty.sum() == 2 and (t.objects[empty] == -1).all()
    got = {int(v): float(sc) for v, sc in zip(t.verbs[empty], t.scores[empty])}
    # eat instr without an object: eats (0.8) x no instrument (1 - 0.25); eat obj without one: 0.25 x (1 - 0.8)
    assert got == pytest.approx({eat_instr: 0.8 * 0.75, eat_obj: 0.25 * 0.2})
    assert np.allclose(t.human_boxes[empty], [10, 10, 60, 110]) and (np.diff(t.scores) <= 0).all()
    assert len(to_triplets(pairs, out, vc, PostprocessConfig(top_k=None, role_less=False))) == 4
    assert len(to_triplets(pairs, out, vc, PostprocessConfig(top_k=None, min_score=0.2))) == 3 + 1
    # HICO-DET's verbs are each an action of their own: nothing is added
    hico = load_vocabulary("hico-det")
    assert hico.verb_action_ids[0].shape[0] == len(hico.verb_action_ids[1]) == hico.num_verbs
