import numpy as np
import pytest

from zeusseg.structures import InstanceMasks, MicroscopyImage


def test_instance_masks_defaults(disks_labels):
    m = InstanceMasks(labels=disks_labels)
    assert len(m) == 5
    assert m.ids.tolist() == [1, 2, 3, 4, 5]
    assert m.class_ids.tolist() == [1] * 5
    assert np.allclose(m.scores, 1.0)
    assert m.masks().shape == (5, 128, 128)
    assert m.areas().tolist() == [int((disks_labels == i).sum()) for i in range(1, 6)]


def test_boxes_are_xywh_from_masks():
    labels = np.zeros((20, 30), np.int32)
    labels[2:7, 10:14] = 3
    m = InstanceMasks(labels=labels)
    assert m.ids.tolist() == [3]
    assert m.boxes().tolist() == [[10.0, 2.0, 4.0, 5.0]]


def test_from_masks_higher_score_wins_and_empty_dropped():
    a = np.zeros((10, 10), bool)
    a[0:6, 0:6] = True
    b = np.zeros((10, 10), bool)
    b[3:9, 3:9] = True
    c = np.zeros((10, 10), bool)
    c[4:5, 4:5] = True  # fully covered by b, lower score -> dropped
    m = InstanceMasks.from_masks(np.stack([a, b, c]), class_ids=[1, 2, 2], scores=[0.5, 0.9, 0.1])
    assert len(m) == 2
    assert m.scores.tolist() == pytest.approx([0.5, 0.9])
    assert m.class_ids.tolist() == [1, 2]
    assert m.labels[4, 4] == 2 and m.labels[0, 0] == 1


def test_mismatched_lengths_raise():
    labels = np.zeros((5, 5), np.int32)
    labels[1, 1] = 1
    with pytest.raises(ValueError, match="class ids"):
        InstanceMasks(labels=labels, ids=np.array([1]), class_ids=np.array([1, 2]))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        InstanceMasks(labels=np.zeros((2, 2, 2)))


def test_relabelled():
    labels = np.zeros((5, 5), np.int32)
    labels[0, 0] = 7
    labels[4, 4] = 3
    m = InstanceMasks(labels=labels, class_ids=np.array([2, 5]), scores=np.array([0.1, 0.2]))
    r = m.relabelled()
    assert r.ids.tolist() == [1, 2]
    assert r.labels[4, 4] == 1 and r.labels[0, 0] == 2
    assert r.class_ids.tolist() == [2, 5]


def test_grey_of_rgb():
    img = MicroscopyImage(data=np.ones((4, 4, 3), np.float32) * [1, 0, 0])
    assert img.shape == (4, 4)
    assert np.allclose(img.grey(), 0.299)
