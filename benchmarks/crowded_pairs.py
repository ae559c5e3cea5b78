"""How many annotated pairs fall beyond the pair-proposal cap (`pairs.proposal.max_pairs`) at inference with
ground-truth boxes (every box scored 1), HICO-DET and V-COCO test: `python benchmarks/crowded_pairs.py`."""
import time
import numpy as np
from hoi_mllm.data import load_annotations
from hoi_mllm.pairs import PairProposalConfig, propose_pairs
from hoi_mllm.records import Detections
from hoi_mllm.prompts import load_vocabulary

for name, path, vocab in (("hico-det", "/work/shared/data/hicodet/instances_test2015.json", "hico-det"),
                          ("vcoco", "/work/shared/data/vcoco/instances_vcoco_test.json", "vcoco")):
    V = load_vocabulary(vocab)
    samples = load_annotations(path, vocab)
    t = time.perf_counter()
    stats = {cap: [0, 0, 0] for cap in (64, 128, 256)}  # images over cap, annotated pairs lost, total pairs
    total_annot, most = 0, 0
    for s in samples:
        if len(s.boxes) == 0:
            continue
        size = s.image_size or (int(s.boxes[:, 2].max()) + 1, int(s.boxes[:, 3].max()) + 1)
        dets = Detections.create(s.boxes, np.ones(len(s.boxes)), s.labels, size)
        full = propose_pairs(dets, V.human_object, PairProposalConfig(max_pairs=None, human_human=True))
        most = max(most, len(full))
        annotated = {(int(h), int(o)) for h, o in zip(s.pair_human, s.pair_object) if o >= 0}
        total_annot += len(annotated)
        for cap, st in stats.items():
            kept = propose_pairs(dets, V.human_object, PairProposalConfig(max_pairs=cap, human_human=True))
            have = {(int(h), int(o)) for h, o in zip(kept.human_index, kept.object_index)}
            st[0] += len(full) > cap
            st[1] += len(annotated - have)
    print(f"{name}: {len(samples)} images, {total_annot} annotated pairs, most proposals in one image {most}, "
          f"{time.perf_counter() - t:.1f} s")
    for cap, (over, lost, _) in stats.items():
        print(f"  cap {cap}: {over} images over the cap, {lost} annotated pairs lost ({100 * lost / total_annot:.2f} %)")
