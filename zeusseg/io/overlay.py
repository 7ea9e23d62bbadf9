"""Overlay PNGs: the image in grey with instance outlines coloured by class."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from zeusseg.io.atomic import atomic_path
from zeusseg.structures import InstanceMasks, MicroscopyImage

# Colour-blind-safe palette (Okabe-Ito), indexed by class id.
PALETTE = np.array(
    [
        (230, 159, 0),
        (86, 180, 233),
        (0, 158, 115),
        (240, 228, 66),
        (0, 114, 178),
        (213, 94, 0),
        (204, 121, 167),
        (255, 255, 255),
    ],
    dtype=np.uint8,
)


def render_overlay(image: MicroscopyImage, masks: InstanceMasks) -> np.ndarray:
    """(H, W, 3) uint8 RGB: the image with each instance's outline in its class colour."""
    from skimage.segmentation import find_boundaries

    grey = image.grey() if image.data.ndim == 3 else image.data
    rgb = np.repeat((np.clip(grey, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
    if len(masks) == 0:
        return rgb
    edges = find_boundaries(masks.labels, mode="inner")
    lut = np.zeros(int(masks.ids.max()) + 1, np.int64)
    lut[masks.ids] = masks.class_ids
    rgb[edges] = PALETTE[(lut[masks.labels[edges]] - 1) % len(PALETTE)]
    return rgb


def write_overlay(path: str | os.PathLike, image: MicroscopyImage, masks: InstanceMasks) -> Path:
    """Write the overlay PNG atomically. Returns the path."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(render_overlay(image, masks)).save(tmp, format="PNG", compress_level=1)
    return path
