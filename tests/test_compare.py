"""Compare report from cached predictions of two methods; its table is the scorer's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from zeusseg.compare.curves import pr_curve
from zeusseg.compare.methods import MethodOptions, MethodUnavailable
from zeusseg.compare.report import MAIN_METRICS, run_compare, write_compare_report
from zeusseg.evaluation import evaluate
from zeusseg.io import write_label_tiff
from zeusseg.io.coco import coco_dict
from zeusseg.structures import InstanceMasks

CLASSES = {1: "RSV", 2: "SARS-CoV-2", 3: "FLUAV"}


def _disks(centres, shape=(64, 80), radius=7) -> np.ndarray:
    from skimage.draw import disk

    labels = np.zeros(shape, np.int32)
    for k, (r, c) in enumerate(centres, start=1):
        rr, cc = disk((r, c), radius, shape=shape)
        labels[rr, cc] = k
    return labels


GT = {  # stem -> (centres, classes); 0008 and 0016 are VISN validation images
    "0008": ([(15, 15), (15, 50), (45, 30)], [1, 1, 3]),
    "0016": ([(20, 60), (45, 20)], [2, 1]),
    "0001": ([(30, 30)], [1]),  # a training image: not compared
}


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    """A data root whose visn/train holds three tiny images with COCO annotations."""
    from PIL import Image

    folder = tmp_path / "data" / "visn" / "train"
    (folder / "images").mkdir(parents=True)
    entries = []
    for stem, (centres, classes) in GT.items():
        labels = _disks(centres)
        img = (40 + 150 * (labels > 0)).astype(np.uint8)
        Image.fromarray(img).save(folder / "images" / f"{stem}.png")
        entries.append((f"{stem}.png", InstanceMasks(labels=labels, class_ids=np.array(classes),
                                                     class_names=CLASSES)))
    (folder / "annotations.json").write_text(json.dumps(coco_dict(entries, CLASSES)))
    return tmp_path / "data"


def _write_cache(cache: Path) -> None:
    """Cached predictions of a class-agnostic and a class-aware method (+ timing of one)."""
    rng = np.random.default_rng(0)
    agnostic = {"0008": [(15, 16), (45, 31), (55, 70)], "0016": [(20, 60)]}
    for stem, centres in agnostic.items():
        labels = _disks(centres, radius=6)
        write_label_tiff(cache / "classical" / "labels" / f"{stem}.tif", InstanceMasks(
            labels=labels, scores=rng.random(len(centres)).astype(np.float32),
            class_names={1: "virus particles"}))
    (cache / "classical" / "run.json").write_text(json.dumps(
        {"origin": "no training", "seconds": {"0008": 0.5, "0016": 1.5}}))
    aware = {"0008": ([(15, 15), (15, 50), (45, 30)], [1, 2, 3]), "0016": ([(45, 20)], [1])}
    for stem, (centres, classes) in aware.items():
        write_label_tiff(cache / "cascade-eva02" / "labels" / f"{stem}.tif", InstanceMasks(
            labels=_disks(centres), class_ids=np.array(classes),
            scores=np.linspace(0.9, 0.6, len(classes)).astype(np.float32),
            class_names=CLASSES))


def test_report_from_cached_predictions_matches_scorer(tmp_path, fake_root):
    cache, out = tmp_path / "cache", tmp_path / "report"
    _write_cache(cache)
    comp = run_compare("visn-val", ["classical", "cascade-eva02"], out, cache=cache,
                       opts=MethodOptions(runs_dir=tmp_path / "no-runs"), data_root=fake_root,
                       progress=False)
    written = write_compare_report(comp, out, data_root=fake_root, montage_images=2)
    assert comp.n_images == 2 and comp.n_true == 5
    assert list(comp.table.index) == ["classical", "cascade-eva02"]
    for method in ("classical", "cascade-eva02"):
        ref = evaluate(cache / method / "labels", "visn-val", per_class=True, data_root=fake_root)
        for metric in MAIN_METRICS:
            want = ref.metric(metric, "pooled")
            got = comp.table.loc[method, metric]
            assert got == pytest.approx(want, nan_ok=True), (method, metric)
    # known values: cascade finds 4 of 5 (perfect masks), classical 2 hits at IoU 0.5 of 4 preds
    assert comp.table.loc["cascade-eva02", "ap50"] == pytest.approx(4 / 5)
    assert comp.table.loc["cascade-eva02", "n_pred"] == 4
    assert comp.table.loc["classical", "sec_per_image"] == pytest.approx(1.0)
    assert np.isnan(comp.table.loc["cascade-eva02", "sec_per_image"])
    # per class: only the class-aware method, values from the scorer's per-class rows
    assert set(comp.per_class.method) == {"cascade-eva02"}
    ref = evaluate(cache / "cascade-eva02" / "labels", "visn-val", per_class=True,
                   data_root=fake_root)
    row = comp.per_class.set_index("class").loc["RSV"]
    assert row["ap50"] == pytest.approx(ref.metric("ap50", "pooled", "class", "RSV"))
    assert row["n_true"] == 3
    for name in ("report.md", "report.html", "table.csv", "per_class.csv", "bar_chart.png",
                 "pr_curve.png", "montage.png", "classical/metrics.md"):
        assert (out / name).is_file() and (out / name) in written, name
    md = (out / "report.md").read_text()
    assert "| cascade-eva02 | 4 | 0.800 |" in md
    assert "cached predictions" in md
    assert "<table>" in (out / "report.html").read_text()
    import pandas as pd

    csv = pd.read_csv(out / "table.csv", index_col="method")
    assert csv.loc["classical", "f1_50"] == pytest.approx(comp.table.loc["classical", "f1_50"])


def test_missing_model_errors_or_is_skipped(tmp_path, fake_root):
    cache, out = tmp_path / "cache", tmp_path / "report"
    _write_cache(cache)
    opts = MethodOptions(runs_dir=tmp_path / "no-runs")
    with pytest.raises(MethodUnavailable, match=r"zeusseg baseline train --config "
                       r"configs/baseline/maskrcnn-r50.yaml.*--skip-missing"):
        run_compare("visn-val", ["classical", "maskrcnn"], out, cache=cache, opts=opts,
                    data_root=fake_root, progress=False)
    with pytest.raises(MethodUnavailable, match="zeus-adapter"):
        run_compare("visn-val", ["zeus-lora"], out, cache=cache, opts=opts,
                    data_root=fake_root, progress=False)
    comp = run_compare("visn-val", ["classical", "maskrcnn"], out, cache=cache, opts=opts,
                       data_root=fake_root, skip_missing=True, progress=False)
    assert list(comp.table.index) == ["classical"] and "maskrcnn" in comp.skipped
    write_compare_report(comp, out, data_root=fake_root, montage_images=0)
    assert "SKIPPED" in (out / "report.md").read_text()


def test_classical_runs_and_is_cached(tmp_path, fake_root):
    cache = tmp_path / "cache"
    comp = run_compare("visn-val", ["classical"], tmp_path / "r", cache=cache,
                       data_root=fake_root, progress=False)
    assert comp.runs["classical"].cached is False
    assert set(comp.runs["classical"].seconds) == {"0008", "0016"}
    again = run_compare("visn-val", ["classical"], tmp_path / "r", cache=cache,
                        data_root=fake_root, progress=False)
    assert again.runs["classical"].cached is True
    assert again.table.loc["classical", "sec_per_image"] == pytest.approx(
        comp.table.loc["classical", "sec_per_image"])


def test_pr_curve_ranks_by_score():
    gt = InstanceMasks(labels=_disks([(15, 15), (45, 50)]))
    perfect = pr_curve([gt], [gt])
    assert perfect.ap == pytest.approx(1.0) and perfect.recall[-1] == 1.0
    # a false positive scored above both true positives: precision 0, 1/2, 2/3
    labels = _disks([(15, 15), (45, 50), (50, 10)])
    pred = InstanceMasks(labels=labels, scores=np.array([0.5, 0.4, 0.9], np.float32))
    c = pr_curve([gt], [pred])
    np.testing.assert_allclose(c.precision, [0.0, 0.5, 2 / 3])
    np.testing.assert_allclose(c.recall, [0.0, 0.5, 1.0])
    assert c.ap == pytest.approx(2 / 3, abs=0.01)
