"""Reading and writing 2D images as float C×H×W arrays in [-1, 1], keeping their bit depth.

Pillow reads most formats, but it silently reduces 16-bit colour PNGs to 8 bits and handles
16-bit/float TIFFs poorly, so TIFFs go through tifffile and 16-bit colour PNGs through a small
decoder here. Values are scaled by the file's real range (8-bit /255, 16-bit /65535).
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from revgan.data.files import check_readable, list_data_files, shown
from revgan.errors import UserError
from revgan.runs.atomic import atomic_path

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm"})
TIFF_EXTENSIONS = frozenset({".tif", ".tiff"})
# ITU-R BT.601 luma weights, the same as Pillow's convert("L"); they sum to 1, so replicated
# grayscale maps back to itself exactly.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = frozenset({5, 6, 7, 8})  # EXIF orientations that turn the image by 90 degrees


@dataclass(frozen=True)
class ImageMeta:
    """What the file held before conversion to float.

    bit_depth: bits per sample (8, 16, or 32 for float data); mode: Pillow mode or a
    ``tifffile:<dtype>`` / ``png16:<colour type>`` tag; size: (width, height) as in Pillow;
    channels: samples per pixel in the file (alpha included); value_range: the input values
    mapped to -1 and +1.
    """

    bit_depth: int
    mode: str
    size: tuple[int, int]
    channels: int
    value_range: tuple[float, float]


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | Path) -> list[Path]:
    """All image files below ``folder`` (recursive, following linked folders), sorted by path.

    Loops of links, broken links, unreadable folders and names that are not UTF-8 are
    :class:`UserError` (see :mod:`revgan.data.files`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"image folder not found: {shown(folder)}")
    paths = list_data_files(folder, is_image_file)
    if not paths:
        raise UserError(f"no images found in {shown(folder)}")
    return paths


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image file, from its header only."""
    path = Path(path)
    check_readable(path, "image")
    try:
        if path.suffix.lower() in TIFF_EXTENSIONS:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return int(page.imagelength), int(page.imagewidth)
        with Image.open(path) as image:
            width, height = image.size
            if _exif_orientation(image) in _SWAPS_AXES:
                width, height = height, width
            return height, width
    except Exception as exc:  # Pillow/tifffile raise many types for bad headers
        raise UserError(f"cannot read image {shown(path)}: {_one_line(exc)}") from None


def to_channels(array: np.ndarray, channels: int, source: str | Path = "image") -> np.ndarray:
    """Convert a float C×H×W array with 1 or 3 channels to ``channels`` (1 or 3)."""
    if channels not in (1, 3):
        raise UserError(f"channel count must be 1 or 3, got {channels}")
    have = array.shape[0]
    if have == channels:
        return array
    if have == 1:
        return np.repeat(array, 3, axis=0)
    if have == 3:
        return np.tensordot(LUMA, array, axes=1)[None].astype(np.float32)
    raise UserError(f"{source}: cannot convert {have} channels to {channels}")


def read_image(path: str | Path, channels: int) -> tuple[np.ndarray, ImageMeta]:
    """Read an image as float32 C×H×W in [-1, 1] with ``channels`` (1 = luminance, 3 = RGB).

    Alpha is dropped. Float data already in [0, 1] or [-1, 1] keeps its meaning; other float
    data is min-max scaled (``meta.value_range`` records the range used).
    """
    path = Path(path)
    if channels not in (1, 3):
        raise UserError(f"channel count must be 1 or 3, got {channels}")
    if not path.is_file():
        raise UserError(f"image file not found: {shown(path)}")
    check_readable(path, "image")
    suffix = path.suffix.lower()
    data = mode = None
    if suffix in TIFF_EXTENSIONS:
        data, mode = _read_tiff(path)
    elif suffix == ".png" and _png_is_16bit_colour(path):
        data, mode = _read_png16(path)
    if data is None:
        data, mode = _read_pillow(path)
    data = _to_chw(data, path)
    file_channels = data.shape[0]
    data = data[:3] if file_channels >= 3 else data[:1]  # drop alpha
    scaled, bit_depth, value_range = _scale(data, path)
    meta = ImageMeta(
        bit_depth=bit_depth,
        mode=mode,
        size=(int(data.shape[2]), int(data.shape[1])),
        channels=file_channels,
        value_range=value_range,
    )
    return to_channels(scaled, channels, path), meta


def write_image(
    path: str | Path, array: np.ndarray | torch.Tensor, bit_depth: int = 8
) -> Path:
    """Write a C×H×W (or H×W) image in [-1, 1] (clipped) with 8 or 16 bits per sample.

    Any Pillow format works for 8 bits. 16 bits: PNG (grayscale via Pillow, colour via the
    writer here, since Pillow cannot store 16-bit RGB) or TIFF (via tifffile). Creates parent
    folders; replaces ``path`` atomically (callers decide whether that is allowed).
    """
    path = Path(path)
    if bit_depth not in (8, 16):
        raise UserError(f"bit depth must be 8 or 16, got {bit_depth}")
    if isinstance(array, torch.Tensor):
        array = array.detach().to("cpu", torch.float32).numpy()
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] not in (1, 3, 4):
        raise UserError(f"{path}: expected a C×H×W image with 1, 3 or 4 channels, "
                        f"got shape {tuple(array.shape)}")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise UserError(f"{path}: unsupported image extension (use one of "
                        f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
    if bit_depth == 16 and suffix not in TIFF_EXTENSIONS | {".png"}:
        raise UserError(f"{path}: 16-bit images can only be written as .png or .tif")
    maxval = 2**bit_depth - 1
    clipped = np.clip(np.nan_to_num(array), -1.0, 1.0)
    ints = np.rint((clipped + 1.0) * (maxval / 2.0)).astype(np.uint8 if bit_depth == 8
                                                              else np.uint16)
    hwc = ints.transpose(1, 2, 0)
    try:
        # Written beside ``path`` and renamed over it: a reader or a kill sees no half image.
        with atomic_path(path) as temp:
            if suffix in TIFF_EXTENSIONS:
                import tifffile

                photometric = "minisblack" if hwc.shape[2] == 1 else "rgb"
                tifffile.imwrite(temp, hwc[..., 0] if hwc.shape[2] == 1 else hwc,
                                 photometric=photometric, compression="zlib")
            elif bit_depth == 16 and hwc.shape[2] > 1:
                _write_png16(temp, hwc)
            else:
                image = Image.fromarray(hwc[..., 0] if hwc.shape[2] == 1 else hwc)
                if suffix in (".jpg", ".jpeg") and image.mode == "RGBA":
                    image = image.convert("RGB")
                image.save(temp, format=Image.registered_extensions()[suffix])
    except OSError as exc:  # a parent that is a file, no permission, disk full
        raise UserError(f"cannot write image {shown(path)}: "
                        f"{exc.strerror or _one_line(exc)}") from None
    return path


# --- readers ---------------------------------------------------------------------------


def _one_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _exif_orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a damaged EXIF block: read the pixels as stored
        return 1


def _read_pillow(path: Path) -> tuple[np.ndarray, str]:
    try:
        with Image.open(path) as image:
            image.load()
            # Cameras store pixels as the sensor saw them plus an EXIF turn; viewers apply
            # the turn, so the user expects it applied.
            if _exif_orientation(image) != 1:
                image = ImageOps.exif_transpose(image)
            mode = image.mode
            if mode == "1":
                image = image.convert("L")
            elif mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "La", "RGBa", "RGBX"):
                image = image.convert("RGBA" if "A" in mode or "a" in mode or
                                      "transparency" in image.info else "RGB")
            data = np.array(image)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError,
            ValueError) as exc:
        raise UserError(f"cannot read image {shown(path)}: {_one_line(exc)}") from None
    if mode == "I" and data.size and (data.min() < 0 or data.max() > 65535):
        raise UserError(f"{path}: 32-bit integer images are not supported; save as 16-bit")
    if mode == "I":
        data = data.astype(np.uint16)  # Pillow's 16-bit images may come as mode "I"
    return data, mode


def _read_tiff(path: Path) -> tuple[np.ndarray | None, str | None]:
    """Read a TIFF with tifffile; returns (None, None) to let Pillow try (e.g. palette TIFFs)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages:
                raise UserError(f"{path}: TIFF has no images")
            page = tif.pages[0]
            if tif.series and math.prod(tif.series[0].shape) > math.prod(page.shape):
                raise UserError(f"{path}: TIFF holds a stack of shape {tif.series[0].shape}; "
                                "2D data needs single images (use --dims 3 for volumes)")
            if page.photometric not in (tifffile.PHOTOMETRIC.MINISBLACK,
                                        tifffile.PHOTOMETRIC.RGB):
                return None, None
            data = page.asarray()
    except UserError:
        raise
    except Exception as exc:  # tifffile raises many types; Pillow gets a second chance
        try:
            return _read_pillow(path)
        except UserError:
            raise UserError(f"cannot read TIFF {path}: {_one_line(exc)}") from None
    return data, f"tifffile:{data.dtype}"


