"""Instances from the dense heads: seeded watershed decoding and class assignment.

The decoder follows micro-sam's automatic instance segmentation with a decoder (torch_em
``watershed_from_center_and_boundary_distances``), adapted to zeusseg's targets where 1 marks
the middle of an object (``zeusseg.training.targets``):

1. smooth the centre- and boundary-distance maps (Gaussian, ``smoothing``);
2. seeds (``seeds="threshold"``) = connected components of ``centre > seed_threshold &
   boundary > boundary_threshold`` inside the foreground ``fg > fg_threshold``; or
   (``seeds="hmax"``) the regional maxima of ``centre * boundary`` at least ``seed_h`` high
   (h-maxima) and above ``HMAX_FLOOR``: two touching objects whose maps only dip a little
   between them still get one seed each;
3. watershed of ``-boundary`` from the seeds, restricted to the foreground;
4. foreground components that hold no seed become instances of their own (micro-sam drops
   them; keeping them helps recall when the centre head is unsure);
5. instances smaller than ``min_size`` pixels are removed, the rest relabelled 1..N.

Each instance gets a score for AP ranking: mean foreground probability inside it times the
maximum centre probability inside it (a confident, well-centred object scores near 1).
Parameters and their effect: docs/decoding.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from zeusseg.modeling.config import SEED_MODES
from zeusseg.structures import InstanceMasks

_logger = logging.getLogger(__name__)

DEFAULT_MIN_SIZE = 15
"""Default minimum instance area in pixels at the model's input scale."""
HMAX_FLOOR = 0.2
"""``seeds="hmax"``: maxima of ``centre * boundary`` at or below this are not seeds (noise)."""


def _check_probs(probs: np.ndarray, ndim: int) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != ndim or probs.shape[-3] != 3:
        want = "(3, H, W)" if ndim == 3 else "(P, 3, H, W)"
        raise ValueError(f"probabilities must be {want}, got shape {probs.shape}")
    return probs


