"""The one inference runner: images -> detector (batched, cached, resumable) -> recogniser.

Every command that runs a detector over images goes through :func:`run_detector` (``detect``,
``detections``, ``cross-detector``, the trainer's detector pairs, periodic evaluation), and every
one that also recognises goes through :func:`recognise`:

- images are opened once, with their EXIF orientation applied (a phone's portrait photo is
  detected and drawn as displayed), converted to RGB (:func:`open_image`);
- they go through the detector in batches of its ``batch_size``; a batch that fails is retried
  image by image, so one bad image costs only itself: an unreadable image, or one the detector
  rejects (``ValueError``, ``KeyError``), is reported in ``skipped`` and left out;
- with a :class:`~hoi_mllm.eval.detection_cache.DetectionCache` (keyed by the detector's identity
  and each image's fingerprint), cached images are not detected again, and new ones are appended
  as they are found, so an interrupted run resumes;
- with ``prefetch`` > 0 a background thread opens and detects the next batches while the caller
  (the recogniser) works on the current one; results and their order are the same.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
RETRY_ERRORS = (ValueError, KeyError, RuntimeError)  # a batch failing so is run again image by image
REJECT_ERRORS = (ValueError, KeyError)  # one image failing so is skipped


# --------------------------------------------------------------------------- images
def open_image(path: str | Path):
    """Open an image as displayed: EXIF orientation applied, RGB (grayscale, RGBA, palette, CMYK
    converted); ``filename`` set. ``OSError`` when unreadable."""
    from PIL import ImageOps

    from hoi_mllm.image_file import open_file

    with open_file(path) as im:
        im.load()
        shown = ImageOps.exif_transpose(im)
        rgb = shown.convert("RGB")
    rgb.filename = str(path)
    return rgb


def as_image(image):
    """A PIL image, a path, or an ``H x W x 3`` (or ``H x W``) uint8 array, as an RGB PIL image."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        return open_image(image)
    if isinstance(image, Image.Image):
        out = _transposed(image)
        return out if out.mode == "RGB" else out.convert("RGB")
    try:
        import numpy as np

        array = np.asarray(image)
    except Exception as exc:  # noqa: BLE001 - anything not array-like
        raise TypeError(f"not an image: {type(image).__name__} (give a path, a PIL image or an HxWx3 array)") from exc
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"an image array must be HxW or HxWx3 (HxWx4), got shape {tuple(array.shape)}")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and array.max() <= 1.0:
            array = array * 255.0
        array = np.clip(array, 0, 255).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def _transposed(image):
    """``exif_transpose`` of an in-memory PIL image (itself when it has no orientation tag)."""
    from PIL import ImageOps

    name = getattr(image, "filename", "")
    out = ImageOps.exif_transpose(image)
    if out is not image and name:
        out.filename = name
    return out


