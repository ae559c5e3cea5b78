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
from typing import Iterator

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


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


def collect_images(inputs: list[str], recursive: bool = False) -> list[tuple[Path, str]]:
    """``(path, name)`` of every image: files as given, folders' images sorted; names unique.

    Raises:
        FileNotFoundError: an input does not exist. ValueError: no images at all.
    """
    found: list[tuple[Path, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = path.rglob("*") if recursive else path.iterdir()
            found += [(f, f.relative_to(path).as_posix()) for f in sorted(files)
                      if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        elif path.is_file():
            found.append((path, path.name))
        else:
            raise FileNotFoundError(f"no such image or folder: {path}")
    if not found:
        raise ValueError(f"no images found in {', '.join(inputs)} (image files end in {', '.join(IMAGE_SUFFIXES)})")
    seen: dict[str, Path] = {}
    for path, name in found:
        if name in seen and seen[name].resolve() != path.resolve():
            raise ValueError(f"two images are both named {name!r} ({seen[name]} and {path}): give them separately "
                             "from distinct folders or rename one")
        seen[name] = path
    return [(p, n) for n, p in seen.items()]


def open_rgb(path: Path):
    """Open an image as RGB (grayscale, RGBA, palette, CMYK converted); ``OSError`` when unreadable."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        rgb = im.convert("RGB")
    rgb.filename = str(path)
    return rgb


def vis_names(names: list[str]) -> dict[str, str]:
    """File name -> picture name ``<name without suffix>.jpg`` (the full name + ``.jpg`` where that collides)."""
    stems = [str(Path(n).with_suffix(".jpg")) for n in names]
    return {n: (s if stems.count(s) == 1 else f"{n}.jpg") for n, s in zip(names, stems)}


def _detect_one_by_one(detector, images, names, skipped: list[dict]) -> Iterator[tuple]:
    """After a batch failed, run image by image; yield ``(image, name, Detections)``.

    An image the detector rejects (``ValueError``, ``KeyError``) is appended to ``skipped`` and left
    out; any other error (a ``RuntimeError`` of one image too) propagates, after the images before it.
    """
    for im, name in zip(images, names):
        try:
            dets = detector([im], [name])[0]
        except (ValueError, KeyError) as exc:
            skipped.append({"file_name": name, "error": str(exc)})
            log.warning("skipped %s: %s", name, exc)
            continue
        yield im, name, dets


def detect_images(detector, files: list[tuple[Path, str]], skipped: list[dict], bar=None) -> Iterator[tuple]:
    """Open and detect images in batches of ``detector.options.batch_size``; yield ``(image, name, Detections)``.

    An unreadable image, or one the detector rejects (e.g. not in its annotations), is appended to
    ``skipped`` as ``{"file_name", "error"}``, logged, and left out; the rest complete. A batch that
    fails with ``ValueError``, ``KeyError`` or ``RuntimeError`` is run again image by image, so an
    error that persists is raised only after the images before it were yielded. ``bar`` (a tqdm)
    advances by each batch.
    """
    step = detector.options.batch_size
    for start in range(0, len(files), step):
        chunk = files[start:start + step]
        images, names = [], []
        for path, name in chunk:
            try:
                images.append(open_rgb(path))
                names.append(name)
            except (OSError, ImportError) as exc:  # unreadable, truncated or not an image (ImportError:
                # ultralytics patches PIL.Image.open to retry unknown files with pi-heif, absent offline)
                reason = exc if isinstance(exc, OSError) else "not an image format PIL can read"
                skipped.append({"file_name": name, "error": f"unreadable image: {reason}"})
                log.warning("skipped %s: unreadable image (%s)", path, reason)
        if images:
            try:
                dets = detector(images, names)
            except (ValueError, KeyError, RuntimeError) as exc:
                log.debug("batch of %d failed (%s: %s): retrying image by image", len(images), type(exc).__name__, exc)
                dets = None
            if dets is None:
                yield from _detect_one_by_one(detector, images, names, skipped)
            else:
                yield from zip(images, names, dets)
        if bar is not None:
            bar.update(len(chunk))


def nothing_processed(skipped: list[dict]) -> ValueError:
    """The error for a run where every image was skipped, naming the first few and why."""
    return ValueError(f"no image could be processed ({len(skipped)} skipped): " + "; ".join(
        f"{s['file_name']}: {s['error']}" for s in skipped[:3]))


def _jsonable(value):
    return value if isinstance(value, (str, int, float, bool, type(None), list, dict)) else str(value)


def run(args) -> int:
    from tqdm import tqdm

    from hoi_mllm.cli import output_folder, parse_key_values
    from hoi_mllm.detectors import build_detector, write_detections_file
    from hoi_mllm.io import atomic_path
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
            for image, name, dets in detect_images(detector, files, skipped, bar):
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
