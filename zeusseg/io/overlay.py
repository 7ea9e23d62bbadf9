"""Overlay PNGs: the image in grey with instance outlines coloured by class."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

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


def inner_boundaries(labels: np.ndarray) -> np.ndarray:
    """(H, W) bool: instance pixels with a 4-neighbour of another label (background included).

    The same pixels as ``skimage.segmentation.find_boundaries(labels, mode="inner")``, from four
    array comparisons instead of a grey dilation and erosion (8x faster on a 1 Mpx image).
    """
    edges = np.zeros(labels.shape, bool)
    d = labels[1:] != labels[:-1]
    edges[1:] |= d
    edges[:-1] |= d
    d = labels[:, 1:] != labels[:, :-1]
    edges[:, 1:] |= d
    edges[:, :-1] |= d
    return edges & (labels > 0)


def render_overlay(image: MicroscopyImage, masks: InstanceMasks) -> np.ndarray:
    """(H, W, 3) uint8 RGB: the image with each instance's outline in its class colour."""
    grey = image.grey() if image.data.ndim == 3 else image.data
    rgb = np.repeat((np.clip(grey, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
    if len(masks) == 0:
        return rgb
    edges = inner_boundaries(masks.labels)
    lut = np.zeros(int(masks.ids.max()) + 1, np.int64)
    lut[masks.ids] = masks.class_ids
    rgb[edges] = PALETTE[(lut[masks.labels[edges]] - 1) % len(PALETTE)]
    return rgb


def write_overlay(path: str | os.PathLike, image: MicroscopyImage, masks: InstanceMasks) -> Path:
    """Write the overlay PNG atomically. Returns the path."""
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(render_overlay(image, masks)).save(tmp, format="PNG", compress_level=1)
    return path
