import json

import numpy as np
import pytest
from PIL import Image

from zeusseg.errors import InputError
from zeusseg.io import read_coco, read_label_folder, read_label_image, write_label_tiff
from zeusseg.io.coco import coco_dict, write_coco_predictions
from zeusseg.io.overlay import render_overlay, write_overlay
from zeusseg.structures import InstanceMasks, MicroscopyImage


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32])
def test_label_png_tiff_dtypes(tmp_path, disks_labels, dtype):
    p = tmp_path / "l.tif"
    import tifffile

    tifffile.imwrite(p, disks_labels.astype(dtype))
    m = read_label_image(p)
    assert len(m) == 5 and np.array_equal(m.labels, disks_labels)
    if dtype != np.uint32:
        Image.fromarray(disks_labels.astype(dtype)).save(tmp_path / "l.png")
        assert np.array_equal(read_label_image(tmp_path / "l.png").labels, disks_labels)


def test_label_tiff_round_trip_keeps_classes_and_scores(tmp_path, disks_labels):
    m = InstanceMasks(
        labels=disks_labels,
        class_ids=np.array([1, 2, 2, 1, 3]),
        scores=np.array([0.9, 0.8, 0.7, 0.6, 0.5]),
        class_names={1: "a", 2: "b", 3: "c"},
    )
    p = write_label_tiff(tmp_path / "out" / "x.tif", m)
    r = read_label_image(p)
    assert np.array_equal(r.labels, m.labels)
    assert r.class_ids.tolist() == [1, 2, 2, 1, 3]
    assert r.scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5])
    assert r.class_names == {1: "a", 2: "b", 3: "c"}
    assert list((tmp_path / "out").iterdir()) == [p]  # no temp file left


def test_label_errors(tmp_path, disks_labels):
    Image.fromarray(disks_labels.astype(np.uint8)).save(tmp_path / "l.png")
    with pytest.raises(InputError, match="differs from image size"):
        read_label_image(tmp_path / "l.png", expected_shape=(100, 128))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(InputError, match="channels"):
        read_label_image(tmp_path / "rgb.png")
    with pytest.raises(InputError, match="no label image for zz"):
        read_label_folder(tmp_path, names=["zz"])
    assert set(read_label_folder(tmp_path, names=["l"])) == {"l"}


def _coco(tmp_path, disks_labels):
    m = InstanceMasks(labels=disks_labels, class_ids=np.array([1, 1, 2, 2, 1]))
    d = coco_dict([("img.png", m)], {1: "virus", 2: "other"})
    return m, d


def test_coco_rle_round_trip(tmp_path, disks_labels):
    m, d = _coco(tmp_path, disks_labels)
    p = write_coco_predictions(tmp_path / "pred.json", [("img.png", m)], {1: "virus", 2: "other"})
    ds = read_coco(p)
    r = ds.masks(ds.id_by_name()["img"])
    assert np.array_equal(r.labels, m.labels)
    assert r.class_ids.tolist() == [1, 1, 2, 2, 1]
    ann = json.loads(p.read_text())["annotations"][0]
    assert ann["bbox"] == m.boxes()[0].tolist() and "score" in ann


def test_coco_polygon(tmp_path):
    d = {
        "images": [{"id": 5, "file_name": "a.png", "height": 20, "width": 20}],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 5,
                "category_id": 1,
                "bbox": [0, 0, 20, 20],  # padded bbox
                "segmentation": [[2, 2, 10, 2, 10, 8, 2, 8]],
            }
        ],
    }
    p = tmp_path / "c.json"
    p.write_text(json.dumps(d))
    m = read_coco(p).masks(5)
    assert len(m) == 1
    x, y, w, h = m.boxes()[0]
    assert (x, y) == (2, 2) and 8 <= w <= 9 and 6 <= h <= 7  # from the mask, not the bbox


@pytest.mark.parametrize(
    "data,message",
    [
        ("[1, 2]", "top level"),
        ('{"images": [], "annotations": []}', "missing key 'categories'"),
        ('{"images": {}, "annotations": [], "categories": []}', "must be a list"),
        ("{not json", "not valid JSON"),
        (
            '{"images": [{"id": 1, "file_name": "a", "height": 5, "width": 5}], "categories": '
            '[{"id": 1}], "annotations": [{"image_id": 1, "category_id": 9, "segmentation": []}]}',
            "unknown category id 9",
        ),
        (
            '{"images": [{"id": 1, "file_name": "a", "height": 5, "width": 5}], "categories": '
            '[{"id": 1}], "annotations": [{"image_id": 2, "category_id": 1, "segmentation": []}]}',
            "unknown image id 2",
        ),
        (
            '{"images": [{"id": 1, "file_name": "a", "height": "5", "width": 5}], "categories": '
            '[], "annotations": []}',
            "bad height/width",
        ),
    ],
)
def test_coco_errors(tmp_path, data, message):
    p = tmp_path / "bad.json"
    p.write_text(data)
    with pytest.raises(InputError, match=message) as err:
        read_coco(p)
    assert str(p) in str(err.value)


def test_overlay_colours_outlines(tmp_path, disks_labels):
    img = MicroscopyImage(data=np.zeros((128, 128), np.float32))
    m = InstanceMasks(labels=disks_labels, class_ids=np.array([1, 2, 1, 1, 1]))
    rgb = render_overlay(img, m)
    assert rgb.shape == (128, 128, 3) and rgb.dtype == np.uint8
    assert rgb[30, 54].sum() == 0  # inside disk 2: untouched
    assert (rgb.reshape(-1, 3) == [230, 159, 0]).all(1).any()  # class 1 colour
    assert (rgb.reshape(-1, 3) == [86, 180, 233]).all(1).any()  # class 2 colour
    p = write_overlay(tmp_path / "o.png", img, m)
    assert np.array_equal(np.asarray(Image.open(p)), rgb)


def test_coco_rle_matches_pycocotools_encode_exactly():
    """The column-range RLE writer gives the same strings as encoding each full mask."""
    from pycocotools import mask as mask_utils

    from zeusseg.io.coco import masks_to_coco_annotations
    from zeusseg.structures import InstanceMasks

    rng = np.random.default_rng(0)
    for trial in range(40):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        labels = rng.integers(0, 4, (h, w)).astype(np.int32)
        if trial % 3 == 0:  # single pixels in the first and last position
            labels[:] = 0
            labels[0, 0], labels[-1, -1] = 1, 2
        if trial % 5 == 0:  # one instance covering the image
            labels[:] = 1
        masks = InstanceMasks(labels=labels)
        for ann, inst in zip(masks_to_coco_annotations(masks, 1), masks.ids, strict=True):
            ref = mask_utils.encode(np.asfortranarray((labels == inst).astype(np.uint8)))
            assert ann["segmentation"]["counts"] == ref["counts"].decode("ascii"), trial
            assert ann["segmentation"]["size"] == [h, w]


def test_inner_boundaries_equal_skimage_find_boundaries(disks_labels):
    from skimage.segmentation import find_boundaries

    from zeusseg.io.overlay import inner_boundaries

    rng = np.random.default_rng(1)
    for labels in (disks_labels, rng.integers(0, 5, (33, 47)), np.ones((5, 7), np.int32)):
        expected = find_boundaries(labels, mode="inner")
        assert np.array_equal(inner_boundaries(labels), expected)
