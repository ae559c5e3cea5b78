"""The web app in a real headless browser: ``hoi-mllm app`` on a free port, driven by Playwright over
Debian's chromium (``apt-get install chromium chromium-driver``; ``.ci/run`` installs it).

Upload a synthetic-world picture, run, see the picture and the table, download the predictions JSON
(read by the evaluators' reader); run again with a text interaction and a higher detector threshold,
and find the interaction among the table filter's choices; then run on a clicked example. Boxes come from a ``file:`` detector (a
detections file written here from the world's annotation), so the table has rows whatever the tiny
random recogniser thinks. The page may fetch nothing beyond the app itself. Set
``HOI_MLLM_APP_SCREENSHOT=docs/app.png`` to refresh the README's screenshot.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROWS = "#hoi-table [role=row]:has([role=gridcell])"  # the body rows (the header row has column headers)
TIMEOUT_MS = 180_000  # a fresh 2-core CI machine: loading the tiny model and a first run take a while
# the synthetic world's objects as hico-det (COCO) names; "box" has none
HICO_NAMES = {"ball": "sports ball", "bicycle": "bicycle", "chair": "chair", "cup": "cup", "sign": "stop sign",
              "umbrella": "umbrella"}

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _image_entry(data: dict, index: int) -> tuple[dict, str]:
    """The detections of test image ``index`` from the world's boxes: the first person and the first
    object (named in hico-det) score 0.9, the others 0.45; and the 0.9 object's name."""
    ann, name = data["annotation"][index], data["filenames"][index]
    boxes, names, scores = [], [], []
    for box in dict.fromkeys(tuple(b) for b in ann["boxes_h"]):
        boxes.append(list(box)), names.append("person"), scores.append(0.9 if not scores else 0.45)
    main = None
    for box, obj in dict.fromkeys((tuple(b), o) for b, o in zip(ann["boxes_o"], ann["object"])):
        hico = HICO_NAMES.get(data["objects"][obj])
        if hico is None:
            continue
        boxes.append(list(box)), names.append(hico), scores.append(0.9 if main is None else 0.45)
        main = main or hico
    assert main is not None, f"{name}: no object with a hico-det name"
    return {"file_name": name, "image_size": data["size"][index], "boxes": boxes, "scores": scores,
            "label_names": names}, main


