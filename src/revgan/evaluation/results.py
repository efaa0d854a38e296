"""Score a test-results folder: paired metrics, cycle errors and (optionally) FID/KID.

Layout (written by ``revgan test``): ``<results_dir>/images/<label>/<item>.<ext>`` with labels
such as real_A, fake_B, rec_A, real_B, fake_A, rec_B. 2D items are image files (8/16-bit
PNG, TIFF, ...); 3D items are ``.nii.gz`` in input units, beside a ``.png`` montage for the page
(the PNG is ignored when a NIfTI of the same item exists).

Every comparison is reported twice:

* ``*_file``: in the files' own units. Integer images: data range = the file's full scale
  (255 for 8-bit, 65535 for 16-bit); float images: the reader's value range. Volumes
  (NIfTI/.npy/.npz, any dtype): data range = ``max - min`` of the *target* item (1.0 if the
  target is constant).
* ``*_norm``: in the networks' [-1, 1] space, data range 2. Images use the reader's mapping;
  volumes are mapped with the target's min/max (so ``PSNR_norm == PSNR_file`` for volumes).

MAE/MSE scale with the units; PSNR is unit-free given the range; SSIM is *not* shift invariant
(its luminance term), so ``SSIM_file`` and ``SSIM_norm`` differ. See docs/evaluation.md.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from revgan.errors import UserError
from revgan.evaluation.metrics import cycle_metrics_per_item, paired_metrics_per_item

# (prediction label, target label); translation pairs need paired data, cycle pairs do not
TRANSLATION_PAIRS: list[tuple[str, str]] = [("fake_B", "real_B"), ("fake_A", "real_A")]
CYCLE_PAIRS: list[tuple[str, str]] = [("rec_A", "real_A"), ("rec_B", "real_B")]
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".npy", ".npz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm")
CSV_NAME = "metrics.csv"
JSON_NAME = "metrics.json"


@dataclass(frozen=True)
class _Item:
    """One loaded item: values in file units and in [-1, 1], plus its file data range."""

    file: torch.Tensor  # 1×C×(D×)H×W, float64
    norm: torch.Tensor  # same shape, [-1, 1]
    data_range: float
    is_volume: bool


def pair_name(pred: str, target: str) -> str:
    return f"{pred}_vs_{target}"


def _split_name(path: Path) -> tuple[str, str] | None:
    """(item, suffix) for a result file, or None if it is not an image/volume."""
    name = path.name
    for suffix in VOLUME_SUFFIXES + IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], suffix
    return None


def list_items(folder: Path) -> dict[str, Path]:
    """Item name -> file in one label folder; a NIfTI wins over a PNG of the same item."""
    items: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        split = _split_name(path) if path.is_file() else None
        if split is None:
            continue
        item, suffix = split
        if item in items and _split_name(items[item])[1] in VOLUME_SUFFIXES:
            continue  # keep the volume, drop its montage
        if item in items and suffix not in VOLUME_SUFFIXES:
            raise UserError(f"two result files for item '{item}' in {folder}: "
                            f"{items[item].name} and {path.name}")
        items[item] = path
    return items


def _load(path: Path, target: _Item | None) -> _Item:
    """Read an image or volume. Volumes of a prediction are normalised with its target's range."""
    if path.name.lower().endswith(VOLUME_SUFFIXES):
        from revgan.data.volumes import read_volume

        array, _ = read_volume(path)
        vol = torch.as_tensor(np.asarray(array), dtype=torch.float64).unsqueeze(0)
        if target is None:
            lo, hi = float(vol.min()), float(vol.max())
            span = hi - lo if hi > lo else 1.0
        else:
            span = target.data_range
            lo = float(target.file.min())
        norm = (vol - lo) * (2.0 / span) - 1.0
        return _Item(file=vol, norm=norm, data_range=span, is_volume=True)

    from revgan.data.images import read_image

    array, meta = read_image(path, 3)
    if meta.channels < 3:  # gray files come back replicated; keep one channel
        array = array[:1]
    norm = torch.as_tensor(np.asarray(array), dtype=torch.float64).unsqueeze(0)
    lo, hi = (float(v) for v in meta.value_range)
    file_units = (norm + 1.0) * ((hi - lo) / 2.0) + lo
    if meta.bit_depth in (8, 16):
        # integer samples: undo the reader's float32 rounding so metrics are exact
        file_units = file_units.round()
        norm = (file_units - lo) * (2.0 / (hi - lo)) - 1.0
    return _Item(file=file_units, norm=norm, data_range=hi - lo, is_volume=False)


