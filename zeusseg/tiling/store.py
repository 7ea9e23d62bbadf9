"""Stitched probability maps: ``MapStore`` (RAM or temporary file) and ``blend_tiles``."""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from zeusseg.tiling.grid import TileGrid, Window, ramp_weights

_logger = logging.getLogger(__name__)

IN_MEMORY_BYTES = 64 * 2**20
"""Stitched maps up to this size (float16) stay in RAM; larger ones go to a temporary file."""


class MapStore:
    """(P, 3, H, W) float16 probability maps, in RAM when small, else in a temporary file.

    The file is memory-mapped only while one window is added or read, so the pages touched
    leave the process's resident set afterwards. Use as a context manager (removes the file).

    Args:
        shape: (P, 3, H, W).
        in_memory_bytes: largest size kept in RAM.
    """

    def __init__(self, shape: tuple[int, int, int, int], in_memory_bytes: int = IN_MEMORY_BYTES):
        self.shape = tuple(int(s) for s in shape)
        nbytes = 2 * math.prod(self.shape)
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._array: np.ndarray | None = None
        if nbytes <= in_memory_bytes:
            self._array = np.zeros(self.shape, np.float16)
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="zeusseg-tiles-")
            self._path = Path(self._tmp.name) / "maps.f16"
            np.memmap(self._path, np.float16, "w+", shape=self.shape).flush()
            _logger.debug("stitched maps: %.0f MB in %s", nbytes / 2**20, self._path)

    @property
    def on_disk(self) -> bool:
        return self._array is None

    def _open(self, mode: str) -> np.ndarray:
        if self._array is not None:
            return self._array
        return np.memmap(self._path, np.float16, mode, shape=self.shape)

    def add(self, window: Window, values: np.ndarray) -> None:
        """Add (P, 3, h, w) float32 ``values`` to the maps inside ``window``."""
        y0, y1, x0, x1 = window
        maps = self._open("r+")
        region = maps[:, :, y0:y1, x0:x1]
        region[...] = region.astype(np.float32) + values
        if self.on_disk:
            maps.flush()
        del maps, region

    def read(self, window: Window) -> np.ndarray:
        """(P, 3, h, w) float32 copy of the maps inside ``window``."""
        y0, y1, x0, x1 = window
        maps = self._open("r")
        out = np.array(maps[:, :, y0:y1, x0:x1], dtype=np.float32)
        del maps
        return out

    def close(self) -> None:
        self._array = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> MapStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def blend_tiles(
    grid: TileGrid, predict: Callable[[Window], np.ndarray], store: MapStore
) -> None:
    """Run ``predict`` on every window of ``grid`` and blend the results into ``store``.

    Args:
        grid: the windows.
        predict: window -> (P, 3, h, w) float32 probabilities of that window.
        store: receives the weighted mean of the windows' maps, (P, 3, H, W).
    """
    wy, wx = grid.total_weight(0), grid.total_weight(1)
    windows = grid.windows()
    for i, (y0, y1, x0, x1) in enumerate(windows):
        probs = np.asarray(predict((y0, y1, x0, x1)), np.float32)
        if probs.shape[-2:] != (y1 - y0, x1 - x0):
            raise ValueError(f"window {(y0, y1, x0, x1)} gave maps of shape {probs.shape}")
        ry = ramp_weights(y1 - y0, grid.overlap) / wy[y0:y1]
        rx = ramp_weights(x1 - x0, grid.overlap) / wx[x0:x1]
        store.add((y0, y1, x0, x1), probs * (ry[:, None] * rx[None, :]))
        _logger.debug("window %d/%d %s done", i + 1, len(windows), (y0, y1, x0, x1))
