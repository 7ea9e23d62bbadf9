"""The instance quality head: features, fitting, threshold choice, storage, filtering, CLI."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from zeusseg.errors import InputError
from zeusseg.inference.quality_filter import QualityFilter
from zeusseg.modeling.class_head import feature_dim
from zeusseg.modeling.image_encoder import ImageFeatures
from zeusseg.modeling.quality_head import (
    QUALITY_CONFIG,
    QUALITY_WEIGHTS,
    InstanceQualityHead,
    QualityHeadSpec,
    load_quality_head,
    quality_dim,
    quality_features,
    save_quality_head,
)
from zeusseg.structures import InstanceMasks
from zeusseg.training.quality_head import (
    choose_threshold,
    fit_quality_head,
    load_quality_head_config,
    pooled_scores,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _features(h=4, w=6, c=3) -> ImageFeatures:
    cells = torch.arange(h * w, dtype=torch.float32)
    tokens = torch.stack([k * 100 + cells for k in range(c)], -1)[None]
    skip = torch.zeros(1, 2, 2 * h, 2 * w)
    return ImageFeatures(tokens=tokens, grid=(h, w), skips=[skip], skip_strides=[8], stride=16)


def _masks() -> InstanceMasks:
    """A 16x16 square inside, an L shape touching the top border (64 x 96 image)."""
    labels = np.zeros((64, 96), np.int32)
    labels[20:36, 40:56] = 1
    labels[0:16, 0:4] = 2
    labels[12:16, 0:16] = 2
    return InstanceMasks(labels=labels, scores=np.array([0.9, 0.2], np.float32))


def test_quality_features_append_score_solidity_and_border():
    feats, masks = _features(), _masks()
    x = quality_features(feats, masks, (64, 96))
    assert x.shape == (2, quality_dim(feats)) == (2, feature_dim(feats) + 3)
    np.testing.assert_allclose(x[:, -3], [0.9, 0.2])  # decoder score
    assert x[0, -2] == pytest.approx(1.0)  # a square is convex
    assert 0.3 < float(x[1, -2]) < 0.8  # the L shape is not
    np.testing.assert_array_equal(x[:, -1], [0.0, 1.0])  # only the L touches the border
    own = quality_features(feats, masks, (64, 96), context=False)  # no whole-image means
    c = feature_dim(feats) // 2
    assert own.shape == (2, quality_dim(feats, context=False)) == (2, c + 1 + 3)
    torch.testing.assert_close(own, torch.cat([x[:, :c], x[:, 2 * c:]], 1))


def test_fit_learns_separable_instances_and_threshold_is_chosen_on_held_out():
    rng = np.random.default_rng(0)
    y = torch.from_numpy(rng.integers(0, 2, 200).astype(np.float32))
    x = torch.from_numpy(rng.normal(0, 1, (200, 6)).astype(np.float32))
    x[:, 2] += 3 * y  # one informative feature
    head = fit_quality_head(x, y, hidden=8, steps=100, weight_decay=1e-4, seed=0)
    assert ((torch.sigmoid(head(x)) > 0.5).float() == y).float().mean() > 0.95
    # held out: 4 true objects, 3 found (q 0.9, 0.8, 0.7), 2 false (q 0.6, 0.2)
    quality = np.array([0.9, 0.8, 0.7, 0.6, 0.2])
    matched = np.array([True, True, True, False, False])
    t, table = choose_threshold(quality, matched, np.zeros(5, int), np.array([4]))
    assert t == pytest.approx(0.65)  # the lowest threshold that drops both false ones
    assert table[0.65] == pytest.approx(2 * 3 / (2 * 3 + 0 + 1))
    assert table[0.05] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    s = pooled_scores(quality >= t, matched, 4)
    assert s == pytest.approx({"precision": 1.0, "recall": 0.75, "f1": 6 / 7, "ap50": 0.75})


def test_quality_filter_drops_low_quality_and_rescoring_keeps_ids_compact():
    feats, masks = _features(), _masks()
    head = InstanceQualityHead(quality_dim(feats), 4)
    torch.nn.init.zeros_(head.mlp[2].weight)
    spec = QualityHeadSpec(in_dim=quality_dim(feats), hidden=4, threshold=0.5)
    with torch.no_grad():
        head.mlp[2].bias.fill_(2.0)  # quality sigmoid(2) = 0.88 for every instance
    kept = QualityFilter(head, spec)(masks, feats, (64, 96))
    assert len(kept) == 2 and np.allclose(kept.scores, 1 / (1 + np.exp(-2.0)))
    assert len(QualityFilter(head, spec, threshold=0.9)(masks, feats, (64, 96))) == 0
    one = masks.select(np.array([False, True]), scores=np.array([0.1, 0.7]))
    assert one.ids.tolist() == [1] and one.scores.tolist() == pytest.approx([0.7])
    assert (one.labels > 0).sum() == (masks.labels == 2).sum()
    wrong = QualityFilter(InstanceQualityHead(5, 4), QualityHeadSpec(in_dim=5, hidden=4))
    with pytest.raises(ValueError, match="expects 5 features"):
        wrong(masks, feats, (64, 96))


def test_save_load_round_trip_and_damaged_files(tmp_path):
    head = InstanceQualityHead(7, 5)
    torch.nn.init.normal_(head.feat_mean)
    spec = QualityHeadSpec(in_dim=7, hidden=5, threshold=0.35, provenance={"n": 3})
    save_quality_head(head, spec, tmp_path)
    loaded, spec2 = load_quality_head(tmp_path)
    assert spec2 == spec
    x = torch.randn(4, 7)
    torch.testing.assert_close(loaded(x), head(x))
    assert load_quality_head(tmp_path / "none") is None
    cfg = json.loads((tmp_path / QUALITY_CONFIG).read_text())
    (tmp_path / QUALITY_CONFIG).write_text(json.dumps({**cfg, "hidden": 6}))
    with pytest.raises(InputError, match="do not load"):
        load_quality_head(tmp_path)
    (tmp_path / QUALITY_CONFIG).write_text(json.dumps({**cfg, "threshold": 1.5}))
    with pytest.raises(InputError, match="not a quality-head config"):
        load_quality_head(tmp_path)
    (tmp_path / QUALITY_WEIGHTS).unlink()
    with pytest.raises(InputError, match="missing"):
        load_quality_head(tmp_path)


def test_config_rejects_unknown_keys_and_bad_values(tmp_path):
    cfg = tmp_path / "q.yaml"
    cfg.write_text("data: {colour: red}\n")
    with pytest.raises(InputError, match=r"unknown key 'data.colour'"):
        load_quality_head_config(cfg)
    cfg.write_text("data: {holdout_every: 1}\n")
    with pytest.raises(InputError, match="holdout_every"):
        load_quality_head_config(cfg)
    cfg.write_text("data: {datasets: {visn-train: ''}}\n")
    with pytest.raises(InputError, match="map dataset names to prompts"):
        load_quality_head_config(cfg)
    ok = load_quality_head_config("configs/quality_head/default.yaml")
    assert ok["data"]["datasets"] == {"visn-train": "virus particles", "dsb-train": "cell nuclei"}


def _disk_labels(centres, shape=(64, 80), radius=7) -> np.ndarray:
    from skimage.draw import disk

    labels = np.zeros(shape, np.int32)
    for k, (r, c) in enumerate(centres, start=1):
        rr, cc = disk((r, c), radius, shape=shape)
        labels[rr, cc] = k
    return labels


@pytest.fixture
def tiny_setup(tmp_path: Path, monkeypatch):
    """A data root with 5 visn-train images and a saved random tiny model that decodes with a
    very low foreground threshold (so it finds instances)."""
    from PIL import Image

    from zeusseg.factory import build_zeus
    from zeusseg.io.coco import coco_dict
    from zeusseg.training.checkpoints import save_model

    folder = tmp_path / "data" / "visn" / "train"
    (folder / "images").mkdir(parents=True)
    entries = []
    for k, stem in enumerate(["0001", "0002", "0003", "0004", "0005"]):
        labels = _disk_labels([(15 + 3 * k, 15), (45, 50 - 2 * k)])
        img = (40 + 150 * (labels > 0)).astype(np.uint8)
        Image.fromarray(img).save(folder / "images" / f"{stem}.png")
        entries.append((f"{stem}.png", InstanceMasks(labels=labels, class_names={1: "RSV"})))
    (folder / "annotations.json").write_text(json.dumps(coco_dict(entries, {1: "RSV"})))
    monkeypatch.setenv("ZEUSSEG_DATA_ROOT", str(tmp_path / "data"))
    torch.manual_seed(0)
    save_model(build_zeus("zeus-tiny"), tmp_path / "model", {})
    meta = json.loads((tmp_path / "model" / "config.json").read_text())
    meta["model_cfg"]["decode_cfg"]["fg_threshold"] = 0.01
    meta["model_cfg"]["input_cfg"]["scale"] = 1.0
    (tmp_path / "model" / "config.json").write_text(json.dumps(meta))
    return tmp_path


def test_segment_image_hands_final_pass_features_to_the_quality_hook(tiny_setup):
    from tests.zeus_fakes import fake_embedder
    from zeusseg.inference.zeus_segmenter import load_zeus, segment_image
    from zeusseg.io import read_image
    from zeusseg.predictor import ZeusPredictor

    predictor = ZeusPredictor(load_zeus(str(tiny_setup / "model")), fake_embedder())
    image = read_image(tiny_setup / "data" / "visn" / "train" / "images" / "0001.png")
    seen = []

    def hook(masks, feats, shape):
        seen.append((len(masks), quality_features(feats, masks, shape).shape[1],
                     quality_dim(feats), shape))
        return masks.select(np.zeros(len(masks), bool))

    out = segment_image(predictor, image, ["virus particles"], quality_head=hook,
                        auto_scale=False)
    plain = segment_image(predictor, image, ["virus particles"], auto_scale=False)
    assert len(seen) == 1 and seen[0][0] == len(plain) > 0
    assert seen[0][1] == seen[0][2]
    assert seen[0][3] == (64, 80) and len(out) == 0  # the hook's answer is the result


@pytest.mark.weights
def test_train_quality_head_cli_writes_a_head_segment_uses(tiny_setup, monkeypatch):
    from tests.zeus_fakes import fake_embedder
    from zeusseg.inference.zeus_segmenter import build_zeus_segmenter, find_quality_head
    from zeusseg.io import read_image
    from zeusseg.training.quality_head import train_quality_head

    out = tiny_setup / "model"
    cfg = load_quality_head_config("configs/quality_head/default.yaml", {
        "base": str(out), "output_dir": str(out), "data.datasets": {"visn-train": "virus"},
        "data.views": 2, "data.holdout_every": 2, "train.steps": 5, "train.num_threads": 1})
    metrics = train_quality_head(cfg, embedder=fake_embedder())
    assert metrics["instances"] > 0 and 0.05 <= metrics["threshold"] <= 0.95
    held = metrics["heldout"]["visn-train"]
    assert held["instances"] > 0 and set(held) == {"instances", "decoder", "quality_head"}
    samples = torch.load(out / "samples.pt", weights_only=False)
    full_dim = samples["x"].shape[1]
    assert samples["x"].shape[0] == metrics["instances"] and samples["base"] == str(out)
    assert samples["holdout"].any() and not samples["holdout"].all()
    head, spec = find_quality_head(str(out))
    assert not spec.context and spec.in_dim == full_dim - (full_dim - 3) // 2
    # refit from the saved samples: no segmenting, the same head for the same settings
    again = train_quality_head({**cfg, "output_dir": str(tiny_setup / "refit"),
                                "data": {**cfg["data"], "samples": str(out / "samples.pt")}})
    assert again["threshold"] == metrics["threshold"]
    torch.testing.assert_close(find_quality_head(str(tiny_setup / "refit"))[0].state_dict(),
                               head.state_dict())
    with pytest.raises(InputError, match="not 'other'"):
        train_quality_head({**cfg, "base": "other", "data": {**cfg["data"],
                                                           "samples": str(out / "samples.pt")}})
    assert spec.threshold == metrics["threshold"] and spec.provenance["datasets"] == {
        "visn-train": "virus"}
    image = read_image(tiny_setup / "data" / "visn" / "train" / "images" / "0003.png")
    with_head = build_zeus_segmenter(["virus"], model=str(out))
    without = build_zeus_segmenter(["virus"], model=str(out), use_quality_head=False)
    a, b = with_head(image), without(image)
    assert len(a) <= len(b)
    assert np.all(a.scores >= spec.threshold)


# (model, example, prompt, AP@0.5 with the head, without): measured with the bundled models
# (zeus-default 2026-12-03, zeus-instruct 2026-12-04; docs/quality_head.md); floors = with-head
# value minus 0.05.
BUNDLED = [("zeus-default", "visn-0008", "virus particles", 0.714, 0.630),
           ("zeus-default", "dsb-0010", "cell nuclei", 0.761, 0.761),
           ("zeus-default", "coelho-u2os-dna-0", "cell nuclei", 0.933, 0.933),
           ("zeus-instruct", "visn-0008", "virus particles", 0.667, 0.577),
           ("zeus-instruct", "dsb-0010", "cell nuclei", 0.800, 0.811),
           ("zeus-instruct", "coelho-u2os-dna-0", "cell nuclei", 0.913, 0.913)]


@functools.cache
def bundled_segmenters(model: str):
    """Segmenters of a bundled model with and without its quality head (built once per model)."""
    from zeusseg.inference.zeus_segmenter import build_zeus_segmenter, find_quality_head
    from zeusseg.pretrained import weights_present

    if not weights_present(model):
        pytest.skip(f"bundled {model} model not present")
    found = find_quality_head(model)
    assert found is not None, f"the bundled {model} ships a quality head"
    return {q: {p: build_zeus_segmenter([p], model=model, use_quality_head=q)
                for p in ("virus particles", "cell nuclei")} for q in (True, False)}, found[1]


@pytest.mark.weights
@pytest.mark.parametrize(("model", "stem", "prompt", "with_head", "without"), BUNDLED)
def test_bundled_quality_head_drops_false_positives_on_the_examples(
        model, stem, prompt, with_head, without):
    from tests.conftest import REPO
    from zeusseg.io import read_image, read_label_image
    from zeusseg.metrics import average_precision

    segmenters, spec = bundled_segmenters(model)
    image = read_image(REPO / "examples" / f"{stem}.png")
    gt = read_label_image(REPO / "tests" / "data" / f"{stem}-labels.png")
    kept, everything = segmenters[True][prompt](image), segmenters[False][prompt](image)
    assert len(kept) <= len(everything)
    assert np.all(kept.scores >= spec.threshold)
    ap = {k: float(average_precision(gt.labels, m.labels, thresholds=(0.5,))[0][0])
          for k, m in (("with", kept), ("without", everything))}
    assert ap["with"] >= with_head - 0.05, ap
    assert ap["with"] >= ap["without"] - 0.02, ap  # never worse than the plain decoder here
