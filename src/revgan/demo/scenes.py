"""A small built-in street-scene dataset (labels ↔ photo), generated deterministically.

Each scene is a random street: sky, buildings with roofs, trees, a road in perspective, a
sidewalk and cars. Domain A is the flat-colour label map (Cityscapes colours); domain B is a
rendered "photo" of the same scene with per-class textures (bricks and windows, leaves, tiles,
asphalt with lane marks, clouds), lighting gradients, soft edges and sensor noise.

Layout under ``root``::

    paired/{train,val,test}/NNNN.png           A|B side by side (width 2*size)
    unpaired/{trainA,trainB,valA,valB,testA,testB}/NNNN.png
    demo_dataset.json                           parameters; written last, marks completion

``unpaired/trainA`` and ``trainB`` come from different scenes (truly unpaired); ``valA/valB``
and ``testA/testB`` are matching pairs with equal file names (the same scenes as
``paired/val`` and ``paired/test``), so translation errors against ground truth can be
measured. Run ``python -m revgan.demo.scenes ROOT`` to make one from the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from revgan.demo.folder import check_counts, command_line, prepare, write_manifest
from revgan.errors import UserError, exits_cleanly

MANIFEST = "demo_dataset.json"
FORMAT_VERSION = 1
CLASSES = ("sky", "building", "vegetation", "road", "sidewalk", "car")
SKY, BUILDING, VEGETATION, ROAD, SIDEWALK, CAR = range(len(CLASSES))
# Cityscapes label colours for these classes.
PALETTE = np.array(
    [[70, 130, 180], [70, 70, 70], [107, 142, 35], [128, 64, 128], [244, 35, 232], [0, 0, 142]],
    dtype=np.uint8,
)
# Scene streams: the unpaired B domain uses scenes of its own.
_STREAMS = {"train": 0, "trainB": 1, "val": 2, "test": 3}
_BUILDING_TONES = np.array(
    [[0.62, 0.36, 0.27], [0.72, 0.62, 0.48], [0.55, 0.55, 0.58], [0.80, 0.74, 0.62],
     [0.45, 0.30, 0.25]]
)
_CAR_TONES = np.array(
    [[0.75, 0.10, 0.10], [0.92, 0.92, 0.92], [0.65, 0.67, 0.70], [0.12, 0.12, 0.14],
     [0.15, 0.30, 0.70], [0.90, 0.75, 0.15]]
)


# --- scene layout ------------------------------------------------------------------------


def _layout(rng: np.random.Generator, size: int) -> dict[str, Any]:
    """Random scene: class map, instance map and the geometry the renderer needs."""
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size
    labels = np.full((size, size), SKY, dtype=np.int64)
    inst = np.zeros((size, size), dtype=np.int64)
    horizon = rng.uniform(0.38, 0.55)
    labels[y >= horizon] = SIDEWALK

    # Road: a trapezoid converging to a vanishing point on the horizon.
    vx = rng.uniform(0.3, 0.7)
    left, right = rng.uniform(-0.4, 0.25), rng.uniform(0.75, 1.4)
    depth = np.clip((y - horizon) / (1.0 - horizon), 0.0, None)  # 0 at horizon, 1 at bottom
    road_l = vx - 0.02 + (left - vx + 0.02) * depth
    road_r = vx + 0.02 + (right - vx - 0.02) * depth
    labels[(y >= horizon) & (x >= road_l) & (x <= road_r)] = ROAD

    n_inst = 1
    # Buildings standing on the horizon, some with triangular roofs.
    for _ in range(rng.integers(2, 6)):
        cx, half_w = rng.uniform(0.0, 1.0), rng.uniform(0.07, 0.2)
        top = horizon - rng.uniform(0.12, horizon - 0.05)
        body = (np.abs(x - cx) <= half_w) & (y >= top) & (y <= horizon + 0.02)
        if rng.random() < 0.4:
            roof_h = rng.uniform(0.05, 0.12)
            body |= (y < top) & (y >= top - roof_h) & (
                np.abs(x - cx) <= half_w * (y - (top - roof_h)) / roof_h)
        labels[body] = BUILDING
        inst[body] = n_inst
        n_inst += 1

    # Trees: a trunk-free crown (disc) near the horizon, plus sometimes a hedge stripe.
    if rng.random() < 0.5:
        hedge = (y >= horizon - 0.04) & (y < horizon + 0.01) & (labels != ROAD)
        labels[hedge] = VEGETATION
    for _ in range(rng.integers(1, 5)):
        cx, cy = rng.uniform(0.0, 1.0), horizon + rng.uniform(-0.12, 0.04)
        r = rng.uniform(0.05, 0.14)
        disc = (x - cx) ** 2 + ((y - cy) * 1.1) ** 2 <= r * r
        labels[disc] = VEGETATION

    # Cars on the road, scaled by perspective; far ones first so near ones hide them.
    cars = []
    for d in np.sort(rng.uniform(0.2, 0.95, rng.integers(0, 4))):
        bottom = horizon + d * (1.0 - horizon)
        half_w = 0.03 + 0.11 * d
        lo = vx + (left - vx) * d + half_w
        hi = vx + (right - vx) * d - half_w
        if hi <= lo:
            continue
        cx = rng.uniform(lo, hi)
        height = half_w * 1.1
        waist = bottom - height * 0.55
        body = (np.abs(x - cx) <= half_w) & (y <= bottom - height * 0.1) & (y >= waist)
        cabin = (np.abs(x - cx) <= half_w * (0.55 + 0.25 * (y - bottom + height) / (height * 0.45))
                 ) & (y < waist) & (y >= bottom - height)
        wheel_r = half_w * 0.22
        wheels = np.zeros_like(body)
        for wx in (cx - half_w * 0.6, cx + half_w * 0.6):
            wheels |= (x - wx) ** 2 + (y - bottom + wheel_r) ** 2 <= wheel_r**2
        shape = body | cabin | wheels
        labels[shape] = CAR
        inst[shape] = n_inst
        cars.append({"id": n_inst, "top": bottom - height, "bottom": bottom,
                     "body": body & ~wheels, "cabin": cabin & ~body, "wheels": wheels})
        n_inst += 1
    return {"labels": labels, "inst": inst, "n_inst": n_inst, "x": x, "y": y,
            "horizon": horizon, "vx": vx, "depth": depth, "road_l": road_l, "road_r": road_r,
            "cars": cars}


# --- rendering ---------------------------------------------------------------------------


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise (bilinear interpolation of a random ``cells``-grid), roughly N(0, 1)."""
    grid = rng.standard_normal((cells + 1, cells + 1))
    t = np.linspace(0.0, cells, size, endpoint=False) + cells / (2 * size)
    i = np.minimum(t.astype(int), cells - 1)
    f = t - i
    gy = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]  # rows interpolated
    return gy[:, i] * (1 - f)[None] + gy[:, i + 1] * f[None]


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an H×W×C image (edge padding)."""
    radius = max(1, int(np.ceil(2 * sigma)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    for axis in (0, 1):
        pad = [(0, 0)] * img.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(img, pad, mode="edge")
        n = img.shape[axis]
        img = sum(w * np.take(padded, np.arange(j, j + n), axis=axis) for j, w in enumerate(k))
    return img


def _render(rng: np.random.Generator, scene: dict[str, Any], size: int) -> np.ndarray:
    """Photo-like rendering of a scene as float H×W×3 in [0, 1]."""
    labels, inst, x, y = scene["labels"], scene["inst"], scene["x"], scene["y"]
    horizon, depth = scene["horizon"], scene["depth"]
    px = np.mgrid[0:size, 0:size]  # integer pixel rows/cols for pixel-scale textures
    img = np.zeros((size, size, 3))

    # Sky: blue gradient paling towards the horizon, with soft clouds.
    t = np.clip(y / horizon, 0, 1)[..., None]
    sky = (1 - t) * np.array([0.30, 0.50, 0.85]) + t * np.array([0.72, 0.82, 0.95])
    clouds = np.clip(_value_noise(rng, size, 4) + 0.5 * _value_noise(rng, size, 8) - 0.4, 0, 1)
    sky = sky + clouds[..., None] * (0.95 - sky) * 0.8
    # Sidewalk: light paving with a tile grid.
    tile = max(3, size // 12)
    grout = (px[0] % tile == 0) | (px[1] % tile == 0)
    walk = np.array([0.70, 0.66, 0.60]) - 0.12 * grout[..., None]
    walk = walk + 0.04 * _value_noise(rng, size, 16)[..., None]
    # Road: dark asphalt, fine grain, dashed white centre line in perspective.
    road = np.array([0.26, 0.26, 0.28]) + 0.05 * rng.standard_normal((size, size, 1))
    centre = (scene["road_l"] + scene["road_r"]) / 2
    lane_w = 0.006 + 0.02 * depth
    dash = np.sin(18.0 / (depth + 0.15)) > 0
    lane = (np.abs(x - centre) <= lane_w) & dash & (depth > 0.05)
    road = np.where(lane[..., None], np.array([0.92, 0.92, 0.88]), road)
    # Vegetation: green leaves, darker below (self-shadow).
    leaves = _value_noise(rng, size, max(4, size // 4)) + 0.5 * rng.standard_normal((size, size))
    veg = np.array([0.18, 0.40, 0.12]) * (1 + 0.25 * leaves[..., None])
    veg = veg * (1.15 - 0.35 * np.clip((y - horizon + 0.15) / 0.3, 0, 1))[..., None]

    # Buildings and cars: one colour per instance.
    tones = np.zeros((scene["n_inst"], 3))
    tones[1:] = _BUILDING_TONES[rng.integers(0, len(_BUILDING_TONES), scene["n_inst"] - 1)]
    car_ids = [c["id"] for c in scene["cars"]]
    if car_ids:
        tones[car_ids] = _CAR_TONES[rng.integers(0, len(_CAR_TONES), len(car_ids))]
    base = tones[inst]
    # Bricks: mortar rows, with vertical joints offset on alternate rows; windows on a grid.
    brick_h = max(2, size // 24)
    row = px[0] // brick_h
    joint = (px[0] % brick_h == 0) | ((px[1] + (row % 2) * brick_h) % (2 * brick_h) == 0)
    win = max(4, size // 10)
    window = ((px[0] % win) >= win // 3) & ((px[1] % win) >= win // 3) & (y < horizon - 0.03)
    building = base * (1 - 0.18 * joint[..., None])
    building = np.where(window[..., None], np.array([0.20, 0.26, 0.35]), building)
    # Cars: body lit from above with a glossy stripe, dark glass cabin, black tyres.
    car = np.zeros((size, size, 3))
    for c in scene["cars"]:
        rel = np.clip((y - c["top"]) / (c["bottom"] - c["top"]), 0, 1)[..., None]
        body = tones[c["id"]] * (1.25 - 0.5 * rel)
        car = np.where(c["body"][..., None], body, car)
        glass = np.array([0.16, 0.20, 0.27]) + 0.25 * (1 - rel)
        car = np.where(c["cabin"][..., None], glass, car)
        car = np.where(c["wheels"][..., None], np.array([0.05, 0.05, 0.05]), car)
    for cls, layer in ((SKY, sky), (SIDEWALK, walk), (ROAD, road), (VEGETATION, veg),
                       (BUILDING, building), (CAR, car)):
        img = np.where((labels == cls)[..., None], layer, img)

    # Lighting: a random linear gradient (sun direction) and a slight vignette.
    angle = rng.uniform(0, 2 * np.pi)
    light = 1 + 0.25 * ((x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle)) * 2
    vignette = 1 - 0.25 * ((x - 0.5) ** 2 + (y - 0.5) ** 2)
    img = img * (light * vignette)[..., None] * rng.uniform(0.85, 1.15)
    img = _blur(img, sigma=0.6 * size / 64)
    img = img + 0.015 * rng.standard_normal(img.shape)
    return np.clip(img, 0.0, 1.0)


def make_scene(seed: int, stream: str, index: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The label map and photo (both uint8 H×W×3) of one scene, fixed by its arguments."""
    rng = np.random.default_rng([seed, _STREAMS[stream], index])
    scene = _layout(rng, size)
    photo = np.rint(_render(rng, scene, size) * 255).astype(np.uint8)
    return PALETTE[scene["labels"]], photo


