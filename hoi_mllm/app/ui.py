"""The Gradio page of the app, on an :class:`~hoi_mllm.app.session.AppSession`.

Left: the picture (upload or an example), the detector (among those given at start; one in memory at
a time), the detector score threshold, the triplet score threshold, top-k, the interactions to add as
text (one a line). Right: the picture with boxes and pair lines, the triplets table (click a header
to sort), a filter over its interactions, the predictions JSON to download, and a status line where
every error is said (the app keeps serving). Nothing is fetched from the internet: analytics off,
no share link, system fonts only.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

from hoi_mllm.app.session import DRAWN, TABLE_HEADERS, AppError, AppSession

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
TITLE = "hoi-mllm: human-object interactions in your photos"


def _gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no calls home
    import gradio as gr

    return gr


def _theme(gr):
    """Gradio's default look on system fonts (its default theme loads Google Fonts: nothing to fetch offline)."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "SFMono-Regular", "monospace"])


def build_app(session: AppSession, examples: Sequence[str | Path] = ()):
    """The ``gr.Blocks`` of the app (not launched)."""
    gr = _gradio()
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        rows_state = gr.State([])
        gr.Markdown(f"## {TITLE}\nModel: `{session.model}` on `{session.device}`. Upload a photo (or click an "
                    "example), pick a detector, add interactions as text if you like (`feed giraffe`), and run.")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="filepath", label="picture", sources=["upload", "clipboard"],
                                 elem_id="hoi-input", height=360)
                detector = gr.Dropdown(session.detectors, value=session.detectors[0], label="detector",
                                       elem_id="hoi-detector")
                score = gr.Slider(0.0, 1.0, value=0.2, step=0.01, label="detector score threshold",
                                  elem_id="hoi-score")
                triplet = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="triplet score threshold",
                                    elem_id="hoi-triplet")
                top_k = gr.Slider(1, 100, value=10, step=1, label="top-k triplets", elem_id="hoi-topk")
                interactions = gr.Textbox(label="interactions to add (one a line: VERB OBJECT)", lines=3,
                                          placeholder="feed giraffe\npolish car, motorcycle", elem_id="hoi-interactions")
                run = gr.Button("Run", variant="primary", elem_id="hoi-run")
                if examples:
                    with gr.Column(elem_id="hoi-examples"):
                        gr.Examples([[str(p)] for p in examples], inputs=[image], label="examples (synthetic world)")
            with gr.Column(scale=2):
                status = gr.Textbox(label="status", interactive=False, lines=3, elem_id="hoi-status")
                picture = gr.Image(label=f"triplets (the {DRAWN} best drawn)", type="pil", interactive=False, elem_id="hoi-picture", height=420)
                shown = gr.Dropdown([], value=[], multiselect=True, label="show only these interactions (all when empty)",
                                    elem_id="hoi-filter")
                table = gr.Dataframe(headers=TABLE_HEADERS, datatype=["str", "str", "str", "number"], interactive=False,
                                     label="triplets (click a header to sort)", elem_id="hoi-table",
                                     column_count=len(TABLE_HEADERS))
                download = gr.File(label="predictions JSON", interactive=False, elem_id="hoi-download")

        def on_run(path, spec, score_value, triplet_value, k, text, progress=gr.Progress()):
            def report(fraction, desc):
                progress(fraction, desc=desc)

            try:
                out = session.run(path, spec, score_value, triplet_value, k, text, progress=report)
            except AppError as exc:
                return (f"error: {exc}", None, gr.update(choices=[], value=[]), _frame([]), None, [])
            except Exception as exc:  # noqa: BLE001 - an unexpected failure is said in the page; the app serves on
                log.exception("run failed")
                return (f"error: {type(exc).__name__}: {exc}", None, gr.update(choices=[], value=[]), _frame([]),
                        None, [])
            return (out.message, out.picture, gr.update(choices=out.choices, value=[]), _frame(out.rows),
                    str(out.predictions_path), out.rows)

        def on_filter(selected, rows):
            return _frame([r for r in rows if not selected or r[1] in selected])

        run.click(on_run, [image, detector, score, triplet, top_k, interactions],
                  [status, picture, shown, table, download, rows_state], concurrency_limit=1)
        shown.change(on_filter, [shown, rows_state], [table])
    return demo


def _frame(rows):
    import pandas as pd

    return pd.DataFrame(rows, columns=TABLE_HEADERS)


def launch(model: str, detectors: Sequence[str], *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
           vocabulary=None, mode: str | None = None, device: str = "auto", dtype=None,
           examples_dir: str | Path | None = None, no_examples: bool = False, block: bool = True):
    """Build the session and the page, and serve it on ``host:port`` (``0.0.0.0`` exposes it to the network).

    Returns ``(gradio Blocks, local URL)``; with ``block`` (default) it serves until interrupted.
    Raises:
        ValueError: a detector spec that does not parse, a bad device, before anything loads.
    """
    from hoi_mllm.app.examples import example_images

    session = AppSession(model, detectors, vocabulary=vocabulary, mode=mode, device=device, dtype=dtype)
    examples = [] if no_examples else example_images(examples_dir)
    demo = build_app(session, examples)
    demo.queue(default_concurrency_limit=1)
    allowed = [str(session.output_dir)] + sorted({str(Path(p).parent) for p in examples})
    _, url, _ = demo.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=True, quiet=True,
                            allowed_paths=allowed,
                            theme=_theme(_gradio()), ssr_mode=False, show_error=True, footer_links=[])
    log.info("serving on %s", url)
    if block:
        try:
            demo.block_thread()
        finally:
            demo.close()
    return demo, url
