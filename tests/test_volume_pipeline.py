"""3D end to end: NIfTI pairs with a real affine → patch training → full-volume translation."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import cli_error, run_cli

from revgan.config import RunConfig
from revgan.demo.volumes import make_demo_volumes
from revgan.infer.load import load_generator
from revgan.infer.volume_units import write_visual_volume

AFFINE = np.array([[0.0, -1.2, 0.0, 40.0],
                   [1.5, 0.0, 0.0, -22.0],
                   [0.0, 0.0, 2.0, 7.5],
                   [0.0, 0.0, 0.0, 1.0]])
TINY_3D = ["--ngf", "4", "--ndf", "4", "--patch_size", "16", "--samples_per_volume", "2",
           "--num_threads", "0", "--no_progress", "--gpu_ids", "-1", "--print_freq", "1",
           "--display_freq", "4"]
NETS_3D = {"paired_revgan3d": "edsrF_2", "unpaired_revgan3d": "edsrF_2",
           "cycle_gan3d": "resnet_1blocks", "pix2pix3d": "unet_16"}


def _ct_like(shape, seed):
    """A smooth phantom in Hounsfield-like units (air -1000 to bone ~1500)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    radius = sum(g**2 for g in grids)
    volume = np.where(radius < 0.7, 40.0 + 30 * rng.standard_normal(shape), -1000.0)
    volume[radius < 0.15] = 1500.0
    return volume.astype(np.float32)


@pytest.fixture(scope="module")
def nifti_pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ct")
    for split, count in (("train", 3), ("test", 1)):
        for side in "AB":
            (root / f"{split}{side}").mkdir()
        for i in range(count):
            b = _ct_like((24, 20, 22), seed=i)
            a = b + 100.0  # a simple, learnable shift between the "modalities"
            for side, vol in (("A", a), ("B", b)):
                nib.save(nib.Nifti1Image(vol, AFFINE), root / f"{split}{side}" / f"case{i}.nii.gz")
    return root


def test_paired_3d_train_then_full_volume_translation(nifti_pairs, tmp_path):
    ck = tmp_path / "ck"
    run_cli("train", "--dataroot", nifti_pairs, "--name", "ct", "--checkpoints_dir", ck,
            "--model", "paired_revgan3d", "--netG", "edsrF_2", *TINY_3D,
            "--intensity", "window", "--window", "-1000", "2000",
            "--n_epochs", "1", "--n_epochs_decay", "0")
    big = _ct_like((45, 61, 37), seed=9) + 100.0
    src = tmp_path / "big.nii.gz"
    nib.save(nib.Nifti1Image(big, AFFINE), src)
    out = tmp_path / "big_B.nii.gz"
    run_cli("translate", "--model_dir", ck / "ct", "--input", src, "--output", out,
            "--no_progress", "--gpu_ids", "-1", "--overlap", "0.25")
    result = nib.load(out)
    assert result.shape == big.shape
    np.testing.assert_allclose(result.affine, AFFINE)
    np.testing.assert_allclose(result.header.get_zooms(), nib.load(src).header.get_zooms())
    values = result.get_fdata()
    assert np.isfinite(values).all()
    # back in Hounsfield-like units of the window, not in [-1, 1]
    assert values.min() >= -1000 - 1e-3 and values.max() <= 2000 + 1e-3
    assert values.max() - values.min() > 100


@pytest.mark.parametrize("model", list(NETS_3D))
def test_every_3d_model_trains_resumes_and_tests(model, tmp_path):
    data = make_demo_volumes(tmp_path / "vol", n_train=2, n_test=1, shape=(20, 20, 20))
    ck, res = tmp_path / "ck", tmp_path / "res"
    base = ["train", "--dataroot", data["root"], "--name", "run", "--checkpoints_dir", ck,
            "--model", model, "--netG", NETS_3D[model], *TINY_3D]
    run_cli(*base, "--n_epochs", "1", "--n_epochs_decay", "0")
    run_cli(*base, "--continue_train", "--n_epochs", "1", "--n_epochs_decay", "1")
    assert (ck / "run" / "2_net_G.safetensors").is_file()
    assert (ck / "run" / "web" / "index.html").is_file()
    run_cli("test", "--dataroot", data["root"], "--name", "run", "--model", model,
            "--checkpoints_dir", ck, "--results_dir", res, "--no_progress", "--gpu_ids", "-1",
            "--eval_metrics")
    out = res / "run" / "test_latest"
    fake = nib.load(next((out / "images" / "fake_B").glob("*.nii.gz")))
    real = nib.load(next((out / "images" / "real_A").glob("*.nii.gz")))
    assert fake.shape == real.shape == (20, 20, 20)
    np.testing.assert_allclose(fake.affine, real.affine)
    # the one test volume: its translation and its PNG preview, both written
    volumes = sorted((out / "images" / "fake_B").glob("*.nii.gz"))
    previews = sorted((out / "images" / "fake_B").glob("*.png"))
    assert len(volumes) == 1 and [p.name for p in previews] == [
        v.name.replace(".nii.gz", ".png") for v in volumes]
    assert previews[0].stat().st_size > 0
    assert json.loads((out / "metrics.json").read_text())["pairs"]


def test_mismatched_pair_shapes_name_both_files(nifti_pairs, tmp_path, capsys):
    bad = tmp_path / "bad"
    for side in "AB":
        (bad / f"train{side}").mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), AFFINE), bad / "trainA" / "x.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 9, 8), np.float32), AFFINE), bad / "trainB" / "x.nii.gz")
    line = cli_error(capsys, "train", "--dataroot", bad, "--name", "bad", "--checkpoints_dir",
                     tmp_path / "ck", "--model", "paired_revgan3d", *TINY_3D)
    assert "trainA/x.nii.gz" in line and "trainB/x.nii.gz" in line


