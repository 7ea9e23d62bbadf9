"""Microscope augmentation: each change does what it says, targets untouched, config checked."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from zeusseg.training import microscope_augment as ma
from zeusseg.training.augment import AugmentConfig


@pytest.fixture
def scene(disks_labels):
    objects = disks_labels > 0
    image = np.where(objects, 0.8, 0.1).astype(np.float32)
    return image, objects


def test_halo_adds_signal_of_the_objects_polarity_outside_them(scene):
    image, objects = scene
    out = ma.add_halo(image, objects, 0.5, np.random.default_rng(0))
    assert np.array_equal(out[objects], image[objects])  # the objects themselves unchanged
    ring = ndimage.binary_dilation(objects, iterations=2) & ~objects
    far = ~ndimage.binary_dilation(objects, iterations=40)
    assert out[ring].mean() > image[ring].mean() + 0.03  # bright objects: brighter band
    if far.any():
        assert abs(out[far].mean() - image[far].mean()) < 0.02
    dark = ma.add_halo(1.0 - image, objects, 0.5, np.random.default_rng(0))  # dark objects
    assert dark[ring].mean() < (1.0 - image)[ring].mean() - 0.03
    assert ma.add_halo(image, np.zeros_like(objects), 0.5, np.random.default_rng(0)) is image


def test_defocus_background_exposure_and_shot_noise(scene):
    image, _ = scene
    rng = np.random.default_rng(1)
    blurred = ma.defocus(image, 2.0, rng)
    assert blurred.std() < image.std() and abs(blurred.mean() - image.mean()) < 1e-3
    bg = ma.add_background(image, 0.2, rng)
    assert bg.shape == image.shape and 0.0 <= bg.min() and bg.max() <= 1.0
    assert np.abs(bg - image).max() > 0.01
    dim = ma.expose(image, (0.1, 0.1), (2.0, 2.0), np.random.default_rng(3))
    sat = ma.expose(image, (0.1, 0.1), (2.0, 2.0), np.random.default_rng(4))
    dim, sat = (dim, sat) if dim.max() < sat.max() else (sat, dim)
    assert dim.max() <= 0.1 and len(np.unique(dim)) <= 27  # few 8-bit levels
    assert sat.max() == 1.0 and np.isclose(sat.min(), 0.2)  # objects clipped at 1
    grey = np.full((200, 200), 0.5, np.float32)
    noisy = ma.shot_noise(grey, (20.0, 20.0), np.random.default_rng(5))
    assert abs(noisy.mean() - 0.5) < 0.01
    assert noisy.std() == pytest.approx(np.sqrt(0.5 * 20) / 20, rel=0.1)  # Poisson at 20 photons


def test_all_off_returns_the_image_unchanged(scene):
    image, objects = scene
    out = ma.augment_microscope(image, objects, AugmentConfig(), np.random.default_rng(0))
    assert out is image
    on = AugmentConfig(halo_prob=1, blur_prob=1, background_prob=1, exposure_prob=1,
                       shot_noise_prob=1)
    out = ma.augment_microscope(image, objects, on, np.random.default_rng(0))
    assert out.dtype == np.float32 and out.shape == image.shape
    assert 0.0 <= out.min() and out.max() <= 1.0 and not np.array_equal(out, image)


def test_augment_config_checks_ranges_and_probabilities():
    cfg = AugmentConfig.from_dict({"dim_range": [0.1, 0.3], "halo_prob": 0.2})
    assert cfg.dim_range == (0.1, 0.3) and cfg.halo_prob == 0.2
    with pytest.raises(ValueError, match="dim_range"):
        AugmentConfig.from_dict({"dim_range": [0.5, 0.1]})
    with pytest.raises(ValueError, match="halo_prob"):
        AugmentConfig.from_dict({"halo_prob": 1.5})
    assert AugmentConfig.off().halo_prob == 0.0


def test_training_items_keep_their_targets_under_microscope_augmentation(tmp_path):
    """The same seed with and without the microscope changes: same targets, other image."""
    import torch

    from zeusseg.training.data import PromptedSegmentationDataset

    from .zeus_fakes import write_folder

    folder = write_folder(tmp_path / "nuclei", "bright", seed=1)
    base = {"datasets": {"syn": {"folder": str(folder), "prompt": "cell nuclei"}},
            "validation": {}, "crop_size": 64, "negative_prob": 0.0, "preload_workers": 1}
    on = {"halo_prob": 1.0, "blur_prob": 1.0, "background_prob": 1.0, "exposure_prob": 1.0,
          "shot_noise_prob": 1.0}
    plain = PromptedSegmentationDataset({**base, "augment": {}})
    micro = PromptedSegmentationDataset({**base, "augment": on})
    torch.manual_seed(0)
    a = plain[0]
    torch.manual_seed(0)
    b = micro[0]
    assert torch.equal(a["targets"], b["targets"]) and a["targets"][0].sum() > 0
    assert not torch.equal(a["image"], b["image"])
