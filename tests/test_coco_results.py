"""COCO results lists (detectron2 / mmdetection / ``COCO.loadRes`` output) as predictions:
``zeusseg evaluate --pred results.json --gt annotations.json`` and ``zeusseg compare``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pycocotools import mask as mask_utils

from zeusseg.__main__ import main
from zeusseg.compare.methods import MethodOptions
from zeusseg.compare.report import MAIN_METRICS, run_compare, write_compare_report
from zeusseg.errors import InputError
from zeusseg.evaluation import evaluate
from zeusseg.io import read_coco
from zeusseg.io.coco import masks_to_coco_annotations, write_coco_predictions
from zeusseg.io.coco_results import read_coco_results
from zeusseg.io.labels import write_label_tiff
from zeusseg.structures import InstanceMasks

from .test_compare import GT as COMPARE_GT
from .test_compare import (
    _disks,
    fake_root,  # noqa: F401  (fixture)
)
from .test_evaluate import SHAPE, synthetic_set

NAMES = ["img0", "img1", "img2"]
CLASSES = {1: "virus", 2: "cell"}


def results_list(masks: dict[str, InstanceMasks], ids: dict[str, int], style: str = "rle"
                 ) -> list[dict]:
    """A COCO results list of ``masks`` (stem -> masks), image ids from ``ids`` (stem -> id).

    style: ``rle`` (compressed, str counts), ``uncompressed`` (list counts) or ``polygon``.
    """
    out = []
    for stem, m in masks.items():
        for k, ann in enumerate(masks_to_coco_annotations(m, ids[stem])):
            entry = {key: ann[key] for key in ("image_id", "category_id", "segmentation",
                                               "score")}
            if style == "uncompressed":
                entry["segmentation"] = {"size": list(m.shape),
                                         "counts": _uncompressed(m.labels == m.ids[k])}
            out.append(entry)
    if style == "polygon":
        out = [{**e, "segmentation": _polygon(e["segmentation"])} for e in out]
    return out


def _uncompressed(mask: np.ndarray) -> list[int]:
    flat = mask.T.ravel().astype(np.int8)  # COCO's column-major order
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    return ([0] + runs) if flat[0] else runs


def _polygon(rle: dict) -> list[list[float]]:
    """COCO polygons of an RLE mask without holes (pycocotools, like ImageJ, puts pixel
    corners at integer coordinates, so the pixel-edge outlines rasterise back exactly)."""
    from zeusseg.io.contours import mask_polygons

    m = mask_utils.decode({**rle, "counts": rle["counts"].encode()}).astype(bool)
    return [ext.ravel().tolist() for ext, _ in mask_polygons(m)]


@pytest.fixture
def gt_and_preds(tmp_path):
    """GT as a COCO dataset with non-consecutive image ids, scored predictions (in memory)."""
    gts, preds = synthetic_set(seed=3, n_images=3)
    gt_json = write_coco_predictions(tmp_path / "annotations.json",
                                     [(f"{n}.png", g) for n, g in zip(NAMES, gts, strict=True)],
                                     CLASSES)
    data = json.loads(gt_json.read_text())  # renumber the images: 10, 20, 30
    for im in data["images"]:
        im["id"] *= 10
    for ann in data["annotations"]:
        ann["image_id"] *= 10
    gt_json.write_text(json.dumps(data))
    ids = {n: 10 * (k + 1) for k, n in enumerate(NAMES)}
    return gt_json, ids, dict(zip(NAMES, gts, strict=True)), dict(zip(NAMES, preds, strict=True))


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("style", ["rle", "uncompressed", "polygon"])
def test_results_from_gt_score_one_and_equal_label_images(tmp_path, gt_and_preds, style):
    gt_json, ids, gts, _ = gt_and_preds
    res_json = _write(tmp_path / "results.json", results_list(gts, ids, style))
    res = evaluate(res_json, gt_json, per_class=True)
    for metric in ("ap50", "ap75", "ap90", "ap_mean", "f1_50", "f1_80", "dice", "miou",
                   "coco_map", "coco_ap50"):
        assert res.metric(metric, "pooled") == 1.0, metric
        assert res.metric(metric, "pooled", "class-aware") == 1.0, metric
    labels = tmp_path / "labels"
    for n, g in gts.items():
        write_label_tiff(labels / f"{n}.tif", g)
    ref = evaluate(labels, gt_json, per_class=True)
    pd.testing.assert_frame_equal(res.summary, ref.summary)
    assert res.missing == [] and res.unmatched == []


def test_scored_results_equal_the_same_masks_as_label_tiffs(tmp_path, gt_and_preds):
    gt_json, ids, gts, preds = gt_and_preds
    res_json = _write(tmp_path / "results.json", results_list(preds, ids))
    labels = tmp_path / "labels"
    for n, p in preds.items():
        write_label_tiff(labels / f"{n}.tif", p)
    res = evaluate(res_json, gt_json, per_class=True)
    ref = evaluate(labels, gt_json, per_class=True)
    assert 0.05 < res.metric("coco_map") < 0.95  # not a trivial case
    pd.testing.assert_frame_equal(res.summary, ref.summary)
    pd.testing.assert_frame_equal(res.per_image, ref.per_image)


def test_cli_evaluate_results_list(tmp_path, gt_and_preds, capsys):
    gt_json, ids, gts, _ = gt_and_preds
    res_json = _write(tmp_path / "results.json", results_list(gts, ids))
    out = tmp_path / "report"
    assert main(["evaluate", "--pred", str(res_json), "--gt", str(gt_json), "--out",
                 str(out)]) == 0
    data = json.loads((out / "metrics.json").read_text())
    assert data["n_images"] == 3 and data["summary"]["agnostic"]["ap50"]["pooled"] == 1
    # a GT image without any result counts as all false negatives
    partial = [e for e in results_list(gts, ids) if e["image_id"] != ids["img2"]]
    res = evaluate(_write(tmp_path / "partial.json", partial), gt_json)
    assert res.missing == ["img2"] and res.metric("fn50") == len(gts["img2"])


def test_overlapping_results_higher_score_owns_shared_pixels(tmp_path):
    gt = InstanceMasks(labels=_disks([(20, 20)], shape=SHAPE, radius=8))
    gt_json = write_coco_predictions(tmp_path / "gt.json", [("a.png", gt)], {1: "virus"})
    low = InstanceMasks(labels=_disks([(20, 20)], shape=SHAPE, radius=8),
                        scores=np.array([0.2], np.float32))
    high = InstanceMasks(labels=_disks([(20, 26)], shape=SHAPE, radius=8),
                         scores=np.array([0.9], np.float32))
    entries = results_list({"a": high}, {"a": 1}) + results_list({"a": low}, {"a": 1})
    coco = read_coco_results(_write(tmp_path / "r.json", entries), read_coco(gt_json))
    m = coco.masks(1)
    assert len(m) == 2 and m.scores.tolist() == pytest.approx([0.2, 0.9])
    assert np.array_equal(m.labels == 2, high.labels > 0)  # the 0.9 detection is whole


def _entry(**change):
    e = {"image_id": 10, "category_id": 1, "score": 0.5,
         "segmentation": {"size": list(SHAPE), "counts": "PPYo1"}}
    e.update(change)
    return {k: v for k, v in e.items() if v is not None}


@pytest.mark.parametrize("entries,message", [
    ([_entry(), _entry(score=None)], "results[1] lacks 'score'"),
    ([_entry(image_id=None)], "results[0] lacks 'image_id'"),
    ([_entry(segmentation=None)], "results[0] lacks 'segmentation'"),
    ([_entry(), _entry(), _entry(image_id=7)], "results[2] has image_id 7, which the ground "
     "truth"),
    ([_entry(image_id="10")], "results[0] has image_id '10'"),
    ([_entry(segmentation={"size": [40, 40], "counts": "PPYo1"})],
     "results[0]: RLE size [40, 40] differs from the size [80, 96]"),
    ([_entry(segmentation={"size": list(SHAPE), "counts": [5, 3]})], "summing to height x"),
    ([_entry(segmentation=[[1, 2, "x", 4, 5, 6]])], "segmentation[0] is not a polygon"),
    ([_entry(segmentation="abc")], "must be polygons"),
    ([_entry(score="high")], "score that is not a finite number"),
    ([_entry(category_id=1.5)], "non-integer category_id"),
    ([3], "results[0] is not an object"),
    ([], "results list is empty"),
])
def test_bad_results_lists_exit_2_and_write_nothing(tmp_path, gt_and_preds, capsys, entries,
                                                    message):
    gt_json, *_ = gt_and_preds
    bad = _write(tmp_path / "bad.json", entries)
    out = tmp_path / "report"
    rc = main(["evaluate", "--pred", str(bad), "--gt", str(gt_json), "--out", str(out)])
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert rc == 2 and len(errors) == 1, err
    assert str(bad) in errors[0] and message in errors[0], errors[0]
    assert not out.exists()


def test_results_list_needs_a_coco_ground_truth(tmp_path, gt_and_preds, capsys):
    gt_json, ids, gts, _ = gt_and_preds
    res_json = _write(tmp_path / "results.json", results_list(gts, ids))
    labels = tmp_path / "gt_labels"
    for n, g in gts.items():
        write_label_tiff(labels / f"{n}.tif", g)
    out = tmp_path / "report"
    rc = main(["evaluate", "--pred", str(res_json), "--gt", str(labels), "--out", str(out)])
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert rc == 2 and len(errors) == 1
    assert "results.json" in errors[0] and "needs a COCO ground truth" in errors[0]
    assert str(labels) in errors[0] and not out.exists()
    # a results list given as the ground truth: says what it is
    rc = main(["evaluate", "--pred", str(labels), "--gt", str(res_json), "--out", str(out)])
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert rc == 2 and "COCO results list" in errors[0] and not out.exists()
    with pytest.raises(InputError, match="lists no images"):
        read_coco_results(res_json, read_coco(_write(
            tmp_path / "empty.json", {"images": [], "annotations": [], "categories": []})))


def test_compare_reads_a_cached_results_list(tmp_path, fake_root):  # noqa: F811
    """Another tool's COCO results list in CACHE/<name>/results.json is compared like label
    TIFFs of the same masks (the dataset's annotations.json gives the image ids)."""
    coco = read_coco(fake_root / "visn" / "train" / "annotations.json")
    ids = coco.id_by_name()
    rng = np.random.default_rng(1)
    preds = {}
    for stem, (centres, classes) in COMPARE_GT.items():  # one miss, one false positive
        kept = [(r + 1, c - 1) for r, c in centres[1:]] + [(55, 70)]
        preds[stem] = InstanceMasks(labels=_disks(kept, radius=6),
                                    class_ids=np.array([*classes[1:], 2]),
                                    scores=rng.random(len(kept)).astype(np.float32),
                                    class_names={1: "RSV", 2: "SARS-CoV-2", 3: "FLUAV"})
    cache, out = tmp_path / "cache", tmp_path / "report"
    _write((cache / "detectron2").mkdir(parents=True) or cache / "detectron2" / "results.json",
           results_list(preds, ids))
    for stem, p in preds.items():
        write_label_tiff(cache / "as-labels" / "labels" / f"{stem}.tif", p)
    comp = run_compare("visn-val", ["detectron2", "as-labels"], out, cache=cache,
                       opts=MethodOptions(runs_dir=tmp_path / "no-runs"), data_root=fake_root,
                       progress=False)
    assert comp.runs["detectron2"].results == cache / "detectron2" / "results.json"
    assert 0 < comp.table.loc["detectron2", "ap50"] < 1
    for metric in MAIN_METRICS:
        assert comp.table.loc["detectron2", metric] == pytest.approx(
            comp.table.loc["as-labels", metric], nan_ok=True), metric
    written = write_compare_report(comp, out, data_root=fake_root, montage_images=2)
    assert (out / "montage.png") in written and (out / "detectron2" / "metrics.md").is_file()
    assert "COCO results list" in (out / "report.md").read_text()
    # a name that is no method and has no cached predictions is still an error
    with pytest.raises(InputError, match="unknown method 'nothing-here'.*results.json"):
        run_compare("visn-val", ["nothing-here"], out, cache=cache, data_root=fake_root,
                    progress=False)
