"""``revgan export --format pt2 | onnx-dynamo``: torch.export and the dynamo ONNX exporter,
each checked against PyTorch before the file is put in place."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from helpers import (
    cli_error,
    onnx_output,
    pytorch_output,
    random_input,
    run_cli,
    tiny_unpaired_run,
)

from revgan.infer import export as export_module

TOL = 1e-4


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny unpaired RevGAN run (both directions through one reversible core)."""
    return tiny_unpaired_run(tmp_path_factory.mktemp("export_formats"))


def test_pt2_both_directions_match_pytorch(run, capsys):
    x = random_input((1, 3, 32, 32))
    for direction in ("AtoB", "BtoA"):
        run_cli("export", "--model_dir", run, "--direction", direction, "--format", "pt2")
        path = run / "export" / f"G_{direction}.pt2"
        program = torch.export.load(str(path))  # a real torch.export archive
        with torch.no_grad():
            got = program.module()(x)
        expected = pytorch_output(run, x, direction)
        assert got.shape == expected.shape
        assert (got - expected).abs().max() <= TOL
    assert "max abs difference to PyTorch (pt2" in capsys.readouterr().out


def test_pt2_dynamic_runs_at_other_sizes(run, tmp_path):
    out = tmp_path / "dyn.pt2"
    run_cli("export", "--model_dir", run, "--direction", "BtoA", "--format", "pt2",
            "--dynamic", "--output", out)
    x = random_input((3, 3, 20, 28), seed=5)  # another batch, non-square, not the traced size
    with torch.no_grad():
        got = torch.export.load(str(out)).module()(x)
    assert (got - pytorch_output(run, x, "BtoA")).abs().max() <= TOL


def test_onnx_dynamo_dynamic_matches_pytorch_in_onnxruntime(run, tmp_path, capsys):
    out = tmp_path / "dyn.onnx"
    run_cli("export", "--model_dir", run, "--direction", "AtoB", "--format", "onnx-dynamo",
            "--dynamic", "--output", out)
    assert "max abs difference to PyTorch (onnx-dynamo" in capsys.readouterr().out
    import onnx

    model = onnx.load(str(out))
    assert model.opset_import[0].version >= 18  # written by the dynamo exporter
    for shape in ((1, 3, 32, 32), (2, 3, 24, 12)):
        x = random_input(shape, seed=7)
        got = onnx_output(out, x)
        assert got.shape == shape
        assert (got - pytorch_output(run, x, "AtoB")).abs().max() <= TOL


def test_a_file_that_differs_from_pytorch_is_never_put_in_place(run, tmp_path, capsys,
                                                                 monkeypatch):
    out = tmp_path / "G.pt2"
    out.write_bytes(b"the user's earlier file")
    real = export_module.run_exported
    monkeypatch.setattr(export_module, "run_exported",
                        lambda path, fmt, x: real(path, fmt, x) + 0.01)
    line = cli_error(capsys, "export", "--model_dir", run, "--format", "pt2", "--output", out,
                     "--overwrite")
    assert "differs from PyTorch" in line and "nothing was written" in line
    assert out.read_bytes() == b"the user's earlier file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["G.pt2"]  # no temporary left


def test_onnx_dynamo_without_onnxscript_says_how_to_install(run, tmp_path, capsys,
                                                            monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails as if not installed
    line = cli_error(capsys, "export", "--model_dir", run, "--format", "onnx-dynamo",
                     "--output", tmp_path / "x.onnx")
    assert "pip install 'revgan[export]'" in line
    line = cli_error(capsys, "export", "--model_dir", run, "--format", "onnx", "--opset", "21",
                     "--output", tmp_path / "x.onnx")
    assert "11..20" in line
    assert not (tmp_path / "x.onnx").exists()