def _match_channels(pred: _Item, target: _Item) -> tuple[_Item, _Item]:
    """Compare gray with RGB as gray (luminance); anything else must match exactly."""
    cp, ct = pred.file.shape[1], target.file.shape[1]
    if cp == ct:
        return pred, target
    if {cp, ct} == {1, 3}:
        from revgan.data.images import LUMA

        spatial = pred.file.dim() - 2
        luma = torch.as_tensor(LUMA, dtype=torch.float64).view(1, 3, *([1] * spatial))

        def gray(it: _Item) -> _Item:
            if it.file.shape[1] == 1:
                return it
            return _Item(file=(it.file * luma).sum(1, keepdim=True),
                         norm=(it.norm * luma).sum(1, keepdim=True),
                         data_range=it.data_range, is_volume=it.is_volume)

        return gray(pred), gray(target)
    raise UserError(f"channel counts differ ({cp} vs {ct})")


def _compare(pred_path: Path, target_path: Path, cycle: bool) -> dict[str, float]:
    target = _load(target_path, None)
    pred = _load(pred_path, target)
    if pred.is_volume != target.is_volume:
        raise UserError(f"cannot compare a volume with a 2D image: {pred_path} vs {target_path}")
    try:
        pred, target = _match_channels(pred, target)
        fn = cycle_metrics_per_item if cycle else paired_metrics_per_item
        # cycle_metrics takes (real, rec); paired_metrics takes (pred, target)
        args_file = (target.file, pred.file) if cycle else (pred.file, target.file)
        args_norm = (target.norm, pred.norm) if cycle else (pred.norm, target.norm)
        file_units = fn(*args_file, target.data_range)[0]
        norm_units = fn(*args_norm, 2.0)[0]
    except UserError as exc:
        raise UserError(f"{pred_path} vs {target_path}: {exc}") from None
    row = {f"{k}_file": v for k, v in file_units.items()}
    row.update({f"{k}_norm": v for k, v in norm_units.items()})
    row["data_range_file"] = target.data_range
    return row


def _summarise(values: list[float]) -> dict[str, float | None]:
    arr = np.asarray(values, dtype=np.float64)
    if np.isinf(arr).any():  # e.g. PSNR of identical images: the mean is inf too
        return {"mean": float(arr.mean()), "std": float("nan")}
    return {"mean": float(arr.mean()), "std": float(arr.std())}


