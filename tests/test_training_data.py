"""Tests for the training data pipeline (zeusseg.training: data, preload, sampling, scaling)."""

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.draw import disk

from zeusseg.datasets.registry import Sample
from zeusseg.structures import InstanceMasks
from zeusseg.training.augment import AugmentConfig
from zeusseg.training.data import PromptedSegmentationDataset
from zeusseg.training.data_config import data_config
from zeusseg.training.preload import Source
from zeusseg.training.targets import make_targets
from zeusseg.training.validation_set import ValidationSet
from zeusseg.transforms import median_diameter, rescale_factor

GEOMETRY_ONLY = {
    "flip": True, "rot90": True, "scale_jitter": 0.25, "brightness": 0.0, "contrast": 0.0,
    "gamma": 0.0, "noise": 0.0, "cutout_prob": 0.0,
}


def _disks(rng, shape, radius, n):
    labels = np.zeros(shape, np.uint16)
    for i in range(n):
        c = rng.integers(radius, np.array(shape) - radius)
        labels[disk(tuple(c), radius, shape=shape)] = i + 1
    return labels


def _write_folder(root: Path, n_images: int, shape, radius, bright: bool, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for k in range(n_images):
        labels = _disks(rng, shape, radius, 6)
        fg, bg = (200, 20) if bright else (40, 190)
        img = np.where(labels > 0, fg, bg).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"im-{k:02d}.png")
        Image.fromarray(labels).save(root / "labels" / f"im-{k:02d}.png")
    return root


@pytest.fixture
def two_domain_config(tmp_path):
    nuclei = _write_folder(tmp_path / "nuclei", 4, (96, 120), 9, bright=True, seed=1)
    virus = _write_folder(tmp_path / "virus", 3, (200, 180), 12, bright=False, seed=2)
    return {
        "datasets": {
            "toy-nuclei": {"folder": str(nuclei), "prompt": "cell nuclei", "weight": 3.0},
            "toy-virus": {"folder": str(virus), "prompt": "virus particles", "scale": 0.5},
        },
        "validation": {"toy-virus": {"folder": str(virus), "prompt": "virus particles",
                                     "scale": 0.5}},
        "crop_size": 64,
        "negative_prob": 0.3,
        "augment": GEOMETRY_ONLY,
        "preload_workers": 1,
    }


def test_items_are_aligned_and_shaped(two_domain_config):
    torch.manual_seed(0)
    ds = PromptedSegmentationDataset(two_domain_config)
    assert len(ds) == 7
    assert ds.records[4].image.shape == (100, 90)  # virus images at scale 0.5
    n_pos = 0
    for i in range(40):
        item = ds[i % len(ds)]
        image, targets = item["image"], item["targets"]
        assert image.shape == (1, 64, 64) and targets.shape == (3, 64, 64)
        assert image.dtype == torch.float32 and targets.dtype == torch.float32
        assert 0 <= image.min() and image.max() <= 1 and 0 <= targets.min() and targets.max() <= 1
        assert isinstance(item["text"], str) and item["text"]
        if item["positive"] and targets[0].sum() > 20:
            n_pos += 1
            fg = targets[0] > 0.5
            bright = item["dataset"] == "toy-nuclei"
            inside, outside = image[0][fg].mean(), image[0][~fg].mean()
            assert (inside > outside + 0.4) if bright else (inside < outside - 0.4)
            assert torch.all(targets[1:][:, ~fg] == 0)
    assert n_pos > 10


def test_negatives_are_empty_and_cross_domain(two_domain_config):
    torch.manual_seed(1)
    ds = PromptedSegmentationDataset({**two_domain_config, "negative_prob": 1.0})
    for i in range(len(ds)):
        item = ds[i]
        assert not item["positive"] and float(item["targets"].abs().sum()) == 0.0
        if item["dataset"] == "toy-nuclei":
            assert item["class_name"] == "virus particles"
        else:
            assert item["class_name"] == "cell nuclei"


def test_sampler_balances_datasets(two_domain_config):
    ds = PromptedSegmentationDataset(two_domain_config)
    sampler = ds.sampler(4000, seed=0)
    counts = Counter(ds.records[i].source for i in sampler)
    assert set(counts) == {"toy-nuclei", "toy-virus"}
    assert 0.70 < counts["toy-nuclei"] / 4000 < 0.80  # weights 3 : 1
    sampler.set_epoch(1)
    assert list(sampler)[:50] != list(ds.sampler(4000, seed=0))[:50]


