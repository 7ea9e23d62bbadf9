"""Tile grid of the sliding window: window positions, blending ramps, per-window resizing."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

_logger = logging.getLogger(__name__)

DEFAULT_TILE_SIZE = 1024
"""Window side at the model's input scale. Encoder cost grows faster than the pixel count
(global attention): one 2048^2 window costs ~8x a 1024^2 one on the CPU, not 4x."""
DEFAULT_TILE_OVERLAP = 128
"""Pixels shared by neighbouring windows: > 4 x the model's 27 px target diameter."""

Window = tuple[int, int, int, int]
"""(y0, y1, x0, x1): rows y0..y1-1 and columns x0..x1-1."""


def tile_starts(length: int, tile_size: int, overlap: int) -> np.ndarray:
    """Start offsets of windows of ``tile_size`` px covering ``[0, length)``.

    Neighbours share at least ``overlap`` px; the windows are spread evenly, the first starts
    at 0 and the last ends at ``length``. A length up to ``tile_size`` gives one window.

    Returns:
        (N,) int64 start offsets, ascending.
    """
    if tile_size <= overlap or overlap < 0:
        raise ValueError(f"need 0 <= overlap < tile size, got {overlap} and {tile_size}")
    if length <= tile_size:
        return np.zeros(1, np.int64)
    n = math.ceil((length - overlap) / (tile_size - overlap))
    return np.round(np.linspace(0, length - tile_size, n)).astype(np.int64)


def ramp_weights(size: int, overlap: int) -> np.ndarray:
    """1-D blending weight of a window of ``size`` px: a raised-cosine ramp over ``overlap`` px.

    ``sin^2(pi/2 * (d + 1) / (overlap + 1))`` at distance ``d`` from the nearer window end,
    1 further in. Never 0, so a pixel covered by one window only keeps that window's value.

    Returns:
        (size,) float32 in (0, 1].
    """
    d = np.minimum(np.arange(size), np.arange(size)[::-1]).astype(np.float64)
    ramp = np.sin(0.5 * np.pi * np.minimum(d + 1, overlap + 1) / (overlap + 1)) ** 2
    return ramp.astype(np.float32)


@dataclass(frozen=True)
class TileGrid:
    """Overlapping windows over an (H, W) image.

    Attributes:
        shape: (H, W) of the image the windows cover.
        tile_size: window side in pixels (a window is smaller where the image is).
        overlap: minimum number of pixels shared by neighbouring windows.
    """

    shape: tuple[int, int]
    tile_size: int
    overlap: int

    def _axis(self, axis: int) -> tuple[np.ndarray, int]:
        length = self.shape[axis]
        return tile_starts(length, self.tile_size, self.overlap), min(self.tile_size, length)

    def windows(self) -> list[Window]:
        """Every window as (y0, y1, x0, x1), row by row."""
        (ys, th), (xs, tw) = self._axis(0), self._axis(1)
        return [(int(y), int(y) + th, int(x), int(x) + tw) for y in ys for x in xs]

    def total_weight(self, axis: int) -> np.ndarray:
        """(L,) float32 summed ramp weight of all windows along ``axis`` (0 = rows, 1 = cols).

        The 2-D weight of a window is the outer product of its row and column ramps, so the
        summed 2-D weight at (y, x) is ``total_weight(0)[y] * total_weight(1)[x]``.
        """
        starts, size = self._axis(axis)
        total = np.zeros(self.shape[axis], np.float32)
        ramp = ramp_weights(size, self.overlap)
        for s in starts:
            total[s : s + size] += ramp
        return total

    def __len__(self) -> int:
        return self._axis(0)[0].size * self._axis(1)[0].size


def scaled_window(image: np.ndarray, scaled_shape: tuple[int, int], window: Window) -> np.ndarray:
    """One window of ``image`` resized to ``scaled_shape``, without resizing the whole image.

    Same values (to float rounding) as cropping ``resize_image(image, scaled_shape)``
    (Pillow antialiased bilinear): Pillow resizes a crop with a margin wider than the filter's
    support, using ``box`` for the exact source region.

    Args:
        image: (H, W) float32 or uint8 image.
        scaled_shape: (h, w) size of the whole resized image.
        window: (y0, y1, x0, x1) in the resized image.

    Returns:
        (y1 - y0, x1 - x0) float32.
    """
    y0, y1, x0, x1 = window
    big_h, big_w = image.shape[:2]
    if tuple(scaled_shape) == (big_h, big_w):
        return np.array(image[y0:y1, x0:x1], np.float32)
    sy, sx = big_h / scaled_shape[0], big_w / scaled_shape[1]
    m = int(math.ceil(max(sy, sx, 1.0))) + 2  # bilinear support is max(scale, 1) px
    cy0, cy1 = max(0, math.floor(y0 * sy) - m), min(big_h, math.ceil(y1 * sy) + m)
    cx0, cx1 = max(0, math.floor(x0 * sx) - m), min(big_w, math.ceil(x1 * sx) + m)
    crop = np.ascontiguousarray(image[cy0:cy1, cx0:cx1], np.float32)
    box = (x0 * sx - cx0, y0 * sy - cy0, x1 * sx - cx0, y1 * sy - cy0)
    out = Image.fromarray(crop).resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR, box=box)
    return np.asarray(out, np.float32)
