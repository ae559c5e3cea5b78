"""``hoi-mllm detections``: run a detector on images; write detections JSON and pictures.

Writes ``OUTPUT/detections.json`` (the ``hoi-mllm/detections`` format of
:mod:`hoi_mllm.detectors.file`, atomically, readable back with ``--detector file --option path=...``)
and ``OUTPUT/vis/<name>.jpg`` per image. An unreadable image is reported and skipped; the others
complete. The file's header says ``"complete": true``; when the run stops on an error or an
interrupt, the images done so far are still written, with ``"complete": false``, and the error is
raised. Images are named by their path relative to the folder given (or their base name).
"""
from __future__ import annotations

import sys


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
    from hoi_mllm.cli import output_folder, parse_key_values
    from hoi_mllm.detectors import build_detector
    from hoi_mllm.runner import collect_images, detections_folder

    files = collect_images(args.inputs, args.recursive)
    options = parse_key_values(args.option, what="--option")
    detector = build_detector(args.detector, vocabulary=args.vocabulary, **options)
    out_dir = output_folder(args.output)

    def partial(path, count):
        print(f"stopped after {count} of {len(files)} images: wrote them to {path} (marked \"complete\": false)",
              file=sys.stderr)

    header = {"detector": args.detector, "options": {k: _jsonable(v) for k, v in options.items()}}
    path, results, skipped = detections_folder(detector, files, out_dir, header, pictures=not args.no_vis,
                                               on_partial=partial)
    n_boxes = sum(len(d) for d in results.values())
    print(f"{len(results)} images, {n_boxes} detections -> {path}" + ("" if args.no_vis else f" and {out_dir / 'vis'}/"))
    if skipped:
        print(f"skipped {len(skipped)} image(s): " + ", ".join(s["file_name"] for s in skipped), file=sys.stderr)
    return 0
