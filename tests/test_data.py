"""2D data layer: readers/writers, transforms, datasets."""

from __future__ import annotations

import math
from argparse import Namespace

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from revgan.data import (
    AlignedDataset,
    SingleDataset,
    UnalignedDataset,
    apply_transform,
    create_dataset,
    get_params,
    list_images,
    pad_to_multiple,
    read_image,
    write_image,
)
from revgan.errors import UserError


def make_opt(root, **kw) -> Namespace:
    base = dict(dataroot=str(root), phase="train", dataset_mode="aligned", direction="AtoB",
                preprocess="resize_and_crop", load_size=20, crop_size=16, no_flip=False,
                max_dataset_size=math.inf, input_nc=3, output_nc=3, serial_batches=False,
                isTrain=True, dims=2)
    base.update(kw)
    return Namespace(**base)


def fine_ramp(h=8, w=40) -> np.ndarray:
    """uint16 values 1 apart: 8-bit storage would merge neighbours."""
    return (30000 + np.arange(h * w).reshape(h, w)).astype(np.uint16)


def to_unit(u16: np.ndarray) -> np.ndarray:
    return u16.astype(np.float64) / 65535 * 2 - 1


# --- images ------------------------------------------------------------------------------


def test_16bit_gray_png_keeps_precision(tmp_path):
    raw = fine_ramp()
    Image.fromarray(raw).save(tmp_path / "g.png")
    x, meta = read_image(tmp_path / "g.png", 1)
    assert meta.bit_depth == 16 and x.shape == (1, 8, 40) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], to_unit(raw), atol=1e-6)
    assert len(np.unique(x)) == raw.size  # neighbours 1/65535 apart stay distinct
    write_image(tmp_path / "out.png", x, bit_depth=16)
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / "out.png")), raw)


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_16bit_rgb_round_trip(tmp_path, suffix):
    raw = np.stack([fine_ramp(), fine_ramp() + 7, fine_ramp() + 300], axis=-1)
    x = to_unit(raw).transpose(2, 0, 1)
    path = write_image(tmp_path / f"c{suffix}", x, bit_depth=16)
    y, meta = read_image(path, 3)
    assert meta.bit_depth == 16 and y.shape == (3, 8, 40)
    assert np.abs(y - x).max() < 0.5 / 65535 * 2
    if suffix == ".tif":
        np.testing.assert_array_equal(tifffile.imread(path), raw)


def test_16bit_tiff_written_by_tifffile(tmp_path):
    raw = fine_ramp()
    tifffile.imwrite(tmp_path / "t.tiff", raw)
    x, meta = read_image(tmp_path / "t.tiff", 1)
    assert meta.bit_depth == 16
    np.testing.assert_allclose(x[0], to_unit(raw), atol=1e-6)
    write_image(tmp_path / "back.tif", x, bit_depth=16)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "back.tif"), raw)
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([raw, raw]))
    with pytest.raises(UserError, match="stack"):
        read_image(tmp_path / "stack.tif", 1)


