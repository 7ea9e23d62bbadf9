"""Decode settings stored with a model (decode_cfg), their CLI flags, and threshold tuning."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from skimage.draw import disk

from zeusseg.evaluation.tune_decoding import (
    CachedMaps,
    best_setting,
    collect_maps,
    decode_cached,
    default_settings,
    grid_settings,
    magnified,
    pipeline_scores,
    shortlist,
    sweep,
)
from zeusseg.factory import build_zeus
from zeusseg.inference.zeus_segmenter import (
    load_zeus,  # bound to the real ZeusPredictor before any patch
)
from zeusseg.modeling.config import ZeusCfg, ZeusDecodeCfg
from zeusseg.predictor import ZeusPredictor
from zeusseg.structures import MicroscopyImage
from zeusseg.training.targets import make_targets
from zeusseg.transforms import scaled_shape

from .zeus_fakes import fake_embedder

REPO = Path(__file__).resolve().parents[1]


def _pair_of_touching_disks(shape=(60, 90)) -> np.ndarray:
    labels = np.zeros(shape, np.int32)
    labels[disk((30, 30), 15, shape=shape)] = 1
    labels[disk((30, 59), 15, shape=shape)] = 2  # one connected foreground blob
    return labels


def _weak_centre_maps(labels: np.ndarray) -> CachedMaps:
    """Perfect maps except that the centre channel peaks at 0.5, not 1."""
    probs = make_targets(labels)
    probs[1] *= 0.5
    return CachedMaps("pair", probs[None], labels)


def test_decode_cfg_parses_validates_and_round_trips():
    cfg = ZeusCfg.from_dict({"decode_cfg": {"seed_threshold": 0.6, "min_size": 30}})
    assert cfg.decode_cfg == ZeusDecodeCfg(seed_threshold=0.6, min_size=30)
    assert ZeusCfg.from_dict(cfg.to_dict()) == cfg
    assert ZeusCfg.from_dict({}).decode_cfg == ZeusDecodeCfg()  # older configs: the defaults
    with pytest.raises(ValueError, match="decode_cfg.fg_threshold must be in"):
        ZeusDecodeCfg(fg_threshold=1.5)
    with pytest.raises(ValueError, match="min_size"):
        ZeusDecodeCfg(min_size=-1)
    with pytest.raises(ValueError, match="decode_cfg.seeds must be"):
        ZeusDecodeCfg(seeds="peaks")
    with pytest.raises(ValueError, match="decode_cfg.seed_h"):
        ZeusDecodeCfg(seeds="hmax", seed_h=0.0)
    with pytest.raises(TypeError):
        ZeusCfg.from_dict({"decode_cfg": {"nms": 0.3}})


def test_segment_image_decodes_with_the_models_settings(monkeypatch):
    import zeusseg.inference.zeus_segmenter as zs

    torch.manual_seed(0)
    net = build_zeus("zeus-tiny")
    net.zeus_cfg = dataclasses.replace(
        net.zeus_cfg, decode_cfg=ZeusDecodeCfg(seed_threshold=0.65, min_size=7))
    seen = []
    original = zs._decode
    monkeypatch.setattr(zs, "_decode", lambda p, prompts, **kw: seen.append(kw)
                        or original(p, prompts, **kw))
    pred = ZeusPredictor(net, embedder=fake_embedder())
    image = MicroscopyImage(np.random.default_rng(0).random((64, 64), dtype=np.float32))
    zs.segment_image(pred, image, ["cell nuclei"], scale=1.0, auto_scale=False)
    assert seen[-1]["seed_threshold"] == 0.65 and seen[-1]["min_size"] == 7
    assert seen[-1]["fg_threshold"] == 0.5
    zs.segment_image(pred, image, ["cell nuclei"], scale=1.0, auto_scale=False,
                     seed_threshold=0.55, fg_threshold=None)  # None = the model's value
    assert seen[-1]["seed_threshold"] == 0.55 and seen[-1]["fg_threshold"] == 0.5


def test_sweep_finds_the_threshold_that_splits_touching_objects():
    labels = _pair_of_touching_disks()
    maps = {"pairs": [_weak_centre_maps(labels)]}
    grid = {"seed_threshold": (0.6, 0.3)}
    table = sweep(maps, grid)
    assert list(table["seed_threshold"]) == [0.3, 0.6]  # sorted by score
    assert table.loc[0, "pairs/ap50"] == 1.0 and table.loc[0, "pairs/tp"] == 2
    # at 0.6 no pixel seeds: the blob stays one instance
    assert table.loc[1, "pairs/ap50"] < 1.0 and table.loc[1, "pairs/fn"] >= 1
    assert best_setting(table, grid) == {"seed_threshold": 0.3}
    np.testing.assert_allclose(table["score"], table["pairs/ap50"])


def test_sweep_score_is_the_mean_over_datasets():
    labels = _pair_of_touching_disks()
    good = CachedMaps("good", make_targets(labels)[None], labels)
    table = sweep({"a": [good], "b": [_weak_centre_maps(labels)]}, {"seed_threshold": (0.6,)})
    assert table.loc[0, "a/ap50"] == 1.0
    assert table.loc[0, "score"] == pytest.approx((1.0 + table.loc[0, "b/ap50"]) / 2)


def test_grid_settings_and_decode_cached_resize():
    assert grid_settings({"a": (1, 2), "b": (3,)}) == [{"a": 1, "b": 3}, {"a": 2, "b": 3}]
    labels = _pair_of_touching_disks((60, 90))
    half = make_targets(labels[::2, ::2])[None]  # maps at scale 0.5
    out = decode_cached(CachedMaps("x", half, labels))
    assert out.shape == (60, 90) and out.max() == 2


def _disk_labels(h: int, w: int) -> np.ndarray:
    """(h, w) labels of three disks placed relative to the image size."""
    labels = np.zeros((h, w), np.int32)
    for i, (fy, fx) in enumerate(((0.3, 0.25), (0.5, 0.6), (0.75, 0.3))):
        labels[disk((fy * h, fx * w), 0.12 * min(h, w), shape=(h, w))] = i + 1
    return labels


def _disk_maps(h: int, w: int) -> np.ndarray:
    """(1, 3, h, w) perfect maps of ``_disk_labels``."""
    return make_targets(_disk_labels(h, w))[None]


def _fake_predictor(monkeypatch):
    """A predictor whose maps are always ``_disk_maps`` of the image it was given."""
    pred = ZeusPredictor(build_zeus("zeus-tiny"), embedder=fake_embedder())
    shapes = []
    monkeypatch.setattr(pred, "set_image", lambda image: shapes.append(image.shape))
    monkeypatch.setattr(pred, "predict", lambda prompts: _disk_maps(*shapes[-1]))
    return pred, shapes


def test_collect_maps_returns_the_decoded_pass_at_the_model_scale(monkeypatch):
    pred, shapes = _fake_predictor(monkeypatch)
    image = MicroscopyImage(np.zeros((200, 300), np.float32), name="a")
    maps = collect_maps(pred, [(image, np.zeros((200, 300), np.int32))], "cell nuclei")
    assert len(maps) == 1 and maps[0].name == "a"
    assert maps[0].probs.shape == (1, 3, *scaled_shape((200, 300), maps[0].factor))
    assert maps[0].probs.shape[-2:] == shapes[-1]  # the last pass is the one kept
    assert len(shapes) == 2  # first pass at the model's scale, then auto-scaled
    # decoding the cached maps with the model's settings reproduces segment_image
    from zeusseg.inference.zeus_segmenter import segment_image

    masks = segment_image(pred, image, ["cell nuclei"], tile_size=None)
    labels = decode_cached(maps[0])
    assert labels.max() == 3
    np.testing.assert_array_equal(labels, masks.labels)


def test_tune_script_refuses_evaluation_splits():
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "tune_decoding.py"), "--data",
                        "dsb-val=cell nuclei", "--out", "unused"], capture_output=True, text=True)
    assert r.returncode != 0 and "only training splits" in r.stderr


@pytest.mark.parametrize("flag,value,message", [
    ("--seed-threshold", "1.2", "--seed-threshold must be between 0 and 1"),
    ("--fg-threshold", "0", "--fg-threshold must be between 0 and 1"),
    ("--min-size", "-3", "--min-size must be >= 0"),
    ("--seed-h", "1", "--seed-h must be between 0 and 1"),
])
def test_segment_cli_rejects_bad_decode_flags(tmp_path, flag, value, message):
    img = tmp_path / "a.png"
    iio.imwrite(img, np.zeros((32, 32), np.uint8))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "zeusseg", "segment", str(img), "-p", "x",
                        "-o", str(out), flag, value], capture_output=True, text=True)
    assert r.returncode != 0 and message in r.stderr
    assert not out.exists()


def test_segment_cli_decode_flags_need_zeus(tmp_path):
    img = tmp_path / "a.png"
    iio.imwrite(img, np.zeros((32, 32), np.uint8))
    r = subprocess.run([sys.executable, "-m", "zeusseg", "segment", str(img), "-p", "x",
                        "-o", str(tmp_path / "o"), "--method", "classical",
                        "--seed-threshold", "0.6"], capture_output=True, text=True)
    assert r.returncode != 0 and "--seed-threshold needs --method zeus" in r.stderr


def test_bundled_config_decode_cfg_is_valid():
    cfg = json.loads((REPO / "zeusseg/assets/models/zeus-default/config.json").read_text())
    decode = ZeusCfg.from_dict(cfg["model_cfg"]).decode_cfg
    assert isinstance(decode, ZeusDecodeCfg)


def test_segment_cli_passes_decode_flags_to_the_segmenter(monkeypatch, tmp_path):
    import zeusseg.inference.folder_run as folder_run
    from zeusseg.cli import get_arg_parser

    seen = {}

    def fake_run_segment(inputs, prompts, out, **kw):
        seen.update(kw["segment_kwargs"])
        raise SystemExit(0)

    monkeypatch.setattr(folder_run, "run_segment", fake_run_segment)
    args = get_arg_parser().parse_args(
        ["segment", str(tmp_path), "-p", "cell nuclei", "--seeds", "hmax", "--seed-h", "0.1",
         "--fg-threshold", "0.6"])
    with pytest.raises(SystemExit):
        args.run(args)
    assert seen["seeds"] == "hmax" and seen["seed_h"] == 0.1 and seen["fg_threshold"] == 0.6
    assert "seed_threshold" not in seen and "min_size" not in seen  # unset: the model's values


def test_shortlist_takes_the_best_of_each_seed_mode_and_the_current_setting():
    base = dataclasses.asdict(ZeusDecodeCfg())
    rows = [dict(base, seeds="hmax", seed_h=h, score=1 - h) for h in (0.02, 0.05, 0.1, 0.2)]
    rows += [dict(base, fg_threshold=f, score=0.5 + f / 10) for f in (0.4, 0.6)]
    table = __import__("pandas").DataFrame(rows).sort_values("score", ascending=False)
    picks = shortlist(table, base, per_mode=2)
    assert [(p["seeds"], p["seed_h"], p["fg_threshold"]) for p in picks] == [
        ("threshold", 0.05, 0.5),  # base first: it wins ties in pipeline_scores
        ("hmax", 0.02, 0.5), ("hmax", 0.05, 0.5), ("threshold", 0.05, 0.6),
        ("threshold", 0.05, 0.4)]
    assert all(set(p) == set(base) for p in picks)
    assert len(default_settings()) == 57


def test_magnified_scales_image_and_truth_together():
    labels = _disk_labels(40, 60)
    image = MicroscopyImage(labels.astype(np.float32), name="m")
    big, truth = magnified(image, labels, 2.5)
    assert big.grey().shape == truth.shape == (100, 150) and big.name == "m"
    assert np.unique(truth).tolist() == [0, 1, 2, 3]
    assert magnified(image, labels, 1)[1] is labels


def test_pipeline_scores_run_segment_image_at_every_magnification(monkeypatch):
    pred, _ = _fake_predictor(monkeypatch)
    labels = _disk_labels(120, 160)
    samples = [(MicroscopyImage(np.zeros((120, 160), np.float32), name="s"), labels)]
    good = dataclasses.asdict(ZeusDecodeCfg())
    bad = dict(good, min_size=10**6)  # removes every instance
    table = pipeline_scores(pred, {"toy": ("cell nuclei", samples, [1.0, 2.5])}, [bad, good])
    assert list(table.columns[-3:]) == ["toy@1/ap50", "toy@2.5/ap50", "score"]
    assert table.loc[0, "min_size"] == good["min_size"]
    assert table.loc[0, "toy@1/ap50"] == 1.0 and table.loc[0, "toy@2.5/ap50"] == 1.0
    assert table.loc[1, "score"] == 0.0
    assert best_setting(table, good) == good


def test_tune_script_parses_magnifications():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from tune_decoding import _parse_data
    finally:
        sys.path.pop(0)
    assert _parse_data(["dsb-train=cell nuclei@1,2.5", "visn-train=virus particles"]) == {
        "dsb-train": ("cell nuclei", [1.0, 2.5]), "visn-train": ("virus particles", [1.0])}
    for bad, msg in (("dsb-train=x@0", "must be > 0"), ("dsb-train=x@a", "must be numbers"),
                     ("dsb-train", "expected NAME=PROMPT")):
        with pytest.raises(SystemExit, match=msg):
            _parse_data([bad])


@pytest.mark.parametrize("target", ["model", "adapter"])
def test_tune_script_on_a_folder_writes_tables_and_the_settings(tmp_path, monkeypatch, target):
    import zeusseg.predictor
    from zeusseg.training.checkpoints import save_model

    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from tune_decoding import main
    finally:
        sys.path.pop(0)
    data = tmp_path / "mine"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    for name, shape in (("a", (120, 160)), ("b", (96, 128))):
        iio.imwrite(data / "images" / f"{name}.png", np.zeros(shape, np.uint8))
        iio.imwrite(data / "labels" / f"{name}.png", _disk_labels(*shape).astype(np.uint16))
    torch.manual_seed(0)
    model_dir = save_model(build_zeus("zeus-tiny"), tmp_path / "model", {"note": "kept"})
    real = ZeusPredictor

    def fake(net, *a, **k):  # maps = perfect disks of whatever image is set
        pred = real(net, embedder=fake_embedder())
        shapes = []
        pred.set_image = lambda image: shapes.append(image.shape)
        pred.predict = lambda prompts: _disk_maps(*shapes[-1])
        return pred

    monkeypatch.setattr(zeusseg.predictor, "ZeusPredictor", fake)
    out = tmp_path / "out"
    extra = []
    if target == "adapter":
        from zeusseg.adapters import base_fingerprint
        from zeusseg.training.lora import apply_lora, save_adapter

        base = load_zeus(str(model_dir))
        digest = base_fingerprint(base)
        adapter = save_adapter(apply_lora(base, {"r": 2}), tmp_path / "adapter",
                               {"model": "tiny", "sha256": digest})
        extra = ["--adapter", str(adapter)]
    config_before = (model_dir / "config.json").read_text()
    assert main(["--data", f"{data}=cell nuclei@1,2", "--every", "1", "--grid",
                 '{"fg_threshold": [0.5, 0.6], "min_size": [15, 100000]}',
                 "--model", str(model_dir), "--out", str(out), "--write", *extra]) == 0
    assert {p.name for p in out.iterdir()} >= {"grid.csv", "pipeline.csv", "decode_cfg.json"}
    record = json.loads((out / "decode_cfg.json").read_text())
    assert record["images"] == {str(data): 2} and record["decode_cfg"]["min_size"] == 15
    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["note"] == "kept"
    if target == "model":
        assert cfg["decode_tuning"]["every"] == 1
        assert ZeusCfg.from_dict(cfg["model_cfg"]).decode_cfg.min_size == 15
    else:  # the base model is untouched, the adapter holds the settings
        assert (model_dir / "config.json").read_text() == config_before
        meta = json.loads((tmp_path / "adapter" / "zeusseg_base.json").read_text())
        assert meta["decode_cfg"] == record["decode_cfg"] and meta["model"] == "tiny"


def test_tune_script_write_needs_a_folder_or_an_adapter():
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "tune_decoding.py"), "--model",
                        "zeus-default", "--write", "--out", "unused"], capture_output=True,
                       text=True)
    assert r.returncode != 0 and "--write needs --adapter or a trained-model folder" in r.stderr
