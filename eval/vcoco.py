"""V-COCO role AP exactly as ``vsrl_eval.py`` (s-gupta/v-coco) ``_do_role_eval`` computes it.

Predictions use the ``vcoco`` vocabulary: ``verb`` is the action-role index (e.g. ``hold obj``,
``eat instr``), ``object`` an object id in the HICO-DET object order (not used by the protocol,
which never checks object categories), ``object_box`` the role box: all zeros (or, in memory, all
NaN) for "no role object".

Rules (per action-role, per image, detections by descending score):

- The detection's human box is compared with *every* ground-truth agent of its image, whatever
  their actions; it takes the agent of highest IoU (the first on ties), IoU with the +1-pixel
  convention — ``vsrl_eval.get_overlap`` computes ``iw = min(x2) - max(x1) + 1``, so V-COCO uses
  the same convention as HICO-DET.
- True positive when that agent has this action-role, the agent IoU is >= 0.5, the role box IoU
  with the agent's ground-truth role box is >= 0.5, and that (agent, action-role) is not covered
  yet; otherwise false positive. Where the ground-truth role object is absent
  (``HOISample.pair_object == -1``): **Scenario 1** counts the role as correct only when the
  prediction has no role box (all zeros or all NaN); **Scenario 2** ignores the role box.
- AP is VOC all-point (``voc_ap``); the reported number is the mean over the action-roles that
  have ground truth (``vsrl_eval`` takes ``np.nanmean``; an action-role without ground truth would
  make it fail, here it is left out of the mean and its AP is NaN).

What the 24-class files of ``../shared/data/vcoco`` allow: they list only (agent, action-role,
object) instances, all with a role object, so (a) they carry no role-less case and Scenario 1 and
Scenario 2 give the same number on them (the output says so), and (b) they list no person that
has no action with a role object: neither the persons with only role-less actions nor those V-COCO
leaves unannotated. Those persons are therefore not candidates here: a detection whose human box
overlaps one of them best is compared with the best *listed* agent instead, and may be a true
positive where ``vsrl_eval`` (which takes the best of all persons) would count a false positive, or
skip it for an unannotated person. Both scenarios are computed whenever the
annotation carries role-less pairs. Ties in score keep the ground-truth image order, then the
triplet's position in its image (``vsrl_eval`` uses an unstable sort there).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from hoi_mllm.boxes import box_iou_aligned
from hoi_mllm.data.sample import HOISample
from hoi_mllm.eval.ap import accumulate
from hoi_mllm.eval.inputs import FlatPredictions, check_options, flatten_predictions, image_index
from hoi_mllm.eval.matching import expand_by_key, first_in_group, segment_argmax
from hoi_mllm.predictions import PredictionsFile
from hoi_mllm.prompts.vocabulary import Vocabulary, load_vocabulary
from hoi_mllm.records import HOITriplets

SCENARIOS = ("scenario_1", "scenario_2")


@dataclass(frozen=True)
class VCOCOConfig:
    """Options of the V-COCO evaluation (the defaults are ``vsrl_eval``'s).

    Attributes:
        iou_threshold: IoU needed for the agent box and for the role box.
        unknown_images: predicted file names absent from the ground truth: ``error`` or ``ignore``.
        keep_curves: keep every action-role's precision/recall curve (for plots).
        progress: show a progress bar while reading predictions.
    """

    iou_threshold: float = 0.5
    unknown_images: str = "error"
    keep_curves: bool = False
    progress: bool = False

    def __post_init__(self):
        check_options(self.unknown_images, self.iou_threshold)


@dataclass
class VCOCOGroundTruth:
    """Agents, (agent, action-role) units and their role boxes.

    Attributes:
        agent_image: ``[A]`` int64 image of each distinct ground-truth agent, ascending.
        agent_boxes: ``[A, 4]`` float64 xyxy pixels.
        unit_keys: ``[U]`` int64 ``agent * num_verbs + verb``, ascending: one per (agent, action-role).
        role_unit: ``[R]`` int64 unit of each role row, ascending (a unit has one or more rows).
        role_boxes: ``[R, 4]`` float64 role object box, NaN where the role object is absent.
        npos: ``[V]`` int64 units per action-role.
    """

    agent_image: np.ndarray
    agent_boxes: np.ndarray
    unit_keys: np.ndarray
    role_unit: np.ndarray
    role_boxes: np.ndarray
    npos: np.ndarray

    @property
    def role_absent(self) -> np.ndarray:
        return np.isnan(self.role_boxes).all(1)


def vcoco_ground_truth(samples: Sequence[HOISample], vocabulary: Vocabulary) -> VCOCOGroundTruth:
    """Flatten ``samples``: agents are distinct human boxes of annotated pairs, per image."""
    num_verbs = vocabulary.num_verbs
    agent_image: list[int] = []
    agent_boxes: list[np.ndarray] = []
    rows: list[tuple[int, np.ndarray]] = []  # (unit key, role box)
    for i, s in enumerate(samples):
        agents: dict[tuple, int] = {}
        boxes = np.asarray(s.boxes, dtype=np.float64).reshape(-1, 4)
        for p, verbs in enumerate(s.pair_verbs):
            hbox = boxes[s.pair_human[p]]
            a = agents.setdefault(tuple(hbox.tolist()), len(agent_image))
            if a == len(agent_image):
                agent_image.append(i)
                agent_boxes.append(hbox)
            obox = boxes[s.pair_object[p]] if s.pair_object[p] >= 0 else np.full(4, np.nan)
            for v in verbs:
                if not 0 <= v < num_verbs:
                    raise ValueError(f"ground truth of {s.file_name!r} names verb {v}, outside the "
                                     f"{vocabulary.name} vocabulary (0..{num_verbs - 1})")
                rows.append((a * num_verbs + int(v), obox))
    keys = np.array([k for k, _ in rows], dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    unit_keys, role_unit = np.unique(keys[order], return_inverse=True)
    return VCOCOGroundTruth(
        agent_image=np.asarray(agent_image, dtype=np.int64),
        agent_boxes=np.asarray(agent_boxes, dtype=np.float64).reshape(-1, 4),
        unit_keys=unit_keys,
        role_unit=role_unit.astype(np.int64).reshape(-1),
        role_boxes=np.asarray([b for _, b in rows], dtype=np.float64).reshape(-1, 4)[order],
        npos=np.bincount(unit_keys % num_verbs, minlength=num_verbs).astype(np.int64),
    )


def empty_role_box(boxes: np.ndarray) -> np.ndarray:
    """``[T, 4]`` -> ``[T]`` bool: the box says "no role object" (all zeros or all NaN)."""
    return (boxes == 0).all(1) | np.isnan(boxes).all(1)


def match_vcoco(flat: FlatPredictions, gt: VCOCOGroundTruth, num_verbs: int,
                iou_threshold: float = 0.5) -> dict[str, np.ndarray]:
    """True-positive flags of detections under both scenarios.

    Args:
        flat: ``T`` detections; ``verbs`` are action-role ids, ``object_boxes`` the role boxes.
        gt: the ground truth.
        num_verbs: action-roles in the vocabulary (the key stride of ``gt.unit_keys``).
        iou_threshold: agent and role IoU threshold (+1-pixel IoU).
    Returns:
        ``{"scenario_1": tp [T] bool, "scenario_2": tp [T] bool}``.
    """
    cand = expand_by_key(flat.image, gt.agent_image)  # [E] detection x every agent of its image
    iou_h = box_iou_aligned(flat.human_boxes[cand.query], gt.agent_boxes[cand.target], plus_one=True)
    best, row = segment_argmax(iou_h, cand)  # [T] best agent, first on ties
    agent = np.where(row >= 0, cand.target[np.maximum(row, 0)], -1)
    key = agent * num_verbs + flat.verbs
    if gt.unit_keys.size:
        unit = np.minimum(np.searchsorted(gt.unit_keys, key), gt.unit_keys.size - 1)  # [T]
        true_action = (agent >= 0) & (gt.unit_keys[unit] == key)  # the agent has this action-role
    else:
        unit, true_action = np.zeros_like(key), np.zeros(len(flat), dtype=bool)
    idx = np.flatnonzero(true_action & (best >= iou_threshold))  # candidates for a true positive
    out = {s: np.zeros(len(flat), dtype=bool) for s in SCENARIOS}
    if idx.size == 0:
        return out
    rc = expand_by_key(unit[idx], gt.role_unit)  # [R'] candidate x role rows of its unit (>= 1 each)
    pred_role = flat.object_boxes[idx][rc.query]
    iou_r = box_iou_aligned(pred_role, gt.role_boxes[rc.target], plus_one=True)
    iou_r = np.where(np.isnan(iou_r), 0.0, iou_r)  # a NaN box overlaps nothing
    absent = gt.role_absent[rc.target]
    no_role_predicted = empty_role_box(pred_role)
    for scenario, when_absent in (("scenario_1", no_role_predicted.astype(np.float64)), ("scenario_2", 1.0)):
        ov_role = np.maximum.reduceat(np.where(absent, when_absent, iou_r), rc.start)  # [len(idx)]
        ok = idx[ov_role >= iou_threshold]
        first = first_in_group(unit[ok], flat.scores[ok], flat.position[ok])
        out[scenario][ok[first]] = True
    return out


@dataclass
class ScenarioResult:
    """Role AP of one scenario (fractions). ``ap``, ``recall``: ``[V]`` (NaN without ground truth)."""

    scenario: str
    ap: np.ndarray
    recall: np.ndarray
    npos: np.ndarray
    num_detections: np.ndarray
    mean: float | None
    curves: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass
class VCOCOResult:
    """The result of a V-COCO evaluation; ``to_dict()`` gives the JSON report (percent)."""

    vocabulary: Vocabulary
    scenarios: dict[str, ScenarioResult]
    role_less: int
    counts: dict[str, int]
    config: VCOCOConfig

    @property
    def scenarios_differ(self) -> bool:
        """Whether the annotation lets the two scenarios differ (it has role-less pairs)."""
        return self.role_less > 0

    def to_dict(self) -> dict:
        from hoi_mllm.eval.tables import vcoco_report

        return vcoco_report(self)


class VCOCOEvaluator:
    """V-COCO role AP in three steps: ``update()`` matches, ``compute()`` accumulates and summarises.

    Args:
        samples: ground truth in the ``vcoco`` vocabulary (verbs are action-roles;
            ``pair_object == -1`` for a pair whose role object is absent).
        vocabulary: normally ``"vcoco"``.
        config: :class:`VCOCOConfig`.
    """

    def __init__(self, samples: Sequence[HOISample], vocabulary: str | Vocabulary = "vcoco",
                 config: VCOCOConfig | None = None):
        self.vocabulary = load_vocabulary(vocabulary)
        self.config = config or VCOCOConfig()
        self.num_images = len(samples)
        self.index = image_index(samples)
        self.gt = vcoco_ground_truth(samples, self.vocabulary)
        self.reset()

    def reset(self) -> None:
        self._done: set[int] = set()
        self._parts: list[tuple[np.ndarray, ...]] = []
        self._counts = {"triplets": 0, "unknown_images_ignored": 0}

    def update(self, predictions: PredictionsFile | Iterable[HOITriplets]) -> None:
        """Match the triplets of some images (each image once over all updates)."""
        flat, unknown = flatten_predictions(predictions, self.index, self.vocabulary,
                                            unknown_images=self.config.unknown_images, done=self._done,
                                            empty_object_boxes=True, progress=self.config.progress)
        self._counts["unknown_images_ignored"] += len(unknown)
        self._counts["triplets"] += len(flat)
        tp = match_vcoco(flat, self.gt, self.vocabulary.num_verbs, self.config.iou_threshold)
        self._parts.append((flat.verbs, tp["scenario_1"], tp["scenario_2"], flat.scores, flat.image, flat.position))

    def compute(self) -> VCOCOResult:
        """Rank, accumulate (all-point AP) and average over action-roles, for both scenarios."""
        parts = self._parts or [tuple(np.zeros(0, dtype=t) for t in (np.int64, bool, bool, np.float64,
                                                                       np.int64, np.int64))]
        verbs, tp1, tp2, scores, image, position = (np.concatenate(x) for x in zip(*parts))
        results = {}
        for scenario, tp in zip(SCENARIOS, (tp1, tp2)):
            acc = accumulate(verbs, tp, scores, image, position, self.gt.npos, rule="voc",
                             keep_curves=self.config.keep_curves)
            has = self.gt.npos > 0
            mean = float(np.mean(acc.ap[has])) if has.any() else None
            results[scenario] = ScenarioResult(scenario, acc.ap, acc.recall, self.gt.npos, acc.num_detections,
                                               mean, acc.curves)
        counts = {"images": self.num_images, "predicted_images": len(self._done),
                  "agents": int(self.gt.agent_image.shape[0]), "ground_truth_units": int(self.gt.npos.sum()),
                  **self._counts}
        return VCOCOResult(self.vocabulary, results, int(self.gt.role_absent.sum()), counts, self.config)


def evaluate_vcoco(samples: Sequence[HOISample], predictions: PredictionsFile | Iterable[HOITriplets],
                   vocabulary: str | Vocabulary = "vcoco", config: VCOCOConfig | None = None) -> VCOCOResult:
    """One-call V-COCO role AP of in-memory predictions."""
    ev = VCOCOEvaluator(samples, vocabulary, config)
    ev.update(predictions)
    return ev.compute()
