"""``hoi-mllm detections``: run a detector on images; write detections JSON and pictures.

Writes ``OUTPUT/detections.json`` (the ``hoi-mllm/detections`` format of
:mod:`hoi_mllm.detectors.file`, atomically, readable back with ``--detector file --option path=...``)
and ``OUTPUT/vis/<name>.jpg`` per image. An unreadable image is reported and skipped; the others
complete. The file's header says ``"complete": true``; when the run stops on an error or an
interrupt, the images done so far are still written, with ``"complete": false``, and the error is
raised. Images are named by their path relative to the folder given (or their base name).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "detections", help="run a detector on images; write detections JSON and pictures",
        description="Run a detector on images or folders of images. Writes OUTPUT/detections.json "
                    "(format hoi-mllm/detections) and OUTPUT/vis/<name>.jpg with the boxes drawn.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders of images")
    p.add_argument("--detector", required=True,
                   help="detector name or spec NAME[:key=value,...]: yolo, hf, hf-open-vocab, grounding-dino, "
                        "ground-truth, file, jitter")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="detector option (repeatable), e.g. model=yolov8x.pt, score_threshold=0.3, "
                        "annotations=PATH, path=detections.json")
    p.add_argument("--vocabulary", default=None,
                   help="vocabulary of the labels: hico-det, vcoco, or a vocabulary.json (default: for ground-truth "
                        "and jitter the annotation file's, i.e. a vocabulary.json beside it as the synthetic world "
                        "has, else its format's; for the other detectors hico-det)")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--recursive", action="store_true", help="also look for images in sub-folders")
    p.add_argument("--no-vis", action="store_true", help="do not draw pictures")
    p.set_defaults(func=run)


def _jsonable(value):
    return value if isinstance(value, (str, int, float, bool, type(None), list, dict)) else str(value)


def run(args) -> int:
    from tqdm import tqdm

    from hoi_mllm.cli import output_folder, parse_key_values
    from hoi_mllm.detectors import build_detector, write_detections_file
    from hoi_mllm.io import atomic_path
    from hoi_mllm.runner import collect_images, items_from_files, nothing_processed, run_detector, vis_names
    from hoi_mllm.visualize import draw_detections

    files = collect_images(args.inputs, args.recursive)
    options = parse_key_values(args.option, what="--option")
    detector = build_detector(args.detector, vocabulary=args.vocabulary, **options)
    out_dir = output_folder(args.output)
    pictures = vis_names([n for _, n in files])
    results: dict[str, object] = {}
    skipped: list[dict] = []

    def write(complete: bool) -> Path:
        return write_detections_file(out_dir / "detections.json", results, detector.vocabulary.name,
                                     detector=args.detector, options={k: _jsonable(v) for k, v in options.items()},
                                     skipped=skipped, complete=complete)

    finished = False
    try:
        with tqdm(total=len(files), desc=f"detections ({detector.name})", unit="img", file=sys.stderr) as bar:
            for item, image, dets in run_detector(detector, items_from_files(files), skipped, bar=bar):
                name = item.name
                results[name] = dets
                if not args.no_vis:
                    with atomic_path(out_dir / "vis" / pictures[name]) as tmp:
                        draw_detections(image, dets, detector.vocabulary).save(tmp, format="JPEG", quality=90)
        finished = True
    finally:
        if not finished and results:  # an error or an interrupt: keep what was computed, marked incomplete
            try:
                path = write(complete=False)
                print(f"stopped after {len(results)} of {len(files)} images: wrote them to {path} "
                      '(marked "complete": false)', file=sys.stderr)
            except OSError as exc:  # do not hide the error that stopped the run
                log.error("could not write the partial detections: %s", exc)
    if not results:
        raise nothing_processed(skipped)
    path = write(complete=True)
    n_boxes = sum(len(d) for d in results.values())
    print(f"{len(results)} images, {n_boxes} detections -> {path}" + ("" if args.no_vis else f" and {out_dir / 'vis'}/"))
    if skipped:
        print(f"skipped {len(skipped)} image(s): " + ", ".join(s["file_name"] for s in skipped), file=sys.stderr)
    return 0
