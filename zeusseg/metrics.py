"""Instance segmentation metrics on label images (numpy + scipy only).

The core follows cellpose ``cellpose/metrics.py``: a vectorised overlap matrix, IoU of every
(true, predicted) pair, and an optimal one-to-one matching (Hungarian, ``linear_sum_assignment``)
at each IoU threshold. Label images are ``(H, W)`` integer arrays, 0 = background, any positive
value = one instance (ids need not be consecutive). Every function also accepts
``zeusseg.structures.InstanceMasks``. COCO mask AP (pycocotools) lives in
``zeusseg.evaluation.coco_map``. Definitions and conventions: ``docs/metrics.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from zeusseg.structures import InstanceMasks

_logger = logging.getLogger(__name__)

IOU_THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.round(np.arange(0.5, 0.96, 0.05), 2))
"""The ten IoU thresholds 0.50:0.05:0.95 (as in COCO) over which ``ap_mean`` is averaged."""

def _as_labels(masks: InstanceMasks | np.ndarray) -> np.ndarray:
    """(H, W) int64 label image of ``masks`` (an InstanceMasks or an integer array)."""
    labels = masks.labels if isinstance(masks, InstanceMasks) else np.asarray(masks)
    if labels.ndim != 2:
        raise ValueError(f"label images must be (H, W), got shape {labels.shape}")
    if labels.dtype.kind not in "iub":
        raise ValueError(f"label images must hold integers, got dtype {labels.dtype}")
    return labels.astype(np.int64, copy=False)


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relabel to 1..N in the order of the original ids.

    Returns:
        (H, W) int64 labels with values 0..N, and (N,) the original id of each new label.
    """
    top = int(labels.max(initial=0))
    if top <= 4 * labels.size + 1:
        present = np.flatnonzero(np.bincount(labels.ravel(), minlength=top + 1)[1:]) + 1
    else:  # huge sparse ids: sort instead of a giant bincount
        present = np.unique(labels[labels > 0])
    if present.size == top:  # already 1..N
        return labels, present
    lut = np.zeros(top + 1, np.int64)
    lut[present] = np.arange(1, present.size + 1)
    return lut[labels], present


