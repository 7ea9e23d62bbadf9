"""Large images: sliding-window tiles, blended probability maps and seam-free block decoding.

Method (cellpose / stardist style; details and measurements in docs/tiling.md):

1. ``TileGrid``: windows of ``tile_size`` px that overlap by at least ``overlap`` px, spread
   evenly so the last window ends at the image edge.
2. ``blend_tiles``: the model runs on each window; its (P, 3, h, w) probability maps are
   weighted by a separable raised-cosine ramp (``ramp_weights``, low at the window's border,
   1 inside) and divided by the summed weight of all windows at each pixel, so the stitched
   maps are a smooth weighted mean with no step at any window border. The maps go into a
   ``MapStore`` (float16; a temporary file when large, mapped only while one window is
   written or read, so resident memory does not grow with the image).
3. ``decode_blocks``: the seeded-watershed decoding runs once on the stitched maps when they
   fit one decode block; larger maps are decoded in blocks (a core plus a ``halo`` margin),
   and each block keeps only the instances whose centroid lies in its core, so an object on a
   block border is kept by exactly one block, whole. Kept instances get unique ids and are
   written straight into the output label image (nearest-neighbour resize to the output
   size, a few rows at a time).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from zeusseg.structures import InstanceMasks
from zeusseg.tiling.grid import (
    DEFAULT_TILE_OVERLAP,
    DEFAULT_TILE_SIZE,
    TileGrid,
    Window,
    ramp_weights,
    scaled_window,
    tile_starts,
)
from zeusseg.tiling.stitch import (
    DEFAULT_DECODE_BLOCK,
    DEFAULT_HALO,
    TiledInstances,
    decode_blocks,
    kept_in_core,
)
from zeusseg.tiling.store import MapStore, blend_tiles

__all__ = [
    "DEFAULT_DECODE_BLOCK", "DEFAULT_HALO", "DEFAULT_TILE_OVERLAP", "DEFAULT_TILE_SIZE",
    "MapStore", "TileGrid", "TiledInstances", "TilingConfig", "Window", "blend_tiles",
    "decode_blocks", "kept_in_core", "ramp_weights", "scaled_window", "segment_tiled",
    "tile_starts",
]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TilingConfig:
    """Sizes of the sliding window and of the decode blocks, in pixels at the model's scale.

    Attributes:
        tile_size: window side.
        overlap: minimum overlap of neighbouring windows.
        block: decode-block core side; maps up to this size are decoded in one piece.
        halo: margin decoded around each block core (> the radius of the largest object).
    """

    tile_size: int = DEFAULT_TILE_SIZE
    overlap: int = DEFAULT_TILE_OVERLAP
    block: int = DEFAULT_DECODE_BLOCK
    halo: int = DEFAULT_HALO

    def __post_init__(self) -> None:
        if not 0 <= self.overlap < self.tile_size:
            raise ValueError(f"tile overlap must be in [0, tile size {self.tile_size}), "
                             f"got {self.overlap}")
        if self.block < 1 or self.halo < 0:
            raise ValueError(f"decode block must be >= 1 and halo >= 0, got {self.block}, "
                             f"{self.halo}")


def segment_tiled(
    predict: Callable[[Window], np.ndarray],
    shape: tuple[int, int],
    n_prompts: int,
    decode: Callable[[np.ndarray], InstanceMasks],
    out_shape: tuple[int, int],
    config: TilingConfig | None = None,
) -> TiledInstances:
    """Tile, predict, blend and decode: the instances of an image of any size.

    Args:
        predict: window (y0, y1, x0, x1) of the model-scale image -> (P, 3, h, w) float32
            probabilities (one encoder pass per window for all prompts).
        shape: (H, W) of the model-scale image.
        n_prompts: P.
        decode: (P, 3, h, w) probabilities -> InstanceMasks of size (h, w).
        out_shape: (H_out, W_out) of the returned labels (the original image size).
        config: window and block sizes (default ``TilingConfig()``).

    Returns:
        TiledInstances at ``out_shape``.
    """
    cfg = config or TilingConfig()
    grid = TileGrid((int(shape[0]), int(shape[1])), cfg.tile_size, cfg.overlap)
    _logger.info("tiling %dx%d into %d windows of %d px (overlap %d)", shape[0], shape[1],
                 len(grid), cfg.tile_size, cfg.overlap)
    with MapStore((n_prompts, 3, *shape)) as store:
        blend_tiles(grid, predict, store)
        return decode_blocks(store, decode, out_shape, block=cfg.block, halo=cfg.halo)
