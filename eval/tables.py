"""Result tables (plain text or Markdown) and JSON reports; every number in percent, as papers report.

``hicodet_report`` / ``vcoco_report`` build the JSON documents the CLI writes (``None`` where a
number does not exist, e.g. the AP of a class without ground truth under ``missing_classes="skip"``);
``hicodet_table`` / ``vcoco_table`` print the same numbers; :func:`render_table` is the one table
layout every report uses.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # imported for annotations only: the evaluators import this module lazily
    from hoi_mllm.eval.hicodet import HICODetResult
    from hoi_mllm.eval.vcoco import VCOCOResult

SETTING_TITLES = {"default": "Default", "known_object": "Known-Object", "da_hoi": "DA-HOI protocol"}
SUMMARY_TITLES = {"full": "Full", "rare": "Rare", "non_rare": "Non-rare", "unseen": "Unseen", "seen": "Seen"}


def percent(x) -> float | None:
    """A fraction as percent; ``None`` for ``None`` or NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)) or (isinstance(x, np.floating) and np.isnan(x)):
        return None
    return float(x) * 100.0


def percent_list(values: np.ndarray) -> list[float | None]:
    return [percent(float(v)) for v in np.asarray(values, dtype=np.float64)]


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False) -> str:
    """Columns aligned (first left, the rest right), or a GitHub Markdown table."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


# ----------------------------------------------------------------------------------------- HICO-DET
HICODET_PROTOCOL = {
    "name": "official",
    "reference": "ho-rcnn evaluation/eval_one.m + VOCevaldet_bboxpair.m",
    "ap": "11-point interpolated, thresholds MATLAB 0:0.1:1",
    "iou": "min(IoU_human, IoU_object) >= 0.5, +1-pixel box convention",
    "duplicates": "false positive; no fallback to the second-best ground truth",
    "ties": "score descending, then ground-truth image order, then position in the image",
    "known_object": "per class, only images with an annotated pair of the class's object",
}
DA_HOI_PROTOCOL = {
    "name": "da-hoi",
    "reference": "SY-Xuan/DA-HOI qwenvl/eval/hico_eval.py HICOEvaluator (the footing of DA-HOI's published numbers)",
    "classes": "no-interaction classes dropped; means over the remaining classes with ground truth",
    "images": "images whose ground truth holds only no-interaction pairs dropped, with their predictions",
    "predictions": "the 100 highest-scoring triplets of each image (max_hois)",
    "ap": "11-point interpolated, thresholds np.arange(0., 1.1, 0.1)",
    "iou": "min(IoU_human, IoU_object) >= 0.5, continuous boxes (no +1), 0 for boxes that only touch",
    "duplicates": "false positive; no fallback to the second-best ground truth",
    "known_object": "none (DA-HOI's evaluator has only this setting)",
    "not_comparable_with": "the official 600-class protocol (ho-rcnn)",
}


def hicodet_title(result: "HICODetResult") -> str:
    """The table title, naming the protocol (DA-HOI's is never shown as the official one)."""
    title = f"HICO-DET mAP (%), vocabulary {result.vocabulary.name}" + (f", split {result.split}" if result.split else "")
    if result.config.protocol == "da-hoi":
        c = result.counts
        title += (f"; DA-HOI protocol (its hico_eval.py): {c.get('classes_averaged', 0)} classes without "
                  f"no-interaction, {c.get('images_left_out', 0)} no-interaction-only images left out, top 100 "
                  "per image; not the official 600-class figure")
    return title


def hicodet_report(result: "HICODetResult") -> dict:
    """The JSON document of a HICO-DET evaluation (numbers in percent)."""
    out: dict = {"dataset": "hico-det", "vocabulary": result.vocabulary.name, "split": result.split,
                 "protocol_name": result.config.protocol, "title": hicodet_title(result), "units": "percent"}
    for name, s in result.settings.items():
        out[name] = {**{k: percent(v) for k, v in s.summary.items()},
                     "mean_recall": percent(float(np.nanmean(s.recall)) if np.isfinite(s.recall).any() else None),
                     "ap": percent_list(s.ap), "recall": percent_list(s.recall)}
    if result.unseen_recall is not None:
        out.update({f"u_r@{k}": percent(v) for k, v in result.unseen_recall.items()})
    first = next(iter(result.settings.values()), None)
    out["num_ground_truth"] = first.npos.tolist() if first is not None else []
    out["counts"] = dict(result.counts)
    if result.config.protocol == "da-hoi":
        out["protocol"] = dict(DA_HOI_PROTOCOL)
    else:
        out["protocol"] = {**HICODET_PROTOCOL, "classes_without_ground_truth": (
            "AP 0, counted in every mean (official)" if result.config.missing_classes == "zero"
            else "left out of the means")}
    return out


def hicodet_table(result: "HICODetResult", markdown: bool = False) -> str:
    """mAP (%) per setting: Full / Rare / Non-rare (+ Unseen / Seen with a split), and U-R@K."""
    keys = [k for k in SUMMARY_TITLES if any(k in s.summary for s in result.settings.values())]
    rows = [[SETTING_TITLES.get(name, name)] + [fmt(percent(s.summary.get(k))) for k in keys]
            for name, s in result.settings.items()]
    lines = [hicodet_title(result), render_table(["setting"] + [SUMMARY_TITLES[k] for k in keys], rows, markdown)]
    if result.unseen_recall is not None:
        lines.append("U-R@K (%): " + ", ".join(f"@{k} {fmt(percent(v))}" for k, v in result.unseen_recall.items()))
    c = result.counts
    lines.append(f"{c['predicted_images']}/{c['images']} images predicted, {c['triplets']} triplets"
                 + (f", {c['ignored_not_a_class']} ignored (object, verb not a class)" if c["ignored_not_a_class"] else "")
                 + (f", {c['unknown_images_ignored']} unknown images ignored" if c["unknown_images_ignored"] else "")
                 + (f", {c['classes_without_ground_truth']} classes without ground truth"
                    if c["classes_without_ground_truth"] else "")
                 + (f", {c['dropped_beyond_top_per_image']} beyond the top 100 of their image and "
                    f"{c['dropped_in_no_interaction_only_images']} in no-interaction-only images not counted"
                    if "dropped_beyond_top_per_image" in c else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- V-COCO
VCOCO_PROTOCOL = {
    "reference": "s-gupta/v-coco vsrl_eval.py VCOCOeval._do_role_eval",
    "ap": "VOC all-point; role_ap: mean over the vocabulary's action-roles with ground truth; role_ap_vsrl_slots: "
          "the same sum over vsrl_eval's role slots (25: point instr, absent from the vocabulary, counts 0)",
    "npos": "per action: the persons doing it, the same for every role of the action",
    "iou": "person and role box IoU >= 0.5, +1-pixel box convention (as vsrl_eval.get_overlap)",
    "persons": "a detection takes the ground-truth person of highest IoU, whatever that person does; one "
               "V-COCO did not annotate (extra['unannotated_persons']) makes it count for nothing",
    "scenario_1": "role-less case (the person does the action, no object for the role): only an empty "
                  "role box (null, all zeros, all NaN) is right",
    "scenario_2": "role-less case: the role box is ignored",
    "ground_truth_files": "the 24-class files keep a (person, action-role, object) row exactly when the role "
                          "box exists: a person listed with one role of eat/cut/hit is role-less for the "
                          "other; persons with a role action but no role box at all, persons without a role "
                          "action (unless someone's role object) and unannotated persons are not in them",
}


def _vcoco_note(result: "VCOCOResult") -> str:
    n = int(result.role_less.sum())
    if result.scenarios_differ:
        return (f"{n} ground-truth positives are role-less (the person does the action, no object for the role): "
                "Scenario 1 credits them only with an empty role box, Scenario 2 with any")
    return "the ground truth has no role-less positives: Scenario 1 and Scenario 2 coincide"


def vcoco_report(result: "VCOCOResult") -> dict:
    """The JSON document of a V-COCO evaluation (numbers in percent)."""
    out: dict = {"dataset": "vcoco", "vocabulary": result.vocabulary.name, "units": "percent",
                 "action_roles": list(result.vocabulary.verbs)}
    for name, s in result.scenarios.items():
        out[name] = {"role_ap": percent(s.mean), "role_ap_vsrl_slots": percent(s.mean_vsrl_slots),
                     "ap": percent_list(s.ap), "recall": percent_list(s.recall)}
    first = next(iter(result.scenarios.values()))
    out["num_ground_truth"] = first.npos.tolist()
    out["role_less_ground_truth"] = result.role_less.tolist()
    out["vsrl_slots"] = result.vsrl_slots
    out["note"] = _vcoco_note(result)
    out["counts"] = dict(result.counts)
    out["protocol"] = dict(VCOCO_PROTOCOL)
    return out


def vcoco_table(result: "VCOCOResult", markdown: bool = False, per_role: bool = True) -> str:
    """Role AP (%) per action-role and the means, for Scenario 1 and 2."""
    s1, s2 = result.scenarios["scenario_1"], result.scenarios["scenario_2"]
    rows = []
    if per_role:
        rows = [[name, str(int(n)), str(int(r)), fmt(percent(a1)), fmt(percent(a2))]
                for name, n, r, a1, a2 in zip(result.vocabulary.verbs, s1.npos, result.role_less, s1.ap, s2.ap)]
    present = int((s1.npos > 0).sum())
    rows.append([f"role AP, mean of {present} action-roles", str(int(s1.npos.sum())), str(int(result.role_less.sum())),
                 fmt(percent(s1.mean)), fmt(percent(s2.mean))])
    if result.vsrl_slots:
        rows.append([f"role AP, vsrl_eval's {result.vsrl_slots} slots", "", "",
                     fmt(percent(s1.mean_vsrl_slots)), fmt(percent(s2.mean_vsrl_slots))])
    lines = ["V-COCO role AP (%), vsrl_eval _do_role_eval",
             render_table(["action-role", "#pos", "#role-less", "Scenario 1", "Scenario 2"], rows, markdown),
             "note: " + _vcoco_note(result)]
    if result.vsrl_slots:
        lines.append(f"note: vsrl_eval averages over {result.vsrl_slots} role slots; the ones not in the vocabulary "
                     f"(point instr) count 0, so that row = the mean x {present}/{result.vsrl_slots}")
    c = result.counts
    lines.append(f"{c['predicted_images']}/{c['images']} images predicted, {c['triplets']} triplets"
                 + (f", {c['matched_unannotated_persons']} on unannotated persons (not counted)"
                    if c.get("matched_unannotated_persons") else "")
                 + (f", {c['unknown_images_ignored']} unknown images ignored" if c["unknown_images_ignored"] else ""))
    return "\n".join(lines)
