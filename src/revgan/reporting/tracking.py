"""Run logging: upstream-format ``loss_log.txt``, TensorBoard scalars/images, optional wandb.

The text log keeps the reference format so existing log parsers keep working::

    (epoch: 1, iters: 100, time: 0.123, data: 0.001) G_A: 0.500 D_A: 0.200

``time`` is compute seconds per image and ``data`` data-loading seconds, as upstream. Curves
use x = *epochs completed* (``epoch - 1 + epoch_iter / dataset_size``); validation metrics
logged at the end of epoch ``e`` therefore sit at x = ``e``. Both logs are re-read on resume.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from revgan.errors import UserError
from revgan.reporting.plots import plot_curves
from revgan.reporting.visuals import to_display

LOSS_LOG = "loss_log.txt"
METRICS_LOG = "val_metrics.jsonl"
TB_DIR = "tensorboard"
_LINE = re.compile(r"^\(epoch: (\d+), iters: (\d+), time: [^,]*, data: [^)]*\)(.*)$")
_PAIR = re.compile(r"(\S+): (\S+)")
_noted_missing_tensorboard = False


def format_loss_line(epoch: int, epoch_iter: int, losses: Mapping[str, float],
                     t_comp: float = 0.0, t_data: float = 0.0) -> str:
    """One loss line in the upstream format (no trailing newline)."""
    message = f"(epoch: {epoch}, iters: {epoch_iter}, time: {t_comp:.3f}, data: {t_data:.3f}) "
    message += "".join(f"{k}: {float(v):.3f} " for k, v in losses.items())
    return message.rstrip()


def parse_loss_log(path: Path | str) -> list[tuple[int, int, dict[str, float]]]:
    """``(epoch, epoch_iter, losses)`` for every loss line of a loss_log.txt (others skipped)."""
    entries = []
    path = Path(path)
    if not path.is_file():
        return entries
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _LINE.match(line.strip())
        if not match:
            continue
        losses = {}
        for key, value in _PAIR.findall(match.group(3)):
            try:
                losses[key] = float(value)
            except ValueError:
                continue
        entries.append((int(match.group(1)), int(match.group(2)), losses))
    return entries


class RunLogger:
    """Logs losses, learning rates, images and validation metrics of one training run.

    ``enabled=False`` turns every method into a no-op (non-zero DDP ranks). TensorBoard is
    used when importable (a one-time note otherwise); wandb only on request.
    ``dataset_size`` (images per epoch) places loss points at fractional epochs; it may be set
    later as an attribute. Without it, losses sit at whole epochs. ``echo`` prints loss lines.
    """

    def __init__(self, checkpoint_dir: Path | str, name: str, use_tensorboard: bool = True,
                 use_wandb: bool = False, enabled: bool = True,
                 dataset_size: int | None = None, echo: bool = True) -> None:
        self.echo = echo
        self.checkpoint_dir = Path(checkpoint_dir)
        self.name = name
        self.enabled = enabled
        self.dataset_size = dataset_size
        self._losses: list[tuple[int, int, dict[str, float]]] = []
        self._lrs: list[tuple[int, int, dict[str, float]]] = []
        self._metrics: list[tuple[float, dict[str, float]]] = []
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self.loss_log = self.checkpoint_dir / LOSS_LOG
        self.metrics_log = self.checkpoint_dir / METRICS_LOG
        self._losses = parse_loss_log(self.loss_log)
        self._metrics = _read_metrics_log(self.metrics_log)
        with self.loss_log.open("a", encoding="utf-8") as fh:
            fh.write(f"================ Training Loss ({time.strftime('%c')}) ================\n")
        if use_tensorboard:
            self._tb = _tensorboard_writer(self.checkpoint_dir / TB_DIR)
        if use_wandb:
            self._wandb = _start_wandb(self.checkpoint_dir, name)

    # --- logging -----------------------------------------------------------------------

    def log_losses(self, epoch: int, epoch_iter: int, total_iters: int,
                   losses: Mapping[str, float], lrs: Mapping[str, float] | None = None,
                   t_comp: float = 0, t_data: float = 0) -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in losses.items()}
        line = format_loss_line(epoch, epoch_iter, values, t_comp, t_data)
        if self.echo:
            print(line)
        with self.loss_log.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        self._losses.append((int(epoch), int(epoch_iter), values))
        lr_values = {k: float(v) for k, v in (lrs or {}).items()}
        if lr_values:
            self._lrs.append((int(epoch), int(epoch_iter), lr_values))
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(f"losses/{k}", v, total_iters)
            for k, v in lr_values.items():
                self._tb.add_scalar(f"lr/{k}", v, total_iters)
        if self._wandb is not None:
            payload = {f"losses/{k}": v for k, v in values.items()}
            payload.update({f"lr/{k}": v for k, v in lr_values.items()})
            payload["epoch"] = self._x(epoch, epoch_iter)
            self._wandb.log(payload, step=int(total_iters))

    def log_images(self, step: int, visuals: Mapping[str, Tensor],
                   dims: int | None = None) -> None:
        """Visuals in [-1, 1] as RGB images (3D volumes as a mid-slice montage)."""
        if not self.enabled or (self._tb is None and self._wandb is None):
            return
        pictures = {k: to_display(v, dims) for k, v in visuals.items()}
        if self._tb is not None:
            for k, img in pictures.items():
                self._tb.add_image(f"visuals/{k}", img, int(step), dataformats="HWC")
        if self._wandb is not None:
            import wandb

            self._wandb.log({f"visuals/{k}": wandb.Image(img) for k, img in pictures.items()},
                            step=int(step))

    def log_metrics(self, step: int, epoch: float, metrics: Mapping[str, float]) -> None:
        """Validation metrics at ``epoch`` (epochs completed) and global ``step``."""
        if not self.enabled:
            return
        values = {k: float(v) for k, v in metrics.items()}
        record = {"step": int(step), "epoch": float(epoch), **_finite_or_none(values)}
        with self.metrics_log.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        self._metrics.append((float(epoch), values))
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(f"metrics/{k}", v, int(step))
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log({f"metrics/{k}": v for k, v in values.items()}, step=int(step))

    # --- history and plots ---------------------------------------------------------------

    def _x(self, epoch: int, epoch_iter: int) -> float:
        if self.dataset_size:
            return epoch - 1 + epoch_iter / self.dataset_size
        return float(epoch)

    def history(self, kind: str = "losses") -> dict[str, list[tuple[float, float]]]:
        """Series for ``plot_curves``: ``losses``, ``lr`` or ``metrics``."""
        out: dict[str, list[tuple[float, float]]] = {}
        if kind in ("losses", "lr"):
            for epoch, epoch_iter, values in (self._losses if kind == "losses" else self._lrs):
                x = self._x(epoch, epoch_iter)
                for k, v in values.items():
                    out.setdefault(k, []).append((x, v))
        elif kind == "metrics":
            for epoch, values in self._metrics:
                for k, v in values.items():
                    out.setdefault(k, []).append((epoch, v))
        else:
            raise ValueError(f"unknown history kind {kind!r}")
        return out

    def write_plots(self, out_dir: Path | str) -> list[Path]:
        """``losses.png`` and one ``metric_<name>.png`` per validation metric in ``out_dir``."""
        if not self.enabled:
            return []
        out_dir = Path(out_dir)
        paths = [plot_curves(self.history("losses"), out_dir / "losses.png",
                             f"{self.name}: training losses", "loss")]
        for key, series in self.history("metrics").items():
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
            paths.append(plot_curves({key: series}, out_dir / f"metric_{safe}.png",
                                     f"{self.name}: {key}", key))
        return paths

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _finite_or_none(values: Mapping[str, float]) -> dict[str, float | None]:
    return {k: (v if math.isfinite(v) else None) for k, v in values.items()}


def _read_metrics_log(path: Path) -> list[tuple[float, dict[str, float]]]:
    out = []
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            epoch = float(record.pop("epoch"))
            record.pop("step", None)
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # a line cut short by a crash
        out.append((epoch, {k: (float("inf") if v is None else float(v))
                            for k, v in record.items()}))
    return out


def _tensorboard_writer(log_dir: Path):
    global _noted_missing_tensorboard
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if not _noted_missing_tensorboard:
            print("revgan: note: tensorboard is not installed; TensorBoard logging is off "
                  "(pip install 'revgan[tensorboard]')", file=sys.stderr)
            _noted_missing_tensorboard = True
        return None
    return SummaryWriter(log_dir=str(log_dir))


def _start_wandb(checkpoint_dir: Path, name: str):
    try:
        import wandb
    except ImportError:
        raise UserError("wandb logging needs the optional extra: pip install 'revgan[wandb]'"
                        ) from None
    return wandb.init(project="revgan", name=name, dir=str(checkpoint_dir), resume="allow")