def test_grayscale_and_rgb_conversion(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 255  # pure red: luminance 0.299
    Image.fromarray(rgb).save(tmp_path / "red.png")
    g, meta = read_image(tmp_path / "red.png", 1)
    assert g.shape == (1, 4, 6) and meta.bit_depth == 8
    np.testing.assert_allclose(g, 0.299 * 2 - 1, atol=1e-5)
    Image.fromarray(np.full((4, 6), 255, np.uint8)).save(tmp_path / "white.png")
    c, _ = read_image(tmp_path / "white.png", 3)
    assert c.shape == (3, 4, 6) and np.allclose(c, 1.0)
    rgba = np.dstack([rgb, np.zeros((4, 6), np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    a, meta = read_image(tmp_path / "rgba.png", 3)
    assert meta.channels == 4 and a.shape == (3, 4, 6) and np.allclose(a[0], 1.0)


def test_corrupt_and_missing_files(tmp_path):
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes((tmp_path / "ok.png").read_bytes()[:40])
    with pytest.raises(UserError, match="bad.png"):
        read_image(tmp_path / "bad.png", 3)
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(UserError, match="junk.tif"):
        read_image(tmp_path / "junk.tif", 1)
    with pytest.raises(UserError, match="nope.png"):
        read_image(tmp_path / "nope.png", 1)


def test_list_images_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="no images found in .*empty"):
        list_images(tmp_path / "empty")
    with pytest.raises(UserError, match="missing"):
        list_images(tmp_path / "missing")
    (tmp_path / "sub").mkdir()
    for name in ("b.PNG", "a.jpg"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "empty" / name)
    assert [p.name for p in list_images(tmp_path / "empty")] == ["a.jpg", "b.PNG"]


# --- transforms --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "preprocess,crop,expected",
    [("resize_and_crop", 16, (16, 16)), ("crop", 16, (16, 16)),
     ("scale_width", 8, (10, 20)),  # height 24 * 20 / 48 = 10
     ("scale_width", 16, (16, 20)),  # upstream keeps the height at least crop_size
     ("scale_width_and_crop", 16, (16, 16)), ("none", 16, (24, 48))],
)
def test_preprocess_shapes(preprocess, crop, expected):
    opt = make_opt(".", preprocess=preprocess, load_size=20, crop_size=crop)
    x = torch.rand(3, 24, 48) * 2 - 1
    out = apply_transform(x, opt, get_params(opt, (24, 48)))
    assert tuple(out.shape) == (3, *expected)
    assert out.min() >= -1 and out.max() <= 1


def test_test_time_crop_is_centred_and_unflipped():
    opt = make_opt(".", preprocess="crop", crop_size=4, isTrain=False)
    x = torch.arange(100.0).reshape(1, 10, 10)
    for _ in range(5):
        params = get_params(opt, (10, 10))
        assert params["crop"] == (3, 3, 4) and not params["flip"]
    assert torch.equal(apply_transform(x, opt, params), x[:, 3:7, 3:7])


def test_crop_larger_than_image_is_user_error():
    with pytest.raises(UserError, match="crop_size"):
        get_params(make_opt(".", preprocess="crop", crop_size=64), (32, 32))
    with pytest.raises(UserError, match="preprocess"):
        get_params(make_opt(".", preprocess="zoom"), (32, 32))


@pytest.mark.parametrize("shape,dims", [((2, 3, 13, 17), 2), ((1, 2, 5, 9, 10), 3),
                                        ((1, 1, 2, 3, 2), 3)])
def test_pad_to_multiple_round_trip(shape, dims):
    x = torch.randn(shape)
    y, crop = pad_to_multiple(x, 8, dims)
    assert all(s % 8 == 0 for s in y.shape[-dims:])
    assert y.shape[:-dims] == x.shape[:-dims]
    assert torch.equal(y[crop], x)
    same, crop2 = pad_to_multiple(torch.zeros(1, 1, 8, 16), 8, 2)
    assert same.shape == (1, 1, 8, 16) and same[crop2].shape == (1, 1, 8, 16)


# --- datasets ----------------------------------------------------------------------------


def write_pairs(folder, n, h=24, w=24, seed=0):
    """Aligned images whose A and B halves are identical and asymmetric (flips show)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        half = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(np.concatenate([half, half], axis=1)).save(folder / f"{i}.png")


def test_aligned_pair_gets_identical_crop_and_flip(tmp_path):
    write_pairs(tmp_path / "train", 2)
    ds = AlignedDataset(make_opt(tmp_path, load_size=30, crop_size=16))
    torch.manual_seed(0)
    crops, flips = set(), set()
    for _ in range(12):
        item = ds[0]
        assert item["A"].shape == (3, 16, 16)
        assert torch.equal(item["A"], item["B"])
        assert item["A_paths"] == item["B_paths"]
    for _ in range(30):
        p = get_params(ds.opt, (24, 24))
        crops.add(p["crop"])
        flips.add(p["flip"])
    assert len(crops) > 1 and flips == {True, False}  # the randomness is really there


def test_aligned_channels_follow_direction(tmp_path):
    write_pairs(tmp_path / "train", 1)
    item = AlignedDataset(make_opt(tmp_path, input_nc=1, output_nc=3))[0]
    assert item["A"].shape[0] == 1 and item["B"].shape[0] == 3
    item = AlignedDataset(make_opt(tmp_path, input_nc=1, output_nc=3, direction="BtoA"))[0]
    assert item["A"].shape[0] == 3 and item["B"].shape[0] == 1


def test_aligned_odd_width_and_empty_folder(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(UserError, match="no images found"):
        AlignedDataset(make_opt(tmp_path))
    Image.fromarray(np.zeros((20, 41), np.uint8)).save(tmp_path / "train" / "odd.png")
    with pytest.raises(UserError, match="even"):
        AlignedDataset(make_opt(tmp_path))[0]


def make_unaligned(root, n_a=3, n_b=5):
    for side, n in (("A", n_a), ("B", n_b)):
        (root / f"train{side}").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8), 10 * i, np.uint8)).save(root / f"train{side}/{i}.png")


def test_unaligned_serial_and_random(tmp_path):
    make_unaligned(tmp_path)
    opt = make_opt(tmp_path, dataset_mode="unaligned", preprocess="none", serial_batches=True)
    ds = create_dataset(opt)
    assert isinstance(ds, UnalignedDataset) and len(ds) == 5
    names = [(ds[i]["A_paths"][-5:], ds[i]["B_paths"][-5:]) for i in range(5)]
    assert names == [("0.png", "0.png"), ("1.png", "1.png"), ("2.png", "2.png"),
                     ("0.png", "3.png"), ("1.png", "4.png")]
    opt.serial_batches = False
    ds = create_dataset(opt)

    def draw(seed):
        torch.manual_seed(seed)
        return [ds[0]["B_paths"] for _ in range(20)]

    first = draw(1)
    assert draw(1) == first  # reproducible from torch's seed
    assert len(set(first)) > 1 and draw(2) != first


def test_max_dataset_size_and_single(tmp_path):
    make_unaligned(tmp_path)
    opt = make_opt(tmp_path, dataset_mode="unaligned", preprocess="none", max_dataset_size=2)
    assert len(create_dataset(opt)) == 2
    single = create_dataset(make_opt(tmp_path, dataset_mode="single", preprocess="none",
                                     input_nc=1))
    assert isinstance(single, SingleDataset) and single.dir.name == "trainA"
    assert set(single[0]) == {"A", "A_paths"} and single[0]["A"].shape == (1, 8, 8)
    back = create_dataset(make_opt(tmp_path, dataset_mode="single", direction="BtoA"))
    assert back.dir.name == "trainB" and len(back) == 5
    direct = create_dataset(make_opt(tmp_path / "trainB", dataset_mode="single"))
    assert direct.dir == tmp_path / "trainB"


def test_unknown_mode_and_missing_root(tmp_path):
    with pytest.raises(UserError, match="dataset_mode"):
        create_dataset(make_opt(tmp_path, dataset_mode="paired"))
    with pytest.raises(UserError, match="dataroot"):
        create_dataset(make_opt(tmp_path / "nowhere"))
