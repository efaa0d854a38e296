"""``revgan export``: one translation direction of a trained generator as a portable file.

Formats: ``pt2`` (``torch.export``, loaded back with ``torch.export.load``), ``onnx-dynamo``
(ONNX written from the ``torch.export`` graph; needs onnxscript), ``onnx`` (ONNX from the
TorchScript-based exporter) and ``torchscript`` (``torch.jit.trace``: deprecated by PyTorch,
kept while it ships). The exported module maps an input in [-1, 1] (``N×C×H×W`` or
``N×C×D×H×W``) to the translated output. After writing, the file is loaded back with its own
runtime (``torch.export.load``, onnxruntime or ``torch.jit.load``) and compared with PyTorch
on random inputs; the file only replaces its destination once that check passes.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from revgan.config import DIRECTIONS, REQUIRED, RunConfig, option
from revgan.engine.reversible import Invertible1x1Conv
from revgan.errors import UserError, require_creatable
from revgan.infer.load import load_generator
from revgan.runs.atomic import atomic_path
from revgan.runs.run_folder import load_run_config

FORMATS = {"pt2": ".pt2", "onnx-dynamo": ".onnx", "onnx": ".onnx", "torchscript": ".pt"}
ONNX_FORMATS = ("onnx", "onnx-dynamo")
TOLERANCE = 1e-4
# ONNX Round (used by the fixed-point couplings) exists from opset 11; the TorchScript-based
# exporter stops at 20 (torch.onnx._constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET in torch 2.13).
# The dynamo exporter writes opset 18 and newer natively (older ones only by conversion).
OPSETS = {"onnx": (11, 20), "onnx-dynamo": (18, 23)}
DEFAULT_OPSET = {"onnx": 17, "onnx-dynamo": 18}
ONNX_MISSING = "ONNX export needs: pip install 'revgan[export]'"


@dataclass
class ExportOptions:
    """The options of ``revgan export``."""

    model_dir: str = option(REQUIRED, "a run folder: checkpoints/<name>")
    epoch: str = option("latest", "checkpoint label (latest, best, 5, ...)")
    direction: str = option("AtoB", "translation direction", choices=DIRECTIONS)
    format: str = option("onnx", "pt2 (torch.export), onnx-dynamo (ONNX from torch.export), "
                                 "onnx (TorchScript-based ONNX exporter) or torchscript",
                         choices=tuple(FORMATS))
    output: str | None = option(None, "output file (default <model_dir>/export/"
                                      "G_<direction>.pt2|.onnx|.pt)")
    size: str | None = option(None, "example input size, e.g. 256 or 32,32,32 (default: the "
                                    "training crop or patch size); the export is fixed to it "
                                    "unless --dynamic")
    dynamic: bool = option(False, "any batch and spatial size (ONNX dynamic axes, torch.export "
                                  "dynamic shapes; TorchScript traces keep sizes symbolic "
                                  "anyway); checked at a second size too")
    opset: int | None = option(None, "ONNX opset version (default: 17 for onnx, 18 for "
                                     "onnx-dynamo)")
    overwrite: bool = option(False, "replace an existing output file")


class OneDirection(nn.Module):
    """The generator with its direction fixed, so the traced graph has a single tensor input."""

    def __init__(self, G: nn.Module, direction: str):
        super().__init__()
        self.G = G
        self.direction = direction

    def forward(self, x: Tensor) -> Tensor:
        return self.G(x, self.direction)


class PlainInstanceNorm(nn.Module):
    """Instance norm (no affine, no running stats) in elementary ops, for ONNX.

    The TorchScript-based exporter writes InstanceNormalization with scale/bias vectors of
    the channel count and refuses when that count is not a constant in the traced graph, as
    after the reversible couplings' channel split and Squeeze, whose sizes are traced from
    ``x.shape``. Mean and variance over the spatial axes need no channel count.
    """

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        axes = tuple(range(2, x.ndim))
        centred = x - x.mean(axes, keepdim=True)
        var = (centred * centred).mean(axes, keepdim=True)
        return centred / torch.sqrt(var + self.eps)


def plain_instance_norms(module: nn.Module) -> None:
    """Swap every parameter-free instance norm in ``module`` for :class:`PlainInstanceNorm`."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.instancenorm._InstanceNorm) and not child.affine \
                and not child.track_running_stats:
            setattr(module, name, PlainInstanceNorm(child.eps))
        else:
            plain_instance_norms(child)


def freeze_inverses(G: nn.Module) -> None:
    """Give every learned 1x1 channel mixing a precomputed inverse matrix.

    ``Invertible1x1Conv.inverse`` inverts its weight at every call (``linalg.inv``), which
    ONNX has no operator for. The weights are constant in an export, so the inverse is taken
    once here, in float64 as the module does, and traced as a constant: same numbers.
    """
    for module in G.modules():
        if isinstance(module, Invertible1x1Conv):
            inv = torch.linalg.inv(module.weight.detach().double()).float()

            def inverse(y: Tensor, rng=None, inv: Tensor = inv) -> Tensor:
                return Invertible1x1Conv._mix(inv, y)

            # An instance attribute shadows the method for this (export-only) copy.
            object.__setattr__(module, "inverse", inverse)