def label_map_to_classes(rgb: np.ndarray) -> np.ndarray:
    """Class index per pixel of an H×W×3 label image (uint8, or float in [-1, 1]) by the
    nearest palette colour; lets evaluation score translated label maps."""
    rgb = np.asarray(rgb)
    if rgb.dtype.kind == "f":
        rgb = (rgb.astype(np.float64) + 1.0) * 127.5
    dist = ((rgb[..., None, :] - PALETTE.astype(np.float64)) ** 2).sum(-1)
    return dist.argmin(-1)


# --- dataset on disk ---------------------------------------------------------------------


def _params(size: int, n_train: int, n_test: int, n_val: int, seed: int) -> dict[str, Any]:
    return {"generator": "revgan.demo.scenes", "version": FORMAT_VERSION, "size": size,
            "n_train": n_train, "n_val": n_val, "n_test": n_test, "seed": seed}


def _expected_files(root: Path, counts: dict[str, int]) -> list[Path]:
    files = []
    for split, n in counts.items():
        for i in range(n):
            name = f"{i:04d}.png"
            files.append(root / "paired" / split / name)
            files += [root / "unpaired" / f"{split}{side}" / name for side in "AB"]
    return files


def _save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, compress_level=6)


def make_demo_dataset(
    root: str | Path,
    size: int = 64,
    n_train: int = 200,
    n_test: int = 24,
    n_val: int = 24,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the demo dataset under ``root`` (see module docstring) and describe it.

    A complete dataset made with the same parameters is reused as it is. Any other non-empty
    ``root`` is an error unless ``overwrite`` (which replaces only ``paired/``, ``unpaired/``
    and the manifest). Returns ``{"root", "paired", "unpaired", "manifest", "size", "seed",
    "counts": {"train", "val", "test"}, "classes", "reused"}``.
    """
    root = Path(root)
    if not isinstance(size, int) or size < 16 or size % 4:
        raise UserError(f"demo image size must be a multiple of 4 and at least 16, got {size}")
    check_counts({"n_train": n_train, "n_val": n_val, "n_test": n_test}, most=9999)
    params = _params(size, n_train, n_test, n_val, seed)
    counts = {"train": n_train, "val": n_val, "test": n_test}
    result = {"root": root, "paired": root / "paired", "unpaired": root / "unpaired",
              "manifest": root / MANIFEST, "size": size, "seed": seed, "counts": counts,
              "classes": list(CLASSES), "reused": False}
    if prepare(root, MANIFEST, params, _expected_files(root, counts), ("paired", "unpaired"),
               overwrite, "demo dataset"):
        return {**result, "reused": True}

    for split, n in counts.items():
        for i in range(n):
            name = f"{i:04d}.png"
            label, photo = make_scene(seed, split, i, size)
            _save(root / "paired" / split / name, np.concatenate([label, photo], axis=1))
            _save(root / "unpaired" / f"{split}A" / name, label)
            if split == "train":  # B from other scenes: truly unpaired
                photo = make_scene(seed, "trainB", i, size)[1]
            _save(root / "unpaired" / f"{split}B" / name, photo)
    for split in counts:  # empty splits still get their folders, for a predictable layout
        for sub in (Path("paired") / split, Path("unpaired") / f"{split}A",
                    Path("unpaired") / f"{split}B"):
            (root / sub).mkdir(parents=True, exist_ok=True)
    write_manifest(root, MANIFEST, {**params, "classes": list(CLASSES),
                                    "palette": PALETTE.tolist()})
    return result


@exits_cleanly
def main(argv: list[str] | None = None) -> None:
    parser = command_line("python -m revgan.demo.scenes",
                          "Write the built-in labels↔photo demo dataset.", n_train=200, n_test=24)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n_val", "--n-val", type=int, default=24)
    args = parser.parse_args(argv)
    info = make_demo_dataset(args.root, size=args.size, n_train=args.n_train,
                             n_test=args.n_test, n_val=args.n_val, seed=args.seed,
                             overwrite=args.overwrite)
    verb = "reused" if info["reused"] else "wrote"
    c = info["counts"]
    print(f"{verb} demo dataset in {info['root']}: {c['train']} train, {c['val']} val, "
          f"{c['test']} test scenes of {info['size']}x{info['size']} px")


if __name__ == "__main__":
    main()
