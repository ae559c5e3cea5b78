"""The demo's results as one JSON document (``report.json``): what :mod:`.report` renders and
:mod:`.check` verifies.

Every number comes from a stage record or a file a stage wrote; mAP, recall and U-R@5 are in
percent, times in seconds or milliseconds as their keys say, ``None`` where a number does not exist.
The aims of issue 7 are compared with what was measured, once, on the test set (nothing in the demo
is tuned on it).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Mapping

from hoi_mllm.io import read_json

FORMAT = "hoi-mllm/demo-report"
METRICS = ("unseen", "seen", "full")
RECALL_K = "5"
GT, YOLO = "ground truth", "trained YOLO"


def _row(row: dict, label: str) -> dict:
    """One table row of the cross-detector JSON as the report keeps it."""
    return {"detector": label, "spec": row["detector"], "scorer": row["scorer"],
            **{k: row.get(k) for k in METRICS}, "ur5": (row.get("unseen_recall") or {}).get(RECALL_K),
            "detector_ms": row.get("detector_ms_per_image"), "scorer_ms": row.get("scorer_ms_per_image"),
            "triplets": row.get("triplets"), "predictions": row.get("predictions")}


def table_from_cross_detector(doc: dict, labels: Mapping[str, str]) -> dict:
    """The report's table from a ``cross_detector.json`` document.

    Args:
        labels: display name -> detector spec (as the evaluate stage ran them).
    Returns:
        ``{"split", "images", "rows": [...], "box_recall": [...]}``; rows in detector order, the
        recogniser first, then the baselines.
    """
    by_spec = {spec: label for label, spec in labels.items()}
    rows = [_row(r, by_spec.get(r["detector"], r["detector"])) for r in doc["rows"]]
    recall = [{"detector": by_spec.get(d["spec"], d["spec"]), **{k: d["box_recall"].get(k) for k in
              ("humans", "objects", "pairs", "num_humans", "num_objects", "num_pairs")},
               "detections": d.get("detections"), "images": d.get("images")} for d in doc["detectors"]]
    return {"split": doc.get("split"), "images": doc.get("images"), "rows": rows, "box_recall": recall}


def find_row(table: dict, detector: str, scorer: str = "recogniser") -> dict | None:
    return next((r for r in table["rows"] if r["detector"] == detector and r["scorer"] == scorer), None)


def _finite(*values) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def _aim(aim: str, measured: str, reached: bool | None) -> dict:
    return {"aim": aim, "measured": measured, "reached": reached}


def evaluate_aims(table: dict, total_seconds: float, time_aim_s: float, preset: str,
                  resumed: bool = False) -> list[dict]:
    """The aims of issue 7 against the measured numbers (``reached`` None where a number is missing, and
    for the time when a stage was resumed: the part before its interruption is not counted)."""
    gt, prior, yolo = find_row(table, GT), find_row(table, GT, "prior"), find_row(table, YOLO)
    timed = f"{total_seconds / 60:.1f} minutes (sum of the stage times)"
    out = [_aim(f"the whole {preset} demo in under {time_aim_s / 60:.0f} minutes on this machine",
                timed + ("; a stage was resumed after an interruption, so its earlier part is not counted: "
                         "run with --force to measure" if resumed else ""),
                None if resumed else total_seconds < time_aim_s)]
    seen, unseen = (gt or {}).get("seen"), (gt or {}).get("unseen")
    out.append(_aim("ground-truth boxes: Seen mAP >= 60", f"Seen mAP {_num(seen)}",
                    seen >= 60 if _finite(seen) else None))
    out.append(_aim("ground-truth boxes: Unseen mAP >= 0.7 x Seen",
                    f"Unseen {_num(unseen)} vs 0.7 x Seen = {_num(0.7 * seen if _finite(seen) else None)}",
                    unseen >= 0.7 * seen if _finite(seen, unseen) else None))
    p = (prior or {}).get("unseen")
    out.append(_aim("ground-truth boxes: Unseen mAP >= 2 x the prior-only baseline's",
                    f"Unseen {_num(unseen)} vs 2 x prior {_num(2 * p if _finite(p) else None)}",
                    unseen >= 2 * p if _finite(unseen, p) else None))
    gf, yf = (gt or {}).get("full"), (yolo or {}).get("full")
    out.append(_aim("trained YOLO: Full mAP within 15 points of ground-truth boxes",
                    f"YOLO Full {_num(yf)} vs ground truth Full {_num(gf)} (gap {_num(gf - yf if _finite(gf, yf) else None)})",
                    gf - yf <= 15 if _finite(gf, yf) else None))
    return out


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _prediction_maps(table: dict, root: Path) -> dict[str, dict]:
    """Panel title -> file name -> the recogniser's predicted triplets, for the ground truth and YOLO rows."""
    from hoi_mllm.predictions import read_predictions

    out = {}
    for label in (GT, YOLO):
        row = find_row(table, label)
        if row is None or not row.get("predictions"):
            continue
        path = Path(row["predictions"])
        if not path.is_file():  # the folder moved: the same file under this output folder
            path = root / "evaluate" / path.parent.name / path.name
        out[f"recogniser, {label} boxes"] = read_predictions(path).by_file_name()
    return out


