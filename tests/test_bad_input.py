"""The bad-input catalogue (issue #6): every mistake a user can make ends in ONE line on stderr
starting ``revgan: error: ``, exit code 2, no traceback, and nothing written before is lost.

Each case runs the real command line (``revgan.cli.main.main``; a few through a subprocess).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import cli_error, run_cli, tiny_flags
from PIL import Image

from revgan.demo.scenes import make_demo_dataset
from revgan.demo.volumes import make_demo_volumes

REPO = Path(__file__).resolve().parents[1]
ONE_EPOCH = ["--n_epochs", "1", "--n_epochs_decay", "0"]
TINY_3D = ["--model", "paired_revgan3d", "--netG", "edsrF_2", "--ngf", "4", "--ndf", "4",
           "--patch_size", "16", "--samples_per_volume", "1", "--num_threads", "0",
           "--no_progress", "--gpu_ids", "-1", *ONE_EPOCH]


# --- shared runs (trained once) --------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), size=32, n_train=4, n_test=2,
                             n_val=2)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> dict:
    return make_demo_volumes(tmp_path_factory.mktemp("vol"), n_train=2, n_test=1,
                             shape=(20, 20, 20))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> dict:
    """One tiny unpaired run, tested once: the earlier work every case must leave intact."""
    work = tmp_path_factory.mktemp("trained")
    ck, res = work / "ck", work / "res"
    run_cli(*args_train(data["unpaired"], ck, "run"))
    run_cli(*args_test(data["unpaired"], ck, res))
    return {"ck": ck, "run": ck / "run", "res": res, "results": res / "run" / "test_latest",
            "dataroot": data["unpaired"], "work": work}


@pytest.fixture(scope="module")
def pix2pix_run(data, tmp_path_factory) -> Path:
    ck = tmp_path_factory.mktemp("p2p")
    run_cli("train", "--dataroot", data["paired"], "--name", "p2p", "--checkpoints_dir", ck,
            *tiny_flags("pix2pix"), *ONE_EPOCH)
    return ck / "p2p"


def args_train(dataroot, ck, name, *extra) -> list:
    return ["train", "--dataroot", dataroot, "--name", name, "--checkpoints_dir", ck,
            *tiny_flags("unpaired_revgan"), *ONE_EPOCH, *extra]


def args_test(dataroot, ck, res, *extra) -> list:
    return ["test", "--dataroot", dataroot, "--name", "run", "--checkpoints_dir", ck,
            "--results_dir", res, "--no_progress", "--gpu_ids", "-1", "--load_size", "36",
            "--crop_size", "32", *extra]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` with its bytes (empty if the folder does not exist)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def has_weights(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*_net_*.safetensors"))


@pytest.fixture()
def intact(trained):
    """Assert, after the test, that the trained run and its results are byte-identical."""
    before = snapshot(trained["run"]), snapshot(trained["results"])
    yield trained
    assert snapshot(trained["run"]) == before[0], "the trained run was modified"
    assert snapshot(trained["results"]) == before[1], "the earlier results were modified"


@pytest.fixture()
def own_run(trained, tmp_path) -> Path:
    """A private copy of the trained run (its checkpoints dir), for cases that try to change
    it in place: a failure there must not spill into the other cases."""
    ck = tmp_path / "ck"
    shutil.copytree(trained["run"], ck / "run")
    return ck


def changed_files(before: dict[str, bytes], folder: Path) -> list[str]:
    after = snapshot(folder)
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def random_png(path: Path, size: tuple[int, int] = (32, 32)) -> Path:
    rng = np.random.default_rng(len(str(path)))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


def first_png(folder: Path) -> Path:
    return sorted(folder.glob("*.png"))[0]


# --- datasets that cannot be read ------------------------------------------------------------

def test_01_missing_dataroot(intact, tmp_path, capsys):
    line = cli_error(capsys, *args_train(tmp_path / "nowhere", intact["ck"], "new"))
    assert "nowhere" in line and "not found" in line
    assert not has_weights(intact["ck"] / "new")


def test_02_dataroot_is_a_file(intact, tmp_path, capsys):
    line = cli_error(capsys, *args_train(random_png(tmp_path / "x.png"), intact["ck"], "new"))
    assert "x.png is a file" in line


def test_03_empty_trainA(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "trainA").mkdir(parents=True)
    random_png(root / "trainB" / "b.png")
    line = cli_error(capsys, *args_train(root, tmp_path / "ck", "run"))
    assert "no images" in line and "trainA" in line


def test_04_unpaired_without_trainB(tmp_path, capsys):
    root = tmp_path / "data"
    random_png(root / "trainA" / "a.png")
    line = cli_error(capsys, *args_train(root, tmp_path / "ck", "run"))
    assert "trainB" in line


def test_05_corrupt_png(data, tmp_path, capsys):
    root = copy_tree(data["unpaired"], tmp_path / "data")
    (root / "trainA" / "0000.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really an image")
    line = cli_error(capsys, *args_train(root, tmp_path / "ck", "run", "--serial_batches"))
    assert "cannot read image" in line and "0000.png" in line


def test_06_truncated_png_in_a_loader_worker(data, tmp_path, capsys):
    """DataLoader workers wrap the error with their traceback: still one line."""
    root = copy_tree(data["unpaired"], tmp_path / "data")
    victim = root / "trainA" / "0001.png"
    victim.write_bytes(victim.read_bytes()[:150])
    line = cli_error(capsys, *args_train(root, tmp_path / "ck", "run", "--num_threads", "2"))
    assert "0001.png" in line and "Caught" not in line


def test_07_input_nc_4_on_rgb_images(intact, capsys):
    line = cli_error(capsys, *args_train(intact["dataroot"], intact["ck"], "new",
                                         "--input_nc", "4"))
    assert "--input_nc" in line and "4" in line


# --- volumes ---------------------------------------------------------------------------------

def test_08_truncated_nifti(volumes, tmp_path, capsys):
    root = copy_tree(volumes["root"], tmp_path / "vol")
    victim = root / "trainA" / "case_000.nii.gz"
    victim.write_bytes(victim.read_bytes()[:300])
    line = cli_error(capsys, "train", "--dataroot", root, "--name", "v",
                     "--checkpoints_dir", tmp_path / "ck", *TINY_3D)
    assert "cannot read NIfTI" in line and "case_000.nii.gz" in line


def test_09_2d_file_where_a_volume_is_expected(volumes, tmp_path, capsys):
    root = copy_tree(volumes["root"], tmp_path / "vol")
    nib.save(nib.Nifti1Image(np.zeros((20, 20), np.float32), np.eye(4)),
             root / "trainA" / "case_000.nii.gz")
    line = cli_error(capsys, "train", "--dataroot", root, "--name", "v",
                     "--checkpoints_dir", tmp_path / "ck", *TINY_3D)
    assert "expected a 3D volume" in line and "2D" in line


def test_10_nan_volume(volumes, tmp_path, capsys):
    root = copy_tree(volumes["root"], tmp_path / "vol")
    bad = np.ones((20, 20, 20), np.float32)
    bad[5, 6, 7] = np.nan
    nib.save(nib.Nifti1Image(bad, np.eye(4)), root / "trainB" / "case_001.nii.gz")
    line = cli_error(capsys, "train", "--dataroot", root, "--name", "v",
                     "--checkpoints_dir", tmp_path / "ck", *TINY_3D)
    assert "NaN" in line and "case_001.nii.gz" in line


def test_11_mismatched_pair_shapes(volumes, tmp_path, capsys):
    root = copy_tree(volumes["root"], tmp_path / "vol")
    nib.save(nib.Nifti1Image(np.ones((20, 18, 20), np.float32), np.eye(4)),
             root / "trainB" / "case_000.nii.gz")
    line = cli_error(capsys, "train", "--dataroot", root, "--name", "v",
                     "--checkpoints_dir", tmp_path / "ck", *TINY_3D, "--serial_batches")
    assert "differ in shape" in line and "(20, 18, 20)" in line


def test_12_two_channel_volume_for_input_nc_1(volumes, tmp_path, capsys):
    root = copy_tree(volumes["root"], tmp_path / "vol")
    nib.save(nib.Nifti1Image(np.ones((20, 20, 20, 2), np.float32), np.eye(4)),
             root / "trainA" / "case_000.nii.gz")
    line = cli_error(capsys, "train", "--dataroot", root, "--name", "v",
                     "--checkpoints_dir", tmp_path / "ck", *TINY_3D, "--serial_batches")
    assert "2 channels" in line and "expected 1" in line


# --- unknown names (argparse and the network factories) --------------------------------------

@pytest.mark.parametrize("flag,needle", [
    ("--model", "--model"),       # argparse choices
    ("--norm", "--norm"),         # argparse choices
    ("--gan_mode", "--gan_mode"),  # argparse choices
    ("--netG", "generator"),      # network factory
    ("--netD", "discriminator"),  # network factory
])
def test_13_unknown_names(flag, needle, intact, capsys):
    line = cli_error(capsys, *args_train(intact["dataroot"], intact["ck"], "new", flag,
                                         "no_such_thing"))
    assert needle in line and "no_such_thing" in line
    assert not has_weights(intact["ck"] / "new")


@pytest.mark.parametrize("extra,needle", [
    (["--no_such_flag", "1"], "--no_such_flag"),
    (["--ngf", "many"], "--ngf"),
])
def test_14_unknown_flag_and_bad_number(extra, needle, intact, capsys):
    line = cli_error(capsys, *args_train(intact["dataroot"], intact["ck"], "new", *extra))
    assert needle in line


def test_15_unknown_subcommand(capsys):
    line = cli_error(capsys, "trian", "--dataroot", "x")
    assert "unknown command 'trian'" in line and "train" in line


def test_16_missing_required_arguments_of_translate_and_eval(capsys):
    line = cli_error(capsys, "translate")
    assert "--model_dir" in line and "--input" in line
    line = cli_error(capsys, "eval")
    assert "--results_dir" in line


def test_17_bad_suffix_template(intact, capsys):
    line = cli_error(capsys, *args_train(intact["dataroot"], intact["ck"], "new",
                                         "--suffix", "{no_such_option}"))
    assert "--suffix" in line and "no_such_option" in line


# --- checkpoints of another architecture -----------------------------------------------------

def test_18_test_with_another_architecture(intact, tmp_path, capsys):
    line = cli_error(capsys, *args_test(intact["dataroot"], intact["ck"], tmp_path / "res",
                                        "--ngf", "8"))
    assert "another architecture" in line and "ngf=4" in line
    assert not (tmp_path / "res" / "run").exists()


def test_19_resume_with_another_architecture_keeps_the_run(own_run, trained, capsys):
    """Also keeps opt.txt/train_opt.json: ``test`` rebuilds the networks from them."""
    before = snapshot(own_run / "run")
    line = cli_error(capsys, *args_train(trained["dataroot"], own_run, "run",
                                         "--continue_train", "--ngf", "8"))
    assert "another architecture" in line
    assert changed_files(before, own_run / "run") == []


# --- out-of-range option values --------------------------------------------------------------

@pytest.mark.parametrize("extra,needle", [
    (["--lr", "-0.1"], "--lr"),
    (["--batch_size", "0"], "--batch_size"),
    (["--crop_size", "64"], "--crop_size 64"),
    (["--overlap", "1.5"], "--overlap"),
    (["--window", "5", "1"], "--window"),
    (["--gpu_ids", "zero"], "--gpu_ids"),
])
def test_20_out_of_range_values(extra, needle, trained, tmp_path, capsys):
    line = cli_error(capsys, *args_train(trained["dataroot"], tmp_path / "ck", "new", *extra))
    assert needle in line
    assert not (tmp_path / "ck").exists()  # refused before anything was written


def test_21_gpu_without_cuda(intact, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = cli_error(capsys, *args_train(intact["dataroot"], intact["ck"], "new",
                                         "--gpu_ids", "0"))
    assert "no CUDA device" in line and "--gpu_ids -1" in line
    line = cli_error(capsys, "translate", "--model_dir", intact["run"], "--input",
                     first_png(intact["dataroot"] / "testA"), "--output",
                     tmp_path / "out.png", "--gpu_ids", "0")
    assert "no CUDA device" in line
    assert not (tmp_path / "out.png").exists()


# --- outputs that cannot be written ----------------------------------------------------------
# Tests run as root, where chmod does not stop writes: a path below a regular FILE can never
# be created, for anyone.

def test_22_checkpoints_dir_below_a_file(intact, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    line = cli_error(capsys, *args_train(intact["dataroot"], blocker / "ck", "new"))
    assert "a_file" in line
    assert blocker.read_text() == "not a folder"


def test_23_results_dir_below_a_file(intact, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    line = cli_error(capsys, *args_test(intact["dataroot"], intact["ck"], blocker / "res"))
    assert "a_file" in line and "results folder" in line


def test_24_translate_output_below_a_file_or_unsupported(intact, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    source = first_png(intact["dataroot"] / "testA")
    common = ["translate", "--model_dir", intact["run"], "--input", source, "--gpu_ids", "-1",
              "--no_progress", "--output"]
    line = cli_error(capsys, *common, blocker / "out.png")
    assert "a_file" in line
    line = cli_error(capsys, *common, tmp_path / "out.xyz")
    assert "unsupported extension" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


# --- earlier results, runs and checkpoints ---------------------------------------------------

def test_25_existing_results_need_overwrite(intact, capsys):
    line = cli_error(capsys, *args_test(intact["dataroot"], intact["ck"], intact["res"]))
    assert "already holds results" in line and "--overwrite" in line


def test_26_existing_translation_needs_overwrite(intact, tmp_path, capsys):
    source = first_png(intact["dataroot"] / "testA")
    out = tmp_path / "earlier.png"
    random_png(out)
    before = out.read_bytes()
    line = cli_error(capsys, "translate", "--model_dir", intact["run"], "--input", source,
                     "--output", out, "--gpu_ids", "-1", "--no_progress")
    assert "exists" in line and "--overwrite" in line
    assert out.read_bytes() == before


def test_27_existing_run_without_continue_train(intact, capsys):
    line = cli_error(capsys, *args_train(intact["dataroot"], intact["ck"], "run"))
    assert "already holds a trained run" in line and "--continue_train" in line


def test_28_continue_train_without_checkpoint(intact, capsys):
    line = cli_error(capsys, *args_train(intact["dataroot"], intact["ck"], "fresh",
                                         "--continue_train"))
    assert "no checkpoint" in line


def test_29_test_epoch_that_does_not_exist(intact, tmp_path, capsys):
    line = cli_error(capsys, *args_test(intact["dataroot"], intact["ck"], tmp_path / "res",
                                        "--epoch", "7"))
    assert "7_net_G.safetensors" in line
    assert not (tmp_path / "res" / "run" / "test_7").exists()


@pytest.mark.parametrize("flag", ["--continue_train", "--overwrite"])
def test_30_restart_with_a_bad_dataroot_keeps_the_run(flag, own_run, tmp_path, capsys):
    """A failed restart must not cost the earlier run: not its options, not its weights."""
    before = snapshot(own_run / "run")
    line = cli_error(capsys, *args_train(tmp_path / "typo", own_run, "run", flag))
    assert "typo" in line
    assert changed_files(before, own_run / "run") == []


def test_31_corrupt_checkpoint_or_options_file(own_run, trained, tmp_path, capsys):
    weights = own_run / "run" / "latest_net_G.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    before = snapshot(own_run / "run")
    line = cli_error(capsys, *args_test(trained["dataroot"], own_run, tmp_path / "res"))
    assert "latest_net_G.safetensors is corrupted" in line  # its recorded sha256 differs
    line = cli_error(capsys, "translate", "--model_dir", own_run / "run", "--input",
                     first_png(trained["dataroot"] / "testA"), "--output", tmp_path / "o.png",
                     "--gpu_ids", "-1")
    assert "latest_net_G.safetensors is corrupted" in line
    (own_run / "run" / "train_opt.json").write_text("{not json")
    before = snapshot(own_run / "run")
    line = cli_error(capsys, *args_test(trained["dataroot"], own_run, tmp_path / "res"))
    assert "train_opt.json" in line
    assert changed_files(before, own_run / "run") == []
    assert not (tmp_path / "res").exists() and not (tmp_path / "o.png").exists()


def test_32_test_with_another_model_name(intact, tmp_path, capsys):
    line = cli_error(capsys, *args_test(intact["dataroot"], intact["ck"], tmp_path / "res",
                                        "--model", "pix2pix"))
    assert "unpaired_revgan" in line and "pix2pix" in line


# --- translate, eval, export, fid ------------------------------------------------------------

def test_33_translate_missing_model_dir_or_input(intact, tmp_path, capsys):
    source = first_png(intact["dataroot"] / "testA")
    line = cli_error(capsys, "translate", "--model_dir", tmp_path / "no_run", "--input", source,
                     "--output", tmp_path / "o.png", "--gpu_ids", "-1")
    assert "no_run" in line
    line = cli_error(capsys, "translate", "--model_dir", intact["run"], "--input",
                     tmp_path / "missing.png", "--output", tmp_path / "o.png", "--gpu_ids", "-1")
    assert "missing.png" in line
    assert not (tmp_path / "o.png").exists()


def test_34_volume_model_given_a_png_or_a_2d_nifti(volumes, tmp_path, capsys):
    ck = tmp_path / "ck"
    run_cli("train", "--dataroot", volumes["root"], "--name", "v", "--checkpoints_dir", ck,
            *TINY_3D)
    before = snapshot(ck / "v")
    common = ["translate", "--model_dir", ck / "v", "--gpu_ids", "-1", "--no_progress"]
    line = cli_error(capsys, *common, "--input", random_png(tmp_path / "slice.png"),
                     "--output", tmp_path / "out.nii.gz")
    assert "slice.png" in line and "volume" in line
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((20, 20), np.float32), np.eye(4)), flat)
    line = cli_error(capsys, *common, "--input", flat, "--output", tmp_path / "out.nii.gz")
    assert "flat.nii.gz" in line and "2D" in line
    line = cli_error(capsys, *common, "--input", volumes["files"]["testA"][0],
                     "--output", tmp_path / "out.png")
    assert "out.png" in line and "extension" in line
    assert not list(tmp_path.glob("out*"))
    assert snapshot(ck / "v") == before


def test_35_eval_on_missing_results(tmp_path, capsys):
    line = cli_error(capsys, "eval", "--results_dir", tmp_path / "nothing_here")
    assert "nothing_here" in line
    assert not (tmp_path / "nothing_here").exists()


def test_36_export_btoa_of_pix2pix(pix2pix_run, capsys):
    line = cli_error(capsys, "export", "--model_dir", pix2pix_run, "--direction", "BtoA",
                     "--format", "torchscript")
    assert "AtoB" in line
    assert not (pix2pix_run / "export").exists()
    line = cli_error(capsys, "export", "--model_dir", pix2pix_run, "--direction", "sideways")
    assert "sideways" in line
    blocker = pix2pix_run.parent / "a_file"
    blocker.write_text("not a folder")
    line = cli_error(capsys, "export", "--model_dir", pix2pix_run, "--format", "torchscript",
                     "--output", blocker / "G.pt")
    assert "a_file is a file" in line


def test_37_fid_on_missing_folders(tmp_path, capsys):
    """The line names the folder that is missing (revgan[fid] is part of the [test] extra)."""
    real, fake = tmp_path / "real", tmp_path / "fake"
    line = cli_error(capsys, "fid", real, fake)
    assert line == f"revgan: error: image folder not found: {real}"
    for i in range(2):
        random_png(real / f"{i}.png")
    line = cli_error(capsys, "fid", real, fake)
    assert line == f"revgan: error: image folder not found: {fake}"


# --- sizes not divisible by the network's stride ---------------------------------------------

def test_38_odd_size_is_padded_at_test_time(intact, tmp_path):
    """Not an error: a 30x30 image is padded to the stride and cropped back."""
    folder = tmp_path / "odd"
    for i in range(2):
        random_png(folder / f"{i}.png", size=(30, 30))
    res = tmp_path / "res"
    run_cli("test", "--dataroot", folder, "--name", "run", "--model", "test",
            "--checkpoints_dir", intact["ck"], "--results_dir", res, "--preprocess", "none",
            "--gpu_ids", "-1", "--no_progress")
    fakes = sorted((res / "run" / "test_latest" / "images" / "fake_B").glob("*.png"))
    assert len(fakes) == 2 and all(Image.open(p).size == (30, 30) for p in fakes)


def test_39_training_crop_not_divisible_by_the_stride(intact, capsys):
    """Training refuses (padding borders would be learnt as content) and names the stride."""
    line = cli_error(capsys, *args_train(intact["dataroot"], intact["ck"], "new",
                                         "--crop_size", "30"))
    assert "(30, 30)" in line and "divisible by 4" in line


# --- through a real process: nothing but the one line reaches the terminal -------------------

def _terminal(argv: list, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def _assert_one_line(done: subprocess.CompletedProcess) -> str:
    err = done.stderr.strip()
    assert done.returncode == 2, err[-2000:]
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("revgan: error: "), err[-2000:]
    return lines[0]


def test_40_subprocess_worker_error(data, tmp_path):
    """A corrupt PNG met inside DataLoader worker processes (--num_threads 2)."""
    root = copy_tree(data["unpaired"], tmp_path / "data")
    for path in (root / "trainB").glob("*.png"):
        path.write_bytes(b"garbage")
    done = _terminal(["-m", "revgan.cli.main", *args_train(root, tmp_path / "ck", "run",
                                                      "--num_threads", "2")])
    assert "cannot read image" in _assert_one_line(done)


def test_41_subprocess_train_py_bad_model_name(data, tmp_path):
    done = _terminal([REPO / "train.py", "--dataroot", data["unpaired"], "--model", "nope",
                      "--checkpoints_dir", tmp_path], cwd=tmp_path)
    assert "--model" in _assert_one_line(done)


def test_42_subprocess_nan_volume_in_workers(volumes, tmp_path):
    root = copy_tree(volumes["root"], tmp_path / "vol")
    bad = np.full((20, 20, 20), np.inf, np.float32)
    nib.save(nib.Nifti1Image(bad, np.eye(4)), root / "trainA" / "case_000.nii.gz")
    nib.save(nib.Nifti1Image(bad, np.eye(4)), root / "trainA" / "case_001.nii.gz")
    args = ["train", "--dataroot", root, "--name", "v", "--checkpoints_dir", tmp_path / "ck",
            *TINY_3D]
    args[args.index("--num_threads") + 1] = "2"
    done = _terminal([REPO / "train.py", *args[1:]], cwd=tmp_path)
    assert "NaN or infinite" in _assert_one_line(done)


# --- hostile and odd inputs (issue #13) ------------------------------------------------------

def _train_3d(root: Path, ck: Path, *extra) -> list:
    return ["train", "--dataroot", root, "--name", "v", "--checkpoints_dir", ck, *TINY_3D, *extra]


def test_43_volume_with_a_zero_length_axis_or_5d(volumes, tmp_path, capsys):
    root = copy_tree(volumes["root"], tmp_path / "vol")
    victim = root / "trainA" / "case_001.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((20, 0, 20), np.float32), np.eye(4)), victim)
    line = cli_error(capsys, *_train_3d(root, tmp_path / "ck"))
    assert "case_001.nii.gz" in line and "zero-length dimension" in line and "(20, 0, 20)" in line
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 20, 2, 2), np.float32), np.eye(4)), victim)
    line = cli_error(capsys, *_train_3d(root, tmp_path / "ck"))
    assert "case_001.nii.gz" in line and "5D" in line
    assert not has_weights(tmp_path / "ck" / "v")


def test_44_header_claiming_a_volume_too_large_to_allocate(volumes, tmp_path, capsys):
    """Refused from the header, before any allocation: 30000³ voxels would be 98 TiB."""
    root = copy_tree(volumes["root"], tmp_path / "vol")
    victim = root / "trainB" / "case_000.nii.gz"
    image = nib.load(str(victim))
    header = image.header.copy()
    header.set_data_shape((30000, 30000, 30000))
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), image.affine, header), tmp_path / "x.nii")
    # the file keeps its 20³ voxels; only the header lies
    blob = (tmp_path / "x.nii").read_bytes()
    import gzip

    victim.write_bytes(gzip.compress(header.binaryblock + blob[len(header.binaryblock):]))
    line = cli_error(capsys, *_train_3d(root, tmp_path / "ck"))
    assert "case_000.nii.gz" in line and "header claims" in line and "TiB" in line
    assert not has_weights(tmp_path / "ck" / "v")


def _obeying_permissions() -> dict:
    """subprocess.run arguments for a process that file permissions really stop.

    Root reads any file (capabilities CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH). Dropping
    both from the child's capability bounding set before it starts makes a root process obey
    the permission bits like anyone else; an unprivileged user obeys them already.
    """
    import ctypes
    import os

    if os.geteuid() != 0:
        return {}
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2

    def drop() -> None:
        for cap in (cap_dac_override, cap_dac_read_search):
            if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    probe = subprocess.run(["true"], preexec_fn=drop, check=False, capture_output=True) \
        if hasattr(libc, "prctl") else None
    if probe is None:
        pytest.skip("running as root without prctl: cannot take away root's right to read")
    return {"preexec_fn": drop}


def test_45_unreadable_file_or_folder(trained, tmp_path):
    """chmod 000 on an input file and on a dataset subfolder, met by a real process that the
    permissions stop (as root: one without the capabilities that bypass them)."""
    obeying = _obeying_permissions()

    def terminal(argv: list) -> str:
        command = [sys.executable, "-c", "from revgan.cli.main import main; main()"]
        done = subprocess.run([*command, *map(str, argv)], capture_output=True, text=True,
                              timeout=300, **obeying)
        return _assert_one_line(done)

    data = copy_tree(trained["dataroot"], tmp_path / "data")
    secret = sorted((data / "testA").glob("*.png"))[-1]  # the others would be done first
    secret.chmod(0o000)
    line = terminal(["translate", "--model_dir", trained["run"], "--input", data / "testA",
                     "--output", tmp_path / "out", "--gpu_ids", "-1", "--no_progress"])
    assert secret.name in line and "Permission denied" in line
    assert not (tmp_path / "out").exists()  # refused before the readable files were done
    secret.chmod(0o644)

    hidden = data / "trainA" / "more"
    hidden.mkdir()
    shutil.copy(secret, hidden / "extra.png")
    hidden.chmod(0o000)
    try:
        line = terminal(args_train(data, tmp_path / "ck", "new"))
    finally:
        hidden.chmod(0o755)
    assert "cannot read folder" in line and "more" in line and "Permission denied" in line
    assert not has_weights(tmp_path / "ck" / "new")


def test_46_symlink_loop_in_a_dataset_folder(intact, tmp_path, capsys):
    import os

    root = copy_tree(intact["dataroot"], tmp_path / "data")
    (root / "trainA" / "sub").mkdir()
    os.symlink("../..", root / "trainA" / "sub" / "up")
    line = cli_error(capsys, *args_train(root, tmp_path / "ck", "new"))
    assert "symbolic link loop" in line and "sub/up" in line
    os.unlink(root / "trainA" / "sub" / "up")
    os.symlink("0000.png", root / "trainB" / "0000.png.png")  # fine: a link to an image
    os.symlink("itself.png", root / "trainB" / "itself.png")
    line = cli_error(capsys, *args_train(root, tmp_path / "ck", "new"))
    assert "itself.png" in line and "symbolic links" in line
    assert not (tmp_path / "ck").exists()


def test_47_results_path_that_is_a_file(intact, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    line = cli_error(capsys, *args_test(intact["dataroot"], intact["ck"], blocker))
    assert "a_file is a file" in line
    line = cli_error(capsys, "translate", "--model_dir", intact["run"], "--input",
                     intact["dataroot"] / "testA", "--output", blocker, "--gpu_ids", "-1",
                     "--no_progress")
    assert "a_file is a file" in line
    line = cli_error(capsys, "eval", "--results_dir", blocker)
    assert "a_file" in line
    line = cli_error(capsys, *args_train(intact["dataroot"], blocker, "new"))
    assert "a_file is a file" in line
    assert blocker.read_text() == "not a folder"


def test_48_file_names_that_are_not_utf8(intact, tmp_path, capsys):
    import os

    folder = tmp_path / "imgs"
    random_png(folder / "fine.png")
    shutil.copy(folder / "fine.png", os.path.join(os.fsencode(folder), b"se\xf1al.png"))
    line = cli_error(capsys, "test", "--dataroot", folder, "--name", "run", "--model", "test",
                     "--checkpoints_dir", intact["ck"], "--results_dir", tmp_path / "res",
                     "--gpu_ids", "-1", "--no_progress", "--preprocess", "none")
    assert "not valid UTF-8" in line and "se\\xf1al.png" in line
    line = cli_error(capsys, "translate", "--model_dir", intact["run"], "--input", folder,
                     "--output", tmp_path / "out", "--gpu_ids", "-1", "--no_progress")
    assert "se\\xf1al.png" in line
    assert not (tmp_path / "res").exists() and not (tmp_path / "out").exists()


def test_49_images_of_different_sizes_that_cannot_share_a_batch(tmp_path, capsys):
    root = tmp_path / "data"
    for side in "AB":
        random_png(root / f"train{side}" / "0.png", (32, 32))
        random_png(root / f"train{side}" / "1.png", (32, 48))
    line = cli_error(capsys, *args_train(root, tmp_path / "ck", "run", "--preprocess", "none",
                                         "--batch_size", "2"))
    assert "--batch_size 2" in line and "1.png at 32×48" in line
    assert not has_weights(tmp_path / "ck" / "run")


def test_50_translate_folder_with_one_bad_file_writes_nothing(intact, tmp_path, capsys):
    folder = copy_tree(intact["dataroot"] / "testA", tmp_path / "imgs")
    (folder / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    line = cli_error(capsys, "translate", "--model_dir", intact["run"], "--input", folder,
                     "--output", tmp_path / "out", "--gpu_ids", "-1", "--no_progress")
    assert "zz_broken.png" in line
    assert not (tmp_path / "out").exists()
