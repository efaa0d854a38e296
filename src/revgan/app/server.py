"""``revgan serve``: a local page to translate an uploaded image or volume with a run.

The page (Gradio) takes an image (PNG, TIFF, JPEG, ...), a volume (NIfTI, .npy/.npz) or the
files of one DICOM series, translates it in the chosen direction through the Python API
(:mod:`revgan.api`, so the result is exactly what ``revgan translate`` writes), shows input
and output side by side (volumes: axial, coronal and sagittal mid-slices) and offers the
result for download: images as PNG/TIFF at the input's bit depth, volumes as NIfTI with the
input's affine. Problems with an upload end as one line on the page, never a traceback.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from revgan.api import Translator
from revgan.config import REQUIRED, option, select_device
from revgan.data.dicom import is_dicom_file
from revgan.data.volumes import volume_stem, volume_suffix
from revgan.errors import UserError
from revgan.reporting.visuals import to_display

INSTALL_HINT = "revgan serve needs the web app extra: pip install 'revgan[app]'"
LOG = logging.getLogger("revgan.app")
KEEP_S = 3600  # uploads and results (medical images, perhaps) are deleted after an hour


@dataclass
class ServeOptions:
    """The options of ``revgan serve``."""

    model_dir: str = option(REQUIRED, "a run folder: checkpoints/<name> (trained or imported)")
    epoch: str = option("latest", "checkpoint: latest, best or a number")
    host: str = option("127.0.0.1", "address to listen on (127.0.0.1: this machine only; "
                                    "0.0.0.0: every network interface)")
    port: int = option(7860, "port to listen on")
    max_upload_mb: float = option(1024.0, "largest upload accepted, in MB")
    gpu_ids: str = option("auto", "'auto', '-1' for the CPU, or a CUDA device id")


def require_gradio():
    """The gradio module, or one line saying how to install it."""
    try:
        import gradio
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return gradio


# --- what one request does (no Gradio here, so it is testable on its own) -------------


def _display_units(array: np.ndarray) -> torch.Tensor:
    """A volume in its own units, min-max scaled to [-1, 1] for display only."""
    values = torch.from_numpy(np.asarray(array, dtype=np.float32))
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) * 2 - 1 if high > low else torch.zeros_like(values)


def _image_display(pixels: np.ndarray) -> np.ndarray:
    """An H×W(×C) uint8/uint16 image as 8-bit RGB for the page."""
    peak = float(np.iinfo(pixels.dtype).max)
    chw = pixels[None] if pixels.ndim == 2 else np.moveaxis(pixels, -1, 0)
    return to_display(torch.from_numpy(chw.astype(np.float32) / (peak / 2) - 1), dims=2)


def output_name(source: Path, direction: str, dims: int) -> str:
    """``x.png`` -> ``x_AtoB.png`` (TIFF stays TIFF, other images become PNG: lossless at
    any bit depth); volumes and DICOM series -> ``<name>_AtoB.nii.gz``."""
    if dims == 3:
        return f"{volume_stem(source)}_{direction}.nii.gz"
    suffix = source.suffix.lower()
    return f"{source.stem}_{direction}{suffix if suffix in ('.tif', '.tiff') else '.png'}"


def stage_upload(files: list[Path], folder: Path, max_bytes: float) -> Path:
    """Copy the uploaded files into ``folder`` and return what to translate: the one file,
    or a folder of the DICOM files (several files: one series)."""
    if not files:
        raise UserError("upload an image, a volume or the files of one DICOM series first")
    total = sum(f.stat().st_size for f in files)
    if total > max_bytes:
        raise UserError(f"the upload is {total / 2**20:.1f} MB; this server accepts at most "
                        f"{max_bytes / 2**20:.0f} MB (revgan serve --max_upload_mb)")
    if len(files) == 1 and not is_dicom_file(Path(files[0])):
        target = folder / Path(files[0]).name
        shutil.copyfile(files[0], target)
        return target
    series = folder / "series"
    series.mkdir()
    for i, file in enumerate(files):
        shutil.copyfile(file, series / f"{i:05d}_{Path(file).name}")
    return series


def translate_upload(translator: Translator, files: list[Path], direction: str,
                     work: Path, max_bytes: float) -> tuple[np.ndarray, np.ndarray, Path]:
    """Translate an upload; returns (input preview, output preview, result file).

    Previews are 8-bit RGB: images as they are, volumes as mid-slice montages."""
    folder = Path(tempfile.mkdtemp(dir=work))
    source = stage_upload(files, folder, max_bytes)
    dims = translator.dims
    if dims == 2 and source.is_dir():
        raise UserError("this run translates 2D images: upload a single image file")
    if dims == 3 and source.is_file() and not volume_suffix(source):
        raise UserError(f"this run translates volumes: upload a NIfTI (.nii, .nii.gz), .npy or "
                        f".npz file or the files of one DICOM series, not '{source.name}'")
    target = folder / "result" / output_name(source, direction, dims)
    target.parent.mkdir()
    result = translator.translate(source, direction=direction, output=target)
    if dims == 3:
        from revgan.data.volumes import read_volume

        volume, _ = read_volume(source)
        return (to_display(_display_units(volume), dims=3),
                to_display(_display_units(result), dims=3), target)
    from revgan.data.images import read_image

    channels = translator.config.input_nc if direction == "AtoB" else \
        translator.config.output_nc
    image, _ = read_image(source, channels)
    return to_display(torch.from_numpy(image), dims=2), _image_display(result), target


def prune(work: Path, max_age_s: float = KEEP_S) -> None:
    """Delete the request folders in ``work`` older than ``max_age_s``."""
    cutoff = time.time() - max_age_s
    for folder in work.iterdir():
        if folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)


def friendly_error(exc: Exception) -> str:
    """One line for the page: a user error as it is, anything else as its first line."""
    if isinstance(exc, UserError):
        return str(exc).strip().splitlines()[-1] if str(exc).strip() else "invalid input"
    LOG.exception("translation failed")  # the traceback goes to the server's console only
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"could not translate this upload: {first}"


# --- the page ---------------------------------------------------------------------------


def build_app(translator: Translator, max_upload_mb: float = 1024.0, work: Path | None = None):
    """The Gradio Blocks page for ``translator`` (not launched)."""
    gr = require_gradio()
    work = Path(work or tempfile.mkdtemp(prefix="revgan-serve-"))
    max_bytes = max_upload_mb * 2**20
    kind = "volume (NIfTI, .npy/.npz) or the files of one DICOM series" \
        if translator.dims == 3 else "image (PNG, TIFF, JPEG, ...)"
    config = translator.config

    def run(uploaded: Any, direction: str):
        files = [Path(getattr(f, "name", f)) for f in (uploaded or [])]
        prune(work)
        try:
            shown_in, shown_out, result = translate_upload(translator, files, direction, work,
                                                           max_bytes)
        except Exception as exc:  # every failure is a line on the page
            return None, None, None, f"**Error:** {friendly_error(exc)}"
        return shown_in, shown_out, str(result), f"Done: `{result.name}`"

    # Gradio's own copies of uploads and results go after the same time.
    with gr.Blocks(title="revgan", analytics_enabled=False,
                   delete_cache=(KEEP_S, KEEP_S)) as page:
        gr.Markdown(f"## revgan: {Path(translator.model_dir).name}\n"
                    f"{config.model}, {config.netG}, {translator.dims}D. Upload an {kind}, "
                    "choose the direction and translate.")
        with gr.Row():
            upload = gr.File(label="input", file_count="multiple", elem_id="upload")
            direction = gr.Radio(list(translator.directions), value=translator.directions[0],
                                 label="direction", elem_id="direction")
        button = gr.Button("Translate", variant="primary", elem_id="translate")
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            shown_in = gr.Image(label="input", type="numpy", interactive=False, height=320,
                                elem_id="preview_in")
            shown_out = gr.Image(label="output", type="numpy", interactive=False, height=320,
                                 elem_id="preview_out")
        result = gr.File(label="result", interactive=False, elem_id="result")
        button.click(run, inputs=[upload, direction],
                     outputs=[shown_in, shown_out, result, status])
    page.revgan_work = work  # where uploads and results live (removed by serve)
    return page


def serve(args: ServeOptions) -> None:
    """``revgan serve``: load the run and serve the page until interrupted."""
    require_gradio()  # before loading anything: one line if the extra is missing
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
    if args.max_upload_mb <= 0:
        raise UserError(f"--max_upload_mb must be positive, got {args.max_upload_mb}")
    translator = Translator(args.model_dir, args.epoch, select_device(args.gpu_ids))
    page = build_app(translator, args.max_upload_mb)
    print(f"revgan serve: http://{args.host}:{args.port} (Ctrl+C stops)")
    try:
        launch(page, args.host, args.port, args.max_upload_mb)
    finally:
        shutil.rmtree(page.revgan_work, ignore_errors=True)


def launch(page, host: str, port: int, max_upload_mb: float, block: bool = True) -> None:
    """Serve ``page`` on ``host:port``; uploads above ``max_upload_mb`` are refused by the
    page itself. ``block=False`` returns once the server runs (``page.close()`` stops it)."""
    try:
        page.launch(server_name=host, server_port=port, share=False, quiet=True,
                    max_file_size=int(max_upload_mb * 2**20), prevent_thread_lock=not block,
                    allowed_paths=[str(page.revgan_work)])
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
