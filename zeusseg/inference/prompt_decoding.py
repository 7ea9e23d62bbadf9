"""Point and box prompts decoded from the dense text-conditioned maps (SAM-style interactive path).

There is no learned prompt encoder: a click or a box selects and reshapes instances of the
prompt-independent maps that the text prompt already produced (foreground, centre distance,
boundary distance; ``zeusseg.inference.instance_segmentation``). For one candidate threshold
``tau``:

1. the *evidence* map ``max(fg, centre, boundary)`` (the distance maps are 0 outside objects,
   and they keep a faint signal inside objects whose foreground the model under-calls);
2. a *window* around the prompt: disks of ``WINDOW_RADIUS`` expected diameters around the
   positive clicks, and the box;
3. a local threshold ``t = min(fg_threshold, otsu(sqrt(evidence) in window) ** 2,
   PEAK_FRACTION * evidence peak near each positive click)``, so that a faint object that the
   automatic decoding missed can still be picked (a box also counts its surroundings and its
   centre); the candidates use ``tau = t * factor``;
4. region = ``fg > fg_threshold`` everywhere, plus ``evidence > tau`` inside the window;
5. markers = the automatic seeds (as in ``decode_instances``) plus one marker per click: the
   click moves uphill on the centre map (at most ``CLIMB_RADIUS`` expected diameters) and takes
   the seed it reaches, or becomes a new seed there (an off-centre click on a found object keeps
   that object; a click on a missed object next to a found one splits it off);
6. watershed of ``-boundary`` from the markers inside the region (foreground components
   without a marker become regions of their own, as in ``decode_instances``);
7. the mask is the union of the regions of the positive clicks minus those of the negative
   clicks; with a box and no positive click, the region whose bounding box best matches the box
   (IoU), or the largest component of ``evidence > tau`` in the box when no region is there; a
   box always clips the mask; holes that belong to no other region are filled.

Scores are the decoder's instance score (mean foreground probability x max smoothed centre value
inside the mask), not a learned IoU prediction. The expected diameter is the median diameter of
the automatically decoded instances, or the model's ``target_diameter`` when there are none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

from zeusseg.inference.instance_segmentation import decode_instances, instance_scores
from zeusseg.transforms import median_diameter

_logger = logging.getLogger(__name__)

WINDOW_RADIUS = 1.25
"""Radius of the lowered-threshold window around a positive click, in expected diameters."""
SNAP_RADIUS = 0.25
"""A click off any region moves to the strongest evidence within this many expected diameters."""
CLIMB_RADIUS = 0.35
"""How far (in expected diameters) a click may move uphill on the centre map to reach a seed."""
PEAK_FRACTION = 0.3
MIN_EVIDENCE = 0.02
MIN_PEAK = 0.05
"""A click whose neighbourhood holds no evidence above this selects nothing."""
MULTIMASK_FACTORS = (1.5, 1.0, 0.6)
"""Threshold factors of the three ``multimask_output`` candidates (smallest to largest mask)."""


@dataclass
class PromptMaps:
    """The maps of one text prompt on one image, prepared once for any number of point/box prompts.

    Attributes:
        probs: (3, H, W) float32 in [0, 1]: foreground, centre distance, boundary distance.
        centre: (H, W) float32 smoothed centre-distance map.
        boundary: (H, W) float32 smoothed boundary-distance map.
        evidence: (H, W) float32 ``max(fg, centre, boundary)``.
        diameter: expected object diameter in pixels.
    """

    probs: np.ndarray
    centre: np.ndarray
    boundary: np.ndarray
    evidence: np.ndarray
    diameter: float

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the maps."""
        return int(self.probs.shape[1]), int(self.probs.shape[2])


def prepare_prompt_maps(
    probs: np.ndarray, *, smoothing: float = 1.0, default_diameter: float = 27.0
) -> PromptMaps:
    """Smooth the maps and estimate the object size once per (image, text).

    Args:
        probs: (3, H, W) float32 in [0, 1], the sigmoid head maps of one prompt.
        smoothing: sigma (pixels) of the Gaussian on both distance maps, as in decoding.
        default_diameter: expected diameter when the automatic decoding finds no instance.

    Returns:
        The prepared maps.
    """
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3 or probs.shape[0] != 3:
        raise ValueError(f"probabilities must be (3, H, W), got shape {probs.shape}")
    centre, boundary = probs[1], probs[2]
    if smoothing > 0:
        centre = ndimage.gaussian_filter(centre, smoothing)
        boundary = ndimage.gaussian_filter(boundary, smoothing)
    labels, _ = decode_instances(probs, smoothing=smoothing)
    d = median_diameter(labels)
    diameter = float(d) if np.isfinite(d) and d > 0 else float(default_diameter)
    evidence = np.maximum(probs[0], np.maximum(centre, boundary))
    return PromptMaps(probs, centre, boundary, evidence, max(diameter, 4.0))