def _to_chw(data: np.ndarray, path: Path) -> np.ndarray:
    if data.ndim == 2:
        return data[None]
    if data.ndim == 3 and data.shape[2] <= 4:
        return data.transpose(2, 0, 1)
    if data.ndim == 3 and data.shape[0] <= 4:  # planar TIFF
        return data
    raise UserError(f"{path}: unsupported image shape {tuple(data.shape)}")


def _scale(data: np.ndarray, path: Path) -> tuple[np.ndarray, int, tuple[float, float]]:
    """Map samples to [-1, 1] by the file's real range; returns (array, bit depth, range)."""
    if data.dtype == np.bool_:
        data = data.astype(np.uint8) * 255
    if data.dtype.kind == "u" and data.dtype.itemsize <= 2:
        bits = 8 * data.dtype.itemsize
        lo, hi = 0.0, float(2**bits - 1)
    elif data.dtype.kind in "iu":
        info = np.iinfo(data.dtype)
        bits, lo, hi = 8 * data.dtype.itemsize, float(info.min), float(info.max)
    elif data.dtype.kind == "f":
        bits = 32
        finite = np.nan_to_num(data.astype(np.float64))
        dmin, dmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if dmin >= 0.0 and dmax <= 1.0:
            lo, hi = 0.0, 1.0
        elif dmin >= -1.0 and dmax <= 1.0:
            lo, hi = -1.0, 1.0
        else:
            lo, hi = dmin, dmax if dmax > dmin else dmin + 1.0
        data = finite
    else:
        raise UserError(f"{path}: unsupported sample type {data.dtype}")
    scaled = (data.astype(np.float64) - lo) * (2.0 / (hi - lo)) - 1.0
    return scaled.astype(np.float32), bits, (lo, hi)


