"""Precision-recall curve of scored instance predictions over a set of images (numpy only).

Matching follows COCO: within each image, predictions are taken in descending score order and
each one matches the still-unmatched ground-truth instance of highest IoU at or above the
threshold (``zeusseg.metrics.match_image`` gives the IoU matrix). All predictions of all
images are then ranked by score to trace the curve; AP is COCO's 101-point interpolated area.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from zeusseg.metrics import match_image
from zeusseg.structures import InstanceMasks

RECALL_POINTS = np.linspace(0.0, 1.0, 101)


@dataclass
class PRCurve:
    """Precision at each rank of the score-sorted predictions.

    Attributes:
        recall: (N_pred,) recall after the k best-scored predictions.
        precision: (N_pred,) precision after the k best-scored predictions.
        scores: (N_pred,) the scores, descending.
        ap: 101-point interpolated average precision (NaN without ground truth).
        n_true: ground-truth instances in all images.
    """

    recall: np.ndarray
    precision: np.ndarray
    scores: np.ndarray
    ap: float
    n_true: int


def _image_hits(gt: InstanceMasks, pred: InstanceMasks, iou_thresh: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """(scores, is-true-positive) of the predictions of one image."""
    match = match_image(gt, pred)
    present = np.unique(pred.labels[pred.labels > 0])  # column order of match.iou
    lookup = dict(zip(pred.ids.tolist(), pred.scores.tolist(), strict=True))
    scores = np.array([lookup[i] for i in present.tolist()], np.float64)
    hits = np.zeros(present.size, bool)
    free = np.ones(match.n_true, bool)
    for j in np.argsort(-scores, kind="stable"):
        if not free.any():
            break
        ious = np.where(free, match.iou[:, j], -1.0)
        i = int(np.argmax(ious))
        if ious[i] >= iou_thresh:
            hits[j], free[i] = True, False
    return scores, hits


def pr_curve(gts: Sequence[InstanceMasks], preds: Sequence[InstanceMasks],
             iou_thresh: float = 0.5) -> PRCurve:
    """Class-agnostic precision-recall curve at one IoU threshold.

    Args:
        gts: ground truth per image.
        preds: predictions per image (same order and shapes), with scores.
        iou_thresh: IoU needed for a true positive.

    Raises:
        ValueError: the two lists differ in length.
    """
    if len(gts) != len(preds):
        raise ValueError(f"{len(gts)} ground truths but {len(preds)} predictions")
    all_scores, all_hits = [np.zeros(0)], [np.zeros(0, bool)]
    n_true = 0
    for g, p in zip(gts, preds, strict=True):
        s, h = _image_hits(g, p, iou_thresh)
        all_scores.append(s)
        all_hits.append(h)
        n_true += len(g)
    scores, hits = np.concatenate(all_scores), np.concatenate(all_hits)
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], hits[order]
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, hits.size + 1)
    recall = tp / n_true if n_true else np.zeros(hits.size)
    if n_true == 0:
        ap = float("nan")
    else:
        envelope = np.maximum.accumulate(precision[::-1])[::-1] if precision.size else precision
        idx = np.searchsorted(recall, RECALL_POINTS, side="left")
        ap = float(np.mean([envelope[i] if i < envelope.size else 0.0 for i in idx]))
    return PRCurve(recall=recall, precision=precision, scores=scores, ap=ap, n_true=n_true)
