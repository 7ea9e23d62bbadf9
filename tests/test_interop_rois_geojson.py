"""ImageJ/Fiji ROI sets and QuPath GeoJSON: round trips label image -> file -> read back ->
rasterised masks, and ``zeusseg segment --format``."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import roifile
from skimage.draw import disk

from zeusseg.__main__ import main
from zeusseg.inference.folder_outputs import parse_formats
from zeusseg.io import read_coco, read_label_image
from zeusseg.io.contours import mask_polygons, rasterise, ring_area
from zeusseg.io.geojson import geojson_dict, write_geojson
from zeusseg.io.imagej_rois import write_imagej_rois
from zeusseg.structures import InstanceMasks

CLASSES = {1: "virus particles", 2: "cell"}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture
def tricky(disks_labels) -> InstanceMasks:
    """The five disks (two touching) plus an instance with a hole and an island in it, a
    two-part instance, a diagonal pixel pair, a one-pixel instance and one cut by the border."""
    labels = np.pad(disks_labels, ((0, 60), (0, 0)))
    ring = np.zeros(labels.shape, bool)
    ring[disk((155, 30), 16, shape=labels.shape)] = True
    ring[disk((155, 30), 7, shape=labels.shape)] = False  # the hole
    ring[disk((155, 30), 3, shape=labels.shape)] = True  # an island inside the hole
    labels[ring] = 6
    labels[140:150, 70:90] = 7
    labels[165:172, 100:120] = 7  # second part of instance 7
    labels[180, 60] = labels[181, 61] = 8  # 8-connected only
    labels[185, 5] = 9
    labels[disk((100, 2), 6, shape=labels.shape)] = 10  # cut by the image border
    return InstanceMasks(labels=labels, class_ids=np.array([1, 1, 2, 2, 1, 2, 1, 2, 1, 2]),
                         scores=np.linspace(0.95, 0.05, 10).astype(np.float32),
                         class_names=CLASSES)


def test_polygons_rasterise_back_exactly(tricky):
    for inst in tricky.ids:
        mask = tricky.labels == inst
        parts = mask_polygons(mask)
        rings = [r for ext, holes in parts for r in [ext, *holes]]
        assert np.array_equal(rasterise(rings, mask.shape), mask), inst
        assert all(ring_area(ext) > 0 and all(ring_area(h) < 0 for h in holes)
                   for ext, holes in parts)
    assert [len(mask_polygons(tricky.labels == i)) for i in (6, 7)] == [2, 2]  # island: a part
    assert len(mask_polygons(tricky.labels == 6)[0][1]) == 1  # the hole


def test_imagej_roi_round_trip(tmp_path, tricky):
    path = write_imagej_rois(tmp_path / "rois" / "img.zip", tricky)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # atomic
    rois = roifile.roiread(path)
    assert len(rois) == len(tricky) == 10
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist()[0] == "0001-virus_particles-0.950.roi"
    for k, (roi, inst) in enumerate(zip(rois, tricky.ids, strict=True)):
        assert roi.roitype == roifile.ROI_TYPE.POLYGON
        name = CLASSES[int(tricky.class_ids[k])].replace(" ", "_")
        assert roi.name == f"{inst:04d}-{name}-{tricky.scores[k]:.3f}"
        back = rasterise([roi.coordinates()], tricky.shape)
        mask = tricky.labels == inst
        if inst not in (6, 7):  # one part, no hole: the ROI is the instance
            assert iou(back, mask) >= 0.95, inst
            assert np.array_equal(back, mask), inst
    # several parts: the largest; a hole: filled (a polygon ROI holds none)
    largest = np.zeros(tricky.shape, bool)
    largest[140:150, 70:90] = True
    assert np.array_equal(rasterise([rois[6].coordinates()], tricky.shape), largest)
    filled = rasterise([mask_polygons(tricky.labels == 6)[0][0]], tricky.shape)
    assert np.array_equal(rasterise([rois[5].coordinates()], tricky.shape), filled)


def _check_ring(ring) -> None:
    assert len(ring) >= 4 and ring[0] == ring[-1]  # closed linear ring
    assert all(len(p) == 2 and all(isinstance(v, (int, float)) for v in p) for p in ring)


def validate_qupath_geojson(data: dict) -> None:
    """GeoJSON (RFC 7946) FeatureCollection of QuPath detections."""
    assert data["type"] == "FeatureCollection" and isinstance(data["features"], list)
    ids = set()
    for f in data["features"]:
        assert f["type"] == "Feature" and isinstance(f["id"], str)
        ids.add(f["id"])
        geom = f["geometry"]
        assert geom["type"] in ("Polygon", "MultiPolygon")
        polygons = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
        for rings in polygons:
            for k, ring in enumerate(rings):
                _check_ring(ring)
                area = ring_area(np.asarray(ring[:-1], float))
                assert area > 0 if k == 0 else area < 0  # right-hand rule
        props = f["properties"]
        assert props["objectType"] == "detection"
        cls = props["classification"]
        assert isinstance(cls["name"], str) and len(cls["color"]) == 3
        assert all(isinstance(c, int) and 0 <= c <= 255 for c in cls["color"])
        assert 0 <= props["measurements"]["score"] <= 1
    assert len(ids) == len(data["features"])


def geojson_masks(data: dict, shape) -> list[np.ndarray]:
    out = []
    for f in data["features"]:
        geom = f["geometry"]
        polygons = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
        rings = [np.asarray(r[:-1], float) for rings in polygons for r in rings]
        out.append(rasterise(rings, shape))
    return out


def test_geojson_validates_and_round_trips(tmp_path, tricky):
    path = write_geojson(tmp_path / "geojson" / "img.geojson", tricky, "img.png")
    data = json.loads(path.read_text())
    validate_qupath_geojson(data)
    assert len(data["features"]) == 10
    types = [f["geometry"]["type"] for f in data["features"]]
    assert types[5] == types[6] == "MultiPolygon" and types.count("Polygon") == 8
    assert len(data["features"][5]["geometry"]["coordinates"][0]) == 2  # exterior + hole
    for k, (back, inst) in enumerate(zip(geojson_masks(data, tricky.shape), tricky.ids,
                                         strict=True)):
        mask = tricky.labels == inst
        assert iou(back, mask) >= 0.95 and np.array_equal(back, mask), inst
        props = data["features"][k]["properties"]
        assert props["classification"]["name"] == CLASSES[int(tricky.class_ids[k])]
        assert props["measurements"]["score"] == pytest.approx(tricky.scores[k], abs=1e-6)
    assert geojson_dict(tricky, "img.png") == data  # ids are deterministic
    assert geojson_dict(tricky, "other.png")["features"][0]["id"] != data["features"][0]["id"]


def test_empty_image_gives_empty_sets(tmp_path):
    empty = InstanceMasks(labels=np.zeros((20, 30), np.int32))
    assert roifile.roiread(write_imagej_rois(tmp_path / "e.zip", empty)) == []
    data = json.loads(write_geojson(tmp_path / "e.geojson", empty).read_text())
    assert data == {"type": "FeatureCollection", "features": []}


def test_segment_writes_every_format(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["segment", str(folder), "--method", "classical", "-p", "nuclei", "-o", str(out),
                 "--format", "tif,coco,roi,geojson"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "rois") in printed and str(out / "geojson") in printed
    for stem in ("a", "b"):
        labels = read_label_image(out / "labels" / f"{stem}.tif")
        rois = roifile.roiread(out / "rois" / f"{stem}.zip")
        data = json.loads((out / "geojson" / f"{stem}.geojson").read_text())
        validate_qupath_geojson(data)
        assert len(rois) == len(data["features"]) == len(labels) == 5
        for roi, back, inst in zip(rois, geojson_masks(data, labels.shape), labels.ids,
                                   strict=True):
            mask = labels.labels == inst
            assert iou(rasterise([roi.coordinates()], labels.shape), mask) >= 0.95
            assert iou(back, mask) >= 0.95
            assert "nuclei" in roi.name
        assert {f["properties"]["classification"]["name"] for f in data["features"]} == {
            "nuclei"}
    assert len(read_coco(out / "predictions.json").images) == 2
    assert not [p for p in out.rglob(".*")]  # no temp files


def test_segment_format_selects_outputs(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["segment", str(folder), "--method", "classical", "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["labels", "overlays", "predictions.json"]
    capsys.readouterr()
    only = tmp_path / "only"
    assert main(["segment", str(folder / "a.png"), "--method", "classical", "-o", str(only),
                 "--format", " ROI , geojson", "--no-overlay"]) == 0
    assert sorted(p.relative_to(only).as_posix() for p in only.rglob("*") if p.is_file()) == [
        "geojson/a.geojson", "rois/a.zip"]
    assert "predictions:" not in capsys.readouterr().out
    # resuming writes the formats that are missing for images already done
    assert main(["segment", str(folder), "--method", "classical", "-o", str(out),
                 "--skip-existing", "--format", "tif,roi"]) == 0
    assert sorted(p.name for p in (out / "rois").iterdir()) == ["a.zip", "b.zip"]


@pytest.mark.parametrize("argv,message", [
    (["--format", "tif,roix"], "--format: unknown format(s) roix; choose"),
    (["--format", ","], "--format: no format given"),
    (["--format", "roi", "--skip-existing"], "--skip-existing resumes from the label TIFFs"),
])
def test_bad_format_exit_2_and_nothing_written(folder, tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    rc = main(["segment", str(folder), "--method", "classical", "-o", str(out), *argv])
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert rc == 2 and len(errors) == 1 and message in errors[0], errors
    assert not out.exists()


def test_parse_formats():
    assert parse_formats(None) == ("tif", "coco")
    assert parse_formats("geojson,tif,tif") == ("tif", "geojson")
    assert parse_formats(["roi"]) == ("roi",)
