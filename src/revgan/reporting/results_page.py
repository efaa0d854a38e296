"""Static HTML pages: the training page (visuals per display step + curves) and test results.

Plain string building with ``html.escape``: the pages are small and need no template engine.
Image paths are relative to the page, so a copied folder still renders.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote

from torch import Tensor

from revgan.errors import UserError
from revgan.reporting.visuals import save_display_png
from revgan.runs.atomic import atomic_write_text

STEPS_FILE = "steps.json"  # sidecar that lets the training page survive restarts
DEFAULT_WIDTH = 256

_CSS = """
body { font-family: sans-serif; margin: 1em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; }
td, th { padding: 4px 6px; vertical-align: top; text-align: center; }
table.metrics td, table.metrics th { border: 1px solid #ccc; text-align: right; }
table.metrics th { background: #f3f3f3; }
.caption { font-size: 0.85em; color: #444; overflow-wrap: anywhere; }
td.label { font-size: 0.9em; text-align: left; min-width: 8em; max-width: 16em;
           overflow-wrap: anywhere; }
img { image-rendering: pixelated; border: 1px solid #ddd; }
""".strip()


def _fmt(value: float) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if isinstance(value, float) and math.isnan(value):
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.1f}" if abs(value) >= 1000 else f"{value:.4g}"


def _src(rel: str | Path) -> str:
    """A relative path as an escaped, URL-quoted src attribute value."""
    return html.escape(quote(Path(rel).as_posix(), safe="/?=&"), quote=True)


def _write_atomic(path: Path, text: str) -> Path:
    """Write via a temporary file so a browser or crash never sees half a page."""
    atomic_write_text(path, text)
    return path


def _page(title: str, body: list[str], refresh: int = 0) -> str:
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh > 0 else ""
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        meta,
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *body,
        "</body></html>",
        "",
    ])


def _metrics_table(values: Mapping[str, float], table_id: str | None = None) -> str:
    id_attr = f' id="{html.escape(table_id)}"' if table_id else ""
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in values.items()
    )
    return (f'<table class="metrics"{id_attr}><tr><th>metric</th><th>value</th></tr>'
            f"{rows}</table>")


def _image_cell(rel: str, label: str, width: int, height: int | None) -> str:
    size = f'width="{width}"' + (f' height="{height}"' if height else "")
    return (f'<td><a href="{_src(rel)}"><img src="{_src(rel)}" {size} '
            f'alt="{html.escape(label, quote=True)}"></a>'
            f'<div class="caption">{html.escape(label)}</div></td>')


class TrainingPage:
    """``<web_dir>/index.html``: newest display steps first, curves on top.

    State (steps and plots) lives in ``<web_dir>/steps.json`` so a resumed run keeps its
    history. Images go to ``<web_dir>/images/epoch{epoch:03d}_iter{iteration}_{label}.png``.
    """

    def __init__(self, web_dir: Path | str, title: str, width: int = DEFAULT_WIDTH,
                 refresh: int = 0) -> None:
        self.web_dir = Path(web_dir)
        self.image_dir = self.web_dir / "images"
        self.title = title
        self.width = width
        self.refresh = refresh
        self.steps: list[dict] = []
        self.plots: list[str] = []
        self._load()

    def _load(self) -> None:
        sidecar = self.web_dir / STEPS_FILE
        if not sidecar.is_file():
            return
        try:
            state = json.loads(sidecar.read_text(encoding="utf-8"))
            self.steps = list(state["steps"])
            self.plots = [str(p) for p in state.get("plots", [])]
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"corrupt training page state {sidecar}: {exc}") from None

    def add_visuals(self, epoch: int, iteration: int, visuals: Mapping[str, Tensor],
                    dims: int | None = None) -> None:
        """Save each visual as a PNG and record a display step (replacing the same step)."""
        images = []
        for label, tensor in visuals.items():
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
            name = f"epoch{int(epoch):03d}_iter{int(iteration)}_{safe}.png"
            save_display_png(tensor, self.image_dir / name, dims=dims)
            images.append([label, f"images/{name}"])
        self.steps = [s for s in self.steps
                      if (s["epoch"], s["iteration"]) != (int(epoch), int(iteration))]
        self.steps.append({"epoch": int(epoch), "iteration": int(iteration), "images": images})

    def set_plots(self, paths: Iterable[Path | str]) -> None:
        """Curve PNGs to show at the top (stored relative to the page)."""
        self.plots = [os.path.relpath(Path(p).resolve(), self.web_dir.resolve()) for p in paths]

    def save(self) -> Path:
        """Rewrite index.html and the state sidecar; returns the page path."""
        _write_atomic(self.web_dir / STEPS_FILE,
                      json.dumps({"steps": self.steps, "plots": self.plots}, indent=1))
        body: list[str] = []
        if self.plots:
            body.append('<div id="curves">')
            for rel in self.plots:
                stamp = _mtime(self.web_dir / rel)  # defeat browser caching of rewritten plots
                body.append(f'<img class="curve" src="{_src(f"{rel}?v={stamp}")}" '
                            f'alt="{html.escape(Path(rel).stem, quote=True)}">')
            body.append("</div>")
        ordered = sorted(self.steps, key=lambda s: (s["epoch"], s["iteration"]), reverse=True)
        for step in ordered:
            body.append(f'<h2>epoch {step["epoch"]}, iteration {step["iteration"]}</h2>')
            cells = "".join(_image_cell(rel, label, self.width, None)
                            for label, rel in step["images"])
            body.append(f'<table class="step"><tr>{cells}</tr></table>')
        return _write_atomic(self.web_dir / "index.html",
                             _page(self.title, body, refresh=self.refresh))


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


class ResultsPage:
    """``<results_dir>/index.html``: one row per test item, metrics beside it, summary on top.

    ``aspect_ratio`` (width / height, like upstream ``--aspect_ratio``) stretches the displayed
    images: > 1 widens, < 1 heightens; 1 keeps each image's own shape.
    """

    def __init__(self, results_dir: Path | str, title: str, aspect_ratio: float = 1.0,
                 width: int = DEFAULT_WIDTH) -> None:
        if not aspect_ratio > 0:
            raise UserError(f"aspect ratio must be positive, got {aspect_ratio}")
        self.results_dir = Path(results_dir)
        self.title = title
        self.aspect_ratio = float(aspect_ratio)
        self.width = width
        self.items: list[tuple[str, dict[str, str]]] = []
        self.per_item: dict[str, dict[str, float]] = {}
        self.summary: dict[str, float] = {}

    def add_item(self, name: str, images: Mapping[str, Path | str]) -> None:
        """One row: label -> image path relative to the page."""
        self.items.append((name, {k: Path(v).as_posix() for k, v in images.items()}))

    def set_metrics(self, per_item: Mapping[str, Mapping[str, float]],
                    summary: Mapping[str, float]) -> None:
        self.per_item = {k: dict(v) for k, v in per_item.items()}
        self.summary = dict(summary)

    def _display_size(self) -> tuple[int, int | None]:
        if self.aspect_ratio > 1:
            return round(self.width * self.aspect_ratio), self.width
        if self.aspect_ratio < 1:
            return self.width, round(self.width / self.aspect_ratio)
        return self.width, None

    def save(self) -> Path:
        width, height = self._display_size()
        body: list[str] = []
        if self.summary:
            body.append("<h2>Summary</h2>")
            body.append(_metrics_table(self.summary, "metrics-summary"))
        body.append('<table id="results">')
        for name, images in self.items:
            cells = "".join(_image_cell(rel, label, width, height)
                            for label, rel in images.items())
            metrics = self.per_item.get(name)
            extra = f"<td>{_metrics_table(metrics)}</td>" if metrics else ""
            body.append(f'<tr><td class="label">{html.escape(name)}</td>{cells}{extra}</tr>')
        body.append("</table>")
        return _write_atomic(self.results_dir / "index.html", _page(self.title, body))
