"""Point/box prompts (ZeusPredictor.predict_prompts) and click editing (inference.interactive)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from zeusseg.inference.instance_segmentation import decode_instances
from zeusseg.inference.interactive import add_instance_at, prepare_predictor, remove_instance_at
from zeusseg.predictor import ZeusPredictor
from zeusseg.structures import InstanceMasks

from .zeus_fakes import FakeZeus, fake_embedder, prompt_scene

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
TEXT = "particles"


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _centre(mask: np.ndarray) -> tuple[int, int]:
    """(X, Y) of the most interior pixel of a mask."""
    r, c = np.unravel_index(np.argmax(ndimage.distance_transform_edt(mask)), mask.shape)
    return int(c), int(r)


def _box(mask: np.ndarray) -> np.ndarray:
    rows, cols = ndimage.find_objects(mask.astype(np.int32))[0]
    return np.array([cols.start, rows.start, cols.stop - 1, rows.stop - 1], np.float64)


@pytest.fixture
def scene():
    image, labels = prompt_scene()
    pred = ZeusPredictor(FakeZeus(), embedder=fake_embedder())
    pred.set_image(image)
    return pred, image, labels


def _point(pred, xy, label=1, **kw):
    return pred.predict_prompts(TEXT, np.array([xy], np.float64), np.array([label]), **kw)


def test_sam_shapes_and_dtypes(scene):
    pred, _, labels = scene
    masks, scores, soft = _point(pred, _centre(labels == 1))
    assert masks.shape == (1, 128, 128) and masks.dtype == bool
    assert scores.shape == (1,) and scores.dtype == np.float32 and 0 < scores[0] <= 1
    assert soft.shape == (1, 128, 128) and soft.dtype == np.float32
    assert np.all(soft[~masks] == 0) and soft[masks].min() > 0
    masks3, scores3, soft3 = _point(pred, _centre(labels == 1), multimask_output=True)
    assert masks3.shape == (3, 128, 128) and scores3.shape == (3,) and soft3.shape == (3, 128, 128)
    # candidates go from the strictest to the loosest local threshold
    sizes = masks3.reshape(3, -1).sum(1)
    assert sizes[0] <= sizes[1] <= sizes[2]


def test_predict_prompts_before_set_image_raises():
    pred = ZeusPredictor(FakeZeus(), embedder=fake_embedder())
    with pytest.raises(RuntimeError, match="set_image"):
        pred.predict_prompts(TEXT, np.array([[5.0, 5.0]]), np.array([1]))


@pytest.mark.parametrize(
    ("coords", "labels", "box", "match"),
    [
        (None, None, None, "point_coords"),
        ([[5.0, 5.0]], None, None, "point_labels must be supplied"),
        ([[5.0, 5.0]], [2], None, "1 \\(foreground\\) or 0"),
        ([[5.0, 5.0]], [1, 0], None, "1 points but 2"),
        ([5.0, 5.0], [1], None, "\\(N, 2\\)"),
        ([[500.0, 5.0]], [1], None, "outside the 128x128"),
        (None, None, [10, 10, 5, 20], "X0 <= X1"),
        (None, None, [10, 10, 20], "4 finite numbers"),
        (None, None, [300, 300, 400, 400], "outside"),
    ],
)
def test_bad_prompts_raise_value_error(scene, coords, labels, box, match):
    pred = scene[0]
    coords = None if coords is None else np.array(coords, np.float64)
    labels = None if labels is None else np.array(labels)
    with pytest.raises(ValueError, match=match):
        pred.predict_prompts(TEXT, coords, labels, box)


def test_click_selects_the_object_and_off_centre_click_does_not_split(scene):
    pred, _, labels = scene
    disk1 = labels == 1
    masks, _, _ = _point(pred, _centre(disk1))
    assert _iou(masks[0], disk1) > 0.9
    off_centre, _, _ = _point(pred, (36.0, 32.0))  # 6 px right of the centre, radius 10
    assert _iou(off_centre[0], disk1) > 0.9


def test_click_recovers_a_faint_object_the_automatic_decoding_misses(scene):
    pred, _, labels = scene
    faint = labels == 3
    auto, _ = decode_instances(pred.prompt_maps(TEXT).probs)
    assert not (auto[faint] > 0).any()  # the automatic run misses it
    masks, scores, _ = _point(pred, _centre(faint))
    assert _iou(masks[0], faint) > 0.8
    assert not (masks[0] & (labels != 3) & (labels > 0)).any()
    assert 0 < scores[0] < 0.5  # faint evidence scores low


def test_click_on_empty_background_selects_nothing(scene):
    pred = scene[0]
    masks, scores, _ = _point(pred, (120.0, 5.0))
    assert not masks.any() and scores[0] == 0


def test_negative_points_remove_regions(scene):
    pred, _, labels = scene
    c1, c2 = _centre(labels == 1), _centre(labels == 2)
    both, _, _ = pred.predict_prompts(TEXT, np.array([c1, c2], float), np.array([1, 1]))
    assert _iou(both[0], (labels == 1) | (labels == 2)) > 0.9
    one, _, _ = pred.predict_prompts(TEXT, np.array([c1, c2], float), np.array([1, 0]))
    assert _iou(one[0], labels == 1) > 0.9 and not (one[0] & (labels == 2)).any()
    none, _, _ = pred.predict_prompts(TEXT, np.array([c1, c1], float), np.array([1, 0]))
    assert not none.any()
    # a box over two objects with a negative point on one keeps the other
    box = _box((labels == 1) | (labels == 2))
    kept, _, _ = pred.predict_prompts(TEXT, np.array([c1], float), np.array([0]), box)
    assert _iou(kept[0], labels == 2) > 0.9


def test_box_yields_one_mask(scene):
    pred, _, labels = scene
    for k, floor in [(4, 0.9), (3, 0.8)]:  # a bright object, the faint one
        masks, scores, _ = pred.predict_prompts(TEXT, box=_box(labels == k))
        assert masks.shape == (1, 128, 128)
        assert _iou(masks[0], labels == k) > floor
    # a point with a box is clipped to the box
    half = _box(labels == 4)
    half[2] = 95
    clipped, _, _ = pred.predict_prompts(TEXT, np.array([[90.0, 90.0]]), np.array([1]), half)
    assert clipped[0].any() and not clipped[0][:, 96:].any()


def test_prompt_maps_are_cached_per_text_and_image(scene, monkeypatch):
    pred, image, _ = scene
    calls = []
    original = pred.predict
    monkeypatch.setattr(pred, "predict", lambda texts: calls.append(texts) or original(texts))
    _point(pred, (30.0, 30.0))
    pred.predict_prompts(TEXT, box=np.array([70.0, 70.0, 110.0, 110.0]))
    pred.predict_prompts("other", box=np.array([70.0, 70.0, 110.0, 110.0]))
    assert calls == [TEXT, "other"]
    pred.set_image(image)
    _point(pred, (30.0, 30.0))
    assert calls == [TEXT, "other", TEXT]


def test_add_and_remove_on_a_label_image(scene):
    pred, _, labels = scene
    auto, _ = decode_instances(pred.prompt_maps(TEXT).probs)
    before = auto.copy()
    added = add_instance_at(auto, pred, TEXT, point=_centre(labels == 3))
    np.testing.assert_array_equal(auto, before)  # input unchanged
    assert added.dtype == auto.dtype and added.max() == auto.max() + 1
    assert _iou(added == added.max(), labels == 3) > 0.8
    np.testing.assert_array_equal(added[auto > 0], auto[auto > 0])  # others untouched
    # a click on an existing instance adds nothing
    same = add_instance_at(added, pred, TEXT, point=_centre(labels == 1))
    np.testing.assert_array_equal(same, added)
    removed = remove_instance_at(added, _centre(labels == 1))
    assert not (removed[labels == 1]).any()
    np.testing.assert_array_equal(removed[labels != 1], added[labels != 1])
    np.testing.assert_array_equal(remove_instance_at(removed, (120, 5)), removed)
    readded = add_instance_at(removed, pred, TEXT, box=_box(labels == 1))
    assert _iou(readded == readded.max(), labels == 1) > 0.9
    with pytest.raises(ValueError, match="point or a box"):
        add_instance_at(auto, pred, TEXT)
    with pytest.raises(ValueError, match="outside"):
        remove_instance_at(auto, (-3, 5))


def test_add_and_remove_on_instance_masks(scene):
    pred, _, labels = scene
    gt = InstanceMasks(labels=np.where(labels == 3, 0, labels), class_names={1: "nuclei"})
    added = add_instance_at(gt, pred, TEXT, point=_centre(labels == 3))
    assert isinstance(added, InstanceMasks) and len(added) == 4
    assert added.class_names == {1: "nuclei", 2: TEXT}
    assert added.class_ids.tolist() == [1, 1, 1, 2]
    assert added.scores[-1] < 1 and added.ids[-1] == 5
    again = add_instance_at(added, pred, TEXT, box=_box(labels == 3), overwrite=True)
    assert again.class_ids.tolist() == [1, 1, 1, 2]  # same text, same class; old one replaced
    removed = remove_instance_at(added, _centre(labels == 1))
    assert len(removed) == 3 and 1 not in removed.ids.tolist()


def test_labels_at_another_scale_than_the_predictor(scene):
    pred, image, labels = scene
    big = np.kron(labels, np.ones((2, 2), np.int32))  # labels at twice the predictor size
    empty = np.where(big == 3, 0, big)
    added = add_instance_at(empty, pred, TEXT, point=_centre(big == 3))
    assert _iou(added == added.max(), big == 3) > 0.8
    with pytest.raises(ValueError, match="aspect ratio"):
        add_instance_at(big[:, :128], pred, TEXT, point=(5, 5))
    # prepare_predictor sets the image at the requested scale (the fake has no config)
    assert prepare_predictor(pred, (image * 255).astype(np.uint8), scale=0.5) == 0.5
    assert pred.original_size == (64, 64)


# ---- the bundled model on examples/visn-0008.png (ground truth in tests/data) ----


@pytest.fixture(scope="module")
def visn():
    """Bundled model set on visn-0008 at its scale; automatic labels at full size; GT labels."""
    from zeusseg.factory import build_zeus
    from zeusseg.io import read_image, read_label_image
    from zeusseg.pretrained import weights_present
    from zeusseg.transforms import resize_labels

    if not weights_present("zeus-default"):
        pytest.skip("bundled zeus-default model not present")
    image = read_image(REPO / "examples" / "visn-0008.png")
    gt = read_label_image(REPO / "tests" / "data" / "visn-0008-labels.png").labels
    pred = ZeusPredictor(build_zeus("zeus-default"))
    prepare_predictor(pred, image)  # the model's scale, 0.5
    maps = pred.prompt_maps("virus particles")
    auto = resize_labels(decode_instances(maps.probs)[0], gt.shape)
    return pred, gt, auto


def _best_iou(mask: np.ndarray, labels: np.ndarray) -> float:
    return max([_iou(mask, labels == j) for j in np.unique(labels[mask]) if j] or [0.0])


@pytest.mark.weights
def test_bundled_click_adds_particles_the_automatic_run_missed(visn):
    pred, gt, _ = visn
    maps = pred.prompt_maps("virus particles")
    from zeusseg.transforms import resize_labels

    # a strict automatic run (high thresholds) misses the faint particles a user would click
    strict = resize_labels(
        decode_instances(maps.probs, fg_threshold=0.9, seed_threshold=0.8)[0], gt.shape)
    small_gt = resize_labels(gt, maps.shape)
    missed = [k for k in range(1, gt.max() + 1)
              if _best_iou(gt == k, strict) < 0.5 and maps.evidence[small_gt == k].max() > 0.1]
    assert len(missed) >= 2
    for k in missed:
        point = _centre(gt == k)
        labels = remove_instance_at(strict, point)  # shift-click a wrong instance away first
        added = add_instance_at(labels, pred, "virus particles", point=point)
        assert added.max() == labels.max() + 1
        assert _iou(added == added.max(), gt == k) > 0.5, f"particle {k}"


@pytest.mark.weights
def test_bundled_click_readds_every_detected_particle(visn):
    pred, gt, auto = visn
    detected = [k for k in range(1, gt.max() + 1) if _best_iou(gt == k, auto) >= 0.5]
    assert len(detected) >= 12
    for k in detected:
        point = _centre(gt == k)
        labels = remove_instance_at(auto, point)
        added = add_instance_at(labels, pred, "virus particles", point=point)
        assert _iou(added == added.max(), gt == k) > 0.5, f"particle {k}"


@pytest.mark.weights
def test_bundled_box_and_negative_point(visn):
    pred, gt, _ = visn
    k = int(np.argmax(np.bincount(gt.ravel())[1:])) + 1  # the largest particle
    sx = pred.original_size[1] / gt.shape[1]
    box = (_box(gt == k) + 0.5) * sx - 0.5
    masks, scores, _ = pred.predict_prompts("virus particles", box=box)
    assert masks.shape == (1, *pred.original_size) and masks.dtype == bool
    assert scores.shape == (1,) and scores[0] > 0.2
    from zeusseg.transforms import resize_labels

    small_gt = resize_labels(gt, pred.original_size)
    assert _iou(masks[0], small_gt == k) > 0.5
    point = np.array([_centre(small_gt == k)], np.float64)
    gone, _, _ = pred.predict_prompts("virus particles", np.repeat(point, 2, 0), np.array([1, 0]))
    assert not gone.any()