def test_class_prompt_keeps_only_that_class(tmp_path):
    rng = np.random.default_rng(0)
    labels = _disks(rng, (80, 80), 8, 6).astype(np.int32)
    class_ids = np.array([1, 2, 1, 2, 1, 2])
    masks = InstanceMasks(labels=labels, ids=np.arange(1, 7), class_ids=class_ids)
    path = tmp_path / "mixed.png"
    Image.fromarray(np.where(labels > 0, 200, 20).astype(np.uint8)).save(path)
    src = Source("mixed", [Sample("mixed", path, masks)], "virus particles",
                 {1: "RSV", 2: "FLUAV"})
    cfg = {"crop_size": 80, "negative_prob": 0.0, "agnostic_prob": 0.0, "augment": {}}
    ds = PromptedSegmentationDataset(cfg, sources=[src], augment=False)
    torch.manual_seed(0)
    full = make_targets(masks.relabelled().labels)
    seen = set()
    for _ in range(20):
        item = ds[0]
        keep = {"RSV": 1, "FLUAV": 2}[item["class_name"]]
        seen.add(keep)
        expected = full * np.isin(labels, np.flatnonzero(class_ids == keep) + 1)
        np.testing.assert_allclose(item["targets"].numpy(), expected, atol=1 / 255 + 1e-6)
    assert seen == {1, 2}


def test_target_diameter_mode(two_domain_config):
    cfg = two_domain_config
    cfg["datasets"]["toy-virus"].update(target_diameter=12.0)
    ds = PromptedSegmentationDataset({**cfg, "preload_workers": 2})  # worker processes
    from scipy import ndimage

    for rec in ds.records[4:]:
        assert rec.factor == pytest.approx(12.0 / 25.0, rel=0.1)  # disks of radius 12
        blobs = ndimage.label(rec.class_map > 0)[0]
        assert median_diameter(blobs) == pytest.approx(12.0, rel=0.2)
        assert rec.targets[0].max() == 255


def test_validation_set_pads_and_restores(two_domain_config):
    val = ValidationSet(two_domain_config)
    assert len(val) == 3
    item = val[0]
    assert item.image.shape == (1, 128, 96) and item.size == (100, 90)
    assert item.prompts == {1: "virus particles"} and item.agnostic_prompt == "virus particles"
    small = np.zeros((128, 96), np.int32)
    small[:100, :90] = (item.image[0, :100, :90].numpy() < 0.5)  # dark disks
    restored = item.restore(small)
    assert restored.shape == item.masks.shape == (200, 180)
    agree = (restored > 0) == (item.masks.labels > 0)
    assert agree.mean() > 0.98


def test_scaling_helpers():
    assert rescale_factor(None, 24) == 1.0 and rescale_factor(float("nan"), 24) == 1.0
    assert rescale_factor(48, 24) == 0.5 and rescale_factor(2, 24) == 4.0  # clipped
    labels = np.zeros((60, 60), np.int32)
    labels[disk((20, 20), 10)] = 1
    labels[disk((40, 40), 10)] = 2
    assert median_diameter(labels) == pytest.approx(20.0, abs=0.5)
    assert np.isnan(median_diameter(np.zeros((4, 4), np.int32)))
    with pytest.raises(ValueError):
        rescale_factor(10, 0)


def test_config_validation():
    with pytest.raises(ValueError, match="unknown data config keys"):
        data_config({"crop": 3})
    with pytest.raises(ValueError, match="unknown augment keys"):
        AugmentConfig.from_dict({"flips": True})
    assert data_config({})["datasets"]["visn-train"]["scale"] == 0.5


def test_getitem_is_fast(two_domain_config):
    cfg = {**two_domain_config, "crop_size": 256, "augment": {}}
    ds = PromptedSegmentationDataset(cfg)
    torch.manual_seed(0)
    ds[0]
    t0 = time.perf_counter()
    for i in range(50):
        ds[i % len(ds)]
    assert (time.perf_counter() - t0) / 50 < 0.06  # 4-13 ms measured on a busy 2-core CPU


def _data_root():
    from zeusseg.datasets import resolve_data_root

    try:
        return resolve_data_root()
    except Exception:
        return None


@pytest.mark.data
@pytest.mark.skipif(_data_root() is None, reason="shared data root not found")
def test_real_visn_and_dsb():
    cfg = {"max_images": 6, "preload_workers": 1, "negative_prob": 0.5}
    ds = PromptedSegmentationDataset(cfg)
    assert {r.source for r in ds.records} == {"visn-train", "dsb-train"}
    visn = next(r for r in ds.records if r.source == "visn-train")
    assert visn.image.shape == (410, 450) and visn.targets.shape == (3, 410, 450)
    torch.manual_seed(0)
    drawn = Counter()
    for i in ds.sampler(60):
        item = ds[i]
        drawn[item["dataset"]] += 1
        assert item["image"].shape == (1, 256, 256) and item["targets"].shape == (3, 256, 256)
        if not item["positive"]:
            assert float(item["targets"].abs().sum()) == 0.0
    assert drawn["visn-train"] > 10 and drawn["dsb-train"] > 10
    val = ValidationSet(cfg, max_images=2)
    assert len(val) == 4 and val[0].image.shape[1] % 32 == 0 and val[0].image.shape[2] % 32 == 0


