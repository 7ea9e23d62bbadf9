"""Hand-computed cases for zeusseg.metrics (cellpose-style matching, F1, Dice, mIoU)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from zeusseg import metrics
from zeusseg.metrics import (
    IOU_THRESHOLDS,
    _intersection_over_union,
    _label_overlap,
    _true_positive,
    average_precision,
    dice,
    match_image,
    mean_iou,
    precision_recall_f1,
    semantic_counts,
)
from zeusseg.structures import InstanceMasks


def disks(shape=(96, 96), centres=((24, 24), (24, 70), (70, 48)), radius=10) -> np.ndarray:
    """(H, W) int32 labels with one disk per centre, labelled 1..N."""
    labels = np.zeros(shape, np.int32)
    for k, c in enumerate(centres, start=1):
        labels[disk(c, radius, shape=shape)] = k
    return labels


def rect(shape, *boxes) -> np.ndarray:
    """Label image with one rectangle (y0, y1, x0, x1) per box, labelled 1..N."""
    labels = np.zeros(shape, np.int32)
    for k, (y0, y1, x0, x1) in enumerate(boxes, start=1):
        labels[y0:y1, x0:x1] = k
    return labels


def test_label_overlap_matches_brute_force():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, (20, 30)), rng.integers(0, 7, (20, 30))
    ov = _label_overlap(x, y)
    assert ov.shape == (x.max() + 1, y.max() + 1)
    for i in range(ov.shape[0]):
        for j in range(ov.shape[1]):
            assert ov[i, j] == np.sum((x == i) & (y == j))
    iou = _intersection_over_union(x, y)
    i, j = 3, 4
    inter, union = np.sum((x == i) & (y == j)), np.sum((x == i) | (y == j))
    assert iou[i, j] == pytest.approx(inter / union)


def test_perfect_prediction():
    gt = disks()
    ap, tp, fp, fn = average_precision(gt, gt.copy(), IOU_THRESHOLDS)
    np.testing.assert_array_equal(ap, 1.0)
    np.testing.assert_array_equal(tp, 3)
    np.testing.assert_array_equal(fp + fn, 0)
    assert dice(gt, gt) == 1.0 and mean_iou(gt, gt) == 1.0


def test_empty_prediction_and_empty_truth():
    gt, empty = disks(), np.zeros((96, 96), np.int32)
    ap, tp, fp, fn = average_precision([gt, empty], [empty, gt])
    assert ap.shape == (2, 3)
    np.testing.assert_array_equal(ap, 0.0)
    np.testing.assert_array_equal(fn[0], 3)
    np.testing.assert_array_equal(fp[1], 3)
    p, r, f1 = precision_recall_f1(0, 3, 0)  # empty prediction on 3 objects
    assert (p, r, f1) == (0.0, 0.0, 0.0)
    p, r, f1 = precision_recall_f1(0, 0, 3)  # 3 objects predicted on an empty image
    assert (p, r, f1) == (0.0, 0.0, 0.0)
    assert dice(gt, empty) == 0.0


def test_both_empty_scores_one():
    empty = np.zeros((32, 32), np.int32)
    ap, tp, fp, fn = average_precision(empty, empty)
    np.testing.assert_array_equal(ap, 1.0)
    assert tp.sum() == fp.sum() == fn.sum() == 0
    assert precision_recall_f1(0, 0, 0) == (1.0, 1.0, 1.0)
    assert dice(empty, empty) == 1.0 and mean_iou(empty, empty) == 1.0


def test_one_split_object():
    # GT 10x20 box; prediction splits it 12 | 8 columns: IoU 0.6 and 0.4
    gt = rect((32, 32), (5, 15, 5, 25))
    pred = rect((32, 32), (5, 15, 5, 17), (5, 15, 17, 25))
    iou = match_image(gt, pred).iou
    np.testing.assert_allclose(iou, [[0.6, 0.4]])
    ap, tp, fp, fn = average_precision(gt, pred, (0.4, 0.5, 0.6, 0.75))
    np.testing.assert_array_equal(tp, [1, 1, 1, 0])
    np.testing.assert_array_equal(fp, [1, 1, 1, 2])
    np.testing.assert_array_equal(fn, [0, 0, 0, 1])
    np.testing.assert_allclose(ap, [0.5, 0.5, 0.5, 0.0])
    assert dice(gt, pred) == 1.0  # the union of the pieces covers the object exactly


def test_one_merged_object():
    # two touching 10x10 GT boxes, one 10x20 prediction over both: IoU 0.5 with each
    gt = rect((32, 32), (5, 15, 5, 15), (5, 15, 15, 25))
    pred = rect((32, 32), (5, 15, 5, 25))
    ap, tp, fp, fn = average_precision(gt, pred, (0.5, 0.51))
    np.testing.assert_array_equal(tp, [1, 0])  # IoU >= 0.5 matches (inclusive)
    np.testing.assert_array_equal(fn, [1, 2])
    np.testing.assert_array_equal(fp, [0, 1])
    np.testing.assert_allclose(ap, [0.5, 0.0])


def test_one_shifted_object():
    # 10x10 square shifted by 2 px: intersection 80, union 120, IoU 2/3
    gt = rect((32, 32), (5, 15, 5, 15))
    pred = rect((32, 32), (5, 15, 7, 17))
    assert match_image(gt, pred).iou[0, 0] == pytest.approx(2 / 3)
    ap, *_ = average_precision(gt, pred, (0.5, 0.65, 0.7))
    np.testing.assert_allclose(ap, [1.0, 1.0, 0.0])
    assert dice(gt, pred) == pytest.approx(160 / 200)
    assert semantic_counts(gt, pred) == {0: (1024 - 120, 1024 - 80), 1: (80, 120)}
    assert mean_iou(gt, pred) == pytest.approx((904 / 944 + 80 / 120) / 2)


def test_hungarian_beats_greedy():
    # greedy (best IoU first) pairs true 0 with pred 0 and leaves pred 1 alone;
    # the optimal one-to-one matching gets two pairs above 0.2
    iou = np.array([[0.6, 0.25], [0.3, 0.0]])
    assert _true_positive(iou, 0.2) == 2
    assert _true_positive(iou, 0.5) == 1
    assert _true_positive(np.zeros((0, 3)), 0.5) == 0


def test_ids_need_not_be_consecutive_and_instances_accepted():
    gt = disks()
    sparse = np.where(gt > 0, gt * 1000 + 7, 0).astype(np.int32)
    ap, tp, fp, fn = average_precision([gt], [sparse])
    np.testing.assert_array_equal(ap, 1.0)
    ap2, *_ = average_precision([InstanceMasks(labels=gt)], [InstanceMasks(labels=sparse)])
    np.testing.assert_array_equal(ap2, 1.0)


def test_average_precision_checks_input():
    with pytest.raises(ValueError, match="as many"):
        average_precision([disks()], [])
    with pytest.raises(ValueError, match="shape"):
        average_precision(disks(), disks(shape=(50, 50)))
    with pytest.raises(ValueError, match="integers"):
        average_precision(disks().astype(float), disks())


def test_class_aware_matching():
    gt_labels = disks()
    gt = InstanceMasks(labels=gt_labels, class_ids=np.array([1, 1, 2]))
    pred = InstanceMasks(labels=gt_labels, class_ids=np.array([1, 2, 2]))  # object 2 wrong class
    m = match_image(gt, pred)
    assert m.true_positives([0.5]).tolist() == [3]
    assert m.true_positives([0.5], class_aware=True).tolist() == [2]
    assert m.restricted(1).n_true == 2 and m.restricted(1).n_pred == 1
    assert m.restricted(2).true_positives([0.5]).tolist() == [1]
    # class-aware semantic IoU: class 1 inter = 1 disk, union = 2 disks
    counts = semantic_counts(gt, pred, class_aware=True)
    area = int((gt_labels == 1).sum())
    assert counts[1] == (area, 2 * area) and counts[2] == (area, 2 * area)
    assert mean_iou(gt, pred, class_aware=True) < 1.0 == mean_iou(gt, pred)


def test_threshold_grid():
    assert IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    assert metrics.safe_ratio(0, 0, True) == 1.0 and metrics.safe_ratio(0, 0, False) == 0.0
