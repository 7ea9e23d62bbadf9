"""Edit a segmentation with clicks and boxes: add the object under a point or in a box, remove one.

Functional API for interactive tools (the napari widget): every function returns a new label
image (or ``InstanceMasks``) and leaves its input unchanged. Points are ``(X, Y)`` = (column,
row) pixels of the label image, as in ``ZeusPredictor.predict_prompts`` (napari's
``event.position`` is (row, col): swap it). Boxes are XYXY in the same pixels.

The predictor may hold the image at another resolution than the labels (the model sees
objects about ``target_diameter`` px wide): ``prepare_predictor`` sets it at the model's scale,
and ``add_instance_at`` maps prompts to the predictor's image and the mask back.
"""

from __future__ import annotations

import logging
from typing import TypeVar

import numpy as np

from zeusseg.inference.auto_scale import MAX_SCALE, MIN_SCALE
from zeusseg.io.images import normalise_intensity
from zeusseg.modeling.config import get_zeus_cfg
from zeusseg.predictor import ZeusPredictor
from zeusseg.structures import InstanceMasks, MicroscopyImage
from zeusseg.transforms import median_diameter, resize_image, scaled_shape

_logger = logging.getLogger(__name__)

Labels = TypeVar("Labels", np.ndarray, InstanceMasks)

MAX_ASPECT_MISMATCH = 0.05
"""Largest relative difference between the x and y scale of labels and predictor image."""


def prepare_predictor(
    predictor: ZeusPredictor,
    image: MicroscopyImage | np.ndarray,
    *,
    scale: float | None = None,
    labels: np.ndarray | InstanceMasks | None = None,
) -> float:
    """Set ``image`` on the predictor at the scale the model expects.

    The factor is ``scale`` when given; else, when ``labels`` holds instances, the one that
    brings their median diameter to the model's ``target_diameter`` (the automatic run's size
    estimate, clipped as in ``segment_image``); else the model's configured ``scale``.

    Args:
        predictor: the predictor (its previous image is replaced).
        image: a ``MicroscopyImage``, or an (H, W) / (H, W, 3) array: float in [0, 1] as is,
            anything else scaled like files (``zeusseg.io.images.normalise_intensity``).
        scale: resize factor (> 1 enlarges).
        labels: (H, W) instances of this image, used to estimate the object size.

    Returns:
        The factor used.
    """
    if not isinstance(image, MicroscopyImage):
        arr = np.asarray(image)
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
            raise ValueError(f"image must be (H, W) or (H, W, 3), got shape {arr.shape}")
        if (not np.issubdtype(arr.dtype, np.floating) or np.nanmin(arr) < 0
                or np.nanmax(arr) > 1):
            arr = normalise_intensity(arr)
        image = MicroscopyImage(arr[..., :3] if arr.ndim == 3 else arr)
    grey = image.grey().astype(np.float32, copy=False)
    cfg = get_zeus_cfg(predictor.model)
    if scale is None:
        scale = cfg.input_cfg.scale if cfg is not None else 1.0
        lab = labels.labels if isinstance(labels, InstanceMasks) else labels
        d = median_diameter(np.asarray(lab)) if lab is not None and np.any(lab) else np.nan
        if cfg is not None and np.isfinite(d) and d > 0:
            scale = float(np.clip(cfg.input_cfg.target_diameter / d, MIN_SCALE, MAX_SCALE))
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    shape = scaled_shape(grey.shape, scale)
    predictor.set_image(resize_image(grey, shape) if shape != grey.shape else grey)
    _logger.debug("predictor image set at scale %.3f: %s -> %s", scale, grey.shape, shape)
    return float(scale)


def _label_array(labels: np.ndarray | InstanceMasks) -> np.ndarray:
    arr = labels.labels if isinstance(labels, InstanceMasks) else np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be an integer label image, got dtype {arr.dtype}")
    return arr


def _pixel(point, shape: tuple[int, int]) -> tuple[int, int]:
    """(row, col) of an (X, Y) point; ValueError outside the image."""
    x, y = (float(v) for v in np.asarray(point, dtype=np.float64).reshape(-1)[:2])
    r, c = int(np.rint(y)), int(np.rint(x))
    if not (0 <= r < shape[0] and 0 <= c < shape[1]):
        raise ValueError(f"point ({x}, {y}) (X, Y) lies outside the {shape[1]}x{shape[0]} labels")
    return r, c


def _to_predictor(shape: tuple[int, int], size: tuple[int, int]) -> tuple[float, float]:
    """(sx, sy) mapping label pixels to predictor-image pixels."""
    sy, sx = size[0] / shape[0], size[1] / shape[1]
    if abs(sx - sy) > MAX_ASPECT_MISMATCH * max(sx, sy):
        raise ValueError(f"labels {shape} and the predictor's image {size} differ in aspect "
                         "ratio; set the image of these labels with prepare_predictor")
    return sx, sy


