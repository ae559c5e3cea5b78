"""The result of a cross-detector run: one row per (detector, scorer), as a table, Markdown and JSON.

Every number is in percent (as papers report), ``None`` where it does not exist (e.g. a group of
classes without ground truth under ``missing_classes="skip"``). Columns:

- the protocol's means: HICO-DET Full / Rare / Non-rare, or Unseen / Seen / Full for a zero-shot
  split; V-COCO role AP in Scenario 1 and 2;
- U-R@K (for a split): unseen ground-truth pairs recovered among the top-K predicted pairs (ranked
  by their best triplet other than the no-interaction verb's, :mod:`hoi_mllm.eval.recall`);
- time per image in milliseconds, the detector's and the scorer's apart (the detector's is the time
  measured when the detections were computed; cached detections keep it);
- the detector's own box recall (:mod:`~hoi_mllm.eval.detector_recall`): humans, objects, pairs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hoi_mllm.eval.detector_recall import BoxRecall
from hoi_mllm.eval.tables import SUMMARY_TITLES, fmt, render_table
from hoi_mllm.io import atomic_write_json, atomic_write_text

FORMAT = "hoi-mllm/cross-detector"
METRIC_TITLES = {**SUMMARY_TITLES, "scenario_1": "Role AP S1", "scenario_2": "Role AP S2"}
SCORER_NOTES = {
    "recogniser": "the recogniser under evaluation",
    "random": "baseline: uniform random verb score per candidate class, seeded (same boxes, same post-processing)",
    "prior": "baseline: training frequency of the verb given the object, unseen classes 0 (same boxes, same "
             "post-processing)",
}


def metric_keys(protocol: str, split: str | None) -> list[str]:
    """The mean-AP columns of a protocol: V-COCO scenarios, HICO-DET Unseen/Seen/Full or Full/Rare/Non-rare."""
    if protocol == "vcoco":
        return ["scenario_1", "scenario_2"]
    return ["unseen", "seen", "full"] if split else ["full", "rare", "non_rare"]


@dataclass
class DetectorRun:
    """What one detector did over the evaluated images.

    Attributes:
        spec: the spec as given; name: the adapter; key: the cache key; folder: its cache folder.
        images: evaluated images with detections; detections: boxes over them.
        computed / reused: images detected in this run / read from the cache.
        detector_ms: mean time per image (as measured when computed); recall: its box recall.
    """

    spec: str
    name: str
    key: str
    folder: Path
    images: int
    detections: int
    computed: int
    reused: int
    detector_ms: float | None
    recall: BoxRecall

    def to_dict(self) -> dict:
        return {"spec": self.spec, "name": self.name, "key": self.key, "folder": str(self.folder),
                "images": self.images, "detections": self.detections, "computed": self.computed,
                "reused": self.reused, "detector_ms_per_image": self.detector_ms, "box_recall": self.recall.to_dict()}


@dataclass
class CrossDetectorRow:
    """One (detector, scorer) row; numbers in percent.

    Attributes:
        detector: the detector spec; scorer: ``recogniser`` or a baseline name.
        metrics: mean AP per :func:`metric_keys` column; unseen_recall: K -> U-R@K (empty without a split).
        detector_ms, scorer_ms: mean time per image; box_recall: the detector's humans / objects / pairs.
        images: images with predictions; triplets: predicted triplets; predictions: the predictions file;
        evaluation: the full evaluation report written beside it (per-class AP, counts).
    """

    detector: str
    scorer: str
    metrics: dict[str, float | None]
    unseen_recall: dict[int, float | None]
    detector_ms: float | None
    scorer_ms: float | None
    box_recall: dict[str, float | None]
    images: int
    triplets: int
    predictions: str
    evaluation: str

    def to_dict(self) -> dict:
        return {"detector": self.detector, "scorer": self.scorer, **self.metrics,
                "unseen_recall": {str(k): v for k, v in self.unseen_recall.items()},
                "detector_ms_per_image": self.detector_ms, "scorer_ms_per_image": self.scorer_ms,
                "box_recall": {k: self.box_recall[k] for k in ("humans", "objects", "pairs")},
                "images": self.images, "triplets": self.triplets, "predictions": self.predictions,
                "evaluation": self.evaluation}


@dataclass
class CrossDetectorResult:
    """All rows of a cross-detector run, with the detectors' own numbers."""

    protocol: str
    vocabulary: str
    split: str | None
    images: int
    rows: list[CrossDetectorRow]
    detectors: list[DetectorRun]
    scorers: dict[str, dict]
    recall_ks: tuple[int, ...] = (3, 5, 10)
    skipped: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @property
    def metric_keys(self) -> list[str]:
        return metric_keys(self.protocol, self.split)

    def row(self, detector: str, scorer: str = "recogniser") -> CrossDetectorRow:
        """The row of a detector spec and scorer; ``KeyError`` naming the rows there are."""
        for r in self.rows:
            if r.detector == detector and r.scorer == scorer:
                return r
        raise KeyError(f"no row ({detector!r}, {scorer!r}); rows: {[(r.detector, r.scorer) for r in self.rows]}")

    def to_table(self, markdown: bool = False) -> str:
        """The table: metrics, U-R@K, times, and the detector's box recall, one line per row."""
        ks = self.recall_ks if self.split and self.protocol != "vcoco" else ()
        header = (["detector", "scores"] + [METRIC_TITLES[k] for k in self.metric_keys] + [f"U-R@{k}" for k in ks]
                  + ["det ms/img", "scorer ms/img", "human R", "object R", "pair R"])
        rows = [[r.detector, r.scorer] + [fmt(r.metrics.get(k)) for k in self.metric_keys]
                + [fmt(r.unseen_recall.get(k)) for k in ks]
                + [fmt(r.detector_ms, 1), fmt(r.scorer_ms, 1)]
                + [fmt(r.box_recall.get(k), 1) for k in ("humans", "objects", "pairs")] for r in self.rows]
        return render_table(header, rows, markdown)

    def title(self) -> str:
        what = "V-COCO role AP (%)" if self.protocol == "vcoco" else "HICO-DET mAP (%, Default setting)"
        return (f"{what}, vocabulary {self.vocabulary}" + (f", split {self.split}" if self.split else "")
                + f", {self.images} images")

    def to_markdown(self) -> str:
        """A Markdown document: title, the table, and what each column means."""
        scorers = sorted({r.scorer for r in self.rows}, key=lambda s: (s != "recogniser", s))
        notes = [f"- `{s}`: {SCORER_NOTES.get(s, s)}" for s in scorers]
        notes += [
            "- det ms/img: detector time per image, measured when its detections were computed (cached "
            "detections are reused and keep it); scorer ms/img: pairs, scoring and post-processing per image.",
            "- human R / object R: share of ground-truth humans / objects (instances of annotated pairs) "
            "covered at IoU >= 0.5 by a detection of their class; pair R: share of annotated pairs with "
            "both boxes covered. They bound what any scorer can reach with that detector.",
        ]
        if self.split and self.protocol != "vcoco":
            notes.append("- U-R@K: unseen ground-truth pairs whose boxes are both recovered among the top-K "
                         "predicted pairs of their image.")
        if self.skipped:
            notes.append(f"- {len(self.skipped)} image(s) could not be read and were skipped: "
                         + ", ".join(s["file_name"] for s in self.skipped[:5]))
        return "\n".join(["# Cross-detector evaluation", "", self.title(), "", self.to_table(markdown=True), "",
                          *notes, ""])

    def to_json(self) -> dict:
        """The JSON document (percent; ``None`` where a number does not exist)."""
        return {"format": FORMAT, "version": 1, "protocol": self.protocol, "vocabulary": self.vocabulary,
                "split": self.split, "images": self.images, "units": "percent", "metrics": self.metric_keys,
                "recall_ks": list(self.recall_ks), "rows": [r.to_dict() for r in self.rows],
                "detectors": [d.to_dict() for d in self.detectors], "scorers": self.scorers,
                "skipped": self.skipped, "settings": self.settings}

    def save(self, folder: str | Path, name: str = "cross_detector") -> tuple[Path, Path]:
        """Write ``<name>.md`` and ``<name>.json`` into ``folder`` atomically; returns their paths."""
        folder = Path(folder)
        md, js = folder / f"{name}.md", folder / f"{name}.json"
        atomic_write_text(md, self.to_markdown())
        atomic_write_json(js, self.to_json())
        return md, js
