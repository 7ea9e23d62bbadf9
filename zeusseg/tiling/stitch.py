"""Decoding of stitched maps in blocks; instances kept by centroid, pasted at the output size."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from zeusseg.structures import InstanceMasks
from zeusseg.tiling.grid import Window
from zeusseg.tiling.store import MapStore

_logger = logging.getLogger(__name__)

DEFAULT_DECODE_BLOCK = 2048
"""Core side of a decode block; maps up to this size are decoded in one piece."""
DEFAULT_HALO = 128
"""Margin decoded around each block core; must exceed the radius of the largest object."""
WRITE_ROWS = 512
"""Output rows written per step (bounds the temporaries of the final resize)."""


@dataclass
class TiledInstances:
    """Result of ``decode_blocks``.

    Attributes:
        masks: instances at the output size, ids 1..N.
        areas: (N,) pixel count of each instance at the maps' scale.
        n_found: instances decoded (before resizing; some may vanish at the output size).
        fg_share: share of map pixels (over all prompts) with foreground probability > 0.5.
    """

    masks: InstanceMasks
    areas: np.ndarray
    n_found: int
    fg_share: float


def _bounds(length: int, block: int) -> np.ndarray:
    """Edges of ceil(length / block) near-equal cores covering [0, length)."""
    n = max(1, math.ceil(length / block))
    return np.round(np.linspace(0, length, n + 1)).astype(np.int64)


def _blocks(shape: tuple[int, int], block: int, halo: int) -> Iterator[tuple[Window, Window]]:
    """(core, halo window) of each decode block, row by row."""
    by, bx = _bounds(shape[0], block), _bounds(shape[1], block)
    for y0, y1 in zip(by[:-1], by[1:], strict=True):
        for x0, x1 in zip(bx[:-1], bx[1:], strict=True):
            core = (int(y0), int(y1), int(x0), int(x1))
            outer = (max(0, core[0] - halo), min(shape[0], core[1] + halo),
                     max(0, core[2] - halo), min(shape[1], core[3] + halo))
            yield core, outer


def sample_index(n_out: int, n_in: int) -> np.ndarray:
    """(n_out,) int64 source index of each output pixel of a nearest-neighbour resize.

    The pixel centres rule of ``zeusseg.transforms.resize_labels``.
    """
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def kept_in_core(labels: np.ndarray, core: Window, origin: tuple[int, int]) -> np.ndarray:
    """Which instances of a block have their centroid inside ``core``.

    Args:
        labels: (h, w) int32 labels of the block, instances 1..N.
        core: the core window, in image coordinates.
        origin: (y, x) image position of ``labels[0, 0]``.

    Returns:
        (N + 1,) bool, entry i for label i (entry 0, background, is False).
    """
    n = int(labels.max(initial=0))
    flat = labels.ravel()
    counts = np.maximum(np.bincount(flat, minlength=n + 1), 1)
    rows = np.bincount(flat, np.repeat(np.arange(labels.shape[0], dtype=np.float64),
                                       labels.shape[1]), minlength=n + 1) / counts
    cols = np.bincount(flat, np.tile(np.arange(labels.shape[1], dtype=np.float64),
                                     labels.shape[0]), minlength=n + 1) / counts
    cy, cx = rows + origin[0], cols + origin[1]
    keep = (cy >= core[0]) & (cy < core[1]) & (cx >= core[2]) & (cx < core[3])
    keep[0] = False
    return keep


def decode_blocks(
    store: MapStore,
    decode: Callable[[np.ndarray], InstanceMasks],
    out_shape: tuple[int, int],
    *,
    block: int = DEFAULT_DECODE_BLOCK,
    halo: int = DEFAULT_HALO,
) -> TiledInstances:
    """Decode stitched maps block by block into one label image of size ``out_shape``.

    Args:
        store: the stitched (P, 3, H, W) maps.
        decode: (P, 3, h, w) probabilities -> InstanceMasks of size (h, w) (e.g. the seeded
            watershed of ``zeusseg.inference.instance_segmentation``).
        out_shape: (H_out, W_out) of the label image returned (nearest-neighbour resize).
        block: core side of a decode block; maps up to this size are decoded in one piece.
        halo: margin decoded around each core.

    Returns:
        TiledInstances with unique ids 1..N at ``out_shape``.
    """
    h, w = store.shape[-2:]
    rmap, cmap = sample_index(out_shape[0], h), sample_index(out_shape[1], w)
    out = np.zeros(out_shape, np.int32)
    class_ids, scores, areas, written = [], [], [], []
    class_names: dict[int, str] = {}
    fg_pixels, next_id = 0, 1
    for core, outer in _blocks((h, w), block, halo):
        probs = store.read(outer)
        cy0, cy1 = core[0] - outer[0], core[1] - outer[0]
        cx0, cx1 = core[2] - outer[2], core[3] - outer[2]
        fg_pixels += int((probs[:, 0, cy0:cy1, cx0:cx1] > 0.5).sum())
        masks = decode(probs)
        del probs
        class_names = class_names or dict(masks.class_names)
        keep = kept_in_core(masks.labels, core, (outer[0], outer[2]))
        local = np.flatnonzero(keep)
        lut = np.zeros(keep.size, np.int32)
        lut[local] = np.arange(next_id, next_id + local.size, dtype=np.int32)
        pos = np.searchsorted(masks.ids, local)
        class_ids.append(masks.class_ids[pos])
        scores.append(masks.scores[pos])
        areas.append(np.bincount(masks.labels.ravel(), minlength=keep.size)[local])
        counts = np.zeros(local.size + 1, np.int64)
        if local.size:
            _paste(out, masks.labels, lut, outer, rmap, cmap, counts, next_id)
        written.append(counts[1:])
        next_id += local.size
    return _finish(out, class_ids, scores, areas, written, class_names,
                   fg_pixels / max(1, store.shape[0] * h * w))


def _paste(out: np.ndarray, labels: np.ndarray, lut: np.ndarray, outer: Window,
           rmap: np.ndarray, cmap: np.ndarray, counts: np.ndarray, first_id: int) -> None:
    """Write the kept instances of one block into ``out`` where it is still background.

    ``counts[k]`` gains the number of output pixels written for id ``first_id + k - 1``.
    """
    r0, r1 = np.searchsorted(rmap, [outer[0], outer[1]])
    c0, c1 = np.searchsorted(cmap, [outer[2], outer[3]])
    cols = cmap[c0:c1] - outer[2]
    for s in range(r0, r1, WRITE_ROWS):
        e = min(s + WRITE_ROWS, r1)
        new = lut[labels[rmap[s:e, None] - outer[0], cols[None, :]]]
        region = out[s:e, c0:c1]
        free = (region == 0) & (new > 0)
        region[free] = new[free]
        vals = new[free] - (first_id - 1)
        counts += np.bincount(vals, minlength=counts.size)


def _finish(out, class_ids, scores, areas, written, class_names, fg_share) -> TiledInstances:
    """Drop ids that got no output pixel, renumber 1..N, build the result."""
    cat = [np.concatenate(a) if a else np.zeros(0) for a in (class_ids, scores, areas, written)]
    class_ids, scores, areas, written = cat
    n_found = int(written.size)
    present = written > 0
    if not present.all():  # instances that vanished in the resize: renumber in row chunks
        lut = np.zeros(n_found + 1, np.int32)
        lut[1:][present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
        for s in range(0, out.shape[0], WRITE_ROWS):
            out[s : s + WRITE_ROWS] = lut[out[s : s + WRITE_ROWS]]
    n = int(present.sum())
    # ids 1..n hold by construction (each was written at least once): build on an empty label
    # image and attach ``out`` afterwards, skipping InstanceMasks' np.unique check of every
    # foreground pixel (+470 MB at 16384^2).
    masks = InstanceMasks(labels=np.zeros((0, 0), np.int32), ids=np.arange(1, n + 1),
                          class_ids=class_ids[present].astype(np.int64),
                          scores=scores[present].astype(np.float32), class_names=class_names)
    masks.labels = out
    return TiledInstances(masks=masks, areas=areas[present].astype(np.int64), n_found=n_found,
                          fg_share=float(fg_share))