def add_instance_at(
    labels: Labels,
    predictor: ZeusPredictor,
    text: str,
    point: tuple[float, float] | np.ndarray | None = None,
    box: tuple[float, float, float, float] | np.ndarray | None = None,
    *,
    overwrite: bool = False,
    **decode_kwargs: float,
) -> Labels:
    """Add the object under a click (or in a box) as a new instance.

    Args:
        labels: (H, W) int label image (0 = background) or ``InstanceMasks``.
        predictor: a predictor holding the image of these labels (any scale with the same
            aspect ratio, see ``prepare_predictor``).
        text: the text prompt naming the kind of object.
        point: (X, Y) pixel of the labels on the object.
        box: (X0, Y0, X1, Y1) pixels of the labels around the object (XYXY); with a point too,
            the mask is clipped to the box.
        overwrite: the new instance takes its pixels from existing instances too; by default
            it only fills background, and a point on an existing instance changes nothing.
        **decode_kwargs: thresholds of ``decode_prompts``.

    Returns:
        A new label image with the instance added as ``max id + 1`` (same dtype), or new
        ``InstanceMasks`` with the instance appended (class = the class named ``text``, a new
        class when there is none; score = the predictor's score). Unchanged (a copy) when the
        prompt selects nothing new.

    Raises:
        RuntimeError: the predictor has no image.
        ValueError: neither point nor box, a point outside the labels, or labels and predictor
            image of different aspect ratio.
    """
    arr = _label_array(labels)
    if point is None and box is None:
        raise ValueError("add_instance_at needs a point or a box")
    if not predictor.is_image_set:
        raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
    shape = (int(arr.shape[0]), int(arr.shape[1]))
    if point is not None:
        r, c = _pixel(point, shape)
        if arr[r, c] != 0 and not overwrite:
            _logger.debug("point (%d, %d) is on instance %d: nothing added", c, r, arr[r, c])
            return _copy(labels)
    sx, sy = _to_predictor(shape, predictor.original_size)
    coords = point_labels = None
    if point is not None:
        xy = np.asarray(point, dtype=np.float64).reshape(-1)[:2]
        coords = np.array([[(xy[0] + 0.5) * sx - 0.5, (xy[1] + 0.5) * sy - 0.5]])
        coords = np.clip(coords, 0, np.array(predictor.original_size[::-1]) - 1)
        point_labels = np.ones(1, np.int64)
    pbox = None
    if box is not None:
        b = np.asarray(box, dtype=np.float64).reshape(-1)
        if b.shape != (4,):
            raise ValueError(f"box must be (X0, Y0, X1, Y1), got {box!r}")
        pbox = (b + 0.5) * np.array([sx, sy, sx, sy]) - 0.5
    masks, scores, _ = predictor.predict_prompts(text, coords, point_labels, pbox, **decode_kwargs)
    mask = masks[0]
    if mask.shape != shape:
        mask = resize_image(mask.astype(np.float32), shape) > 0.5
    if not overwrite:
        mask &= arr == 0
    if not mask.any():
        _logger.debug("prompt selected nothing new")
        return _copy(labels)
    new_id = int(arr.max(initial=0)) + 1
    out = arr.copy()
    if np.iinfo(out.dtype).max < new_id:
        out = out.astype(np.int32)
    out[mask] = new_id
    if not isinstance(labels, InstanceMasks):
        return out
    names = dict(labels.class_names)
    class_id = next((k for k, v in names.items() if v == text), None)
    if class_id is None:
        class_id = max([*names, *labels.class_ids.tolist(), 0]) + 1
        names[class_id] = text
    keep = np.isin(labels.ids, np.unique(out[out > 0]))
    return InstanceMasks(
        labels=out,
        ids=np.append(labels.ids[keep], new_id),
        class_ids=np.append(labels.class_ids[keep], class_id),
        scores=np.append(labels.scores[keep], scores[0]).astype(np.float32),
        class_names=names,
    )


def remove_instance_at(labels: Labels, point: tuple[float, float] | np.ndarray) -> Labels:
    """Remove the instance under a click.

    Args:
        labels: (H, W) int label image (0 = background) or ``InstanceMasks``.
        point: (X, Y) pixel of the labels.

    Returns:
        A new label image (or ``InstanceMasks``) without that instance; a copy of the input
        when the point is on background. Other ids are kept (no renumbering).

    Raises:
        ValueError: the point lies outside the labels.
    """
    arr = _label_array(labels)
    r, c = _pixel(point, arr.shape)
    target = int(arr[r, c])
    if target == 0:
        return _copy(labels)
    out = np.where(arr == target, 0, arr).astype(arr.dtype, copy=False)
    if not isinstance(labels, InstanceMasks):
        return out
    keep = labels.ids != target
    return InstanceMasks(labels=out, ids=labels.ids[keep], class_ids=labels.class_ids[keep],
                         scores=labels.scores[keep], class_names=dict(labels.class_names))


def _copy(labels: Labels) -> Labels:
    if isinstance(labels, InstanceMasks):
        return InstanceMasks(labels=labels.labels.copy(), ids=labels.ids.copy(),
                             class_ids=labels.class_ids.copy(), scores=labels.scores.copy(),
                             class_names=dict(labels.class_names))
    return np.asarray(labels).copy()
