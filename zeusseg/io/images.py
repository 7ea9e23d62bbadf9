"""Reading plain images (PNG, JPEG, TIFF) into normalised ``MicroscopyImage`` objects.

Intensity normalisation (documented in docs/io.md):

* ``uint8``: divided by 255, no clipping: a value keeps its meaning across images.
* ``uint16``/``uint32``/signed ints/floats: percentile scaling, ``(x - p_low) / (p_high - p_low)``
  with ``p_low, p_high`` = 1st and 99.8th percentile of the finite pixels, clipped to [0, 1].
  Such images rarely use their full range, and a single hot pixel would otherwise flatten
  everything else to black. NaN and inf become 0 after scaling.
* Grey images stay (H, W); RGB stays (H, W, 3); RGBA drops alpha; grey+alpha drops alpha.
  Images whose three channels are equal are stored as grey.
* Multi-page / multi-dimensional TIFF stacks are rejected: segment one plane at a time.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from zeusseg.errors import InputError
from zeusseg.structures import MicroscopyImage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
PERCENTILES = (1.0, 99.8)
MAX_PIXELS = 1 << 30  # 1 gigapixel: larger planes must be tiled into files first


def list_images(path: str | os.PathLike) -> list[Path]:
    """Image files at ``path``: the file itself, or the sorted images of a folder (not recursive).

    Raises:
        InputError: the path does not exist, has an unsupported suffix, or the folder holds no
            image.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_file():
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(
                path, f"not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})"
            )
        return [path]
    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise InputError(path, f"folder holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return files


def read_raw(path: str | os.PathLike) -> np.ndarray:
    """Read the raw pixel array of a PNG/JPEG/TIFF file, with checks.

    Returns:
        (H, W) or (H, W, C) array in the file's dtype.

    Raises:
        InputError: missing, empty, truncated or non-image file, or a multi-page TIFF.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty (0 bytes)")
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        arr = _read_tiff(path)
    else:
        arr = _read_pillow(path)
    if arr.ndim == 3 and arr.shape[2] > 4:
        raise InputError(path, f"image has {arr.shape[2]} channels; expected 1, 3 or 4")
    if arr.ndim not in (2, 3) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(path, f"unsupported image shape {arr.shape}")
    return arr


def _read_pillow(path: Path) -> np.ndarray:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # microscopy montages exceed PIL's 89 Mpx default
    try:
        with warnings.catch_warnings():  # PIL warns before the check below raises
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            if im.width * im.height > MAX_PIXELS:
                size = f"{im.width}x{im.height}"
                raise InputError(path, f"image of {size} exceeds {MAX_PIXELS} pixels; tile it")
            im.load()
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode in ("I;16", "I;16B", "I;16L"):
                return np.array(im, dtype=np.uint16)
            elif im.mode == "CMYK":
                im = im.convert("RGB")
            return np.asarray(im)
    except InputError:
        raise
    except Image.DecompressionBombError as err:
        raise InputError(path, f"image too large ({err})") from err
    except UnidentifiedImageError as err:
        raise InputError(path, "not a readable image (unknown or corrupt format)") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(path, f"truncated or corrupt image ({err})") from err


def _read_tiff(path: Path) -> np.ndarray:
    try:
        with tifffile.TiffFile(path) as tif:
            if len(tif.series) > 1 or len(tif.pages) > 1:
                raise InputError(
                    path, f"multi-page TIFF ({len(tif.pages)} pages); save one plane per file"
                )
            shape = tif.series[0].shape if tif.series else tif.pages[0].shape
            plane = int(np.prod(sorted(shape)[-2:], dtype=np.int64))  # H x W (largest two)
            if plane > MAX_PIXELS:  # checked on the header: nothing is decoded or allocated
                size = "x".join(str(s) for s in shape)
                raise InputError(path, f"image of {size} exceeds {MAX_PIXELS} pixels; tile it")
            arr = tif.asarray()
    except InputError:
        raise
    except Exception as err:  # tifffile raises many types on corrupt files
        raise InputError(path, f"truncated or corrupt TIFF ({type(err).__name__}: {err})") from err
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar (C, H, W) RGB
    if arr.ndim > 3 or (arr.ndim == 3 and arr.shape[2] > 4):
        raise InputError(
            path, f"multi-dimensional TIFF of shape {arr.shape}; expected one 2-D plane"
        )
    return arr


def normalise_intensity(raw: np.ndarray) -> np.ndarray:
    """Scale raw pixels to float32 in [0, 1] (rules in the module docstring).

    Args:
        raw: (H, W) or (H, W, C) array of any numeric dtype.

    Returns:
        Array of the same shape, float32 in [0, 1].
    """
    if raw.dtype == np.uint8:
        return raw.astype(np.float32) / 255.0
    if raw.dtype == bool:
        return raw.astype(np.float32)
    x = raw.astype(np.float64)
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros(raw.shape, np.float32)
    lo, hi = np.percentile(x[finite], PERCENTILES)
    if hi <= lo:  # constant image, or a few outliers only
        lo, hi = float(x[finite].min()), float(x[finite].max())
    out = np.zeros(raw.shape, np.float64) if hi <= lo else (x - lo) / (hi - lo)
    out[~finite] = 0.0
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _channels(arr: np.ndarray) -> np.ndarray:
    """Drop alpha, collapse equal RGB channels to grey."""
    if arr.ndim == 2:
        return arr
    c = arr.shape[2]
    if c == 1:
        return arr[..., 0]
    if c == 2:  # grey + alpha
        return arr[..., 0]
    rgb = arr[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0]
    return rgb


def read_image(path: str | os.PathLike) -> MicroscopyImage:
    """Read and normalise one image file.

    Returns:
        MicroscopyImage with ``data`` (H, W) or (H, W, 3) float32 in [0, 1].

    Raises:
        InputError: see ``read_raw``.
    """
    path = Path(path)
    raw = read_raw(path)
    data = normalise_intensity(_channels(raw))
    return MicroscopyImage(
        data=data,
        path=path,
        source_dtype=str(raw.dtype),
        source_shape=tuple(int(s) for s in raw.shape),
        name=path.stem,
    )
