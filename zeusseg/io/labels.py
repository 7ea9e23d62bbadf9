"""Instance label images: reading (PNG/TIFF, uint8/16/32) and writing napari/Fiji-ready TIFF.

A written label TIFF is a single uint16 (uint32 when more than 65,535 instances) plane, 0 =
background. Its ImageDescription holds JSON with each instance's class id and score, so
``read_label_image`` restores them (files from other tools simply get class 1, score 1).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import tifffile

from zeusseg.errors import InputError
from zeusseg.io.atomic import atomic_path
from zeusseg.io.images import read_raw
from zeusseg.structures import InstanceMasks

LABEL_SUFFIXES = (".png", ".tif", ".tiff")
_META_KEY = "zeusseg_instances"


def read_label_image(
    path: str | os.PathLike, expected_shape: tuple[int, int] | None = None
) -> InstanceMasks:
    """Read one instance label image.

    Args:
        path: PNG or TIFF with integer labels, 0 = background.
        expected_shape: (H, W) of the matching image; a different size is an error.

    Raises:
        InputError: unreadable file, colour or non-integer labels, negative labels, size mismatch.
    """
    path = Path(path)
    raw = read_raw(path)
    if raw.ndim == 3:
        raise InputError(path, f"label image has {raw.shape[2]} channels; expected one plane")
    if raw.dtype.kind == "f":
        if not np.all(np.isfinite(raw)) or not np.all(raw == np.round(raw)):
            raise InputError(path, "label image holds non-integer values")
        raw = raw.astype(np.int64)
    if raw.dtype.kind not in "iub":
        raise InputError(path, f"label image has dtype {raw.dtype}; expected integers")
    if raw.dtype.kind == "i" and raw.min() < 0:
        raise InputError(path, "label image holds negative values")
    if expected_shape is not None and tuple(raw.shape) != tuple(expected_shape):
        raise InputError(
            path,
            f"label size {raw.shape[1]}x{raw.shape[0]} differs from image size "
            f"{expected_shape[1]}x{expected_shape[0]} (WxH)",
        )
    if raw.max(initial=0) > np.iinfo(np.int32).max:
        raise InputError(path, "label values exceed int32")
    labels = raw.astype(np.int32)
    masks = InstanceMasks(labels=labels)
    meta = _read_meta(path) if path.suffix.lower() in (".tif", ".tiff") else None
    if meta is not None:
        ids = np.asarray(meta.get("ids", []), np.int64)
        if ids.size and np.array_equal(ids, masks.ids):
            masks.class_ids = np.asarray(meta["class_ids"], np.int64)
            masks.scores = np.asarray(meta["scores"], np.float32)
            masks.class_names = {int(k): str(v) for k, v in meta.get("class_names", {}).items()}
    return masks


def is_zeusseg_label_tiff(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a label TIFF written by ``write_label_tiff`` (cheap: header only)."""
    path = Path(path)
    return path.suffix.lower() in (".tif", ".tiff") and path.is_file() and (
        _read_meta(path) is not None)


def _read_meta(path: Path) -> dict | None:
    try:
        with tifffile.TiffFile(path) as tif:
            desc = tif.pages[0].description
        meta = json.loads(desc)
    except Exception:  # no or foreign description: plain labels
        return None
    return meta.get(_META_KEY) if isinstance(meta, dict) else None


def write_label_tiff(path: str | os.PathLike, masks: InstanceMasks) -> Path:
    """Write ``masks`` as a zlib-compressed label TIFF, atomically. Returns the path."""
    path = Path(path)
    dtype = np.uint16 if masks.labels.max(initial=0) <= np.iinfo(np.uint16).max else np.uint32
    meta = {
        _META_KEY: {
            "ids": masks.ids.tolist(),
            "class_ids": masks.class_ids.tolist(),
            "scores": [round(float(s), 6) for s in masks.scores],
            "class_names": {str(k): v for k, v in masks.class_names.items()},
        }
    }
    with atomic_path(path, suffix=".tif") as tmp:
        tifffile.imwrite(
            tmp,
            masks.labels.astype(dtype),
            description=json.dumps(meta),
            compression="zlib",
            metadata=None,
        )
    return path


def read_label_folder(
    folder: str | os.PathLike, names: list[str] | None = None
) -> dict[str, InstanceMasks]:
    """Read every label image of a folder, keyed by file stem.

    Args:
        folder: folder of PNG/TIFF label images.
        names: if given, only these stems are read and each must exist.

    Raises:
        InputError: the folder is missing/empty, a requested name is missing, or a file is bad.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "no such folder")
    files = {
        p.stem: p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix.lower() in LABEL_SUFFIXES and not p.name.startswith(".")
    }
    if not files:
        raise InputError(folder, "folder holds no label image (.png, .tif, .tiff)")
    if names is not None:
        missing = [n for n in names if n not in files]
        if missing:
            raise InputError(folder, f"no label image for {', '.join(missing[:5])}")
        files = {n: files[n] for n in names}
    return {stem: read_label_image(p) for stem, p in files.items()}