# --- 16-bit colour PNG (Pillow would truncate these to 8 bits) ---------------------------

_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel


def _png_is_16bit_colour(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(29)
    if len(head) < 29 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return False
    return head[24] == 16 and head[25] in (2, 4, 6)


def _read_png16(path: Path) -> tuple[np.ndarray, str]:
    try:
        blob = path.read_bytes()
        pos, idat, header = 8, [], None
        while pos + 8 <= len(blob):
            length, kind = struct.unpack(">I4s", blob[pos:pos + 8])
            body = blob[pos + 8:pos + 8 + length]
            if len(body) != length:
                raise ValueError("truncated chunk")
            if kind == b"IHDR":
                header = struct.unpack(">IIBBBBB", body)
            elif kind == b"IDAT":
                idat.append(body)
            elif kind == b"IEND":
                break
            pos += 12 + length
        if header is None or not idat:
            raise ValueError("missing IHDR or IDAT")
        width, height, _, colour, _, _, interlace = header
        if interlace:
            raise UserError(f"{path}: interlaced 16-bit colour PNGs are not supported; "
                            "save it non-interlaced or as 16-bit TIFF")
        channels = _PNG_CHANNELS[colour]
        raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
        stride = width * channels * 2
        if raw.size < height * (stride + 1):
            raise ValueError("image data too short")
        rows = _unfilter(raw[:height * (stride + 1)].reshape(height, stride + 1), channels * 2)
    except UserError:
        raise
    except (ValueError, KeyError, zlib.error, struct.error, OSError) as exc:
        raise UserError(f"cannot read image {path}: {_one_line(exc)}") from None
    data = rows.view(">u2").reshape(height, width, channels).astype(np.uint16)
    return data, f"png16:{colour}"


def _unfilter(rows: np.ndarray, bpp: int) -> np.ndarray:
    """Undo PNG per-row filters. None/Sub/Up are vectorised; Average/Paeth loop per pixel."""
    height, stride = rows.shape[0], rows.shape[1] - 1
    out = np.zeros((height, stride), dtype=np.uint8)
    prior = np.zeros(stride, dtype=np.int64)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:].astype(np.int64)
        if kind == 0:
            cur = line
        elif kind == 1:
            cur = line.reshape(-1, bpp).cumsum(axis=0).ravel() % 256
        elif kind == 2:
            cur = (line + prior) % 256
        elif kind in (3, 4):
            cur = line.copy()
            left = np.zeros(bpp, dtype=np.int64)
            upleft = np.zeros(bpp, dtype=np.int64)
            for x in range(0, stride, bpp):
                up = prior[x:x + bpp]
                if kind == 3:
                    pred = (left + up) // 2
                else:
                    p = left + up - upleft
                    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
                    pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
                cur[x:x + bpp] = (line[x:x + bpp] + pred) % 256
                left, upleft = cur[x:x + bpp], up
        else:
            raise ValueError(f"bad PNG filter type {kind}")
        out[y] = cur
        prior = cur
    return out


def _write_png16(path: Path, hwc: np.ndarray) -> None:
    """Write a 16-bit RGB/RGBA PNG (filter 'Up', which compresses smooth images well)."""
    height, width, channels = hwc.shape
    colour = {3: 2, 4: 6}[channels]
    raw = np.ascontiguousarray(hwc.astype(">u2")).view(np.uint8).reshape(height, -1)
    filtered = raw.astype(np.int16)
    filtered[1:] -= raw[:-1]
    lines = np.concatenate(
        [np.full((height, 1), 2, dtype=np.uint8), (filtered % 256).astype(np.uint8)], axis=1
    )

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)
    path.write_bytes(_PNG_SIGNATURE + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(lines.tobytes(), 6)) + chunk(b"IEND", b""))