def check_prompts(
    point_coords: np.ndarray | None,
    point_labels: np.ndarray | None,
    box: np.ndarray | None,
    shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int] | None]:
    """Validate SAM-style prompts and turn them into pixel indices.

    Args:
        point_coords: (N, 2) points, (X, Y) in pixels, or None.
        point_labels: (N,) 1 = foreground, 0 = background, or None.
        box: (4,) box, XYXY in pixels (both corners inclusive), or None.
        shape: (H, W) of the image.

    Returns:
        points: (N, 2) int64 (row, col); labels: (N,) int64; box as (row0, col0, row1, col1)
        inclusive pixel bounds, or None.

    Raises:
        ValueError: malformed prompts, points outside the image, or no prompt at all.
    """
    h, w = shape
    if point_coords is None and point_labels is not None:
        raise ValueError("point_labels given without point_coords")
    points = np.zeros((0, 2), np.int64)
    labels = np.zeros(0, np.int64)
    if point_coords is not None:
        if point_labels is None:
            raise ValueError("point_labels must be supplied if point_coords is supplied")
        xy = np.asarray(point_coords, dtype=np.float64)
        labels = np.asarray(point_labels).reshape(-1)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise ValueError(f"point_coords must be (N, 2) (X, Y) pixels, got shape {xy.shape}")
        if labels.shape[0] != xy.shape[0]:
            raise ValueError(f"{xy.shape[0]} points but {labels.shape[0]} point_labels")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"point_labels must be 1 (foreground) or 0 (background): {labels}")
        if not np.isfinite(xy).all():
            raise ValueError("point_coords must be finite")
        cols, rows = np.rint(xy[:, 0]).astype(np.int64), np.rint(xy[:, 1]).astype(np.int64)
        bad = (cols < 0) | (cols >= w) | (rows < 0) | (rows >= h)
        if bad.any():
            raise ValueError(f"point {tuple(xy[bad][0])} (X, Y) lies outside the {w}x{h} image")
        points = np.stack([rows, cols], axis=1)
        labels = labels.astype(np.int64)
    bounds = None
    if box is not None:
        b = np.asarray(box, dtype=np.float64).reshape(-1)
        if b.shape != (4,) or not np.isfinite(b).all():
            raise ValueError(f"box must be 4 finite numbers (X0, Y0, X1, Y1), got {box!r}")
        x0, y0, x1, y1 = b
        if x1 < x0 or y1 < y0:
            raise ValueError(f"box must be XYXY with X0 <= X1 and Y0 <= Y1, got {tuple(b)}")
        c0, r0 = max(0, int(np.rint(x0))), max(0, int(np.rint(y0)))
        c1, r1 = min(w - 1, int(np.rint(x1))), min(h - 1, int(np.rint(y1)))
        if c0 > c1 or r0 > r1:
            raise ValueError(f"box {tuple(b)} lies outside the {w}x{h} image")
        bounds = (r0, c0, r1, c1)
    if points.shape[0] == 0 and bounds is None:
        raise ValueError("give point_coords + point_labels, a box, or both")
    return points, labels, bounds