def parse_size(text: str | None, dims: int) -> tuple[int, ...] | None:
    """``256`` -> (256,) * dims; ``32,32,16`` -> (32, 32, 16) (one value per spatial dim)."""
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise UserError(f"--size expects integers like 256 or 32,32,32, got '{text}'")
    if len(values) == 1:
        values = values * dims
    if len(values) != dims or any(v < 1 for v in values):
        raise UserError(f"--size needs 1 or {dims} positive integers for a {dims}D model, "
                        f"got '{text}'")
    return values


def default_size(opt: RunConfig) -> tuple[int, ...]:
    """The training crop (2D) or patch (3D) size."""
    dims = int(opt.dims)
    if dims == 3 and opt.patch_size:
        patch = tuple(int(v) for v in opt.patch_size)
        return patch * 3 if len(patch) == 1 else patch
    return (int(opt.crop_size),) * dims


def _other_size(size: tuple[int, ...], divisor: int) -> tuple[int, ...]:
    """A second valid spatial size, different from ``size``, to prove dynamic axes work."""
    return tuple(s + divisor * max(1, 8 // divisor) for s in size)


def _require_onnx(fmt: str) -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401

        if fmt == "onnx-dynamo":
            import onnxscript  # noqa: F401
    except ImportError:
        raise UserError(ONNX_MISSING)


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' notices (deprecations, tracer warnings, skipped torchvision
    operators, progress lines): the check against PyTorch says whether the file is right."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _first_line(exc: Exception) -> str:
    # Exporter messages carry whole graphs or guides; the first line names the problem.
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _dynamic_shapes(example: Tensor) -> dict:
    """Batch and every spatial axis dynamic. ``AUTO`` lets torch.export keep the network's
    own constraints (sizes divisible by its stride) where ``DYNAMIC`` would refuse them."""
    from torch.export import Dim

    return {"x": {axis: Dim.AUTO for axis in (0, *range(2, example.ndim))}}


def export_pt2(module: nn.Module, example: Tensor, path: Path, dynamic: bool) -> None:
    """Write ``module`` as a ``torch.export`` archive (``torch.export.load``-able)."""
    try:
        program = torch.export.export(
            module, (example,), dynamic_shapes=_dynamic_shapes(example) if dynamic else None)
    except Exception as exc:  # torch.export raises many types for code it cannot capture
        raise UserError(f"torch.export failed: {_first_line(exc)}")
    torch.export.save(program, str(path))


def export_onnx_dynamo(module: nn.Module, example: Tensor, path: Path, opset: int,
                       dynamic: bool) -> None:
    """Write ``module`` as ONNX through the ``torch.export``-based (dynamo) exporter."""
    try:
        torch.onnx.export(module, (example,), str(path), dynamo=True, opset_version=opset,
                          input_names=["input"], output_names=["output"], verbose=False,
                          dynamic_shapes=_dynamic_shapes(example) if dynamic else None,
                          external_data=False)
    except Exception as exc:
        raise UserError(f"ONNX export (dynamo) failed: {_first_line(exc)}; try --format pt2")


def export_onnx(module: nn.Module, example: Tensor, path: Path, opset: int,
                dynamic: bool) -> None:
    """Write ``module`` traced on ``example`` as ONNX (TorchScript-based exporter)."""
    axes = None
    if dynamic:
        spatial = {2 + i: f"size{i}" for i in range(example.ndim - 2)}
        axes = {"input": {0: "batch", **spatial}, "output": {0: "batch", **spatial}}
    try:
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes=axes, do_constant_folding=True)
    except torch.onnx.errors.OnnxExporterError as exc:
        raise UserError(f"ONNX export failed: {_first_line(exc)}; try --format onnx-dynamo")


def export_torchscript(module: nn.Module, example: Tensor, path: Path) -> None:
    """Write ``module`` traced on ``example`` as TorchScript (``torch.jit.load``-able)."""
    traced = torch.jit.trace(module, (example,), check_trace=False)
    traced.save(str(path))


def run_exported(path: Path, fmt: str, x: Tensor) -> Tensor:
    """Output of the exported file on ``x``, computed by the file's own runtime."""
    if fmt in ONNX_FORMATS:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        return torch.from_numpy(out)
    with _quiet():  # torch 2.13 deprecates TorchScript
        loaded = (torch.export.load(str(path)).module() if fmt == "pt2"
                  else torch.jit.load(str(path), map_location="cpu"))
    with torch.no_grad():
        return loaded(x)