def decode_instances(
    probs: np.ndarray,
    *,
    fg_threshold: float = 0.5,
    seed_threshold: float = 0.5,
    boundary_threshold: float = 0.5,
    min_size: int = DEFAULT_MIN_SIZE,
    smoothing: float = 1.0,
    seeds: str = "threshold",
    seed_h: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode the three dense head maps of one prompt into instances.

    Args:
        probs: (3, H, W) float32 in [0, 1]: foreground, centre distance, boundary distance
            (sigmoid of the head logits).
        fg_threshold: foreground probability above which a pixel belongs to some instance.
        seed_threshold: centre-distance value above which a pixel may seed an instance.
        boundary_threshold: boundary-distance value above which a pixel may seed an instance.
        min_size: instances with fewer pixels are removed.
        smoothing: sigma (pixels) of the Gaussian applied to both distance maps; 0 = none.
        seeds: ``threshold`` (components above ``seed_threshold`` / ``boundary_threshold``)
            or ``hmax`` (h-maxima of ``centre * boundary`` of height ``seed_h``; the two
            seed thresholds are then unused).
        seed_h: height a maximum of ``centre * boundary`` must rise above its surroundings
            to seed an instance (``seeds="hmax"``).

    Returns:
        labels: (H, W) int32, 0 = background, instances 1..N.
        scores: (N,) float32 in [0, 1], score of instance i + 1.
    """
    probs = _check_probs(probs, 3)
    fg_prob, centre, boundary = probs
    if smoothing > 0:
        centre = ndimage.gaussian_filter(centre, smoothing)
        boundary = ndimage.gaussian_filter(boundary, smoothing)
    fg = fg_prob > fg_threshold
    if not fg.any():
        return np.zeros(fg.shape, np.int32), np.zeros(0, np.float32)

    if seeds == "threshold":
        seed_mask = fg & (centre > seed_threshold) & (boundary > boundary_threshold)
    elif seeds == "hmax":
        product = centre * boundary
        seed_mask = fg & (product > HMAX_FLOOR) & h_maxima(product, float(seed_h)).astype(bool)
    else:
        raise ValueError(f"seeds must be one of {SEED_MODES}, got {seeds!r}")
    markers, n_seeds = ndimage.label(seed_mask)
    if n_seeds > 0:
        labels = watershed(-boundary, markers=markers, mask=fg, connectivity=2)
        labels = labels.astype(np.int32, copy=False)
    else:
        labels = np.zeros(fg.shape, np.int32)
    leftover = fg & (labels == 0)  # foreground components without a seed
    if leftover.any():
        extra, n_extra = ndimage.label(leftover)
        labels = np.where(extra > 0, extra + n_seeds, labels).astype(np.int32)

    labels = _remove_small(labels, min_size)
    return labels, instance_scores(labels, fg_prob, centre)


def _remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop instances below ``min_size`` pixels and relabel the rest 1..N (order kept)."""
    counts = np.bincount(labels.ravel())
    keep = counts >= max(int(min_size), 1)
    keep[0] = False
    lut = np.zeros(counts.size, np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lut[labels]


def instance_scores(labels: np.ndarray, fg_prob: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Score of each instance: mean foreground probability x max centre-distance value.

    Args:
        labels: (H, W) int, instances 1..N.
        fg_prob: (H, W) foreground probability.
        centre: (H, W) centre-distance map.

    Returns:
        (N,) float32 in [0, 1].
    """
    n = int(labels.max(initial=0))
    if n == 0:
        return np.zeros(0, np.float32)
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=n + 1)[1:]
    mean_fg = np.bincount(flat, fg_prob.ravel(), minlength=n + 1)[1:] / np.maximum(counts, 1)
    fg = np.flatnonzero(flat)
    max_centre = np.zeros(n + 1)
    # ufunc.at takes its fast path with intp indices only (int32 is ~20x slower)
    np.maximum.at(max_centre, flat[fg].astype(np.intp), centre.ravel()[fg].astype(np.float64))
    max_centre = max_centre[1:]
    return np.clip(mean_fg * max_centre, 0.0, 1.0).astype(np.float32)


def assign_classes(
    per_prompt_probs: np.ndarray,
    *,
    class_ids: Sequence[int] | None = None,
    class_names: Mapping[int, str] | Sequence[str] | None = None,
    **decode_kwargs: float,
) -> InstanceMasks:
    """Instances of several prompts on one image, each with the class of the prompt it fits best.

    The instances are decoded from the union of the prompts' maps (pixel-wise maximum of each
    channel). Each instance gets the class of the prompt with the highest mean foreground
    probability inside it, so prompts that select disjoint objects each keep their own
    instances. Its score is ``instance_scores`` computed on that prompt's maps.

    Args:
        per_prompt_probs: (P, 3, H, W) float32 in [0, 1], the sigmoid head maps of P prompts.
        class_ids: (P,) class id of each prompt; default 1..P.
        class_names: names of the prompts, either a list of P names (in prompt order) or a
            mapping class id -> name.
        **decode_kwargs: passed to ``decode_instances`` (thresholds, ``min_size``, ...).

    Returns:
        InstanceMasks with labels 1..N, class ids and scores.
    """
    probs = _check_probs(per_prompt_probs, 4)
    p = probs.shape[0]
    ids = np.arange(1, p + 1) if class_ids is None else np.asarray(class_ids, np.int64)
    if ids.shape != (p,):
        raise ValueError(f"{p} prompts but {ids.size} class ids")
    if class_names is None:
        names: dict[int, str] = {}
    elif isinstance(class_names, Mapping):
        names = {int(k): str(v) for k, v in class_names.items()}
    else:
        if len(class_names) != p:
            raise ValueError(f"{p} prompts but {len(class_names)} class names")
        names = {int(i): str(t) for i, t in zip(ids, class_names, strict=True)}

    labels, _ = decode_instances(probs.max(axis=0), **decode_kwargs)
    n = int(labels.max(initial=0))
    if n == 0:
        return InstanceMasks(labels=labels, class_names=names)
    flat = labels.ravel()
    counts = np.maximum(np.bincount(flat, minlength=n + 1)[1:], 1)
    mean_fg = np.stack(
        [np.bincount(flat, probs[k, 0].ravel(), minlength=n + 1)[1:] / counts for k in range(p)]
    )  # (P, N)
    best = np.argmax(mean_fg, axis=0)
    smoothing = float(decode_kwargs.get("smoothing", 1.0))
    scores = np.zeros(n, np.float32)
    for k in np.unique(best):  # one pass per winning prompt, not per instance
        centre = probs[k, 1]
        if smoothing > 0:
            centre = ndimage.gaussian_filter(centre, smoothing)
        sel = best == k
        scores[sel] = instance_scores(labels, probs[k, 0], centre)[sel]
    return InstanceMasks(
        labels=labels,
        ids=np.arange(1, n + 1),
        class_ids=ids[best],
        scores=scores,
        class_names=names,
    )
