"""2D data layer: readers/writers, transforms, datasets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from revgan.config import RunConfig
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


def make_opt(root, **kw) -> RunConfig:
    base = dict(dataroot=str(root), phase="train", dataset_mode="aligned", direction="AtoB",
                preprocess="resize_and_crop", load_size=20, crop_size=16, no_flip=False,
                max_dataset_size=math.inf, input_nc=3, output_nc=3, serial_batches=False,
                isTrain=True, dims=2)
    base.update(kw)
    return RunConfig(**base)


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


# --- odd but valid files: the result a user expects (issue #13) ----------------------------


def upright_scene(h=32, w=64) -> np.ndarray:
    """A gray image with a white block in its top-left corner: turns and flips show."""
    image = np.full((h, w, 3), 60, np.uint8)
    image[: h // 2, : w // 4] = 255
    return image


@pytest.mark.parametrize("orientation,stored_from_upright", [
    (6, lambda u: np.rot90(u, 1)),   # camera held upright-right: viewers turn 90° clockwise
    (3, lambda u: np.rot90(u, 2)),   # upside down
    (8, lambda u: np.rot90(u, -1)),  # turned the other way
    (2, lambda u: u[:, ::-1]),       # mirrored
])
def test_exif_rotated_jpeg_is_read_upright(tmp_path, orientation, stored_from_upright):
    from revgan.data.images import image_size

    upright = upright_scene()
    stored = Image.fromarray(np.ascontiguousarray(stored_from_upright(upright)))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.jpg"
    stored.save(path, exif=exif, quality=95)
    x, meta = read_image(path, 3)
    assert x.shape == (3, 32, 64) and meta.size == (64, 32)
    assert image_size(path) == (32, 64)
    pixels = (x.transpose(1, 2, 0) + 1) * 127.5
    assert np.abs(pixels - upright).mean() < 3  # JPEG noise only: the block is top-left


def test_palette_la_and_cmyk_images_are_converted(tmp_path):
    rgb = upright_scene(8, 12)
    rgb[4:, 6:] = (200, 30, 90)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(
        tmp_path / "palette.png")
    x, meta = read_image(tmp_path / "palette.png", 3)
    assert meta.mode == "P" and meta.bit_depth == 8
    np.testing.assert_allclose((x.transpose(1, 2, 0) + 1) * 127.5, rgb, atol=1e-3)

    gray = np.arange(96, dtype=np.uint8).reshape(8, 12) * 2
    la = np.dstack([gray, np.full_like(gray, 7)])  # nearly transparent: alpha is dropped
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    x, meta = read_image(tmp_path / "la.png", 1)
    assert meta.channels == 2 and x.shape == (1, 8, 12)
    np.testing.assert_allclose((x[0] + 1) * 127.5, gray, atol=1e-3)

    red = Image.new("CMYK", (12, 8), (0, 255, 255, 0))  # cyan/magenta/yellow/black
    for suffix in (".jpg", ".tif"):
        red.save(tmp_path / f"cmyk{suffix}")
        x, meta = read_image(tmp_path / f"cmyk{suffix}", 3)
        assert x.shape == (3, 8, 12)
        np.testing.assert_allclose(x.mean(axis=(1, 2)), [1, -1, -1], atol=0.05)


def test_16bit_gray_tiff_keeps_its_depth_through_translation(tmp_path):
    from revgan.infer.windows import translate_path

    raw = fine_ramp(24, 40)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "scan.tif", raw)
    written = translate_path(lambda t: t, tmp_path / "in", tmp_path / "out", dims=2,
                             window_size=16, input_nc=1)
    back = tifffile.imread(written[0])
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, raw)  # 1/65535 steps survive


def write_sized(folder, sizes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")


@pytest.mark.parametrize("preprocess,load,crop,expected", [
    ("resize_and_crop", 20, 16, (3, 16, 16)),
    ("scale_width_and_crop", 24, 16, (3, 16, 16)),
    ("crop", 24, 16, (3, 16, 16)),
])
def test_images_of_different_sizes_in_one_folder_batch_after_preprocessing(
        tmp_path, preprocess, load, crop, expected):
    sizes = [(18, 18), (40, 30), (24, 52), (17, 33)]
    for side in "AB":
        write_sized(tmp_path / f"train{side}", sizes)
    opt = make_opt(tmp_path, dataset_mode="unaligned", preprocess=preprocess, load_size=load,
                   crop_size=crop, batch_size=4, serial_batches=True)
    batch = next(iter(torch.utils.data.DataLoader(create_dataset(opt), batch_size=4)))
    assert batch["A"].shape == (4, *expected) and batch["B"].shape == (4, *expected)


@pytest.mark.parametrize("preprocess", ["none", "scale_width"])
def test_sizes_that_cannot_share_a_batch_are_refused_before_training(tmp_path, preprocess):
    write_sized(tmp_path / "trainA", [(32, 32), (32, 32)])
    write_sized(tmp_path / "trainB", [(32, 32), (40, 24)])
    opt = make_opt(tmp_path, dataset_mode="unaligned", preprocess=preprocess, load_size=32,
                   crop_size=16, batch_size=2)
    with pytest.raises(UserError, match=r"--batch_size 2 .*/1\.png at .*--batch_size 1"):
        create_dataset(opt)
    opt.batch_size = 1  # one image per step: any size trains
    assert create_dataset(opt)[1]["B"].shape[0] == 3
    write_sized(tmp_path / "train", [(32, 64), (32, 48)])  # aligned: A|B halves
    with pytest.raises(UserError, match="--preprocess none leaves"):
        create_dataset(make_opt(tmp_path, preprocess="none", batch_size=2))


# --- dataset folders that would silently lose files (issue #13) ----------------------------


def test_linked_folders_are_followed_and_loops_refused(tmp_path):
    import os

    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    write_sized(data, [(8, 8)])
    write_sized(elsewhere / "more", [(8, 8), (8, 8)])
    os.symlink(elsewhere / "more", data / "linked")
    assert [str(p.relative_to(data)) for p in list_images(data)] == [
        "0.png", "linked/0.png", "linked/1.png"]
    (data / "deeper").mkdir()
    os.symlink("..", data / "deeper" / "up")
    with pytest.raises(UserError, match=r"symbolic link loop: .*deeper/up"):
        list_images(data)
    os.unlink(data / "deeper" / "up")
    os.symlink("self.png", data / "self.png")
    with pytest.raises(UserError, match=r"self\.png.*symbolic links"):
        list_images(data)
    os.unlink(data / "self.png")
    os.symlink(tmp_path / "gone.png", data / "dangling.png")
    with pytest.raises(UserError, match=r"dangling\.png is a broken symbolic link"):
        list_images(data)


def test_names_that_are_not_utf8_are_refused_with_a_printable_line(tmp_path):
    import os

    write_sized(tmp_path / "ok", [(8, 8)])
    folder = os.fsencode(tmp_path / "ok")
    with open(os.path.join(folder, b"notes\xe9.txt"), "w") as handle:
        handle.write("not an image: its name does not matter")
    assert len(list_images(tmp_path / "ok")) == 1
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(os.path.join(folder, b"caf\xe9.png"))
    with pytest.raises(UserError) as info:
        list_images(tmp_path / "ok")
    message = str(info.value)
    assert "caf\\xe9.png" in message and "not valid UTF-8" in message
    message.encode("utf-8")  # printable and writable as it stands