def max_difference(path: Path, fmt: str, module: nn.Module, x: Tensor) -> float:
    """Max abs difference between the exported file and PyTorch (``module``) on ``x``."""
    with torch.no_grad():
        expected = module(x)
    try:
        got = run_exported(path, fmt, x)
    except UserError:
        raise
    except Exception as exc:  # a graph specialised to the traced size fails here
        raise UserError(f"the exported model does not run on input {tuple(x.shape)}: "
                        f"{_first_line(exc)}; nothing was written")
    if got.shape != expected.shape:
        raise UserError(f"the exported model gives shape {tuple(got.shape)} for input "
                        f"{tuple(x.shape)}, PyTorch {tuple(expected.shape)}")
    return float((got.float() - expected.float()).abs().max())


def _write(module: nn.Module, example: Tensor, path: Path, fmt: str, opset: int,
           dynamic: bool) -> None:
    with torch.no_grad(), _quiet():
        if fmt == "pt2":
            export_pt2(module, example, path, dynamic)
        elif fmt == "onnx-dynamo":
            export_onnx_dynamo(module, example, path, opset, dynamic)
        elif fmt == "onnx":
            export_onnx(module, example, path, opset, dynamic)
        else:
            export_torchscript(module, example, path)


def export_generator(model_dir: Path, direction: str = "AtoB", fmt: str = "onnx",
                     output: Path | None = None, epoch: str = "latest",
                     size: tuple[int, ...] | None = None, dynamic: bool = False,
                     opset: int | None = None, overwrite: bool = False) -> tuple[Path, float]:
    """Export one direction of a run's generator; return the file and its max abs difference
    from PyTorch (the largest over the checked inputs)."""
    if direction not in DIRECTIONS:
        raise UserError(f"unknown direction '{direction}'; choose AtoB or BtoA")
    if fmt not in FORMATS:
        raise UserError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if fmt in ONNX_FORMATS:
        _require_onnx(fmt)
        opset = DEFAULT_OPSET[fmt] if opset is None else opset
        low, high = OPSETS[fmt]
        if not low <= opset <= high:
            raise UserError(f"--opset {opset} is not supported by --format {fmt}; "
                            f"use {low}..{high}")
    model_dir = Path(model_dir)
    out = Path(output) if output else model_dir / "export" / f"G_{direction}{FORMATS[fmt]}"
    if out.is_dir():
        raise UserError(f"--output {out} is a folder; give a file name")
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    require_creatable(out.parent, "output folder")

    G, opt = load_generator(model_dir, epoch, "cpu")
    for p in G.parameters():
        p.requires_grad_(False)  # inference only: the graph must not carry autograd paths
    reference = OneDirection(G, direction).eval()
    # What gets traced: an export-friendly copy; the check below compares it with the
    # untouched generator, so the rewrites are verified too.
    G_export = copy.deepcopy(G)
    freeze_inverses(G_export)
    if fmt == "onnx":
        plain_instance_norms(G_export)
    module = OneDirection(G_export, direction).eval()
    dims = int(opt.dims)
    size = size or default_size(opt)
    divisor = int(getattr(G, "size_divisor", 1))
    if any(s % divisor for s in size):
        raise UserError(f"--size {size} is not divisible by {divisor} (the network's stride)")
    channels = opt.input_nc if direction == "AtoB" else opt.output_nc
    gen = torch.Generator().manual_seed(0)

    def random_input(batch: int, spatial: tuple[int, ...]) -> Tensor:
        return torch.rand(batch, channels, *spatial, generator=gen) * 2 - 1

    # torch.export treats a size of 1 as a constant, so a dynamic batch is traced with 2.
    example = random_input(2 if dynamic and fmt in ("pt2", "onnx-dynamo") else 1, size)
    with torch.no_grad():
        reference(example)  # eager run first: wrong direction/channels fail here, in one line

    with atomic_path(out) as tmp:
        _write(module, example, tmp, fmt, opset, dynamic)
        checks = [random_input(1, size)]
        if dynamic:
            checks.append(random_input(2, _other_size(size, divisor)))
        diffs = [max_difference(tmp, fmt, reference, x) for x in checks]
        worst = max(diffs)
        shapes = ", ".join(f"{tuple(x.shape)}: {d:.3g}" for x, d in zip(checks, diffs))
        print(f"max abs difference to PyTorch ({fmt}, {dims}D input {shapes})")
        if not worst <= TOLERANCE:
            raise UserError(f"the exported model differs from PyTorch by {worst:.3g} "
                            f"(> {TOLERANCE:g}); nothing was written")
    return out, worst


def export_command(args: ExportOptions) -> Path:
    """``revgan export``: export ``args.direction`` of the run in ``args.model_dir``."""
    model_dir = Path(args.model_dir)
    dims = load_run_config(model_dir).dims  # UserError for a missing or foreign folder
    out, _ = export_generator(model_dir, args.direction, args.format,
                              Path(args.output) if args.output else None, args.epoch,
                              parse_size(args.size, dims), args.dynamic, args.opset,
                              args.overwrite)
    print(f"exported {args.direction} to {out}")
    return out
