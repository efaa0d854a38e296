"""``revgan export``: ONNX and TorchScript files that reproduce the PyTorch generator."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
from helpers import onnx_output, pytorch_output, random_input

from revgan.cli.main import main
from revgan.demo.scenes import make_demo_dataset
from revgan.demo.volumes import make_demo_volumes

TOL = 1e-4


def _train(root: Path, ck: Path, name: str, model: str, netG: str, sub: str) -> Path:
    main(["train", "--dataroot", str(root / sub), "--name", name, "--checkpoints_dir", str(ck),
          "--model", model, "--netG", netG, "--ngf", "8", "--ndf", "8", "--n_epochs", "1",
          "--n_epochs_decay", "0", "--load_size", "32", "--crop_size", "32",
          "--num_threads", "0", "--no_progress", "--gpu_ids", "-1"])
    return ck / name


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One tiny unpaired RevGAN run and one tiny pix2pix run, trained once per session."""
    base = tmp_path_factory.mktemp("export_runs")
    make_demo_dataset(base / "data", size=32, n_train=4, n_test=2, n_val=2)
    ck = base / "checkpoints"
    return {"rev": _train(base / "data", ck, "rev", "unpaired_revgan", "resnet_2blocks",
                          "unpaired"),
            "p2p": _train(base / "data", ck, "p2p", "pix2pix", "unet_32", "paired")}


def test_onnx_both_directions_match_pytorch(runs, tmp_path, capsys):
    run = runs["rev"]
    x = random_input((1, 3, 32, 32))
    a2b, b2a = pytorch_output(run, x, "AtoB"), pytorch_output(run, x, "BtoA")
    assert (a2b - b2a).abs().max() > 1e-3  # the directions really differ
    for direction, expected in (("AtoB", a2b), ("BtoA", b2a)):
        main(["export", "--model_dir", str(run), "--direction", direction, "--format", "onnx"])
        path = run / "export" / f"G_{direction}.onnx"
        assert path.is_file()
        got = onnx_output(path, x)
        assert got.shape == expected.shape
        assert (got - expected).abs().max() <= TOL
    out = capsys.readouterr().out
    assert "max abs difference" in out and "G_BtoA.onnx" in out


def test_onnx_dynamic_runs_at_another_size(runs, tmp_path):
    run, out = runs["rev"], tmp_path / "dyn.onnx"
    main(["export", "--model_dir", str(run), "--direction", "BtoA", "--output", str(out),
          "--dynamic"])
    x = random_input((2, 3, 24, 40), seed=5)  # other batch, non-square, not the traced size
    expected = pytorch_output(run, x, "BtoA")
    got = onnx_output(out, x)
    assert got.shape == (2, 3, 24, 40)
    assert (got - expected).abs().max() <= TOL


