"""Loss and metric curves as PNG files (matplotlib, headless Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI; must precede pyplot import

import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(
    history: dict[str, list[tuple[float, float]]],
    path: Path | str,
    title: str,
    ylabel: str,
) -> Path:
    """Plot one line per series of ``(x, y)`` points (x = fractional epoch) into ``path``.

    Non-finite values (e.g. PSNR of identical images) are dropped from the line. Series
    without finite points are left out; an empty history still yields a (blank) figure so
    that pages never reference a missing file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    try:
        plotted = 0
        for name, points in history.items():
            pts = [(float(x), float(y)) for x, y in points if math.isfinite(y)]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, label=name, marker="o" if len(pts) == 1 else None, linewidth=1.2)
            plotted += 1
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if plotted:
            ax.legend(loc="best", fontsize="small")
        else:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
