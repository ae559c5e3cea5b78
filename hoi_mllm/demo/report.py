"""``report.md``, ``report.html`` and ``report.json`` from the demo's summary (:mod:`.summary`).

The content is built once as a list of blocks (heading, paragraph, bullet list, table, image) and
rendered twice: Markdown, with images referenced relative to the output folder, and a
self-contained HTML page, with images embedded as base64 ``data:`` URIs (it can be mailed alone).
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from hoi_mllm.eval.tables import fmt, render_table
from hoi_mllm.io import atomic_write_json, atomic_write_text

SCORERS = {"recogniser": "recogniser (fine-tuned)", "random": "random baseline", "prior": "prior-only baseline"}
TABLE_HEADER = ["detector", "scores", "Unseen mAP", "Seen mAP", "Full mAP", "U-R@5", "det ms/img", "scorer ms/img"]


@dataclass
class Block:
    """One piece of the report: ``kind`` is heading, text, list, table or image."""

    kind: str
    text: str = ""
    level: int = 2
    items: list = field(default_factory=list)
    header: list = field(default_factory=list)
    path: str = ""


def table_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """The main table: header and rows of strings (one row per detector and scorer)."""
    rows = [[r["detector"], SCORERS.get(r["scorer"], r["scorer"]), fmt(r.get("unseen")), fmt(r.get("seen")),
             fmt(r.get("full")), fmt(r.get("ur5")), fmt(r.get("detector_ms"), 1), fmt(r.get("scorer_ms"), 1)]
            for r in summary["table"]["rows"]]
    return TABLE_HEADER, rows


def format_table(summary: dict, markdown: bool = False) -> str:
    """The main table as aligned text (the console) or Markdown."""
    header, rows = table_rows(summary)
    return render_table(header, rows, markdown)


def _reached(value) -> str:
    return {True: "reached", False: "not reached", None: "not measured"}[value]


def _machine_text(m: dict) -> str:
    load = m.get("load_average")
    return (f"{m.get('cpus')} CPUs ({m.get('cpus_usable')} usable; {m.get('cpu_model') or 'unknown model'}), "
            f"torch {m.get('torch')} with {m.get('torch_threads')} threads, Python {m.get('python')}, "
            f"{m.get('platform')}" + (f"; load average (1, 5, 15 min) when the report was written: "
                                      f"{', '.join(str(x) for x in load)}" if load else ""))


def build_blocks(summary: dict) -> list[Block]:
    """The report's content, in order."""
    world, table, m = summary["world"], summary["table"], summary["machine"]
    counts = world.get("counts") or {}
    header, rows = table_rows(summary)
    blocks = [
        Block("heading", "hoi-mllm demo: the synthetic world, end to end", level=1),
        Block("text", f"Preset `{summary['preset']}`. Everything here was computed by this run, offline, from random "
                      "weights: the world was generated, a YOLO detector and the recogniser (a tiny Qwen2-VL with "
                      "LoRA, spatial-aware pooling and one-pass matching, fine-tuned with two-stage matching) were "
                      "trained on its training images, and the test images were used once, for the numbers below. "
                      "Nothing was tuned on the test set."),
        Block("text", f"World: {(counts.get('train') or {}).get('images', '?')} training and "
                      f"{(counts.get('test') or {}).get('images', '?')} test images of {world.get('image_size')} px, "
                      f"{world.get('classes')} HOI classes; split `{world.get('split')}` holds out "
                      f"{len(world.get('unseen_classes') or [])} verb-object combinations from training: "
                      f"{', '.join(world.get('unseen_classes') or [])}."),
        Block("heading", f"Results on the test set ({table.get('images')} images)"),
        Block("table", header=header, items=rows),
        Block("list", items=[
            "mAP: HICO-DET protocol (Default setting, 11-point AP, both boxes IoU >= 0.5) in percent; Unseen / Seen: "
            "the split's unseen and seen classes; classes without test ground truth are "
            f"{'left out of the means' if summary['config'].get('missing_classes') == 'skip' else 'counted as AP 0'}.",
            "U-R@5: share of unseen ground-truth pairs whose boxes are both recovered among the top-5 predicted "
            "pairs of their image, pairs ranked by their best triplet other than no_interaction.",
            "Baselines score the same pairs on the same boxes: random verb scores, and the prior alone (verb "
            "frequency per object in training, unseen combinations 0).",
            "det ms/img: detector time per image; scorer ms/img: pairs, scoring and post-processing per image.",
            f"Runs behind each figure: one (this run, world seed {summary['config'].get('seed')}); the spread over "
            "seeds is not in this table. At the benchmarks' small size the standard deviation of Full mAP over three "
            "seeds is 1.3-4.5 points (README, Benchmarks: the three-seed tables), so a difference of a few points "
            "between two runs says nothing.",
        ]),
        Block("heading", "Aims (issue 7) against what was measured"),
        Block("table", header=["aim", "measured", "result"],
              items=[[a["aim"], a["measured"], _reached(a["reached"])] for a in summary["aims"]]),
        Block("heading", "Detector box recall (test set, IoU >= 0.5, same class)"),
        Block("table", header=["detector", "humans %", "objects %", "pairs %", "detections / image"],
              items=[[r["detector"], fmt(r.get("humans"), 1), fmt(r.get("objects"), 1), fmt(r.get("pairs"), 1),
                      fmt(r["detections"] / r["images"] if r.get("images") else None, 1)]
                     for r in table.get("box_recall", [])]),
        Block("heading", "Training"),
        Block("list", items=_training_items(summary)),
    ]
    if summary.get("loss_curve"):
        blocks.append(Block("image", "Recogniser fine-tuning: loss terms against the step", path=summary["loss_curve"]))
    blocks.append(Block("heading", "Gallery: ground truth and predicted triplets"))
    blocks.append(Block("text", "Test images chosen without looking at predictions: the first ones holding an unseen "
                                "interaction, then the first others. Left: annotated interactions; then the "
                                "recogniser's best triplets (as many as the image has interactions, no_interaction "
                                "left out) on ground-truth boxes and on the trained YOLO's boxes."))
    for g in summary.get("gallery", []):
        caption = f"{g['file_name']}" + (" (holds an unseen interaction)" if g.get("unseen") else "")
        blocks.append(Block("image", caption, path=g["path"]))
    blocks += [
        Block("heading", "Run times"),
        Block("table", header=["stage", "seconds", "load average before (1, 5, 15 min)"],
              items=[[s["name"] + (" (resumed: its last part)" if s.get("resumed") else ""), fmt(s["seconds"], 1),
                      ", ".join(str(x) for x in s["load_average_before"]) if s.get("load_average_before") else "-"]
                     for s in summary["stages"]]
              + [["total", fmt(summary["total_seconds"], 1), ""]]),
        Block("text", "The load average counts every process on the machine: above the number of CPUs, other work "
                      "was competing with the demo for them."),
        Block("heading", "Machine"),
        Block("text", _machine_text(m)),
    ]
    return blocks


