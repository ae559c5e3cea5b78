"""Unseen-pair recall U-R@K (EoID, AAAI 2023, Table 1).

The share of ground-truth human-object pairs that carry an unseen class (of a zero-shot split)
whose human and object are both recovered — IoU >= 0.5 with the +1-pixel convention of the
HICO-DET evaluation, both boxes of one predicted pair — among the top-K *distinct* predicted
(human box, object box) pairs of their image, pairs ranked by their best triplet score. It
measures how well a detector plus pair scoring finds the pairs that unseen interactions sit on,
whatever verb the recogniser then gives them.

Conventions: predicted pairs are distinct when their eight coordinates differ; pairs with the
same best score keep the order of their first triplet in the image; every triplet of an image
counts for ranking (also those whose (object, verb) is not a class) except, by default, those of
the vocabulary's no-interaction verb: a pair the recogniser confidently calls "no interaction" is
not a pair it proposes as carrying an interaction, and letting such a score rank it first would
reward the opposite of what U-R@K measures (``count_no_interaction=True`` counts them; EoID's paper
does not say which it does). One predicted pair may
recover several ground-truth pairs (a recall, not a matching); a ground-truth pair counts once
however many unseen classes it carries; images without predictions recover nothing.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from hoi_mllm.boxes import box_iou_aligned
from hoi_mllm.data.sample import HOISample
from hoi_mllm.eval.inputs import FlatPredictions, flatten_predictions, image_index
from hoi_mllm.eval.matching import expand_by_key, group_rows
from hoi_mllm.predictions import PredictionsFile
from hoi_mllm.prompts.vocabulary import Vocabulary, load_vocabulary
from hoi_mllm.records import HOITriplets

DEFAULT_KS = (3, 5, 10)


def ranked_pairs(flat: FlatPredictions, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The top-``k`` distinct (human box, object box) pairs of each image.

    Args:
        flat: triplets of any number of images.
        k: pairs kept per image.
    Returns:
        ``image [P]`` int64, ``human_boxes [P, 4]``, ``object_boxes [P, 4]`` (xyxy pixels) and
        ``rank [P]`` int64 (0 = best in its image), sorted by image; ``P <= k x images``.
    """
    if len(flat) == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, np.zeros((0, 4)), np.zeros((0, 4)), z.copy()
    cols = [flat.image] + [flat.human_boxes[:, j] for j in range(4)] + [flat.object_boxes[:, j] for j in range(4)]
    order, group = group_rows(*cols)  # identical (image, boxes) rows adjacent
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])  # [G] first sorted row of each pair
    best = np.maximum.reduceat(flat.scores[order], starts)  # [G] best triplet score of each pair
    first_pos = np.minimum.reduceat(flat.position[order], starts)  # [G] tie-breaker
    rows = order[starts]  # [G] a representative triplet of each pair
    image = flat.image[rows]
    by_rank = np.lexsort((first_pos, -best, image))  # by image, then best score desc
    image_sorted = image[by_rank]
    image_start = np.searchsorted(image_sorted, image_sorted, side="left")
    rank = np.arange(by_rank.shape[0]) - image_start  # [G] rank of the pair in its image
    keep = rank < k
    sel = rows[by_rank[keep]]
    return image_sorted[keep], flat.human_boxes[sel], flat.object_boxes[sel], rank[keep]


def recall_ignored_verbs(vocabulary: Vocabulary, count_no_interaction: bool = False) -> tuple[int, ...]:
    """The verbs whose triplets do not rank pairs for U-R@K: the no-interaction verb, unless counted."""
    if count_no_interaction or vocabulary.no_interaction_verb is None:
        return ()
    return (int(vocabulary.no_interaction_verb),)