def _detections_for(world: Path, path: Path, count: int = 2) -> str:
    """A detections file for the world's first ``count`` test images; returns the first one's 0.9 object."""
    data = json.loads((world / "instances_test.json").read_text())
    entries = [_image_entry(data, i) for i in range(count)]
    path.write_text(json.dumps({"format": "hoi-mllm/detections", "version": 1, "vocabulary": "hico-det",
                                "images": [e for e, _ in entries]}))
    return entries[0][1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(f"no browser: {CHROMIUM} is absent (apt-get install -y chromium chromium-driver)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    from hoi_mllm.app.examples import example_images

    folder = tmp_path_factory.mktemp("app_browser")
    examples = example_images(folder / "examples")
    assert len(examples) == 4
    obj = _detections_for(folder / "examples", folder / "dets.json")
    upload = folder / "upload" / examples[0].name
    upload.parent.mkdir()
    shutil.copy(examples[0], upload)
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hoi_mllm", "app", "--model", "tiny-qwen2-vl", "--device", "cpu",
         "--detector", f"file:path={folder / 'dets.json'}", "--detector", "yolo:model=yolov8n.yaml",
         "--port", str(port), "--examples", str(folder / "examples")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    ready = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("hoi-mllm app: http"):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 300
    while not ready.is_set() and proc.poll() is None and time.monotonic() < deadline:
        ready.wait(0.5)
    if not ready.is_set():
        proc.kill()
        pytest.fail("the app did not start:\n" + "".join(lines[-40:]))
    url = next(line.split()[2] for line in lines if line.startswith("hoi-mllm app: http"))
    yield {"url": url, "upload": upload, "object": obj, "folder": folder, "lines": lines, "examples": examples}
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _rows(page) -> list[list[str]]:
    rows = page.locator(ROWS)
    return [[c.strip() for c in rows.nth(i).locator("[role=gridcell]").all_inner_texts()] for i in range(rows.count())]


def test_upload_run_table_download_and_a_text_interaction(app):
    from playwright.sync_api import expect, sync_playwright

    from hoi_mllm.predictions_reader import read_predictions

    local = urlparse(app["url"]).netloc
    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
            page.set_default_timeout(TIMEOUT_MS)

            def guard(route):  # nothing beyond the app: record and refuse
                if urlparse(route.request.url).netloc == local or route.request.url.startswith(("data:", "blob:")):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", guard)
            page.goto(app["url"], wait_until="domcontentloaded")
            page.locator("#hoi-run").wait_for()
            page.locator("#hoi-input input[type=file]").set_input_files(str(app["upload"]))
            page.locator("#hoi-input img").wait_for()
            _set_number(page, "#hoi-topk", "100")
            page.locator("#hoi-run").click()
            status = page.locator("#hoi-status textarea")
            expect(status).to_have_value(re.compile(r"\d+ triplet\(s\) in "), timeout=TIMEOUT_MS)
            assert "error" not in status.input_value()
            expect(page.locator("#hoi-picture img")).to_be_visible(timeout=TIMEOUT_MS)
            expect(page.locator(ROWS).first).to_be_visible(timeout=TIMEOUT_MS)
            first = _rows(page)
            assert first and all(r[0].startswith("person ") for r in first), first[:3]
            n = int(re.match(r"(\d+) triplet", status.input_value()).group(1))
            assert n > 1
            shot = os.environ.get("HOI_MLLM_APP_SCREENSHOT")
            page.screenshot(path=shot or str(app["folder"] / "app.png"), full_page=True)

            link = page.locator("#hoi-download a[download]")
            expect(link).to_be_visible(timeout=TIMEOUT_MS)
            with page.expect_download(timeout=TIMEOUT_MS) as info:
                link.click()
            saved = app["folder"] / "downloaded.json"
            info.value.save_as(saved)
            predictions = read_predictions(saved)
            assert predictions.vocabulary == "hico-det" and len(predictions.images) == 1
            assert predictions.images[0].file_name == app["upload"].name and len(predictions.images[0]) == n

            # again, with a new interaction on the 0.9 object and a threshold keeping only the 0.9 boxes
            phrase = f"admire {app['object']}"
            page.locator("#hoi-interactions textarea").fill(phrase)
            _set_number(page, "#hoi-score", "0.5")
            page.locator("#hoi-run").click()
            expect(status).to_have_value(re.compile(f"added interaction: '{phrase}'"), timeout=TIMEOUT_MS)
            expect(page.locator(ROWS).first).to_be_visible(timeout=TIMEOUT_MS)
            m = int(re.match(r"(\d+) triplet", status.input_value()).group(1))
            assert 0 < m < n
            page.locator("#hoi-filter input").click()
            options = page.locator("#hoi-filter [role=option]")
            expect(options.first).to_be_visible(timeout=TIMEOUT_MS)
            assert phrase in [t.strip() for t in options.all_inner_texts()]
            options.filter(has_text=phrase).first.click()  # the filter keeps only its rows
            expect(page.locator(ROWS)).to_have_count(1, timeout=TIMEOUT_MS)
            assert _rows(page)[0][1] == phrase

            # the second example instead of the upload, no interaction
            page.locator("#hoi-interactions textarea").fill("")
            before = page.locator("#hoi-input img").get_attribute("src")
            page.locator("#hoi-examples img").nth(1).click()
            page.wait_for_function("old => { const i = document.querySelector('#hoi-input img'); "
                                   "return i !== null && !!i.src && i.src !== old; }", arg=before, timeout=TIMEOUT_MS)
            page.locator("#hoi-run").click()
            expect(status).to_have_value(re.compile(rf"^\d+ triplet\(s\) in {re.escape(app['examples'][1].name)} .*"
                                                    r"vocabulary hico-det\)$"), timeout=TIMEOUT_MS)
        finally:
            browser.close()
    assert not outside, f"the page tried to fetch from outside the app: {outside[:5]}"


def _set_number(page, elem: str, value: str) -> None:
    box = page.locator(f"{elem} input[type=number]")
    box.fill(value)
    box.press("Enter")
    box.blur()