def _json_safe(obj):
    """Standard JSON has no inf/nan: write them as null (documented)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def evaluate_results(
    results_dir: Path | str,
    pairs: list[tuple[str, str]] | None = None,
    paired: bool | None = None,
    fid: bool = False,
) -> dict:
    """Compute metrics for a results folder; write ``metrics.csv`` and ``metrics.json``.

    ``pairs``: explicit (prediction, target) label pairs; labels starting with ``rec_`` get
    cycle metrics (L1, PSNR), others MAE/MSE/PSNR/SSIM. Default: the cycle pairs whose folders
    exist, plus fake_B/real_B and fake_A/real_A when ``paired`` is not False and both folders
    share item names (unpaired test sets should pass ``paired=False``: their items do not
    correspond). ``fid``: also FID/KID between the folders of each translation pair (2D only).
    Returns the summary (also in metrics.json).
    """
    results_dir = Path(results_dir)
    images_dir = results_dir / "images"
    if not images_dir.is_dir():
        raise UserError(f"results folder not found or has no images/ subfolder: {results_dir}")
    labels = {p.name for p in images_dir.iterdir() if p.is_dir()}
    explicit = pairs is not None
    if pairs is None:
        pairs = [p for p in CYCLE_PAIRS if set(p) <= labels]
        if paired is not False:
            pairs = [p for p in TRANSLATION_PAIRS if set(p) <= labels] + pairs

    rows: list[dict] = []
    summary: dict = {"results_dir": str(results_dir), "pairs": {}}
    for pred_label, target_label in pairs:
        for label in (pred_label, target_label):
            if label not in labels and explicit:
                raise UserError(f"no '{label}' folder in {images_dir}")
        if pred_label not in labels or target_label not in labels:
            continue
        pred_items = list_items(images_dir / pred_label)
        target_items = list_items(images_dir / target_label)
        common = sorted(set(pred_items) & set(target_items))
        if not common:
            if explicit or paired:
                raise UserError(f"no items with the same name in {pred_label} and {target_label}")
            continue
        cycle = pred_label.startswith("rec_")
        name = pair_name(pred_label, target_label)
        pair_rows = []
        for item in common:
            row = {"item": item, "pair": name, "kind": "cycle" if cycle else "paired"}
            row.update(_compare(pred_items[item], target_items[item], cycle))
            pair_rows.append(row)
        metric_keys = [k for k in pair_rows[0] if k not in ("item", "pair", "kind")]
        summary["pairs"][name] = {
            "kind": "cycle" if cycle else "paired",
            "count": len(pair_rows),
            "metrics": {k: _summarise([r[k] for r in pair_rows]) for k in metric_keys},
        }
        rows.extend(pair_rows)

    if fid:
        summary["fid"] = {}
        for pred_label, target_label in TRANSLATION_PAIRS:
            if {pred_label, target_label} <= labels:
                summary["fid"][pair_name(pred_label, target_label)] = fid_between(
                    images_dir / target_label, images_dir / pred_label)

    if not rows and not summary.get("fid"):
        raise UserError(f"nothing to evaluate in {images_dir}: found labels "
                        f"{sorted(labels) or 'none'}; need e.g. fake_B+real_B or rec_A+real_A")
    _write_csv(results_dir / CSV_NAME, rows)
    (results_dir / JSON_NAME).write_text(json.dumps(_json_safe(summary), indent=2) + "\n")
    return summary


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})


def read_metrics_csv(path: Path | str) -> list[dict]:
    """Rows of a metrics.csv with numbers parsed (empty cells left out)."""
    rows = []
    with Path(path).open(newline="") as fh:
        for raw in csv.DictReader(fh):
            row: dict = {}
            for k, v in raw.items():
                if v == "":
                    continue
                try:
                    row[k] = float(v)
                except ValueError:
                    row[k] = v
            rows.append(row)
    return rows


def page_tables(results_dir: Path | str) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Metrics for ``ResultsPage.set_metrics``: per item and summary means.

    Keys are ``<pair>/<metric>`` (e.g. ``fake_B_vs_real_B/PSNR_file``).
    """
    results_dir = Path(results_dir)
    per_item: dict[str, dict[str, float]] = {}
    for row in read_metrics_csv(results_dir / CSV_NAME):
        cells = per_item.setdefault(str(row["item"]), {})
        for k, v in row.items():
            if isinstance(v, float) and k != "data_range_file":
                cells[f"{row['pair']}/{k}"] = v
    summary: dict[str, float] = {}
    data = json.loads((results_dir / JSON_NAME).read_text())
    for pair, info in data.get("pairs", {}).items():
        for metric, stats in info["metrics"].items():
            if metric != "data_range_file":
                mean = stats["mean"]
                summary[f"{pair}/{metric}"] = float("inf") if mean is None else mean
    for pair, scores in data.get("fid", {}).items():
        for k in ("fid", "kid_mean"):
            summary[f"{pair}/{k.upper() if k == 'fid' else 'KID'}"] = scores[k]
    return per_item, summary


def fid_between(real_dir: Path | str, fake_dir: Path | str, **kwargs) -> dict[str, float]:
    """FID/KID between two image folders; see :func:`revgan.evaluation.fid.compute_fid_kid`."""
    from revgan.evaluation.fid import compute_fid_kid

    return compute_fid_kid(real_dir, fake_dir, **kwargs)
