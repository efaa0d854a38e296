"""``revgan export``: one translation direction of a trained generator as ONNX or TorchScript.

The exported module maps an input in [-1, 1] (``N×C×H×W`` or ``N×C×D×H×W``) to the
translated output. After writing, the file is loaded back with its own runtime
(onnxruntime or ``torch.jit.load``) and compared with PyTorch on a random input; the file
only replaces its destination once that check passes.
"""

from __future__ import annotations

import argparse
import copy
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from revgan.cli.argparsing import ArgumentParser
from revgan.config import RunConfig
from revgan.engine.reversible import Invertible1x1Conv
from revgan.errors import UserError, require_creatable
from revgan.infer.load import load_generator
from revgan.runs.atomic import atomic_path
from revgan.runs.run_folder import load_run_config

DIRECTIONS = ("AtoB", "BtoA")
FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
TOLERANCE = 1e-4
# ONNX Round (used by the fixed-point couplings) exists from opset 11; the TorchScript-based
# exporter stops at 20 (torch.onnx._constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET in torch 2.13).
MIN_OPSET, MAX_OPSET = 11, 20
ONNX_MISSING = "ONNX export needs: pip install 'revgan[export]'"


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


def _build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="revgan export",
        description="Export one translation direction of a trained generator to ONNX or "
                    "TorchScript, then check the file against PyTorch.")
    p.add_argument("--model_dir", required=True, help="a run folder: checkpoints/<name>")
    p.add_argument("--epoch", default="latest", help="checkpoint label (latest, best, 5, ...)")
    p.add_argument("--direction", default="AtoB", help="AtoB or BtoA")
    p.add_argument("--format", default="onnx", help="onnx or torchscript")
    p.add_argument("--output", default=None,
                   help="output file (default <model_dir>/export/G_<direction>.onnx|.pt)")
    p.add_argument("--size", default=None,
                   help="example input size, e.g. 256 or 32,32,32 (default: training crop or "
                        "patch size); the export is fixed to it unless --dynamic")
    p.add_argument("--dynamic", action="store_true",
                   help="any batch and spatial size (ONNX dynamic axes; TorchScript traces "
                        "keep sizes symbolic anyway); checked at a second size too")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return p


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError(ONNX_MISSING)


def export_onnx(module: nn.Module, example: Tensor, path: Path, opset: int,
                dynamic: bool) -> None:
    """Write ``module`` traced on ``example`` as ONNX."""
    axes = None
    if dynamic:
        spatial = {2 + i: f"size{i}" for i in range(example.ndim - 2)}
        axes = {"input": {0: "batch", **spatial}, "output": {0: "batch", **spatial}}
    # The TorchScript-based exporter (dynamo=False) on purpose: the torch.export-based one,
    # the default since torch 2.9, needs the extra package onnxscript, which revgan[export]
    # does not pull in; the legacy one needs nothing beyond torch, works offline and
    # handles dynamic_axes for these all-convolutional graphs.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation notice and tracer warnings
        try:
            torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=["output"],
                              dynamic_axes=axes, do_constant_folding=True)
        except torch.onnx.errors.OnnxExporterError as exc:
            # The message carries the whole traced graph; its first line names the problem.
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"ONNX export failed: {first}; try --format torchscript")


def export_torchscript(module: nn.Module, example: Tensor, path: Path) -> None:
    """Write ``module`` traced on ``example`` as TorchScript (``torch.jit.load``-able)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the Python shape checks
        traced = torch.jit.trace(module, (example,), check_trace=False)
    traced.save(str(path))


def run_exported(path: Path, fmt: str, x: Tensor) -> Tensor:
    """Output of the exported file on ``x``, computed by the file's own runtime."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        return torch.from_numpy(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return loaded(x)


def max_difference(path: Path, fmt: str, module: nn.Module, x: Tensor) -> float:
    """Max abs difference between the exported file and PyTorch (``module``) on ``x``."""
    with torch.no_grad():
        expected = module(x)
    got = run_exported(path, fmt, x)
    if got.shape != expected.shape:
        raise UserError(f"the exported model gives shape {tuple(got.shape)} for input "
                        f"{tuple(x.shape)}, PyTorch {tuple(expected.shape)}")
    return float((got.float() - expected.float()).abs().max())


def export_generator(model_dir: Path, direction: str = "AtoB", fmt: str = "onnx",
                     output: Path | None = None, epoch: str = "latest",
                     size: tuple[int, ...] | None = None, dynamic: bool = False,
                     opset: int = 17, overwrite: bool = False) -> tuple[Path, float]:
    """Export one direction of a run's generator; return the file and its max abs difference
    from PyTorch (the largest over the checked inputs)."""
    if direction not in DIRECTIONS:
        raise UserError(f"unknown direction '{direction}'; choose AtoB or BtoA")
    if fmt not in FORMATS:
        raise UserError(f"unknown format '{fmt}'; choose onnx or torchscript")
    if fmt == "onnx":
        _require_onnx()
        if not MIN_OPSET <= opset <= MAX_OPSET:
            raise UserError(f"--opset {opset} is not supported; use {MIN_OPSET}..{MAX_OPSET}")
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

    example = random_input(1, size)
    with torch.no_grad():
        reference(example)  # eager run first: wrong direction/channels fail here, in one line

    with atomic_path(out) as tmp:
        with torch.no_grad():
            if fmt == "onnx":
                export_onnx(module, example, tmp, opset, dynamic)
            else:
                export_torchscript(module, example, tmp)
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


def main(argv: list[str] | None = None) -> Path:
    args = _build_parser().parse_args(argv)
    model_dir = Path(args.model_dir)
    dims = load_run_config(model_dir).dims  # UserError for a missing or foreign folder
    out, _ = export_generator(model_dir, args.direction, args.format,
                              Path(args.output) if args.output else None, args.epoch,
                              parse_size(args.size, dims), args.dynamic, args.opset,
                              args.overwrite)
    print(f"exported {args.direction} to {out}")
    return out
