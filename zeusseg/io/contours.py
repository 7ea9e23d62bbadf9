"""Instance masks -> polygons in (x, y) pixel coordinates, for ImageJ ROIs and GeoJSON.

Coordinates follow ImageJ and QuPath: the origin is the top-left corner of the image, x to the
right, y down, and pixel (row r, column c) covers [c, c+1] x [r, r+1]. Each ring is the 0.5
iso-line of the instance mask (``skimage.measure.find_contours``, the mask 8-connected), so it
runs along pixel edges and cuts each corner pixel diagonally halfway: a rasteriser that fills
the pixels whose centre lies inside (ImageJ, QuPath, ``skimage.draw.polygon2mask`` after the
half-pixel shift) gives the mask back. Collinear vertices are dropped (no loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.draw import polygon2mask
from skimage.measure import find_contours, points_in_poly

from zeusseg.structures import InstanceMasks


@dataclass
class InstancePolygons:
    """The outline of one instance.

    Attributes:
        parts: one (exterior, holes) per connected part, largest exterior first; each ring is
            an (n, 2) float array of (x, y) vertices, open (the first vertex is not repeated).
        label: the instance's label value. class_id, score: its class id and score.
    """

    parts: list[tuple[np.ndarray, list[np.ndarray]]]
    label: int
    class_id: int
    score: float

    @property
    def largest(self) -> np.ndarray:
        """The exterior ring of the largest part."""
        return self.parts[0][0]


def ring_area(ring: np.ndarray) -> float:
    """Signed area (shoelace) of an open ring of (x, y) vertices; > 0 counterclockwise in x-y."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _rings(mask: np.ndarray) -> list[np.ndarray]:
    """Open (x, y) rings of the 0.5 iso-line of a bool mask padded by one pixel of background."""
    rings = []
    for c in find_contours(mask.astype(np.float32), 0.5, fully_connected="high"):
        ring = _drop_collinear(c[:-1, ::-1])  # closed: drop the repeated vertex; -> (x, y)
        if len(ring) >= 3:
            rings.append(ring)
    return rings


def _drop_collinear(ring: np.ndarray) -> np.ndarray:
    """The vertices of an open ring that are not on the straight line through their neighbours.

    Exact: the iso-line's vertices are multiples of 0.5, so the cross products are exact.
    """
    if len(ring) < 3:
        return np.ascontiguousarray(ring)
    before = ring - np.roll(ring, 1, axis=0)
    after = np.roll(ring, -1, axis=0) - ring
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    return np.ascontiguousarray(ring[cross != 0])


def mask_polygons(mask: np.ndarray, offset: tuple[float, float] = (0.0, 0.0)
                  ) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """(exterior, holes) per connected part of a bool mask, largest exterior first.

    Exteriors are counterclockwise and holes clockwise in (x, y) (the GeoJSON right-hand rule
    read on the numbers). ``offset`` (x, y) is added to every vertex.
    """
    padded = np.pad(np.asarray(mask, bool), 1)
    shift = np.array(offset, np.float64) + 0.5 - 1.0  # pixel centres at +0.5; undo the padding
    outer, holes = [], []
    for ring in _rings(padded):
        ring = ring + shift
        # find_contours keeps the mask on one side: exteriors turn counterclockwise in (x, y),
        # holes clockwise
        (outer if ring_area(ring) > 0 else holes).append(ring)
    outer.sort(key=ring_area, reverse=True)
    parts: list[tuple[np.ndarray, list[np.ndarray]]] = [(r, []) for r in outer]
    for hole in holes:
        # the smallest exterior around the hole owns it (an island in a hole is its own part)
        inside = [k for k, (r, _) in enumerate(parts) if points_in_poly(hole[:1], r)[0]]
        if inside:
            parts[min(inside, key=lambda k: ring_area(parts[k][0]))][1].append(hole)
    return parts


def instance_polygons(masks: InstanceMasks) -> list[InstancePolygons]:
    """The polygons of every instance of ``masks``, in the order of ``masks.ids``.

    Instances without pixels are left out.
    """
    from scipy import ndimage  # ~0.4 s: `zeusseg --help` imports this module

    if len(masks) == 0:
        return []
    slices = ndimage.find_objects(masks.labels, max_label=int(masks.ids.max()))
    out = []
    for k, inst in enumerate(masks.ids.tolist()):
        sl = slices[inst - 1]
        if sl is None:
            continue
        crop = masks.labels[sl] == inst
        parts = mask_polygons(crop, offset=(sl[1].start, sl[0].start))
        if parts:
            out.append(InstancePolygons(parts, int(inst), int(masks.class_ids[k]),
                                        float(masks.scores[k])))
    return out


def rasterise(rings: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the pixels whose centre lies inside an odd number of ``rings`` ((x, y)).

    The inverse of ``mask_polygons`` (exteriors and holes alike), for checks and readers.
    """
    out = np.zeros(shape, bool)
    for ring in rings:
        ring = np.asarray(ring, np.float64)
        out ^= polygon2mask(shape, ring[:, ::-1] - 0.5)  # (x, y) -> (row, col) of centres
    return out
