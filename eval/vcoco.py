"""V-COCO role AP exactly as ``vsrl_eval.py`` (s-gupta/v-coco) ``VCOCOeval._do_role_eval`` counts it.

Predictions use the ``vcoco`` vocabulary: ``verb`` is the action-role index (``hold obj``, ``eat
instr``, ...), ``object`` an object id (not used by the protocol, which never checks object
categories), ``object_box`` the role box; ``null``, all zeros or all NaN say "no role object".

``_do_role_eval`` works per **action** with its roles, per image, detections by descending score:

- **Persons** of an image are all its ground-truth person boxes, whatever their actions (here: every
  box labelled with the vocabulary's person object and every pair's human). A detection's human box
  takes the person of highest IoU (the first on ties), IoU with the +1-pixel convention
  (``get_overlap``: ``iw = min(x2) - max(x1) + 1``). A person that V-COCO did not annotate
  (``ignore``) makes the detection count for nothing, neither true nor false positive: list such
  persons' box rows in ``HOISample.extra["unannotated_persons"]`` (no 24-class file can: see below).
- **npos** is per action: the persons doing the action, the same count for every role of it, whether
  or not that role has an object.
- **True positive** when that person does the detection's action, the person IoU is >= 0.5, the role
  is right and that (person, action-role) is not covered yet; otherwise a false positive. The role is
  right when the person has a ground-truth object for that role and the role box IoU is >= 0.5; when
  it has none (a *role-less* case, e.g. a person who eats with no annotated instrument): **Scenario
  1** only if the predicted role box is empty, **Scenario 2** always.
- AP is VOC all-point (``voc_ap``). ``vsrl_eval`` prints ``np.nanmean`` over its 25 role slots (the
  24 action-roles and ``point instr``); here ``role_ap`` is the mean over the vocabulary's
  action-roles that have ground truth, and ``role_ap_25_slots`` the same sum divided by the number of
  slots ``vsrl_eval`` has (the vocabulary's ``vsrl_eval_roles_not_in_vocabulary``: ``point instr``,
  which no prediction here can name, so it counts 0): ``role_ap_25_slots = role_ap x 24 / 25``.

What the 24-class files (fredzzhang/vcoco ``generate_annotations.py``, the files of
``../shared/data/vcoco``) keep of that ground truth: one (person, action-role, object) row exactly when
the role object's box exists, ``point`` dropped. So a person listed with one role of a two-role action
(``eat``, ``cut``, ``hit``: ``obj`` and ``instr``) does the action and is role-less for the other role,
and Scenario 1 and 2 differ there (550 such cases in the test file). What the files cannot give: the
persons doing a single-role action without a role box (and two-role ones with neither box), which
``vsrl_eval`` counts in ``npos`` and credits as role-less; the persons with no role action at all,
unless they appear as someone's role object; which persons V-COCO left unannotated; and boxes as
``vsrl_eval`` builds them (``x2 = x1 + w - 1``, clipped; the files have ``x1 + w``). Numbers on these
files are therefore this protocol applied to the ground truth they hold, not ``vsrl_eval``'s output on
the full V-COCO annotation.

``vsrl_eval`` would crash on a detection in an image without persons (``argmax`` of nothing); here it
is a false positive. Ties in score keep the ground-truth image order, then the triplet's position in
its image (``vsrl_eval`` takes ``argsort()[::-1]``, which reverses ties or leaves them unordered).
Agent AP (``_do_agent_eval``) needs a per-action agent score, which predictions do not carry; it is
not computed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from hoi_mllm.boxes import box_iou_aligned
from hoi_mllm.data.sample import HOISample
from hoi_mllm.eval.ap import accumulate, ranking_order
from hoi_mllm.eval.inputs import FlatPredictions, check_options, flatten_predictions, image_index
from hoi_mllm.eval.matching import expand_by_key, first_in_group, segment_argmax
from hoi_mllm.predictions import PredictionsFile
from hoi_mllm.predictions_reader import PredictionColumns
from hoi_mllm.prompts.vocabulary import Vocabulary, load_vocabulary
from hoi_mllm.records import HOITriplets

SCENARIOS = ("scenario_1", "scenario_2")
UNANNOTATED_KEY = "unannotated_persons"  # HOISample.extra: box rows of persons V-COCO did not annotate


@dataclass(frozen=True)
class VCOCOConfig:
    """Options of the V-COCO evaluation (the defaults are ``vsrl_eval``'s).

    Attributes:
        iou_threshold: IoU needed for the person box and for the role box.
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
    """Persons, what they do and their role objects, over all images.

    Attributes:
        person_image: ``[P]`` int64 image of each person, ascending. person_boxes: ``[P, 4]`` float64.
        person_ignored: ``[P]`` bool, a person V-COCO did not annotate (``vsrl_eval``'s ``ignore``).
        does_keys: ``[D]`` int64 ``person * num_actions + action``, ascending: who does what.
        role_keys: ``[R]`` int64 ``person * num_verbs + verb``, ascending, one per annotated role object.
        role_boxes: ``[R, 4]`` float64 those role objects' boxes.
        npos: ``[V]`` int64 persons doing each action-role's action (``vsrl_eval``'s per-action npos).
        role_less: ``[V]`` int64 of those, the persons without an object for that role.
        verb_action: ``[V]`` int64 action of each action-role. num_actions: ``A``.
    """

    person_image: np.ndarray
    person_boxes: np.ndarray
    person_ignored: np.ndarray
    does_keys: np.ndarray
    role_keys: np.ndarray
    role_boxes: np.ndarray
    npos: np.ndarray
    role_less: np.ndarray
    verb_action: np.ndarray
    num_actions: int


def vcoco_ground_truth(samples: Sequence[HOISample], vocabulary: Vocabulary) -> VCOCOGroundTruth:
    """Flatten ``samples``: persons are the boxes labelled as persons and every pair's human, per image."""
    num_verbs = vocabulary.num_verbs
    verb_action, actions = vocabulary.verb_action_ids
    num_actions = len(actions)
    p_image, p_boxes, p_ignored = [], [], []
    does: set[int] = set()
    role_keys: list[int] = []
    role_boxes: list[np.ndarray] = []
    for i, s in enumerate(samples):
        boxes = np.asarray(s.boxes, dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(s.labels).reshape(-1)
        rows = sorted(set(np.flatnonzero(labels == vocabulary.human_object).tolist()) | set(s.pair_human.tolist()))
        person_of = {r: len(p_image) + k for k, r in enumerate(rows)}
        ignored = set(int(r) for r in s.extra.get(UNANNOTATED_KEY, ()))
        p_image += [i] * len(rows)
        p_boxes.append(boxes[rows])
        p_ignored += [r in ignored for r in rows]
        for h, o, verbs in zip(s.pair_human.tolist(), s.pair_object.tolist(), s.pair_verbs):
            p = person_of[h]
            for v in verbs:
                if not 0 <= v < num_verbs:
                    raise ValueError(f"ground truth of {s.file_name!r} names verb {v}, outside the "
                                     f"{vocabulary.name} vocabulary (0..{num_verbs - 1})")
                if h in ignored:
                    raise ValueError(f"ground truth of {s.file_name!r}: box #{h} is listed as an unannotated "
                                     f"person ({UNANNOTATED_KEY}) but does {vocabulary.verbs[v]!r}")
                does.add(p * num_actions + int(verb_action[v]))
                if o >= 0:
                    role_keys.append(p * num_verbs + int(v))
                    role_boxes.append(boxes[o])
    does_keys = np.array(sorted(does), dtype=np.int64)
    rk = np.array(role_keys, dtype=np.int64)
    order = np.argsort(rk, kind="stable")
    rk = rk[order]
    # per action-role: persons doing its action (npos) and, of those, the ones without a role object
    doer, doer_action = does_keys // num_actions, does_keys % num_actions
    npos = np.zeros(num_verbs, dtype=np.int64)
    role_less = np.zeros(num_verbs, dtype=np.int64)
    with_role = np.unique(rk)
    for v in range(num_verbs):
        persons = doer[doer_action == verb_action[v]]
        npos[v] = persons.size
        role_less[v] = int((~np.isin(persons * num_verbs + v, with_role)).sum())
    return VCOCOGroundTruth(
        person_image=np.asarray(p_image, dtype=np.int64),
        person_boxes=(np.concatenate(p_boxes) if p_boxes else np.zeros((0, 4))).reshape(-1, 4),
        person_ignored=np.asarray(p_ignored, dtype=bool),
        does_keys=does_keys, role_keys=rk,
        role_boxes=np.asarray(role_boxes, dtype=np.float64).reshape(-1, 4)[order],
        npos=npos, role_less=role_less, verb_action=verb_action, num_actions=num_actions,
    )


def empty_role_box(boxes: np.ndarray) -> np.ndarray:
    """``[T, 4]`` -> ``[T]`` bool: the box says "no role object" (all zeros or all NaN)."""
    return (boxes == 0).all(1) | np.isnan(boxes).all(1)


def _member(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """``[N]`` bool: ``keys`` found in ``sorted_keys`` (ascending)."""
    if sorted_keys.size == 0:
        return np.zeros(keys.shape[0], dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    return sorted_keys[at] == keys


def match_vcoco(flat: FlatPredictions, gt: VCOCOGroundTruth, num_verbs: int,
                iou_threshold: float = 0.5) -> dict[str, np.ndarray]:
    """True-positive flags of detections under both scenarios, and which detections count.

    Args:
        flat: ``T`` detections; ``verbs`` are action-role ids, ``object_boxes`` the role boxes.
        gt: the ground truth.
        num_verbs: action-roles in the vocabulary (the key stride of ``gt.role_keys``).
        iou_threshold: person and role IoU threshold (+1-pixel IoU).
    Returns:
        ``{"counted": [T] bool (False: matched to an unannotated person), "scenario_1": tp [T] bool,
        "scenario_2": tp [T] bool}``.
    """
    t = len(flat)
    cand = expand_by_key(flat.image, gt.person_image)  # [E] detection x every person of its image
    iou_h = box_iou_aligned(flat.human_boxes[cand.query], gt.person_boxes[cand.target], plus_one=True)
    best, row = segment_argmax(iou_h, cand)  # [T] best person, first on ties
    person = np.where(row >= 0, cand.target[np.maximum(row, 0)], -1)  # -1: an image without persons
    counted = ~((person >= 0) & gt.person_ignored[np.maximum(person, 0)])
    out = {"counted": counted, **{s: np.zeros(t, dtype=bool) for s in SCENARIOS}}
    true_action = (person >= 0) & _member(person * gt.num_actions + gt.verb_action[flat.verbs], gt.does_keys)
    idx = np.flatnonzero(true_action & counted & (best >= iou_threshold))  # may be true positives
    if idx.size == 0:
        return out
    unit = person[idx] * num_verbs + flat.verbs[idx]  # [I] (person, action-role)
    rc = expand_by_key(unit, gt.role_keys)  # [R'] candidate x the person's objects for that role
    iou_r = box_iou_aligned(flat.object_boxes[idx][rc.query], gt.role_boxes[rc.target], plus_one=True)
    iou_r = np.where(np.isnan(iou_r), 0.0, iou_r)  # an empty (NaN) role box overlaps nothing
    ov_role = np.full(idx.size, -np.inf)
    has_role = rc.count > 0
    if has_role.any():
        ov_role[has_role] = np.maximum.reduceat(iou_r, rc.start[has_role])
    empty = empty_role_box(flat.object_boxes[idx])
    for scenario, role_less_ok in (("scenario_1", empty), ("scenario_2", np.ones(idx.size, dtype=bool))):
        ok = np.where(has_role, ov_role >= iou_threshold, role_less_ok)
        hit = idx[ok]
        first = first_in_group(unit[ok], flat.scores[hit], flat.position[hit])
        out[scenario][hit[first]] = True
    return out


@dataclass
class ScenarioResult:
    """Role AP of one scenario (fractions). ``ap``, ``recall``: ``[V]`` (NaN without ground truth).

    ``mean``: over the action-roles with ground truth; ``mean_vsrl_slots``: the same sum over the
    number of role slots of ``vsrl_eval`` (``None`` when the vocabulary does not say it).
    """

    scenario: str
    ap: np.ndarray
    recall: np.ndarray
    npos: np.ndarray
    num_detections: np.ndarray
    mean: float | None
    mean_vsrl_slots: float | None = None
    curves: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass
class VCOCOResult:
    """The result of a V-COCO evaluation; ``to_dict()`` gives the JSON report (percent).

    ``role_less``: ``[V]`` persons doing the action without an object for that role;
    ``vsrl_slots``: role slots of ``vsrl_eval`` (``None`` if the vocabulary does not say).
    """

    vocabulary: Vocabulary
    scenarios: dict[str, ScenarioResult]
    role_less: np.ndarray
    vsrl_slots: int | None
    counts: dict[str, int]
    config: VCOCOConfig

    @property
    def scenarios_differ(self) -> bool:
        """Whether the ground truth lets the two scenarios differ (it has role-less cases)."""
        return int(self.role_less.sum()) > 0

    def to_dict(self) -> dict:
        from hoi_mllm.eval.tables import vcoco_report

        return vcoco_report(self)


def vsrl_slots(vocabulary: Vocabulary) -> int | None:
    """Role slots ``vsrl_eval`` averages over: the vocabulary's action-roles plus the ones it lists as
    left out (``vsrl_eval_roles_not_in_vocabulary``); ``None`` for a vocabulary that says nothing."""
    missing = vocabulary.extra.get("vsrl_eval_roles_not_in_vocabulary")
    return None if missing is None else vocabulary.num_verbs + len(missing)


class VCOCOEvaluator:
    """V-COCO role AP in three steps: ``update()`` matches, ``compute()`` accumulates and summarises.

    Args:
        samples: ground truth in the ``vcoco`` vocabulary (verbs are action-roles; ``pair_object == -1``
            for a pair whose role object is absent; persons V-COCO did not annotate, if known, in
            ``extra["unannotated_persons"]``).
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
        self._counts = {"triplets": 0, "unknown_images_ignored": 0, "matched_unannotated_persons": 0}

    def update(self, predictions: PredictionColumns | PredictionsFile | Iterable[HOITriplets]) -> None:
        """Match the triplets of some images (each image once over all updates)."""
        flat, unknown = flatten_predictions(predictions, self.index, self.vocabulary,
                                            unknown_images=self.config.unknown_images, done=self._done,
                                            empty_object_boxes=True, progress=self.config.progress)
        self._counts["unknown_images_ignored"] += len(unknown)
        self._counts["triplets"] += len(flat)
        m = match_vcoco(flat, self.gt, self.vocabulary.num_verbs, self.config.iou_threshold)
        keep = m["counted"]
        self._counts["matched_unannotated_persons"] += int((~keep).sum())
        self._parts.append((flat.verbs[keep], m["scenario_1"][keep], m["scenario_2"][keep], flat.scores[keep],
                            flat.image[keep], flat.position[keep]))

    def compute(self) -> VCOCOResult:
        """Rank, accumulate (all-point AP) and average over action-roles, for both scenarios."""
        parts = self._parts or [tuple(np.zeros(0, dtype=t) for t in (np.int64, bool, bool, np.float64,
                                                                       np.int64, np.int64))]
        verbs, tp1, tp2, scores, image, position = (np.concatenate(x) for x in zip(*parts))
        slots = vsrl_slots(self.vocabulary)
        order = ranking_order(verbs, scores, image, position)  # one sort for both scenarios
        results = {}
        for scenario, tp in zip(SCENARIOS, (tp1, tp2)):
            acc = accumulate(verbs, tp, scores, image, position, self.gt.npos, rule="voc",
                             keep_curves=self.config.keep_curves, order=order)
            has = self.gt.npos > 0
            mean = float(np.mean(acc.ap[has])) if has.any() else None
            mean_slots = float(np.sum(acc.ap[has]) / slots) if has.any() and slots else None
            results[scenario] = ScenarioResult(scenario, acc.ap, acc.recall, self.gt.npos, acc.num_detections,
                                               mean, mean_slots, acc.curves)
        counts = {"images": self.num_images, "predicted_images": len(self._done),
                  "persons": int(self.gt.person_image.shape[0]),
                  "unannotated_persons": int(self.gt.person_ignored.sum()),
                  "ground_truth_positives": int(self.gt.npos.sum()),
                  "role_less_positives": int(self.gt.role_less.sum()), **self._counts}
        return VCOCOResult(self.vocabulary, results, self.gt.role_less, slots, counts, self.config)


def evaluate_vcoco(samples: Sequence[HOISample], predictions: PredictionColumns | PredictionsFile | Iterable[HOITriplets],
                   vocabulary: str | Vocabulary = "vcoco", config: VCOCOConfig | None = None) -> VCOCOResult:
    """One-call V-COCO role AP of in-memory predictions."""
    ev = VCOCOEvaluator(samples, vocabulary, config)
    ev.update(predictions)
    return ev.compute()
