"""zeusseg.evaluation: COCO mAP vs pycocotools, evaluate(), reports and `zeusseg evaluate`."""

from __future__ import annotations

import contextlib
import io
import json
import logging

import numpy as np
import pandas as pd
import pytest
from skimage.draw import disk

from zeusseg.__main__ import main
from zeusseg.evaluation import REPORT_FILES, coco_mask_ap, evaluate, evaluate_masks, write_report
from zeusseg.io.coco import write_coco_predictions
from zeusseg.io.labels import write_label_tiff
from zeusseg.structures import InstanceMasks

SHAPE = (80, 96)


def instances(centres, radius=8, class_ids=None, scores=None, shape=SHAPE) -> InstanceMasks:
    """InstanceMasks with one skimage disk per centre."""
    masks = np.zeros((len(centres), *shape), bool)
    for k, (c, r) in enumerate(zip(centres, np.broadcast_to(radius, len(centres)), strict=True)):
        masks[k][disk(c, r, shape=shape)] = True
    return InstanceMasks.from_masks(masks, class_ids=class_ids, scores=scores,
                                    class_names={1: "virus", 2: "cell"})


def synthetic_set(seed=0, n_images=4):
    """GT and imperfect scored predictions (shifts, misses, false positives) for a few images."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for _ in range(n_images):
        n = int(rng.integers(3, 7))
        centres = [(int(rng.integers(10, 70)), int(rng.integers(10, 86))) for _ in range(n)]
        radii, classes = rng.integers(5, 9, n), rng.integers(1, 3, n)
        gts.append(instances(centres, radius=radii, class_ids=classes))
        keep = rng.random(n) > 0.2  # some objects are missed
        shifted = [(y + int(rng.integers(-2, 3)), x + int(rng.integers(-2, 3)))
                   for (y, x), k in zip(centres, keep, strict=True) if k]
        flips = np.where(rng.random(int(keep.sum())) < 0.2, 3 - classes[keep], classes[keep])
        extra = [(int(rng.integers(10, 70)), int(rng.integers(10, 86))) for _ in range(2)]
        m = len(shifted) + 2
        preds.append(instances(shifted + extra, radius=np.r_[radii[keep], [6, 6]],
                               class_ids=np.r_[flips, [1, 2]], scores=rng.random(m)))
    return gts, preds


def direct_cocoeval(gts, preds, use_cats: bool) -> np.ndarray:
    """Stats of a plain COCOeval run (default params), masks encoded by pycocotools itself."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, gt_anns, dt_anns = [], [], []
    for i, (g, p) in enumerate(zip(gts, preds, strict=True), start=1):
        images.append({"id": i, "height": SHAPE[0], "width": SHAPE[1]})
        for anns, inst in ((gt_anns, g), (dt_anns, p)):
            for m, c, s in zip(inst.masks(), inst.class_ids, inst.scores, strict=True):
                rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                anns.append({"id": len(anns) + 1, "image_id": i, "segmentation": rle,
                             "category_id": int(c) if use_cats else 1, "score": float(s),
                             "area": float(mask_utils.area(rle)), "iscrowd": 0,
                             "bbox": list(mask_utils.toBbox(rle))})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": gt_anns,
                        "categories": [{"id": 1}, {"id": 2}] if use_cats else [{"id": 1}]}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dt_anns), iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("class_aware", [False, True])
def test_coco_agrees_with_pycocotools(class_aware):
    gts, preds = synthetic_set()
    ours = coco_mask_ap(gts, preds, class_aware=class_aware)
    stats = direct_cocoeval(gts, preds, use_cats=class_aware)
    assert 0.05 < ours["map"] < 0.95  # a non-trivial case
    assert ours["map"] == pytest.approx(stats[0], abs=1e-9)
    assert ours["ap50"] == pytest.approx(stats[1], abs=1e-9)
    assert ours["ap75"] == pytest.approx(stats[2], abs=1e-9)
    if class_aware:
        assert set(ours["per_class"]) == {1, 2}
        assert np.mean(list(ours["per_class"].values())) == pytest.approx(ours["map"])


