import numpy as np

from zeusseg.classical import ClassicalParams, detect_polarity, segment_classical
from zeusseg.structures import MicroscopyImage


def _iou_matches(gt, pred, thr=0.5):
    from scipy.optimize import linear_sum_assignment

    ov = np.zeros((gt.max() + 1, pred.max() + 1))
    np.add.at(ov, (gt.ravel(), pred.ravel()), 1)
    iou = ov / (ov.sum(1, keepdims=True) + ov.sum(0, keepdims=True) - ov)
    r, c = linear_sum_assignment(-iou[1:, 1:])
    return int((iou[1:, 1:][r, c] >= thr).sum())


def test_bright_disks_found_and_touching_split(disks_labels, disks_image):
    img = MicroscopyImage(data=disks_image.astype(np.float32) / 255)
    m = segment_classical(img, ClassicalParams(min_size=50, background_sigma=0), class_name="nuc")
    assert len(m) == 5
    assert _iou_matches(disks_labels, m.labels) == 5
    assert m.class_names == {1: "nuc"}
    assert np.all((m.scores > 0) & (m.scores <= 1))


def test_dark_objects_auto_polarity(disks_labels, disks_image):
    img = MicroscopyImage(data=1 - disks_image.astype(np.float32) / 255)
    m = segment_classical(img, ClassicalParams(min_size=50, background_sigma=0))
    assert _iou_matches(disks_labels, m.labels) == 5


def test_polarity_rule():
    x = np.zeros((10, 10))
    x[:2] = 1  # 20 % bright
    assert detect_polarity(x, 0.5) == "bright"
    assert detect_polarity(1 - x, 0.5) == "dark"


def test_blank_image_gives_nothing():
    m = segment_classical(MicroscopyImage(data=np.full((64, 64), 0.5, np.float32)))
    assert len(m) == 0 and m.labels.shape == (64, 64)


def test_size_filter(disks_image):
    img = MicroscopyImage(data=disks_image.astype(np.float32) / 255)
    m = segment_classical(img, ClassicalParams(min_size=400, background_sigma=0))
    assert len(m) == 3  # radii 12, 12, 15 survive (areas > 400); radii 8, 10 do not
    assert np.all(m.areas() >= 400)


def test_large_image_is_downscaled_and_restored(disks_labels, disks_image):
    big = np.kron(disks_image, np.ones((12, 12), np.uint8))  # 1536 x 1536
    img = MicroscopyImage(data=big.astype(np.float32) / 255)
    m = segment_classical(img, ClassicalParams(min_size=50 * 144, background_sigma=0))
    assert m.labels.shape == big.shape
    assert _iou_matches(np.kron(disks_labels, np.ones((12, 12), np.int32)), m.labels) == 5