def build_summary(root: Path, config, records: Mapping, machine: dict, progress: bool = True) -> dict:
    """The whole ``report.json`` document; draws the gallery into ``root/report_files``.

    Args:
        root: the demo folder; config: the :class:`~hoi_mllm.demo.config.DemoConfig`.
        records: stage name -> :class:`~hoi_mllm.demo.stages.StageRecord` of world, yolo, finetune, evaluate.
        machine: :func:`~hoi_mllm.demo.run.machine_info`.
    """
    from hoi_mllm.data import load_annotations
    from hoi_mllm.demo.gallery import write_gallery
    from hoi_mllm.prompts import load_vocabulary

    start = time.perf_counter()
    root = Path(root)
    world, yolo, tuned, evaluated = (records[k] for k in ("world", "yolo", "finetune", "evaluate"))
    doc = read_json(evaluated.path(root, "table"), what="cross-detector table")
    table = table_from_cross_detector(doc, evaluated.info["detectors"])
    vocab = load_vocabulary(world.path(root, "vocabulary"))
    test = load_annotations(world.path(root, "test"), vocab)
    unseen = set(vocab.split(config.split).unseen)
    gallery = write_gallery(test, vocab, unseen, _prediction_maps(table, root), root / "report_files",
                            config.gallery, progress)
    for g in gallery:
        g["path"] = str(Path(g["path"]).relative_to(root))
    stages = [{"name": k, "seconds": r.seconds, "finished": r.finished, "resumed": r.resumed,
               "load_average_before": r.info.get("load_average_before")} for k, r in records.items()]
    report_seconds = time.perf_counter() - start
    stages.append({"name": "report", "seconds": report_seconds, "finished": None, "resumed": False,
                   "load_average_before": None})
    total = sum(s["seconds"] for s in stages)
    loss_curve = tuned.outputs.get("loss_curve")
    return {
        "format": FORMAT, "version": 1, "preset": config.name, "config": config.to_dict(), "machine": machine,
        "world": {"counts": world.info.get("counts"), "split": config.split, "classes": world.info.get("classes"),
                  "unseen_classes": world.info.get("unseen_classes"), "objects": world.info.get("objects"),
                  "verbs": world.info.get("verbs"), "image_size": config.image_size},
        "stages": stages, "total_seconds": total,
        "table": table,
        "yolo": {k: yolo.info.get(k) for k in ("val_metrics", "epochs", "seconds", "train_images", "val_images",
                                               "resumed")} | {"config": config.to_dict()["yolo"]},
        "finetune": {"recipe": config.recipe, **{k: tuned.info.get(k) for k in (
            "steps", "images", "seconds", "steps_per_second", "images_per_second", "parameters", "eval",
            "resumed_from")}},
        "loss_curve": loss_curve,
        "gallery": gallery,
        "aims": evaluate_aims(table, total, config.time_aim_s, config.name, any(s["resumed"] for s in stages)),
    }
