"""Image transforms: RGB -> grey, object-diameter estimates, rescale factors, resizing, padding.

Objects should look about the same size to the model whatever the microscope. Two modes, set
per dataset in the data config (``zeusseg.training.data``):

* a fixed ``scale`` (VISN: 0.5, i.e. 900x820 -> 450x410, particles ~27 px wide);
* ``target_diameter``: each image is rescaled so that the median equivalent diameter of its
  objects becomes about ``target_diameter`` px. At training time the diameter comes from the
  ground-truth labels (``median_diameter``); at inference the same ``rescale_factor`` can be fed
  with a diameter measured on the image (e.g. blob detection).
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image
from scipy import ndimage

_logger = logging.getLogger(__name__)

MIN_FACTOR = 0.25
MAX_FACTOR = 4.0
GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""ITU-R BT.601 luma weights of R, G, B."""


def rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3 or 4) RGB(A) -> (H, W) float32 luminance ``0.299 R + 0.587 G + 0.114 B``.

    Alpha is ignored; float32 input gives float32 arithmetic (byte-identical to a float32 dot).
    """
    return (rgb[..., :3] @ GREY_WEIGHTS).astype(np.float32)


def rescale_factor(
    diameter_px: float | None,
    target_diameter: float,
    *,
    min_factor: float = MIN_FACTOR,
    max_factor: float = MAX_FACTOR,
) -> float:
    """Factor that brings objects of ``diameter_px`` to about ``target_diameter`` pixels.

    Args:
        diameter_px: measured (median) object diameter in pixels at the image's resolution;
            None, NaN or <= 0 (nothing measured) gives 1.0.
        target_diameter: the diameter, in pixels, the model was trained at.
        min_factor: lower clip of the factor.
        max_factor: upper clip of the factor.

    Returns:
        Multiply the image size by this (> 1 enlarges).
    """
    if target_diameter <= 0:
        raise ValueError(f"target_diameter must be > 0, got {target_diameter}")
    if diameter_px is None or not np.isfinite(diameter_px) or diameter_px <= 0:
        return 1.0
    return float(np.clip(target_diameter / float(diameter_px), min_factor, max_factor))


def median_diameter(labels: np.ndarray) -> float:
    """Median equivalent diameter ``2 * sqrt(area / pi)`` of the instances of a label image.

    Args:
        labels: (H, W) int label image, 0 = background.

    Returns:
        Diameter in pixels; NaN when the image holds no instance.
    """
    counts = np.bincount(np.asarray(labels).ravel())[1:]
    areas = counts[counts > 0]
    if areas.size == 0:
        return float("nan")
    return float(np.median(2.0 * np.sqrt(areas / np.pi)))


def inscribed_diameter(mask: np.ndarray, min_size: int = 15) -> float:
    """Median width ``2 * max(distance to background)`` of the connected components of a mask.

    A size read from the foreground alone: it does not change when an object is cut into
    fragments (a clump of touching objects reads about one object wide when it is a chain).

    Args:
        mask: (H, W) bool foreground.
        min_size: components smaller than this (pixels) are ignored.

    Returns:
        Diameter in pixels; NaN when no component is large enough.
    """
    mask = np.asarray(mask, bool)
    lab, n = ndimage.label(mask)
    if n == 0:
        return float("nan")
    keep = np.flatnonzero(np.bincount(lab.ravel(), minlength=n + 1)[1:] >= min_size) + 1
    if keep.size == 0:
        return float("nan")
    widest = ndimage.maximum(ndimage.distance_transform_edt(mask), lab, keep)
    return float(np.median(2.0 * np.asarray(widest, np.float64)))


def scaled_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    """(H, W) after scaling by ``factor`` (at least 1 x 1)."""
    return max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor))


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a grey image with antialiased bilinear interpolation (Pillow).

    Args:
        image: (H, W) uint8 or float32.
        shape: output (H, W).

    Returns:
        (H', W') array of the input dtype.
    """
    if tuple(image.shape) == tuple(shape):
        return image
    src = image if image.dtype == np.uint8 else image.astype(np.float32)  # Pillow mode L or F
    out = Image.fromarray(np.ascontiguousarray(src)).resize(
        (shape[1], shape[0]), Image.Resampling.BILINEAR
    )
    return np.asarray(out).astype(image.dtype, copy=False)


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label image (pixel centres sampled, ids unchanged).

    Args:
        labels: (H, W) int label image.
        shape: output (H', W').

    Returns:
        (H', W') array of the input dtype.
    """
    if tuple(labels.shape) == tuple(shape):
        return labels
    h, w = labels.shape
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]


def pad_to_multiple(image: np.ndarray, multiple: int = 32) -> np.ndarray:
    """Reflect-pad the bottom and right of an (H, W) image to multiples of ``multiple``.

    Returns:
        (H_pad, W_pad) array; crop ``[:H, :W]`` to undo.
    """
    h, w = image.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return image
    pads = [(0, 0)] * (image.ndim - 2) + [(0, ph), (0, pw)]
    return np.pad(image, pads, mode="reflect" if min(h, w) > 1 else "edge")
