"""Tests for zeusseg.training.targets (dense foreground / centre / boundary targets)."""

import numpy as np
from skimage.draw import disk

from zeusseg.training.targets import inner_boundaries, make_targets


def _two_touching_disks() -> np.ndarray:
    labels = np.zeros((64, 96), np.int32)
    labels[disk((32, 30), 12)] = 3
    labels[disk((32, 54), 12)] = 9  # touches the first disk (centres 24 px apart)
    return labels


def test_targets_shape_range_and_background():
    labels = _two_touching_disks()
    t = make_targets(labels)
    assert t.shape == (3, 64, 96) and t.dtype == np.float32
    assert t.min() >= 0.0 and t.max() <= 1.0
    np.testing.assert_array_equal(t[0], (labels > 0).astype(np.float32))
    assert np.all(t[1:, labels == 0] == 0)


def test_targets_peak_at_centres_and_low_at_contact():
    t = make_targets(_two_touching_disks())
    for cx in (30, 54):
        assert t[1, 32, cx] == 1.0  # centroid of a disk
        assert t[2, 32, cx] == 1.0  # most interior pixel
    # the pixels where the two disks touch are boundary pixels of both
    assert t[2, 32, 42] < 0.1 and t[2, 32, 41] < 0.1
    assert t[1, 32, 42] < 0.1
    # per-instance normalisation: each instance reaches 1 in both distance channels
    labels = _two_touching_disks()
    for i in (3, 9):
        assert t[1][labels == i].max() == 1.0 and t[2][labels == i].max() == 1.0


def test_targets_of_class_subset_equal_masked_full_targets():
    labels = _two_touching_disks()
    full = make_targets(labels)
    only_one = make_targets(np.where(labels == 3, labels, 0))
    np.testing.assert_allclose(only_one, full * (labels == 3), atol=1e-6)


def test_nonconvex_centre_moves_inside_object():
    labels = np.zeros((40, 40), np.int32)
    labels[5:35, 5:10] = 1  # an L shape whose centroid lies outside it
    labels[30:35, 5:35] = 1
    t = make_targets(labels)
    assert t[1].max() == 1.0
    y, x = np.unravel_index(np.argmax(t[1]), t[1].shape)
    assert labels[y, x] == 1


def test_empty_and_full_labels():
    assert not make_targets(np.zeros((8, 9), np.int32)).any()
    t = make_targets(np.ones((8, 9), np.int32))
    assert np.all(t[0] == 1) and np.all(t[2] == 1) and t[1].max() > 0.9


def test_inner_boundaries_ignore_image_edge():
    labels = np.zeros((6, 6), np.int32)
    labels[:, :3] = 1
    b = inner_boundaries(labels)
    assert b[:, 2].all() and not b[:, :2].any() and not b[:, 3:].any()


def test_boundary_distance_matches_whole_image_transform():
    from scipy import ndimage

    from zeusseg.training.targets import boundary_distance

    rng = np.random.default_rng(0)
    labels = np.zeros((120, 140), np.int32)
    for i in range(25):
        centre, radius = tuple(rng.integers(0, 140, 2)), int(rng.integers(3, 15))
        labels[disk(centre, radius, shape=labels.shape)] = i + 1
    reference = ndimage.distance_transform_edt(~inner_boundaries(labels)) + 1.0
    reference[labels == 0] = 0
    np.testing.assert_allclose(boundary_distance(labels), reference, atol=1e-5)