def test_coco_perfect_dense_and_empty():
    # 150 objects in one image: pycocotools' default maxDets=100 would cap recall
    centres = [(4 + 8 * (k // 15), 4 + 8 * (k % 15)) for k in range(150)]
    dense = instances(centres, radius=3, shape=(128, 128))
    assert len(dense) == 150
    res = coco_mask_ap([dense], [dense])
    assert res["map"] == res["ap50"] == res["ap75"] == 1.0
    assert coco_mask_ap([dense], [dense], max_dets=(1, 10, 100))["map"] < 0.7
    empty = InstanceMasks(labels=np.zeros(SHAPE, np.int32))
    assert coco_mask_ap([instances([(40, 40)])], [empty])["map"] == 0.0
    assert np.isnan(coco_mask_ap([empty], [instances([(40, 40)])])["map"])


def test_image_mean_vs_pooled_and_missing_prediction():
    gt = {"a": instances([(40, 40)]), "b": instances([(20, 20), (20, 60), (60, 40)])}
    res = evaluate_masks({"a": gt["a"]}, gt)  # "b" has no prediction: all false negatives
    assert res.metric("ap50", "image_mean") == pytest.approx(0.5)
    assert res.metric("ap50", "pooled") == pytest.approx(0.25)
    assert res.metric("f1_50", "pooled") == pytest.approx(2 / 5)
    assert res.metric("recall50", "pooled") == pytest.approx(0.25)
    assert res.metric("precision50", "pooled") == 1.0
    assert res.metric("fn50", "pooled") == 3
    # COCO interpolates precision at 101 recall points: 1.0 on recall 0..0.25 (26 points)
    assert res.metric("coco_map", "pooled") == pytest.approx(26 / 101)
    assert list(res.per_image.image) == ["a", "b"]


def test_per_class_scores():
    gt = instances([(20, 20), (20, 60), (60, 40)], class_ids=[1, 1, 2])
    pred = instances([(20, 20), (20, 60), (60, 40)], class_ids=[1, 2, 2])
    res = evaluate_masks({"x": pred}, {"x": gt}, per_class=True)
    assert res.metric("ap50") == 1.0
    assert res.metric("ap50", scope="class-aware") == pytest.approx(2 / 4)
    assert res.metric("ap50", scope="class", class_name="virus") == pytest.approx(1 / 2)
    assert res.metric("ap50", scope="class", class_name="cell") == pytest.approx(1 / 2)
    assert res.metric("n_true", scope="class", class_name="cell") == 1
    assert res.metric("coco_map", scope="class-aware") < 1.0 == res.metric("coco_map")
    assert set(res.per_image.scope) == {"agnostic", "class-aware", "class"}


def test_thresholds_are_checked():
    gt = {"a": instances([(40, 40)])}
    with pytest.raises(ValueError, match="thresholds"):
        evaluate_masks(gt, gt, thresholds=(0.5, 1.5))
    res = evaluate_masks(gt, gt, thresholds=(0.3, 0.825))
    assert res.metric("ap30") == 1.0 and res.metric("ap82.5") == 1.0


@pytest.fixture
def folders(tmp_path):
    """GT as COCO JSON, predictions as label TIFFs (one missing, one extra, one suffixed)."""
    gts, preds = synthetic_set(seed=1, n_images=3)
    names = ["img0", "img1", "img2"]
    gt_json = write_coco_predictions(tmp_path / "gt.json", [(f"{n}.png", g) for n, g in
                                                            zip(names, gts, strict=True)],
                                     {1: "virus", 2: "cell"})
    pred_dir = tmp_path / "pred"
    write_label_tiff(pred_dir / "img0.tif", preds[0])
    write_label_tiff(pred_dir / "img1_labels.tif", preds[1])
    write_label_tiff(pred_dir / "other.tif", preds[2])
    return gt_json, pred_dir, gts, preds


def test_evaluate_files_matches_in_memory(folders, caplog, monkeypatch):
    gt_json, pred_dir, gts, preds = folders
    monkeypatch.setattr(logging.getLogger("zeusseg"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="zeusseg"):
        res = evaluate(pred_dir, gt_json, per_class=True)
    assert res.missing == ["img2"] and res.unmatched == ["other"]
    assert "false negatives" in caplog.text and "no ground truth" in caplog.text
    ref = evaluate_masks({"img0": preds[0], "img1": preds[1]},
                         {"img0": gts[0], "img1": gts[1], "img2": gts[2]}, per_class=True)
    pd.testing.assert_frame_equal(res.summary, ref.summary)
    assert res.metric("fn50", "pooled") >= len(gts[2])
    only = evaluate(pred_dir, gt_json, only_predicted=True)
    assert only.metric("n_images") == 2


def test_cli_writes_reports(folders, tmp_path, capsys):
    gt_json, pred_dir, *_ = folders
    out = tmp_path / "report"
    rc = main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_json), "--out", str(out),
               "--per-class", "--thresholds", "0.5", "0.7"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "ap70" in printed and "coco_map" in printed and "virus" in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)
    data = json.loads((out / "metrics.json").read_text())
    assert data["thresholds"] == [0.5, 0.7] and data["n_images"] == 3
    assert set(data["summary"]) == {"agnostic", "class-aware", "class:virus", "class:cell"}
    summary = pd.read_csv(out / "metrics.csv")
    assert {"scope", "class", "metric", "image_mean", "pooled"} <= set(summary.columns)
    per_image = pd.read_csv(out / "per_image.csv")
    assert len(per_image[per_image.scope == "agnostic"]) == 3
    assert "| metric |" in (out / "metrics.md").read_text()


def test_report_writer_round_trip(tmp_path):
    gt = {"a": instances([(40, 40)])}
    paths = write_report(evaluate_masks(gt, gt), tmp_path / "r")
    assert [p.name for p in paths] == list(REPORT_FILES)
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.startswith(".")]  # no temp left


def _fails(argv, capsys, out):
    rc = main(argv + ["--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    errors = [ln for ln in err.splitlines() if "error:" in ln]  # warnings are logged too
    assert len(errors) == 1
    assert not out.exists()
    return errors[0]


def test_cli_rejects_non_coco_json(folders, tmp_path, capsys):
    _, pred_dir, *_ = folders
    bad = tmp_path / "notcoco.json"
    bad.write_text(json.dumps({"hello": 1}))
    err = _fails(["evaluate", "--pred", str(pred_dir), "--gt", str(bad)], capsys, tmp_path / "o")
    assert "notcoco.json" in err and "not a COCO" in err


def test_cli_rejects_size_mismatch(folders, tmp_path, capsys):
    gt_json, pred_dir, *_ = folders
    write_label_tiff(pred_dir / "img0.tif", instances([(10, 10)], shape=(40, 40)))
    err = _fails(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_json)], capsys,
                 tmp_path / "o")
    assert "img0.tif" in err and "40x40" in err and "differs" in err


def test_cli_rejects_missing_and_unrelated_inputs(folders, tmp_path, capsys):
    gt_json, pred_dir, *_ = folders
    err = _fails(["evaluate", "--pred", str(tmp_path / "nope"), "--gt", str(gt_json)], capsys,
                 tmp_path / "o")
    assert "nope" in err
    other = tmp_path / "other"
    write_label_tiff(other / "zzz.tif", instances([(10, 10)]))
    err = _fails(["evaluate", "--pred", str(other), "--gt", str(gt_json)], capsys, tmp_path / "o")
    assert "no prediction matches" in err
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_json), "--thresholds", "2"])
    assert exc.value.code == 2