def _training_items(summary: dict) -> list[str]:
    y, f = summary["yolo"], summary["finetune"]
    yc = y.get("config") or {}
    val = y.get("val_metrics") or {}
    items = [f"YOLO ({yc.get('model')} from a yaml, random init, depth {yc.get('depth')}, width {yc.get('width')}, "
             f"{yc.get('imgsz')} px): {y.get('epochs')} epochs on {y.get('train_images')} training images in "
             f"{fmt(y.get('seconds'), 1)} s; on {y.get('val_images')} held-out training images: box mAP50 "
             f"{fmt(val.get('mAP50'), 1)}, mAP50-95 {fmt(val.get('mAP50-95'), 1)}, precision "
             f"{fmt(val.get('precision'), 1)}, recall {fmt(val.get('recall'), 1)}."]
    ev = f.get("eval") or {}
    items.append(f"Recogniser (recipe `{f.get('recipe')}`): {f.get('steps')} steps, {f.get('images')} images in "
                 f"{fmt(f.get('seconds'), 1)} s ({fmt(f.get('images_per_second'), 1)} images/s); "
                 f"{(f.get('parameters') or {}).get('trainable', '?')} trainable of "
                 f"{(f.get('parameters') or {}).get('total', '?')} parameters"
                 + (f"; held-out training images (ground-truth boxes): Full {fmt(ev.get('full'))}, Seen "
                    f"{fmt(ev.get('seen'))}, Unseen {fmt(ev.get('unseen'))} mAP" if ev else "") + ".")
    return items


# --------------------------------------------------------------------------- renderers
def render_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b.kind == "heading":
            out.append("#" * b.level + " " + b.text)
        elif b.kind == "text":
            out.append(b.text)
        elif b.kind == "list":
            out.append("\n".join(f"- {item}" for item in b.items))
        elif b.kind == "table":
            out.append(render_table(b.header, b.items, markdown=True))
        elif b.kind == "image":
            out.append(f"![{b.text}]({b.path})\n\n*{b.text}*")
        out.append("")
    return "\n".join(out)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}"
       "td:not(:first-child){text-align:right}th{background:#f3f3f3}img{max-width:100%}"
       "figure{margin:1em 0}figcaption{font-style:italic;color:#555}code{background:#f3f3f3;padding:0 3px}")


def _inline(text: str) -> str:
    """Escape text; `code` spans as <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(blocks: list[Block], root: Path) -> str:
    """A self-contained page: images read from ``root`` and embedded (a missing one is named, not fatal)."""
    title = next((b.text for b in blocks if b.kind == "heading"), "report")
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{CSS}</style></head><body>"]
    for b in blocks:
        if b.kind == "heading":
            out.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif b.kind == "text":
            out.append(f"<p>{_inline(b.text)}</p>")
        elif b.kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif b.kind == "table":
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.header)
            body = "".join("<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in row) + "</tr>" for row in b.items)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif b.kind == "image":
            path = Path(root) / b.path
            img = (f"<img src='{_data_uri(path)}' alt='{html.escape(b.text)}'>" if path.is_file()
                   else f"<p>(image missing: {html.escape(b.path)})</p>")
            out.append(f"<figure>{img}<figcaption>{_inline(b.text)}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(summary: dict, root: str | Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``report.html`` into ``root`` (atomically); returns their paths."""
    root = Path(root)
    blocks = build_blocks(summary)
    paths = {"json": root / "report.json", "md": root / "report.md", "html": root / "report.html"}
    atomic_write_json(paths["json"], summary)
    atomic_write_text(paths["md"], render_markdown(blocks))
    atomic_write_text(paths["html"], render_html(blocks, root))
    return paths
