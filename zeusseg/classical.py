"""The classical floor: smoothing, Otsu threshold with auto polarity, seeded watershed.

Every learned method must beat this. Steps (all on a copy rescaled so the long side is at
most ``max_side`` pixels, then labels are resized back with nearest neighbour):

1. Gaussian smoothing (``sigma`` px); optionally minus a wide Gaussian (``background_sigma``
   px, off by default) that removes uneven illumination.
2. Otsu threshold. Polarity is auto-detected: objects are the *minority* side of the threshold
   (bright nuclei on a dark background, or dark particles on a light background), unless
   ``polarity`` is given.
3. Holes filled, small specks removed (``min_size`` px at full resolution).
4. Distance transform; seeds = its local maxima at least ``min_distance`` px apart (default:
   a quarter of the median object diameter); watershed of the inverted distance inside the mask.
5. Size filter; each instance's score = its mean smoothed contrast to the threshold, in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu
from skimage.segmentation import watershed
from skimage.transform import rescale

from zeusseg.structures import InstanceMasks, MicroscopyImage


@dataclass(frozen=True)
class ClassicalParams:
    """Parameters of the classical method (defaults work for VISN and Coelho)."""

    sigma: float = 2.0
    polarity: str = "auto"  # auto | bright | dark
    min_size: int = 100
    max_side: int = 1024
    min_distance: int | None = None
    background_sigma: float = 0.0


def detect_polarity(smooth: np.ndarray, threshold: float) -> str:
    """``bright`` if pixels above ``threshold`` are the minority (bright objects), else ``dark``."""
    return "bright" if (smooth > threshold).mean() <= 0.5 else "dark"


def _resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if labels.shape == shape:
        return labels
    rows = (np.arange(shape[0]) * labels.shape[0] / shape[0]).astype(np.int64)
    cols = (np.arange(shape[1]) * labels.shape[1] / shape[1]).astype(np.int64)
    return labels[rows[:, None], cols[None, :]]


def segment_classical(
    image: MicroscopyImage,
    params: ClassicalParams | None = None,
    class_id: int = 1,
    class_name: str = "object",
) -> InstanceMasks:
    """Segment ``image`` with the classical pipeline.

    Args:
        image: the image; RGB is converted to grey.
        params: method parameters.
        class_id: category id given to every instance.
        class_name: name of that category.

    Returns:
        InstanceMasks at the image's full resolution.
    """
    p = params or ClassicalParams()
    grey = image.grey()
    h, w = grey.shape
    factor = min(1.0, p.max_side / max(h, w))
    small = rescale(grey, factor, anti_aliasing=True, preserve_range=True) if factor < 1 else grey
    area_scale = factor * factor
    smooth = gaussian(small, sigma=max(p.sigma * factor, 0.5), preserve_range=True)
    if p.background_sigma > 0:  # flatten uneven illumination (TEM stain gradients)
        smooth = smooth - gaussian(small, sigma=p.background_sigma * factor, preserve_range=True)
    names = {class_id: class_name}
    if smooth.max() - smooth.min() < 1e-6:
        return InstanceMasks(labels=np.zeros((h, w), np.int32), class_names=names)
    thr = threshold_otsu(smooth)
    polarity = detect_polarity(smooth, thr) if p.polarity == "auto" else p.polarity
    if polarity not in ("bright", "dark"):
        raise ValueError(f"polarity must be auto, bright or dark, got {p.polarity!r}")
    contrast = (smooth - thr) if polarity == "bright" else (thr - smooth)
    fg = ndi.binary_fill_holes(contrast > 0)
    min_size = max(int(p.min_size * area_scale), 1)
    comp, n = ndi.label(fg)
    if n == 0:
        return InstanceMasks(labels=np.zeros((h, w), np.int32), class_names=names)
    sizes = np.bincount(comp.ravel())
    keep = sizes >= min_size
    keep[0] = False
    fg = keep[comp]
    dist = ndi.distance_transform_edt(fg)
    if p.min_distance is not None:
        min_dist = max(int(p.min_distance * factor), 1)
    else:
        diam = 2 * np.sqrt(np.median(sizes[keep]) / np.pi) if keep.any() else 8.0
        min_dist = max(int(diam / 4), 2)
    peaks = peak_local_max(
        dist, min_distance=min_dist, labels=ndi.label(fg)[0], exclude_border=False
    )
    markers = np.zeros(fg.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-dist, markers, mask=fg)
    # size filter and scores
    counts = np.bincount(labels.ravel())
    valid = np.flatnonzero(counts >= min_size)
    valid = valid[valid > 0]
    span = float(np.abs(contrast).max()) or 1.0
    sums = ndi.sum(np.clip(contrast, 0, None), labels, valid)
    scores = np.clip(np.asarray(sums) / np.maximum(counts[valid], 1) / span, 0, 1)
    lut = np.zeros(labels.max() + 1, np.int32)
    lut[valid] = np.arange(1, valid.size + 1)
    full = _resize_labels(lut[labels], (h, w))
    present = np.unique(full[full > 0])
    return InstanceMasks(
        labels=full,
        ids=present.astype(np.int64),
        class_ids=np.full(present.size, class_id, np.int64),
        scores=scores[present - 1].astype(np.float32),
        class_names=names,
    )