def _label_overlap(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pixel overlap of every pair of labels of ``x`` and ``y``.

    Args:
        x: (H, W) non-negative int labels, 0 = background.
        y: (H, W) non-negative int labels, same shape as ``x``.

    Returns:
        (x.max() + 1, y.max() + 1) int64 matrix; entry (i, j) = number of pixels with
        ``x == i`` and ``y == j`` (row and column 0 are background).

    How it works:
        Each pixel's pair (i, j) is flattened to the single index ``i * (ny + 1) + j``;
        ``np.bincount`` counts all pairs in one pass and the counts are reshaped into the
        matrix (the loop-free equivalent of cellpose's numba loop).
    """
    if x.shape != y.shape:
        raise ValueError(f"label images differ in shape: {x.shape} vs {y.shape}")
    x = x.ravel().astype(np.int64, copy=False)
    y = y.ravel().astype(np.int64, copy=False)
    nx, ny = int(x.max(initial=0)) + 1, int(y.max(initial=0)) + 1
    return np.bincount(x * ny + y, minlength=nx * ny).reshape(nx, ny)


def _intersection_over_union(masks_true: np.ndarray, masks_pred: np.ndarray) -> np.ndarray:
    """IoU of every (true, predicted) label pair.

    Args:
        masks_true: (H, W) int ground-truth labels, 0 = background.
        masks_pred: (H, W) int predicted labels, 0 = background.

    Returns:
        (masks_true.max() + 1, masks_pred.max() + 1) float64 IoU matrix, background included
        as row/column 0. Labels with no pixels get IoU 0.

    How it works:
        Summing the overlap matrix over a column gives the area of that predicted label,
        over a row the area of that true label (background included, so the sums are
        complete). Area(true) + area(pred) - overlap is the union of every pair.
    """
    overlap = _label_overlap(masks_true, masks_pred)
    n_pixels_pred = overlap.sum(axis=0, keepdims=True)
    n_pixels_true = overlap.sum(axis=1, keepdims=True)
    union = n_pixels_pred + n_pixels_true - overlap
    return np.divide(overlap, union, out=np.zeros(overlap.shape), where=union > 0)


def _true_positive(iou: np.ndarray, th: float) -> int:
    """Number of true positives at IoU threshold ``th`` under the optimal one-to-one matching.

    Args:
        iou: (N_true, N_pred) IoU matrix (background removed).
        th: IoU a matched pair must reach (``>=``).

    Returns:
        The number of matched pairs with IoU >= ``th``.

    How it works:
        The cost of a pair is ``-(iou >= th) - iou / (2 * n_min)``. The first term counts
        matches; the second, whose total over any matching is below 0.5, only breaks ties in
        favour of higher IoU, so ``linear_sum_assignment`` finds the largest set of
        one-to-one matches above ``th``. Rows and columns without any pair above ``th`` cannot
        match and are dropped first, which keeps dense images fast.
    """
    ok = iou >= th
    rows, cols = np.flatnonzero(ok.any(axis=1)), np.flatnonzero(ok.any(axis=0))
    if rows.size == 0:
        return 0
    sub = iou[np.ix_(rows, cols)]
    n_min = min(sub.shape)
    costs = -(sub >= th).astype(float) - sub / (2 * n_min)
    true_ind, pred_ind = linear_sum_assignment(costs)
    return int((sub[true_ind, pred_ind] >= th).sum())


def average_precision(
    masks_true: Sequence[InstanceMasks | np.ndarray] | InstanceMasks | np.ndarray,
    masks_pred: Sequence[InstanceMasks | np.ndarray] | InstanceMasks | np.ndarray,
    thresholds: Sequence[float] | float = (0.5, 0.75, 0.9),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cellpose "average precision" AP = TP / (TP + FP + FN) per image and IoU threshold.

    This is also called segmentation accuracy (micro-sam's SA50 / mSA). Matching is one-to-one
    and class-agnostic. Instances are counted as ``np.unique(m[m > 0]).size``. An image with
    no instance in either the truth or the prediction scores AP = 1.0 (nothing to find,
    nothing wrongly found), not 0/0 = NaN as in cellpose.

    Args:
        masks_true: a list of (H, W) ground-truth label images (or InstanceMasks), or one.
        masks_pred: the predictions, same length and shapes as ``masks_true``.
        thresholds: IoU thresholds; a pair matches when its IoU is ``>=`` the threshold.

    Returns:
        ``(ap, tp, fp, fn)``, each float32 of shape (N_images, N_thresholds), or
        (N_thresholds,) when a single image (not in a list) was given, as in cellpose.

    Raises:
        ValueError: the lists differ in length or a pair differs in shape.
    """
    single = isinstance(masks_true, (np.ndarray, InstanceMasks))
    if single:
        masks_true, masks_pred = [masks_true], [masks_pred]
    ths = np.atleast_1d(np.asarray(thresholds, dtype=float))
    if len(masks_true) != len(masks_pred):
        raise ValueError(
            f"average_precision needs as many predictions as truths "
            f"({len(masks_pred)} vs {len(masks_true)})"
        )
    shape = (len(masks_true), ths.size)
    ap, tp, fp, fn = (np.zeros(shape, np.float32) for _ in range(4))
    for n, (mt, mp) in enumerate(zip(masks_true, masks_pred, strict=True)):
        counts = match_image(mt, mp)
        tp[n] = counts.true_positives(ths)
        fp[n] = counts.n_pred - tp[n]
        fn[n] = counts.n_true - tp[n]
        ap[n] = safe_ratio(tp[n], tp[n] + fp[n] + fn[n], tp[n] + fp[n] + fn[n] == 0)
    if single:
        return ap[0], tp[0], fp[0], fn[0]
    return ap, tp, fp, fn


def safe_ratio(num, den, empty) -> np.ndarray:
    """``num / den`` elementwise, where a zero denominator gives 1.0 if ``empty`` else 0.0.

    ``empty`` marks cases with neither ground truth nor prediction (a perfect, trivial result).
    """
    num, den, empty = np.broadcast_arrays(
        np.asarray(num, float), np.asarray(den, float), np.asarray(empty, bool)
    )
    ok = den > 0
    return np.where(ok, num / np.where(ok, den, 1.0), np.where(empty, 1.0, 0.0))


class ImageMatch:
    """IoU of every (true, predicted) instance pair of one image, with the instance classes.

    Attributes:
        iou: (N_true, N_pred) float64 IoU matrix (background removed).
        true_classes: (N_true,) int64 class id of each true instance.
        pred_classes: (N_pred,) int64 class id of each predicted instance.
    """

    def __init__(self, iou: np.ndarray, true_classes: np.ndarray, pred_classes: np.ndarray):
        self.iou = iou
        self.true_classes = true_classes
        self.pred_classes = pred_classes

    @property
    def n_true(self) -> int:
        """Number of ground-truth instances."""
        return int(self.iou.shape[0])

    @property
    def n_pred(self) -> int:
        """Number of predicted instances."""
        return int(self.iou.shape[1])

    def restricted(self, class_id: int) -> ImageMatch:
        """The same image with only the instances of class ``class_id`` on both sides."""
        rows, cols = self.true_classes == class_id, self.pred_classes == class_id
        return ImageMatch(self.iou[np.ix_(rows, cols)], self.true_classes[rows],
                          self.pred_classes[cols])

    def classes(self) -> np.ndarray:
        """Sorted class ids present in the truth or the prediction."""
        return np.union1d(self.true_classes, self.pred_classes)

    def true_positives(self, thresholds: Sequence[float], class_aware: bool = False) -> np.ndarray:
        """(N_thresholds,) int64 TP count at each IoU threshold.

        Args:
            thresholds: IoU thresholds (``>=``).
            class_aware: a match must also share the class (the sum of per-class matchings).
        """
        if class_aware:
            tp = np.zeros(len(thresholds), np.int64)
            for c in self.classes():
                tp += self.restricted(int(c)).true_positives(thresholds)
            return tp
        return np.array([_true_positive(self.iou, t) for t in thresholds], np.int64)


def _instance_classes(masks: InstanceMasks | np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(N,) class id of each of ``ids`` (1 for plain label arrays)."""
    if not isinstance(masks, InstanceMasks) or ids.size == 0:
        return np.ones(ids.size, np.int64)
    lookup = dict(zip(masks.ids.tolist(), masks.class_ids.tolist(), strict=True))
    return np.array([lookup[i] for i in ids.tolist()], np.int64)


def match_image(
    mask_true: InstanceMasks | np.ndarray, mask_pred: InstanceMasks | np.ndarray
) -> ImageMatch:
    """Compute the IoU matrix of one image (ids compacted to 1..N first).

    Args:
        mask_true: (H, W) ground-truth labels or InstanceMasks.
        mask_pred: (H, W) predicted labels or InstanceMasks, same shape.

    Raises:
        ValueError: the two differ in shape.
    """
    lt, ids_t = _compact(_as_labels(mask_true))
    lp, ids_p = _compact(_as_labels(mask_pred))
    iou = _intersection_over_union(lt, lp)[1:, 1:]
    return ImageMatch(iou, _instance_classes(mask_true, ids_t), _instance_classes(mask_pred, ids_p))


def precision_recall_f1(tp, n_true, n_pred) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision TP/(TP+FP), recall TP/(TP+FN) and F1 2TP/(2TP+FP+FN), elementwise.

    With no ground truth and no prediction all three are 1.0; otherwise a 0/0 is 0.0 (e.g.
    the precision of an empty prediction on an image with instances).
    """
    tp = np.asarray(tp, float)
    empty = (np.asarray(n_true) == 0) & (np.asarray(n_pred) == 0)
    precision = safe_ratio(tp, n_pred, empty)
    recall = safe_ratio(tp, n_true, empty)
    f1 = safe_ratio(2 * tp, np.asarray(n_true) + np.asarray(n_pred), empty)
    return precision, recall, f1


def semantic_counts(
    mask_true: InstanceMasks | np.ndarray,
    mask_pred: InstanceMasks | np.ndarray,
    class_aware: bool = False,
) -> dict[int, tuple[int, int]]:
    """Pixel intersection and union of each semantic class (0 = background).

    Args:
        mask_true: (H, W) ground-truth labels or InstanceMasks.
        mask_pred: (H, W) predicted labels or InstanceMasks.
        class_aware: False: two classes, background 0 and foreground 1 (any instance).
            True: background plus every class id present in either image.

    Returns:
        class id -> (intersection, union) in pixels; background is always included.
    """
    st, sp = _semantic(mask_true, class_aware), _semantic(mask_pred, class_aware)
    if st.shape != sp.shape:
        raise ValueError(f"label images differ in shape: {st.shape} vs {sp.shape}")
    overlap = _label_overlap(st, sp)
    n = max(overlap.shape)
    overlap = np.pad(overlap, ((0, n - overlap.shape[0]), (0, n - overlap.shape[1])))
    area_t, area_p, inter = overlap.sum(axis=1), overlap.sum(axis=0), np.diag(overlap)
    union = area_t + area_p - inter
    return {c: (int(inter[c]), int(union[c])) for c in range(n) if c == 0 or union[c] > 0}


def _semantic(masks: InstanceMasks | np.ndarray, class_aware: bool) -> np.ndarray:
    """(H, W) int64 semantic map: 0 background, else 1 (agnostic) or the class id."""
    labels = _as_labels(masks)
    if not class_aware:
        return (labels > 0).astype(np.int64)
    if not isinstance(masks, InstanceMasks) or len(masks) == 0:
        return (labels > 0).astype(np.int64)
    lut = np.zeros(int(max(labels.max(initial=0), masks.ids.max())) + 1, np.int64)
    lut[masks.ids] = masks.class_ids
    return lut[labels]


def dice(mask_true: InstanceMasks | np.ndarray, mask_pred: InstanceMasks | np.ndarray) -> float:
    """Foreground Dice (DSC) 2|T∩P| / (|T| + |P|) of the binary masks (label > 0).

    1.0 when both images have no foreground.
    """
    inter, union = semantic_counts(mask_true, mask_pred).get(1, (0, 0))
    return float(safe_ratio(2 * inter, union + inter, union == 0))


def mean_iou(
    mask_true: InstanceMasks | np.ndarray,
    mask_pred: InstanceMasks | np.ndarray,
    class_aware: bool = False,
) -> float:
    """Mean over semantic classes (background included) of the pixel IoU.

    Class-agnostic: the mean of background IoU and foreground IoU. A class whose union is
    empty (e.g. background when both images are all foreground) scores 1.0.
    """
    counts = semantic_counts(mask_true, mask_pred, class_aware)
    return float(np.mean([safe_ratio(i, u, u == 0) for i, u in counts.values()]))
