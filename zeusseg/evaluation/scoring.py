"""Per-image match counts and the scores derived from them (one image, or pooled over images).

Every score is a function of a ``Counts`` record, so the same code gives the per-image value
and the pooled value (counts summed over images first). Definitions: ``docs/metrics.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from zeusseg.metrics import (
    IOU_THRESHOLDS,
    ImageMatch,
    precision_recall_f1,
    safe_ratio,
    semantic_counts,
)
from zeusseg.structures import InstanceMasks

AGNOSTIC, CLASS_AWARE, PER_CLASS = "agnostic", "class-aware", "class"
PRF_THRESHOLDS = (0.5, 0.8)
"""IoU thresholds of the precision / recall / F1 columns (ViruSeg / VISN convention)."""


@dataclass
class Counts:
    """What one image (or a pool of images) contributes to the scores of one scope.

    Attributes:
        n_true: ground-truth instances.
        n_pred: predicted instances.
        tp: (N_thresholds,) true positives at each threshold of ``all_thresholds``.
        fg: (intersection, union) of the foreground pixels (class-aware: same-class pixels).
        sem: semantic class -> (intersection, union) in pixels, background (0) included.
    """

    n_true: int
    n_pred: int
    tp: np.ndarray
    fg: tuple[int, int] = (0, 0)
    sem: dict[int, tuple[int, int]] = field(default_factory=dict)

    def __add__(self, other: Counts) -> Counts:
        sem = dict(self.sem)
        for k, (i, u) in other.sem.items():
            si, su = sem.get(k, (0, 0))
            sem[k] = (si + i, su + u)
        return Counts(
            self.n_true + other.n_true,
            self.n_pred + other.n_pred,
            self.tp + other.tp,
            (self.fg[0] + other.fg[0], self.fg[1] + other.fg[1]),
            sem,
        )


def all_thresholds(report: Sequence[float]) -> tuple[float, ...]:
    """Sorted union of 0.50:0.05:0.95, the F1 thresholds and the reported ``report`` ones."""
    return tuple(sorted({round(float(t), 4) for t in (*IOU_THRESHOLDS, *PRF_THRESHOLDS, *report)}))


def _binary_sem(inter: int, union: int, n_pixels: int) -> dict[int, tuple[int, int]]:
    """Background/foreground (intersection, union) of a binary problem."""
    return {0: (n_pixels - union, n_pixels - inter), 1: (inter, union)}


def image_counts(
    gt: InstanceMasks,
    pred: InstanceMasks,
    match: ImageMatch,
    thresholds: Sequence[float],
    per_class: bool,
) -> dict[tuple[str, int], Counts]:
    """Counts of one image for each scope.

    Args:
        gt: ground truth of the image.
        pred: prediction of the image, same (H, W).
        match: ``zeusseg.metrics.match_image(gt, pred)``.
        thresholds: IoU thresholds of ``Counts.tp``.
        per_class: also the class-aware scope and one scope per class present in either.

    Returns:
        ``(scope, class_id) -> Counts``: ``(AGNOSTIC, 0)``, and with ``per_class``
        ``(CLASS_AWARE, 0)`` and ``(PER_CLASS, c)`` for each class ``c`` in gt or pred.
    """
    n_pixels = int(np.prod(gt.shape))
    inter, union = semantic_counts(gt, pred).get(1, (0, 0))
    out = {
        (AGNOSTIC, 0): Counts(match.n_true, match.n_pred, match.true_positives(thresholds),
                              (inter, union), _binary_sem(inter, union, n_pixels))
    }
    if not per_class:
        return out
    sem = semantic_counts(gt, pred, class_aware=True)
    aware = Counts(match.n_true, match.n_pred, np.zeros(len(thresholds), np.int64), (0, 0), sem)
    for c in match.classes():
        sub = match.restricted(int(c))
        ci, cu = sem.get(int(c), (0, 0))
        counts = Counts(sub.n_true, sub.n_pred, sub.true_positives(thresholds), (ci, cu),
                        _binary_sem(ci, cu, n_pixels))
        out[(PER_CLASS, int(c))] = counts
        aware.tp = aware.tp + counts.tp
        aware.fg = (aware.fg[0] + ci, aware.fg[1] + cu)
    out[(CLASS_AWARE, 0)] = aware
    return out


def threshold_name(t: float) -> str:
    """Column suffix of an IoU threshold: 0.5 -> ``50``, 0.75 -> ``75``, 0.825 -> ``82.5``."""
    return f"{round(t * 100, 2):g}"


def scores(
    counts: Counts, thresholds: Sequence[float], report: Sequence[float]
) -> dict[str, float]:
    """Every per-image/pooled score of one ``Counts`` record.

    Args:
        counts: one image's (or the summed) counts.
        thresholds: the thresholds of ``counts.tp`` (``all_thresholds(report)``).
        report: thresholds that get an ``ap<t>`` column.

    Returns:
        ``ap<t>`` for each reported t, ``ap_mean`` (0.50:0.05:0.95), ``precision<t>``,
        ``recall<t>``, ``f1_<t>`` for t in 0.5 and 0.8, ``dice`` and ``miou``.
    """
    ths = np.asarray(thresholds)
    tp = counts.tp.astype(float)
    empty = counts.n_true == 0 and counts.n_pred == 0
    ap = safe_ratio(tp, counts.n_true + counts.n_pred - tp, empty)

    def at(t: float) -> int:
        return int(np.flatnonzero(np.isclose(ths, t))[0])

    out = {f"ap{threshold_name(t)}": float(ap[at(t)]) for t in report}
    out["ap_mean"] = float(np.mean([ap[at(t)] for t in IOU_THRESHOLDS]))
    for t in PRF_THRESHOLDS:
        p, r, f1 = precision_recall_f1(tp[at(t)], counts.n_true, counts.n_pred)
        name = threshold_name(t)
        out[f"precision{name}"], out[f"recall{name}"], out[f"f1_{name}"] = (
            float(p), float(r), float(f1))
    inter, union = counts.fg
    out["dice"] = float(safe_ratio(2 * inter, union + inter, union == 0))
    out["miou"] = float(np.mean([safe_ratio(i, u, u == 0) for i, u in counts.sem.values()]))
    return out


def count_columns(counts: Counts, thresholds: Sequence[float]) -> dict[str, int]:
    """``n_true``, ``n_pred`` and ``tp50``/``fp50``/``fn50`` of one record."""
    tp = int(counts.tp[int(np.flatnonzero(np.isclose(np.asarray(thresholds), 0.5))[0])])
    return {"n_true": counts.n_true, "n_pred": counts.n_pred, "tp50": tp,
            "fp50": counts.n_pred - tp, "fn50": counts.n_true - tp}