def test_two_channel_volumes(tmp_path):
    """Multi-channel volumes (channel-first .npy) train and test like one-channel ones."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("test", 1)):
        for side in "AB":
            (tmp_path / "d" / f"{split}{side}").mkdir(parents=True)
        for i in range(count):
            b = rng.random((2, 16, 18, 20)).astype(np.float32)
            np.save(tmp_path / "d" / f"{split}A" / f"v{i}.npy", b * 0.5)
            np.save(tmp_path / "d" / f"{split}B" / f"v{i}.npy", b)
    ck, res = tmp_path / "ck", tmp_path / "res"
    run_cli("train", "--dataroot", tmp_path / "d", "--name", "mc", "--checkpoints_dir", ck,
            "--model", "paired_revgan3d", "--netG", "edsrF_2", *TINY_3D, "--input_nc", "2",
            "--output_nc", "2", "--n_epochs", "1", "--n_epochs_decay", "0")
    run_cli("test", "--dataroot", tmp_path / "d", "--name", "mc", "--model", "paired_revgan3d",
            "--checkpoints_dir", ck, "--results_dir", res, "--no_progress", "--gpu_ids", "-1")
    fake = next((res / "mc" / "test_latest" / "images" / "fake_B").glob("*.nii.gz"))
    assert nib.load(fake).shape == (16, 18, 20, 2)  # NIfTI keeps channels last


@pytest.fixture(scope="module")
def two_unit_run(tmp_path_factory):
    """A tiny unpaired 3D run whose folders have different units: A windowed to
    [-1000, 2000] (CT-like), B min-max (values in [0, 1])."""
    root = tmp_path_factory.mktemp("units")
    rng = np.random.default_rng(5)
    for split, count in (("train", 2), ("test", 1)):
        for side in "AB":
            (root / f"{split}{side}").mkdir()
        for i in range(count):
            b = rng.random((16, 16, 16)).astype(np.float32)
            for side, vol in (("A", b * 2500 - 900), ("B", b)):
                nib.save(nib.Nifti1Image(vol, AFFINE), root / f"{split}{side}" / f"v{i}.nii.gz")
    ck = root / "ck"
    run_cli("train", "--dataroot", root, "--name", "units", "--checkpoints_dir", ck,
            "--model", "unpaired_revgan3d", "--netG", "edsrF_2", *TINY_3D, "--no_dropout",
            "--intensity", "window", "--window", "-1000", "2000", "--intensity_B", "minmax",
            "--n_epochs", "1", "--n_epochs_decay", "0")
    return root, ck


def test_btoa_test_model_writes_fake_a_in_a_units(two_unit_run, tmp_path):
    """``--model test --direction BtoA``: fake_A is mapped back with folder A's window,
    real_B with folder B's min-max (the training direction decides, not the test's)."""
    root, ck = two_unit_run
    res = tmp_path / "res"
    run_cli("test", "--dataroot", root, "--name", "units", "--model", "test", "--direction",
            "BtoA", "--checkpoints_dir", ck, "--results_dir", res, "--no_progress",
            "--gpu_ids", "-1")
    images = res / "units" / "test_latest" / "images"
    written_fake = nib.load(images / "fake_A" / "v0.nii.gz").get_fdata()
    written_real = nib.load(images / "real_B" / "v0.nii.gz").get_fdata()
    source = nib.load(root / "testB" / "v0.nii.gz").get_fdata().astype(np.float32)
    np.testing.assert_allclose(written_real, source, atol=1e-5)

    G, _ = load_generator(ck / "units")
    x = (source - source.min()) / (source.max() - source.min()) * 2 - 1
    with torch.no_grad():
        y = G(torch.from_numpy(x)[None, None], "BtoA").clamp(-1, 1)[0, 0].numpy()
    expected = (y + 1) * 1500 - 1000  # folder A's window [-1000, 2000]
    np.testing.assert_allclose(written_fake, expected, atol=0.05)
    assert written_fake.max() - written_fake.min() > 10  # not a min-max in [0, 1]


def test_identity_visuals_take_the_units_of_their_input(tmp_path):
    """``idt_A = G_AB(real_B)`` is a domain-B image: B's units, fitted on real_B's file."""
    root = tmp_path / "d"
    for side, vol in (("A", np.linspace(100, 300, 64)), ("B", np.linspace(2, 6, 64))):
        (root / side).mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.reshape(vol, (4, 4, 4)).astype(np.float32), AFFINE),
                 root / side / "v.nii.gz")
    opt = RunConfig(direction="AtoB", intensity="window", window=(-1000, 2000),
                    intensity_B="minmax", dims=3)
    data = {"A_paths": [str(root / "A" / "v.nii.gz")], "B_paths": [str(root / "B" / "v.nii.gz")]}
    item = torch.zeros(1, 4, 4, 4)  # the middle of [-1, 1]
    # B is min-max fitted on the visual's input: real_B (2..6) for idt_A, real_A (100..300)
    # for fake_B; A is the fixed window (middle 500)
    for label, middle in (("idt_A", 4.0), ("idt_B", 500.0), ("fake_B", 200.0),
                          ("rec_A", 500.0), ("real_B", 4.0)):
        out = write_visual_volume(tmp_path / f"{label}.nii.gz", item, label, data, opt,
                                  "AtoB")
        np.testing.assert_allclose(nib.load(out).get_fdata(), middle, atol=1e-4, err_msg=label)