def test_instruction_modes_give_names_or_per_image_instructions(two_domain_config, tmp_path):
    torch.manual_seed(0)
    names = PromptedSegmentationDataset({**two_domain_config, "instruction_mode": "name"})
    texts = {names[i % len(names)]["text"] for i in range(40)}
    assert texts == {"cell nuclei", "virus particles"}
    cache = tmp_path / "instructions.jsonl"
    ds = PromptedSegmentationDataset({**two_domain_config, "instruction_mode": "template",
                                      "instruction_prob": 1.0, "instruction_cache": str(cache)})
    items = [ds[i % len(ds)] for i in range(30)]
    for item in items:  # every text is the template instruction of the whole image
        assert item["text"].startswith("Segment") and len(item["text"].split()) > 8
    by_image = {}
    for rec in ds.records:
        text = ds.text_provider.instruction("cell nuclei", rec.name)
        by_image.setdefault(rec.source, set()).add(text)
    assert len(by_image["toy-nuclei"]) > 1  # measured per image: the texts differ
    assert cache.is_file() and len(cache.read_text().splitlines()) >= len(ds.records)
    again = PromptedSegmentationDataset({**two_domain_config, "instruction_mode": "template",
                                         "instruction_prob": 1.0,
                                         "instruction_cache": str(cache)})
    rec = again.records[0]
    assert again.text_provider.instruction("cell nuclei", rec.name) == \
        ds.text_provider.instruction("cell nuclei", rec.name)
    mixed = PromptedSegmentationDataset({**two_domain_config, "instruction_mode": "template",
                                         "instruction_prob": 0.0})
    phrasings = {t for ts in mixed.prompts.table.values() for t in ts}
    assert all(mixed[i % len(mixed)]["text"] in phrasings for i in range(20))
    with pytest.raises(ValueError, match="instruction_mode 'vlm'"):
        data_config({"instruction_mode": "vlm"})
    with pytest.raises(ValueError, match="instruction_prob"):
        data_config({"instruction_prob": 2})


def test_contact_weights_follow_the_seams_between_touching_objects(two_domain_config):
    from zeusseg.training.targets import contact_map

    labels = np.zeros((60, 90), np.int32)
    labels[disk((30, 30), 15)] = 1
    labels[disk((30, 59), 15)] = 2  # touching at columns ~44-45
    labels[disk((30, 82), 5)] = 3   # alone
    c = contact_map(labels)
    assert c[30, 44] == pytest.approx(1.0) or c[30, 45] == pytest.approx(1.0)
    assert c[30, 30] < 1e-3 and c[10, 10] == 0 and c[30, 82] < 1e-3  # centres, background
    assert contact_map(np.where(labels == 3, 3, 0)).max() == 0.0  # no contact, no weight

    torch.manual_seed(0)
    ds = PromptedSegmentationDataset({**two_domain_config, "contact_weight": 4.0})
    assert ds.records[0].contact is not None and ds.records[0].contact.dtype == np.uint8
    seen_seam = False
    for i in range(30):
        item = ds[i % len(ds)]
        w, fg = item["weights"], item["targets"][0] > 0.5
        assert w.shape == (64, 64) and float(w.min()) >= 1.0 and float(w.max()) <= 5.0
        assert torch.all(w[~fg] == 1.0)  # only the prompted objects are weighted
        seen_seam |= float(w.max()) > 2.0
    assert seen_seam
    plain = PromptedSegmentationDataset(two_domain_config)
    assert "weights" not in plain[0] and plain.records[0].contact is None  # not computed
    with pytest.raises(ValueError, match="contact_weight"):
        PromptedSegmentationDataset({**two_domain_config, "contact_weight": -1})


def test_pixel_weights_scale_the_distance_losses_only():
    from zeusseg.training.losses import zeus_loss

    torch.manual_seed(0)
    logits, targets = torch.randn(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    plain, parts = zeus_loss(logits, targets)
    doubled, parts2 = zeus_loss(logits, targets, pixel_weights=torch.full((2, 16, 16), 2.0))
    assert parts2["fg_bce"] == pytest.approx(parts["fg_bce"])
    assert parts2["centre"] == pytest.approx(2 * parts["centre"], rel=1e-5)
    assert parts2["boundary"] == pytest.approx(2 * parts["boundary"], rel=1e-5)
    assert float(doubled) == pytest.approx(float(plain) + parts["centre"] + parts["boundary"],
                                           rel=1e-5)