def collect_images(inputs: Sequence[str | Path], recursive: bool = False) -> list[tuple[Path, str]]:
    """``(path, name)`` of every image: files as given, folders' images sorted; names unique.

    Images are named by their path relative to the folder given (or their base name).

    Raises:
        FileNotFoundError: an input does not exist. ValueError: no images at all, or two named alike.
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
        raise ValueError(f"no images found in {', '.join(map(str, inputs))} "
                         f"(image files end in {', '.join(IMAGE_SUFFIXES)})")
    seen: dict[str, Path] = {}
    for path, name in found:
        if name in seen and seen[name].resolve() != path.resolve():
            raise ValueError(f"two images are both named {name!r} ({seen[name]} and {path}): give them separately "
                             "from distinct folders or rename one")
        seen[name] = path
    return [(p, n) for n, p in seen.items()]


def vis_names(names: Iterable[str]) -> dict[str, str]:
    """File name -> picture name ``<name without suffix>.jpg`` (the full name + ``.jpg`` where that collides)."""
    names = list(names)
    stems = [str(Path(n).with_suffix(".jpg")) for n in names]
    return {n: (s if stems.count(s) == 1 else f"{n}.jpg") for n, s in zip(names, stems)}


def describe_skipped(skipped: list[dict], first: int = 3) -> str:
    """``"name: why; name: why"`` of the first few skipped images, for an error message."""
    return "; ".join(f"{s['file_name']}: {s['error']}" for s in skipped[:first])


def nothing_processed(skipped: list[dict]) -> ValueError:
    """The error for a run where every image was skipped, naming the first few and why."""
    return ValueError(f"no image could be processed ({len(skipped)} skipped): " + describe_skipped(skipped))


@dataclass
class ImageItem:
    """One image to run: its name (the key of every output), and a path or an image in memory."""

    name: str
    path: Path | None = None
    image: Any = None
    sample: Any = None  # the annotated sample it came from, if any

    def load(self):
        if self.image is not None:
            return self.image
        if self.sample is not None:  # an annotated image: its stored pixels, the frame its boxes are in
            return self.sample.image if self.sample.image is not None else self.sample.load_image()
        if self.path is None:
            raise OSError(f"{self.name}: no path and no image")
        return open_image(self.path)

    def fingerprint(self) -> str:
        """``"<bytes>:<mtime_ns>"`` of its file (``"memory"`` for an image held in memory only)."""
        from hoi_mllm.eval.detection_cache import file_stamp

        return file_stamp(self.path) if self.image is None and self.path is not None and self.path.is_file() \
            else "memory"


def items_from_files(files: Iterable[tuple[Path, str]]) -> list[ImageItem]:
    return [ImageItem(name, Path(path)) for path, name in files]


def items_from_samples(samples: Iterable) -> list[ImageItem]:
    """Items of annotated samples (:class:`~hoi_mllm.data.sample.HOISample`)."""
    return [ImageItem(s.file_name, Path(s.path), sample=s) for s in samples]


def items_from_images(images: Sequence, names: Sequence[str] | None = None) -> list[ImageItem]:
    """Items of paths, PIL images or arrays (names: given, else the file name, else ``image_<i>``)."""
    out = []
    for i, im in enumerate(images):
        if isinstance(im, (str, Path)):
            item = ImageItem(str(names[i]) if names is not None else Path(im).name, Path(im))
        else:
            pil = as_image(im)
            name = str(names[i]) if names is not None else (str(getattr(pil, "filename", "") or "") or f"image_{i}")
            item = ImageItem(name, None, pil)
        out.append(item)
    return out


# --------------------------------------------------------------------------- the detector loop
def _skip(skipped: list[dict], name: str, error: str) -> None:
    skipped.append({"file_name": name, "error": error})
    log.warning("skipped %s: %s", name, error)


def _load(item: ImageItem, skipped: list[dict]):
    try:
        return item.load()
    except OSError as exc:  # unreadable, truncated or not an image (hoi_mllm.image_file)
        _skip(skipped, item.name, f"unreadable image: {exc}")
        return None


def _detect(detector, items: list[ImageItem], images: list, skipped: list[dict]) -> Iterator[tuple]:
    """``(item, Detections or None for an image rejected, mean ms per image)`` of a batch, in order.

    A batch that fails is run again image by image; an error that persists for one image (other than
    a rejection) propagates after the images before it were yielded.
    """
    names = [it.name for it in items]
    t0 = time.perf_counter()
    try:
        found = list(detector(images, names))
    except RETRY_ERRORS as exc:
        log.debug("batch of %d failed (%s: %s): retrying image by image", len(items), type(exc).__name__, exc)
    else:
        ms = 1000 * (time.perf_counter() - t0) / max(1, len(items))
        yield from ((it, d, ms) for it, d in zip(items, found))
        return
    for item, image in zip(items, images):
        t0 = time.perf_counter()
        try:
            d = detector([image], [item.name])[0]
        except REJECT_ERRORS as exc:
            _skip(skipped, item.name, str(exc))
            d = None
        yield item, d, 1000 * (time.perf_counter() - t0)


def _results(detector, items: Sequence[ImageItem], skipped: list[dict], batch_size: int, cache, need_image,
             fingerprints: dict, stats: dict) -> Iterator[tuple]:
    """``(item, image or None, Detections)`` per image processed, in order, and ``(None, None, n)``
    after each batch of ``n`` images (for a progress bar)."""
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        cached = {}
        if cache is not None:
            for it in chunk:
                d = cache.get(it.name, fingerprints[it.name])
                if d is not None:
                    cached[it.name] = d
        images = {}
        for it in chunk:
            if it.name not in cached or need_image(it):
                im = _load(it, skipped)
                if im is not None:
                    images[it.name] = im
        missing = [it for it in chunk if it.name not in cached and it.name in images]
        found = iter(())
        if missing:
            first = images[missing[0].name]
            det = detector.get(first, missing[0].name) if isinstance(detector, LazyDetector) else detector
            found = _detect(det, missing, [images[it.name] for it in missing], skipped)
        for it in chunk:
            if it.name not in images and (it.name not in cached or need_image(it)):
                continue  # unreadable
            if it.name not in cached:
                _, d, ms = next(found)
                if d is None:
                    continue  # rejected
                stats["detected"] = stats.get("detected", 0) + 1
                if cache is not None:
                    cache.put(it.name, d, fingerprints[it.name], ms)
                    d = cache.get(it.name, fingerprints[it.name])  # what the file holds
                cached[it.name] = d
            yield it, images.get(it.name), cached[it.name]
        yield None, None, len(chunk)


class LazyDetector:
    """A detector built on first use (by ``build()``), e.g. when every image may be cached; with
    ``warm_up`` its first call (one-off costs: allocation, kernels) runs once on the first image,
    untimed, before the timed batch."""

    def __init__(self, build: Callable[[], Any], warm_up: bool = False):
        self._build, self._detector, self.warm_up = build, None, warm_up

    @property
    def built(self) -> bool:
        return self._detector is not None

    def get(self, image, name: str):
        if self._detector is None:
            self._detector = self._build()
            if self.warm_up:
                self._detector([image], [name])
        return self._detector


def run_detector(detector, items: Sequence[ImageItem], skipped: list[dict] | None = None, *, cache=None,
                 batch_size: int | None = None, need_image: Callable[[ImageItem], bool] | None = None,
                 bar=None, prefetch: int = 0, stats: dict | None = None) -> Iterator[tuple[ImageItem, Any, Any]]:
    """Yield ``(item, image, Detections)`` for every image of ``items`` that could be processed, in order.

    Args:
        detector: ``detector(images, names) -> list[Detections]`` (a :class:`LazyDetector` is built
            only when an image is not cached).
        skipped: receives ``{"file_name", "error"}`` per image left out (unreadable or rejected).
        cache: a :class:`~hoi_mllm.eval.detection_cache.DetectionCache`: cached images are not detected
            (their detections are what the cache holds), new ones are appended.
        batch_size: default the detector's ``options.batch_size`` (else 8).
        need_image: whether a cached image must still be opened (default: always); when not, its
            ``image`` is ``None``.
        bar: a tqdm advanced by each batch.
        prefetch: images opened and detected ahead by a background thread (0: none; a batch is
            detected at once, so ``batch_size`` more is the least that runs ahead).
        stats: receives ``"detected"``, the images the detector ran on (the others came from the cache).
    """
    skipped = [] if skipped is None else skipped
    need_image = need_image or (lambda item: True)
    if batch_size is None:
        options = getattr(detector, "options", None)
        batch_size = int(getattr(options, "batch_size", 8) or 8)
    batch_size = max(1, int(batch_size))
    fingerprints = {it.name: it.fingerprint() for it in items} if cache is not None else {}
    results = _results(detector, list(items), skipped, batch_size, cache, need_image, fingerprints,
                       {} if stats is None else stats)
    if prefetch > 0:
        results = _prefetched(results, prefetch)
    for item, image, value in results:
        if item is not None:
            yield item, image, value
        elif bar is not None:
            bar.update(value)


_END = object()


def _prefetched(iterator: Iterator, depth: int) -> Iterator:
    """``iterator`` advanced by a background thread up to ``depth`` items ahead; its errors re-raised here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work():
        try:
            for value in iterator:
                while not stop.is_set():
                    try:
                        q.put((value, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((_END, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put((_END, exc))

    thread = threading.Thread(target=work, name="hoi-mllm-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            value, error = q.get()
            if value is _END:
                if error is not None:
                    raise error
                return
            yield value
    finally:
        stop.set()
        thread.join(timeout=5)


# --------------------------------------------------------------------------- detector + recogniser
def recognise(pipeline, items: Sequence[ImageItem], skipped: list[dict] | None = None, *, writer=None,
              bar=None, prefetch: int = 0, timed: bool = True) -> Iterator[tuple[ImageItem, Any, Any]]:
    """Yield ``(item, image, HOITriplets)``: ``pipeline``'s detector over ``items`` (:func:`run_detector`),
    then its recogniser per image; each result is appended to ``writer`` (a
    :class:`~hoi_mllm.predictions.PredictionsWriter`) when given. An image the recogniser rejects
    (``ValueError``) is skipped and reported. ``timed`` adds ``recognition_ms`` to each result."""
    skipped = [] if skipped is None else skipped
    for item, image, dets in run_detector(pipeline.detector, items, skipped, bar=bar, prefetch=prefetch):
        t0 = time.perf_counter()
        try:
            triplets = pipeline.recognise_detections(image, dets, item.name)
        except ValueError as exc:
            _skip(skipped, item.name, str(exc))
            continue
        if timed:
            triplets.extra["recognition_ms"] = round(1000 * (time.perf_counter() - t0), 1)
        if writer is not None:
            writer.write(triplets)
        yield item, image, triplets


# --------------------------------------------------------------------------- a whole detect run
@dataclass
class DetectRun:
    """What :func:`detect_folder` did (this process's part, and the merged file on process 0)."""

    result: Any  # the merged PredictionsFile (process 0), else None
    new: int  # images predicted in this run (process 0: by every process)
    skipped: list
    unpictured: list
    rank: int
    world: int


def detect_folder(pipeline, files: Sequence[tuple[Path, str]], out_dir: Path, meta: dict, *, force: bool = False,
                  pictures: bool = True, progress: bool = True, prefetch: int = 0) -> DetectRun:
    """``hoi-mllm detect``'s run: the images of ``files`` through ``pipeline`` into ``out_dir``.

    Writes ``predictions.jsonl`` (resumable), ``predictions.json`` and ``vis/<name>.jpg``. Under a
    multi-process launcher the images are sharded over the processes
    (:class:`~hoi_mllm.sharding.ShardedPredictions`), each writing its own log, merged by process 0
    at the end; alone, the same with one shard.

    Raises:
        SettingsMismatch: the folder holds predictions of other settings (and not ``force``).
    """
    import sys

    from tqdm import tqdm

    from hoi_mllm.io import atomic_path
    from hoi_mllm.sharding import ShardedPredictions, process_group
    from hoi_mllm.visualize import draw_triplets

    rank, world, state = process_group()
    shard = ShardedPredictions(out_dir, pipeline.vocabulary.name, meta, rank, world, force)
    names = [n for _, n in files]
    before = len(shard.done & set(names))
    mine = set(shard.todo(names))
    todo = [(p, n) for p, n in files if n in mine]
    if state is not None:
        state.wait_for_everyone()  # every process has read what is done before anyone writes
    picture = vis_names(names)
    skipped: list[dict] = []
    unpictured: list[dict] = []
    desc = f"detect ({getattr(pipeline.detector, 'name', 'detector')})" + (f" [{rank + 1}/{world}]" if world > 1 else "")
    with shard.writer, tqdm(total=len(todo), desc=desc, unit="img", file=sys.stderr, disable=not progress) as bar:
        for item, image, triplets in recognise(pipeline, items_from_files(todo), skipped, writer=shard.writer,
                                               bar=bar, prefetch=prefetch):
            if not pictures:
                continue
            try:
                with atomic_path(out_dir / "vis" / picture[item.name]) as tmp:
                    draw_triplets(image, triplets, pipeline.vocabulary).save(tmp, format="JPEG", quality=90)
            except (OSError, ValueError) as exc:  # the predictions of this image are written: keep going
                unpictured.append({"file_name": item.name, "error": str(exc)})
                log.warning("no picture for %s: %s", item.name, exc)
    notes = {k: v for k, v in (("skipped", skipped), ("pictures_failed", unpictured)) if v}
    shard.write_notes(notes)
    if state is not None:
        state.wait_for_everyone()
    result = shard.merge(names, out_dir / "predictions.json") if rank == 0 else None
    if state is not None:
        state.wait_for_everyone()
    new = len(result.images) - before if result is not None else len(todo) - len(skipped)
    return DetectRun(result, new, skipped, unpictured, rank, world)


def detections_folder(detector, files: Sequence[tuple[Path, str]], out_dir: Path, header: dict, *,
                      pictures: bool = True, progress: bool = True, on_partial: Callable[[Path, int], None] | None = None):
    """``hoi-mllm detections``' run: ``detector`` over ``files``; ``out_dir/detections.json`` (the ``file``
    detector's format, ``"complete": true``) and ``out_dir/vis/<name>.jpg``.

    When the run stops (an error, an interrupt), the images done so far are written marked
    ``"complete": false`` (``on_partial(path, count)`` is told) and the error propagates.
    Returns ``(path, detections by name, skipped)``.

    Raises:
        ValueError: no image could be processed (naming the first few and why).
    """
    import sys

    from tqdm import tqdm

    from hoi_mllm.detectors import write_detections_file
    from hoi_mllm.io import atomic_path
    from hoi_mllm.visualize import draw_detections

    picture = vis_names([n for _, n in files])
    results: dict[str, Any] = {}
    skipped: list[dict] = []

    def write(complete: bool) -> Path:
        return write_detections_file(out_dir / "detections.json", results, detector.vocabulary.name, **header,
                                     skipped=skipped, complete=complete)

    finished = False
    try:
        with tqdm(total=len(files), desc=f"detections ({detector.name})", unit="img", file=sys.stderr,
                  disable=not progress) as bar:
            for item, image, dets in run_detector(detector, items_from_files(files), skipped, bar=bar):
                results[item.name] = dets
                if pictures:
                    with atomic_path(out_dir / "vis" / picture[item.name]) as tmp:
                        draw_detections(image, dets, detector.vocabulary).save(tmp, format="JPEG", quality=90)
        finished = True
    finally:
        if not finished and results:  # an error or an interrupt: keep what was computed, marked incomplete
            try:
                path = write(complete=False)
                if on_partial is not None:
                    on_partial(path, len(results))
            except OSError as exc:  # do not hide the error that stopped the run
                log.error("could not write the partial detections: %s", exc)
    if not results:
        raise nothing_processed(skipped)
    return write(complete=True), results, skipped
