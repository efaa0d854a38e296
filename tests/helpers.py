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
