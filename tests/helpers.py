"""Small shared helpers for the end-to-end tests (tiny data, in-process CLI calls)."""

from __future__ import annotations

from pathlib import Path

import pytest
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
