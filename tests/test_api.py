"""The Python API (`revgan.load(...).translate(...)`), including the README's example as written."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

import revgan
from revgan.errors import UserError
from revgan.models.base import build_generator
from revgan.models.registry import build_config, generator_kind
from revgan.runs.checkpoints import commit_checkpoint
from revgan.runs.run_folder import save_config

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- api-example"


def make_run(folder: Path, model: str = "cycle_gan", **values) -> torch.nn.Module:
    """A tiny run folder with random weights, as training would leave it."""
    cfg = build_config(model, True, {"name": folder.name, "checkpoints_dir": str(folder.parent),
                                     "ngf": 4, "netG": "resnet_1blocks", "load_size": 32,
                                     "crop_size": 32, **values})
    G = build_generator(cfg, generator_kind(model))
    with torch.no_grad():  # non-trivial weights everywhere (zero-initialised parts included)
        gen = torch.Generator().manual_seed(0)
        for p in G.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    save_config(cfg, folder)
    commit_checkpoint(folder, "latest", {"G": G}, cfg.architecture(), None)
    return G.eval()


def readme_example() -> str:
    text = README.read_text()
    after = text[text.index(MARKER):]
    match = re.search(r"```python\n(.*?)```", after, re.S)
    assert match, "no python block after the API example marker"
    return match.group(1)


def test_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    code = readme_example()
    assert len(code.strip().splitlines()) == 5
    monkeypatch.chdir(tmp_path)
    make_run(tmp_path / "checkpoints" / "horse2zebra")
    pixels = np.random.default_rng(1).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    Image.fromarray(pixels).save("horse.jpg", quality=95)  # larger than the 32 px crop

    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)

    zebra, horse = namespace["zebra"], namespace["horse"]
    assert zebra.shape == (40, 52, 3) and zebra.dtype == np.uint8
    assert np.array_equal(np.asarray(Image.open("zebra.png")), zebra)  # the file = the array
    assert horse.shape == zebra.shape and horse.dtype == np.uint8
    assert "('AtoB', 'BtoA') resnet_1blocks (40, 52, 3) uint8" in capsys.readouterr().out


def test_each_input_kind_gives_the_network_output(tmp_path):
    G = make_run(tmp_path / "run")
    t = revgan.load(tmp_path / "run")
    assert t.directions == ("AtoB", "BtoA") and t.config.ngf == 4
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        expected = G(x[None], "BtoA")[0]
    out = t.translate(x, direction="BtoA")  # a tensor: network range, same layout
    assert isinstance(out, torch.Tensor) and out.shape == x.shape
    assert float((out - expected).abs().max()) <= 1e-5
    batch = t.translate(torch.stack([x, x]), direction="BtoA")
    assert batch.shape == (2, 3, 32, 32) and float((batch[1] - expected).abs().max()) <= 1e-5

    pixels = np.rint((x.permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)
    with torch.no_grad():
        from_pixels = G(torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 127.5 - 1,
                        "BtoA")[0]
    want = (from_pixels.permute(1, 2, 0).numpy() + 1) * 127.5
    array = t.translate(pixels, direction="BtoA")  # uint8 H×W×C in, uint8 H×W×C out
    assert array.dtype == np.uint8 and array.shape == pixels.shape
    assert np.abs(array - want).max() <= 0.5 + 1e-3
    image = t.translate(Image.fromarray(pixels), direction="BtoA")
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert np.array_equal(np.asarray(image), array)

    big = t.translate(torch.zeros(3, 45, 70))  # larger than the crop: sliding windows
    assert big.shape == (3, 45, 70) and float(big.abs().max()) <= 1


def test_volume_path_keeps_affine_and_array_agrees(tmp_path):
    make_run(tmp_path / "run3d", model="cycle_gan3d", ngf=2, patch_size=(16, 16, 16),
             intensity="minmax")
    t = revgan.load(tmp_path / "run3d")
    affine = np.array([[0.8, 0, 0, -10], [0, 1.2, 0, 5], [0, 0, 2.5, 30], [0, 0, 0, 1]])
    volume = np.random.default_rng(3).normal(100, 30, (20, 18, 24)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "in.nii.gz")

    out = t.translate(tmp_path / "in.nii.gz", output=tmp_path / "out.nii.gz")
    written = nib.load(tmp_path / "out.nii.gz")
    assert out.shape == (1, 20, 18, 24)
    assert np.allclose(written.affine, affine)
    assert np.allclose(written.get_fdata(), out[0], atol=1e-4)
    same = t.translate(volume)  # a D×H×W array in its units: the same result, same layout
    assert same.shape == volume.shape and np.allclose(same, out[0], atol=1e-4)


def test_refusals_are_user_errors(tmp_path):
    make_run(tmp_path / "p2p", model="pix2pix", netG="unet_32", norm="batch")
    t = revgan.load(tmp_path / "p2p")
    assert t.directions == ("AtoB",)
    with pytest.raises(UserError, match="direction must be one of AtoB"):
        t.translate(torch.zeros(3, 32, 32), direction="BtoA")
    with pytest.raises(UserError, match="channel"):
        t.translate(torch.zeros(2, 32, 32))
    with pytest.raises(UserError, match="cannot translate a list"):
        t.translate([1, 2, 3])