class UnseenPairRecall:
    """U-R@K accumulated over images: ``update()`` with predictions, ``compute()`` the recalls.

    Args:
        samples: ground truth, one :class:`HOISample` per image (positions are the image indices
            that :class:`FlatPredictions` use).
        unseen_classes: the split's unseen class ids.
        ks: the K values (default 3, 5, 10).
        iou_threshold: both boxes must reach it.
        plus_one: the +1-pixel IoU convention (HICO-DET's).
        ignore_verbs: verbs whose triplets do not rank pairs (the evaluators pass the vocabulary's
            no-interaction verb unless told to count it).
    """

    def __init__(self, samples: Sequence[HOISample], unseen_classes: Iterable[int], ks: Sequence[int] = DEFAULT_KS,
                 iou_threshold: float = 0.5, plus_one: bool = True, ignore_verbs: Iterable[int] = ()):
        if not ks or any(int(k) < 1 for k in ks):
            raise ValueError(f"U-R@K needs K values >= 1, got {list(ks)}")
        self.ks = tuple(sorted(int(k) for k in ks))
        self.ignore_verbs = np.asarray(sorted(int(v) for v in ignore_verbs), dtype=np.int64)
        self.iou_threshold = iou_threshold
        self.plus_one = plus_one
        unseen = frozenset(int(c) for c in unseen_classes)
        img, hb, ob = [], [], []
        for i, s in enumerate(samples):
            for p, classes in enumerate(s.pair_classes):
                if s.pair_object[p] >= 0 and not unseen.isdisjoint(classes):
                    img.append(i)
                    hb.append(s.boxes[s.pair_human[p]])
                    ob.append(s.boxes[s.pair_object[p]])
        self.gt_image = np.asarray(img, dtype=np.int64)  # [U] sorted: samples are walked in order
        self.gt_human = np.asarray(hb, dtype=np.float64).reshape(-1, 4)
        self.gt_object = np.asarray(ob, dtype=np.float64).reshape(-1, 4)
        self.reset()

    @property
    def total(self) -> int:
        """Ground-truth pairs of unseen classes (the denominator)."""
        return int(self.gt_image.shape[0])

    def reset(self) -> None:
        self.hits = np.zeros(len(self.ks), dtype=np.int64)

    def update(self, flat: FlatPredictions) -> None:
        """Count the unseen ground-truth pairs that the top-K pairs of these images recover.

        Each image must come in one update only (the evaluators ensure it).
        """
        if self.ignore_verbs.size:
            flat = flat.subset(~np.isin(flat.verbs, self.ignore_verbs))
        image, hb, ob, rank = ranked_pairs(flat, self.ks[-1])
        cand = expand_by_key(self.gt_image, image)  # unseen GT pair x kept pairs of its image
        if len(cand) == 0:
            return
        ok = np.minimum(box_iou_aligned(self.gt_human[cand.query], hb[cand.target], self.plus_one),
                        box_iou_aligned(self.gt_object[cand.query], ob[cand.target], self.plus_one))
        hit_rank = np.where(ok >= self.iou_threshold, rank[cand.target], np.iinfo(np.int64).max)  # [E]
        has = cand.count > 0
        best_rank = np.minimum.reduceat(hit_rank, cand.start[has])  # [U'] best rank that recovers it
        self.hits += np.array([(best_rank < k).sum() for k in self.ks], dtype=np.int64)

    def compute(self) -> dict[int, float]:
        """K -> recall in [0, 1] (NaN when the split has no ground-truth pair in these images)."""
        return {k: (h / self.total if self.total else float("nan")) for k, h in zip(self.ks, self.hits.tolist())}


def unseen_pair_recall(samples: Sequence[HOISample], predictions: PredictionsFile | Iterable[HOITriplets],
                       vocabulary: str | Vocabulary, split: str, ks: Sequence[int] = DEFAULT_KS,
                       unknown_images: str = "error", count_no_interaction: bool = False) -> dict[int, float]:
    """U-R@K of a predictions file for a zero-shot split of ``vocabulary``: ``{K: recall}``."""
    vocab = load_vocabulary(vocabulary)
    metric = UnseenPairRecall(samples, vocab.unseen_classes(vocab.split(split).name), ks,
                              ignore_verbs=recall_ignored_verbs(vocab, count_no_interaction))
    flat, _ = flatten_predictions(predictions, image_index(samples), vocab, unknown_images=unknown_images)
    metric.update(flat)
    return metric.compute()