@pytest.mark.data
def test_visn_val_against_itself(data_root, tmp_path):
    res = evaluate("visn-val", "visn-val", data_root=data_root, per_class=True)
    assert res.metric("n_images") == 32 and res.metric("n_true") == 155
    assert res.metric("ap_mean") == res.metric("coco_map", scope="class-aware") == 1.0


def test_classes_are_matched_by_name(tmp_path, caplog, monkeypatch):
    gt = instances([(20, 20), (60, 40)], class_ids=[1, 2])  # virus, cell
    gt_json = write_coco_predictions(tmp_path / "gt.json", [("a.png", gt)], {1: "RSV", 2: "cell"})
    same_name = InstanceMasks(labels=gt.labels, ids=gt.ids, class_ids=np.array([7, 2]),
                              class_names={7: "rsv", 2: "cell"})
    write_label_tiff(tmp_path / "p1" / "a.tif", same_name)
    res = evaluate(tmp_path / "p1", gt_json, per_class=True)
    assert res.metric("ap50", scope="class-aware") == 1.0
    other_name = InstanceMasks(labels=gt.labels, ids=gt.ids, class_ids=np.array([1, 2]),
                               class_names={1: "virus particles", 2: "cell"})
    write_label_tiff(tmp_path / "p2" / "a.tif", other_name)
    monkeypatch.setattr(logging.getLogger("zeusseg"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="zeusseg"):
        res = evaluate(tmp_path / "p2", gt_json, per_class=True)
    assert "virus particles" in caplog.text
    assert res.metric("ap50") == 1.0
    assert res.metric("ap50", scope="class-aware") == pytest.approx(1 / 3)  # 1 TP, 1 FP, 1 FN
    assert res.metric("ap50", scope="class", class_name="RSV") == 0.0
    assert res.metric("n_pred", scope="class", class_name="virus particles") == 1


def test_rle_encoding_round_trips():
    from pycocotools import mask as mask_utils

    from zeusseg.evaluation.coco_map import _annotations

    labels = np.zeros((30, 20), np.int32)
    labels[disk((10, 10), 6, shape=labels.shape)] = 4
    labels[0, 0], labels[-1, -1], labels[5:25, 18:] = 9, 2, 7  # corners and the last column
    anns = _annotations(labels, labels, 1, False, start_id=1)
    assert [a["area"] for a in anns] == [int((labels == v).sum()) for v in (2, 4, 7, 9)]
    for ann, v in zip(anns, (2, 4, 7, 9), strict=True):
        rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
        np.testing.assert_array_equal(mask_utils.decode(rle), labels == v)
        np.testing.assert_allclose(ann["bbox"], mask_utils.toBbox(rle))
