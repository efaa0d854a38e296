"""Small shared helpers for the end-to-end tests (tiny data, in-process CLI calls)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from revgan.cli.main import main


def run_cli(*args: str) -> None:
    main([str(a) for a in args])


def cli_error(capsys, *args: str) -> str:
    """Run a command that must fail as a user error; return its one stderr line."""
    with pytest.raises(SystemExit) as exc:
        run_cli(*args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("revgan: error: "), err
    return lines[0]


def weights(path: Path) -> dict:
    return load_file(str(path))


TINY_2D = ["--ngf", "4", "--ndf", "4", "--load_size", "36", "--crop_size", "32",
           "--num_threads", "0", "--no_progress", "--gpu_ids", "-1", "--print_freq", "1",
           "--display_freq", "2"]


def tiny_flags(model: str) -> list[str]:
    netG = {"pix2pix": "unet_32"}.get(model, "resnet_2blocks")
    return ["--model", model, "--netG", netG, *TINY_2D]


def assert_grads_equal(actual: list, expected: list, rtol: float = 1e-5, floor: float = 1e-6,
                       exact: bool = False) -> None:
    """Two lists of gradients (None where a tensor got none) agree tensor by tensor.

    Each tensor's error norm must be within ``rtol`` of that tensor's own gradient norm, plus
    ``floor`` times the norm of all gradients together. The floor is for tensors whose true
    gradient is zero (a bias right before an instance norm): their computed values are pure
    float32 round-off, measured at <= 3e-8 of the total norm in these tests, so 1e-6 leaves
    30x margin while any tensor carrying more than ~1e-6 of the total (a 1x1 mixing matrix
    included) is checked relative to its own size: a wrong small tensor fails. ``exact``:
    bit for bit (``torch.equal``).
    """
    assert len(actual) == len(expected)
    pairs = [(i, a, b) for i, (a, b) in enumerate(zip(actual, expected)) if a is not None
             or b is not None]
    assert pairs, "no gradients to compare"
    missing = [i for i, a, b in pairs if a is None or b is None]
    assert not missing, f"gradient missing on one side for tensors {missing}"
    if exact:
        differ = [i for i, a, b in pairs if not torch.equal(a, b)]
        assert not differ, f"gradients not bit-identical for tensors {differ}"
        return
    total = torch.sqrt(sum(b.double().pow(2).sum() for _, _, b in pairs)).item()
    bad = []
    for i, a, b in pairs:
        error, size = (a.double() - b.double()).norm().item(), b.double().norm().item()
        if not error <= rtol * size + floor * total:
            bad.append(f"tensor {i} {tuple(b.shape)}: error {error:.3g}, norm {size:.3g}")
    assert not bad, (f"{len(bad)} of {len(pairs)} tensors differ (total gradient norm "
                     f"{total:.3g}): " + "; ".join(bad[:5]))


def tiny_unpaired_run(base: Path) -> Path:
    """Train a tiny unpaired RevGAN (both directions, 32 px RGB) below ``base``; its run."""
    from revgan.demo.scenes import make_demo_dataset

    make_demo_dataset(base / "data", size=32, n_train=2, n_test=1, n_val=1)
    run_cli("train", "--dataroot", base / "data" / "unpaired", "--name", "rev",
            "--checkpoints_dir", base / "ck", "--model", "unpaired_revgan",
            "--netG", "resnet_1blocks", "--ngf", "4", "--ndf", "4", "--n_epochs", "1",
            "--n_epochs_decay", "0", "--load_size", "32", "--crop_size", "32",
            "--num_threads", "0", "--no_progress", "--gpu_ids", "-1")
    return base / "ck" / "rev"


def random_input(shape: tuple[int, ...], seed: int = 3) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def pytorch_output(run: Path, x: torch.Tensor, direction: str) -> torch.Tensor:
    """What the trained run's generator gives for ``x`` in ``direction``."""
    from revgan.infer.load import load_generator

    G, _ = load_generator(run)
    with torch.no_grad():
        return G(x, direction)


def onnx_output(path: Path, x: torch.Tensor) -> torch.Tensor:
    """What an exported ONNX file gives for ``x`` under onnxruntime."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return torch.from_numpy(np.asarray(out))


BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """Import ``benchmarks/<name>.py`` as a module (the scripts import harness.py)."""
    import importlib.util
    import sys

    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    spec = importlib.util.spec_from_file_location(f"_{name}", BENCH_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