def _disk(shape: tuple[int, int], centre: np.ndarray, radius: float) -> np.ndarray:
    rr, cc = np.ogrid[: shape[0], : shape[1]]
    return (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= radius**2


def _local_threshold(maps: PromptMaps, window: np.ndarray, positives: np.ndarray,
                     fg_threshold: float) -> float:
    """min(fg_threshold, Otsu of the window, ``PEAK_FRACTION`` x the peak near each click).

    Otsu runs on the square root of the evidence: a faint object (evidence ~0.1 on ~0.005)
    then separates from the background, and a bright rim inside an object does not split it.
    """
    t = float(fg_threshold)
    vals = np.sqrt(maps.evidence[window])
    if vals.size > 1 and np.ptp(vals) > 1e-6:
        t = min(t, float(threshold_otsu(vals)) ** 2)
    for p in positives:
        near = _disk(maps.shape, p, max(2.0, SNAP_RADIUS * maps.diameter))
        t = min(t, PEAK_FRACTION * float(maps.evidence[near].max()))
    return max(t, MIN_EVIDENCE)


def _snap(maps: PromptMaps, region: np.ndarray, markers: np.ndarray,
          point: np.ndarray) -> tuple[int, int] | None:
    """The pixel a click stands for: on the region, uphill on the centre map up to a seed."""
    r, c = int(point[0]), int(point[1])
    h, w = maps.shape
    near = _disk(maps.shape, point, max(2.0, SNAP_RADIUS * maps.diameter))
    if maps.evidence[near].max() < MIN_PEAK:
        return None
    if not region[r, c]:
        cand = near & region
        if not cand.any():
            return None
        flat = np.where(cand, maps.evidence, -1.0)
        r, c = np.unravel_index(int(np.argmax(flat)), flat.shape)
    start = np.array([r, c])
    limit = max(1.5, CLIMB_RADIUS * maps.diameter)
    while markers[r, c] == 0:
        r0, r1, c0, c1 = max(r - 1, 0), min(r + 2, h), max(c - 1, 0), min(c + 2, w)
        patch = np.where(region[r0:r1, c0:c1], maps.centre[r0:r1, c0:c1], -1.0)
        dr, dc = np.unravel_index(int(np.argmax(patch)), patch.shape)
        nr, nc = r0 + int(dr), c0 + int(dc)
        if patch[dr, dc] <= maps.centre[r, c] or np.hypot(*(np.array([nr, nc]) - start)) > limit:
            break
        r, c = nr, nc
    return int(r), int(c)


def _regions(maps: PromptMaps, region: np.ndarray, points: np.ndarray, seed_threshold: float,
             boundary_threshold: float) -> tuple[np.ndarray, list[int | None]]:
    """Watershed regions (H, W) int32 and the region id each point selects (None = nothing)."""
    seeds = region & (maps.centre > seed_threshold) & (maps.boundary > boundary_threshold)
    markers, n = ndimage.label(seeds)
    ids: list[int | None] = []
    for p in points:
        q = _snap(maps, region, markers, p)
        if q is None:
            ids.append(None)
            continue
        if markers[q] == 0:
            n += 1
            markers[q] = n
        ids.append(int(markers[q]))
    labels = np.zeros(maps.shape, np.int32)
    if n > 0:
        labels = watershed(-maps.boundary, markers=markers, mask=region, connectivity=2)
        labels = labels.astype(np.int32, copy=False)
    leftover = region & (labels == 0)
    if leftover.any():
        extra, _ = ndimage.label(leftover)
        labels = np.where(extra > 0, extra + n, labels).astype(np.int32)
    return labels, ids


def _best_box_region(labels: np.ndarray, bounds: tuple[int, int, int, int],
                     exclude: set[int]) -> np.ndarray:
    """Mask of the region whose bounding box has the highest IoU with the box."""
    r0, c0, r1, c1 = bounds
    inside = np.unique(labels[r0 : r1 + 1, c0 : c1 + 1])
    best, best_iou = 0, 0.0
    slices = ndimage.find_objects(labels)
    area_box = (r1 - r0 + 1) * (c1 - c0 + 1)
    for i in inside:
        if i == 0 or int(i) in exclude or slices[i - 1] is None:
            continue
        sr, sc = slices[i - 1]
        ih = min(r1 + 1, sr.stop) - max(r0, sr.start)
        iw = min(c1 + 1, sc.stop) - max(c0, sc.start)
        inter = max(ih, 0) * max(iw, 0)
        union = area_box + (sr.stop - sr.start) * (sc.stop - sc.start) - inter
        if inter / union > best_iou:
            best, best_iou = int(i), inter / union
    return labels == best if best else np.zeros(labels.shape, bool)


def _candidate(maps: PromptMaps, tau: float, window: np.ndarray, points: np.ndarray,
               point_labels: np.ndarray, bounds, fg_threshold: float, seed_threshold: float,
               boundary_threshold: float) -> np.ndarray:
    """One (H, W) bool mask at local evidence threshold ``tau``."""
    region = (maps.probs[0] > fg_threshold) | (window & (maps.evidence > tau))
    labels, ids = _regions(maps, region, points, seed_threshold, boundary_threshold)
    pos = {i for i, k in zip(ids, point_labels, strict=True) if i is not None and k == 1}
    neg = {i for i, k in zip(ids, point_labels, strict=True) if i is not None and k == 0}
    box_mask = None
    if bounds is not None:
        r0, c0, r1, c1 = bounds
        box_mask = np.zeros(maps.shape, bool)
        box_mask[r0 : r1 + 1, c0 : c1 + 1] = True
    if (point_labels == 1).any():
        mask = np.isin(labels, sorted(pos - neg)) if pos - neg else np.zeros(maps.shape, bool)
    elif box_mask is not None:
        mask = _best_box_region(labels, bounds, neg)
    else:
        mask = np.zeros(maps.shape, bool)
    if box_mask is not None:
        mask &= box_mask
        if not mask.any() and not (point_labels == 1).any():
            fg, n = ndimage.label(box_mask & (maps.evidence > tau) & ~np.isin(labels, sorted(neg)))
            if n:
                mask = fg == (1 + int(np.argmax(np.bincount(fg.ravel())[1:])))
    if mask.any():
        mask |= ndimage.binary_fill_holes(mask) & (labels == 0)
    return mask


def decode_prompts(
    maps: PromptMaps,
    point_coords: np.ndarray | None = None,
    point_labels: np.ndarray | None = None,
    box: np.ndarray | None = None,
    *,
    multimask_output: bool = False,
    fg_threshold: float = 0.5,
    seed_threshold: float = 0.5,
    boundary_threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks for point and/or box prompts from the prepared maps of one text prompt.

    Args:
        maps: ``prepare_prompt_maps`` of the text prompt.
        point_coords: (N, 2) points, (X, Y) in pixels of the maps, or None.
        point_labels: (N,) 1 = foreground, 0 = background, or None.
        box: (4,) box, XYXY in pixels (corners inclusive), or None.
        multimask_output: three candidates (local thresholds x ``MULTIMASK_FACTORS``, smallest
            to largest mask) instead of one.
        fg_threshold: foreground threshold of the automatic decoding (outside the window).
        seed_threshold: centre-distance level of the automatic seeds.
        boundary_threshold: boundary-distance level of the automatic seeds.

    Returns:
        masks: (C, H, W) bool, C = 3 with ``multimask_output`` else 1 (empty when the prompt
        selects nothing); scores: (C,) float32 in [0, 1]; soft: (C, H, W) float32, the
        evidence map inside each mask and 0 outside.

    Raises:
        ValueError: malformed prompts (``check_prompts``).
    """
    points, labels, bounds = check_prompts(point_coords, point_labels, box, maps.shape)
    positives = points[labels == 1]
    window = np.zeros(maps.shape, bool)
    for p in positives:
        window |= _disk(maps.shape, p, WINDOW_RADIUS * maps.diameter)
    if bounds is not None:
        r0, c0, r1, c1 = bounds
        window[r0 : r1 + 1, c0 : c1 + 1] = True
    factors = MULTIMASK_FACTORS if multimask_output else (1.0,)
    masks = np.zeros((len(factors), *maps.shape), bool)
    if window.any():
        peaks, context = positives, window
        if bounds is not None:
            # a box is drawn tightly around its object: the threshold also looks at the
            # surroundings (box grown by half its size per side) and at the box centre
            r0, c0, r1, c1 = bounds
            dr, dc = (r1 - r0 + 1) // 2, (c1 - c0 + 1) // 2
            context = window.copy()
            context[max(r0 - dr, 0) : r1 + dr + 1, max(c0 - dc, 0) : c1 + dc + 1] = True
            if positives.shape[0] == 0:
                peaks = np.array([[(r0 + r1) / 2, (c0 + c1) / 2]])
        t = _local_threshold(maps, context, peaks, fg_threshold)
        _logger.debug("prompt: %d points, box %s, local threshold %.3f", len(points), bounds, t)
        for j, f in enumerate(factors):
            tau = float(np.clip(t * f, MIN_EVIDENCE, 0.95))
            masks[j] = _candidate(maps, tau, window, points, labels, bounds, fg_threshold,
                                  seed_threshold, boundary_threshold)
    scores = np.array([instance_scores(m.astype(np.int32), maps.probs[0], maps.centre)[0]
                       if m.any() else 0.0 for m in masks], np.float32)
    soft = np.where(masks, maps.evidence[None], 0.0).astype(np.float32)
    return masks, scores, soft