def test_torchscript_matches_pytorch(runs, tmp_path):
    run, out = runs["rev"], tmp_path / "g.pt"
    main(["export", "--model_dir", str(run), "--direction", "BtoA", "--format", "torchscript",
          "--output", str(out)])
    x = random_input((1, 3, 32, 32), seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated
        loaded = torch.jit.load(str(out))
    with torch.no_grad():
        got = loaded(x)
    assert (got - pytorch_output(run, x, "BtoA")).abs().max() <= TOL


def test_pix2pix_exports_atob_only(runs, capsys):
    run = runs["p2p"]
    main(["export", "--model_dir", str(run), "--direction", "AtoB"])
    x = random_input((1, 3, 32, 32), seed=11)
    got = onnx_output(run / "export" / "G_AtoB.onnx", x)
    assert (got - pytorch_output(run, x, "AtoB")).abs().max() <= TOL
    capsys.readouterr()

    with pytest.raises(SystemExit) as exc:
        main(["export", "--model_dir", str(run), "--direction", "BtoA"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "AtoB" in err
    assert not (run / "export" / "G_BtoA.onnx").exists()


def test_refuses_to_overwrite(runs, tmp_path, capsys):
    out = tmp_path / "g.pt"
    out.write_bytes(b"user file")
    args = ["export", "--model_dir", str(runs["p2p"]), "--format", "torchscript",
            "--output", str(out)]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--overwrite" in err
    assert out.read_bytes() == b"user file"
    main([*args, "--overwrite"])
    assert out.read_bytes() != b"user file"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.load(str(out))  # now a real TorchScript file


@pytest.mark.parametrize("args, words", [
    (["--direction", "sideways"], "direction"),
    (["--format", "tflite"], "format"),
    (["--epoch", "7"], "checkpoint"),
    (["--size", "30"], "divisible"),
])
def test_bad_arguments_are_one_line(runs, tmp_path, capsys, args, words):
    with pytest.raises(SystemExit) as exc:
        main(["export", "--model_dir", str(runs["rev"]), "--output", str(tmp_path / "g.onnx"),
              *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err
    assert not list(tmp_path.iterdir())  # no file and no temporary left behind


def test_missing_model_dir(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["export", "--model_dir", str(tmp_path / "nope")])
    assert exc.value.code == 2
    assert "no trained run" in capsys.readouterr().err


def test_onnx_missing_is_one_line(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(SystemExit) as exc:
        main(["export", "--model_dir", str(runs["rev"]), "--output", str(tmp_path / "g.onnx")])
    assert exc.value.code == 2
    assert "pip install 'revgan[export]'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def more_runs(tmp_path_factory) -> dict[str, Path]:
    """A tiny fully reversible 2D run and a tiny 3D RevGAN run."""
    base = tmp_path_factory.mktemp("export_more")
    make_demo_dataset(base / "data", size=32, n_train=2, n_test=1, n_val=1)
    volumes = make_demo_volumes(base / "vol", n_train=1, n_test=1, shape=(16, 16, 16))
    ck = base / "checkpoints"
    main(["train", "--dataroot", str(base / "data" / "unpaired"), "--name", "fullrev",
          "--checkpoints_dir", str(ck), "--model", "unpaired_revgan", "--fully_reversible",
          "--netG", "resnet_2blocks", "--ngf", "4", "--ndf", "4", "--n_epochs", "1",
          "--n_epochs_decay", "0", "--load_size", "32", "--crop_size", "32",
          "--num_threads", "0", "--no_progress", "--gpu_ids", "-1", "--no_html",
          "--no_tensorboard"])
    main(["train", "--dataroot", str(volumes["root"]), "--name", "vol3d", "--checkpoints_dir",
          str(ck), "--model", "paired_revgan3d", "--netG", "edsrF_2", "--ngf", "4", "--ndf", "4",
          "--patch_size", "16", "--samples_per_volume", "1", "--n_epochs", "1",
          "--n_epochs_decay", "0", "--num_threads", "0", "--no_progress", "--gpu_ids", "-1",
          "--no_html", "--no_tensorboard"])
    return {"fullrev": ck / "fullrev", "vol3d": ck / "vol3d"}


@pytest.mark.parametrize("run_name, shape", [("fullrev", (1, 3, 32, 32)),
                                             ("vol3d", (1, 1, 16, 16, 16))])
def test_fully_reversible_and_3d_export_both_directions(more_runs, run_name, shape, capsys):
    run = more_runs[run_name]
    x = random_input(shape, seed=13)
    outputs = {}
    for direction in ("AtoB", "BtoA"):
        main(["export", "--model_dir", str(run), "--direction", direction, "--format", "onnx"])
        expected = pytorch_output(run, x, direction)
        got = onnx_output(run / "export" / f"G_{direction}.onnx", x)
        assert got.shape == expected.shape == shape
        assert (got - expected).abs().max() <= TOL, direction
        outputs[direction] = got
    assert (outputs["AtoB"] - outputs["BtoA"]).abs().max() > 1e-3  # two different graphs
    if run_name == "fullrev":  # G_BA is the exact inverse of G_AB, in the exported files too
        back = onnx_output(run / "export" / "G_BtoA.onnx", outputs["AtoB"])
        assert (back - x).abs().max() <= 1e-4
    capsys.readouterr()
