"""Augmentation of training crops: geometry on image + targets, intensity and cutout on the image.

Geometric transforms (flips, 90-degree rotations) act on the image, the targets and the class
map alike; the distance targets are invariant to them. Intensity changes (brightness, contrast,
gamma, Gaussian noise) and cutout touch the image only. Cutout follows ViruSeg: a few random
rectangles are set to the mean of the pixels they cover, and the targets are left unchanged, so
the model learns to infer partly hidden objects from their context. Scale jitter happens while
cropping (``zeusseg.training.data``), where the crop window size is chosen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np

from zeusseg.config_file import check_keys


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings (the ``augment`` entry of the data config).

    Attributes:
        flip: random horizontal and vertical flips.
        rot90: random multiples of 90-degree rotation (square crops only).
        scale_jitter: crop window scaled by a log-uniform factor in
            ``[1 / (1 + j), 1 + j]`` before resizing to the crop size; 0 = off.
        brightness: additive shift, uniform in ``[-b, b]``.
        contrast: multiplicative factor about the mean, uniform in ``[1 - c, 1 + c]``.
        gamma: exponent, log-uniform in ``[1 / (1 + g), 1 + g]``.
        noise: maximum standard deviation of additive Gaussian noise (drawn uniformly).
        intensity_prob: probability of applying each intensity change.
        cutout_prob: probability of cutout on a crop.
        cutout_max: maximum number of rectangles (at least 1 when applied).
        cutout_size: (min, max) side of a rectangle as a fraction of the crop side.
        halo_prob, blur_prob, background_prob, exposure_prob, shot_noise_prob: probabilities
            of the microscope changes of ``zeusseg.training.microscope_augment`` (0 = off, the
            default): signal around the objects (cytoplasm), defocus blur, background
            gradients and offsets, dim / saturated exposure, Poisson (shot) noise.
        halo_strength: maximum halo amplitude, a fraction of the object-background contrast.
        blur_sigma: maximum Gaussian blur sigma (pixels of the crop).
        background_strength: maximum amplitude of the gradient and of the offset.
        dim_range: (min, max) gain of a dim exposure (then 8-bit quantised).
        saturate_range: (min, max) gain of an over-exposure (clipped at 1).
        shot_noise_peak: (min, max) photon count of the brightest pixel (log-uniform).
    """

    flip: bool = True
    rot90: bool = True
    scale_jitter: float = 0.25
    brightness: float = 0.1
    contrast: float = 0.3
    gamma: float = 0.3
    noise: float = 0.04
    intensity_prob: float = 0.5
    cutout_prob: float = 0.3
    cutout_max: int = 3
    cutout_size: tuple[float, float] = (0.05, 0.2)
    halo_prob: float = 0.0
    halo_strength: float = 0.5
    blur_prob: float = 0.0
    blur_sigma: float = 2.0
    background_prob: float = 0.0
    background_strength: float = 0.2
    exposure_prob: float = 0.0
    dim_range: tuple[float, float] = (0.05, 0.4)
    saturate_range: tuple[float, float] = (1.3, 3.0)
    shot_noise_prob: float = 0.0
    shot_noise_peak: tuple[float, float] = (10.0, 300.0)

    @classmethod
    def from_dict(cls, cfg: Mapping | None) -> AugmentConfig:
        """Build from a dict; unknown keys raise ValueError listing the valid ones."""
        cfg = dict(cfg or {})
        check_keys(cfg, [f.name for f in fields(cls)], "augment")
        for key in ("cutout_size", "dim_range", "saturate_range", "shot_noise_peak"):
            if key in cfg:
                cfg[key] = tuple(float(v) for v in cfg[key])
                if len(cfg[key]) != 2 or cfg[key][0] > cfg[key][1]:
                    raise ValueError(f"augment.{key} must be [min, max], got {list(cfg[key])}")
        for key, value in cfg.items():
            if key.endswith("_prob") and not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"augment.{key} must be in [0, 1], got {value}")
        return cls(**cfg)

    @classmethod
    def off(cls) -> AugmentConfig:
        """No augmentation at all."""
        return cls(False, False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, (0.0, 0.0))


def augment_geometry(
    arrays: list[np.ndarray], cfg: AugmentConfig, rng: np.random.Generator
) -> list[np.ndarray]:
    """Apply one random flip/rotation to several arrays whose last two axes are (H, W)."""
    if cfg.flip and rng.random() < 0.5:
        arrays = [a[..., ::-1, :] for a in arrays]
    if cfg.flip and rng.random() < 0.5:
        arrays = [a[..., :, ::-1] for a in arrays]
    h, w = arrays[0].shape[-2:]
    if cfg.rot90:
        k = int(rng.integers(4)) if h == w else 2 * int(rng.integers(2))
        if k:
            arrays = [np.rot90(a, k, axes=(-2, -1)) for a in arrays]
    return [np.ascontiguousarray(a) for a in arrays]


def augment_intensity(
    image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> np.ndarray:
    """Random brightness, contrast, gamma and noise.

    Args:
        image: (H, W) float32 in [0, 1].

    Returns:
        (H, W) float32 in [0, 1] (a new array).
    """
    x = image.astype(np.float32, copy=True)
    p = cfg.intensity_prob
    if cfg.contrast > 0 and rng.random() < p:
        mean = float(x.mean())
        x = (x - mean) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + mean
    if cfg.brightness > 0 and rng.random() < p:
        x += rng.uniform(-cfg.brightness, cfg.brightness)
    np.clip(x, 0.0, 1.0, out=x)
    if cfg.gamma > 0 and rng.random() < p:
        g = np.exp(rng.uniform(-np.log1p(cfg.gamma), np.log1p(cfg.gamma)))
        np.power(x, g, out=x)
    if cfg.noise > 0 and rng.random() < p:
        sigma = rng.uniform(0, cfg.noise)
        x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(sigma)
        np.clip(x, 0.0, 1.0, out=x)
    return x


def cutout(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """ViruSeg cutout: 1..``cutout_max`` rectangles set to their own mean (in place).

    Args:
        image: (H, W) float32.

    Returns:
        The same array.
    """
    if cfg.cutout_prob <= 0 or cfg.cutout_max < 1 or rng.random() >= cfg.cutout_prob:
        return image
    h, w = image.shape
    lo, hi = cfg.cutout_size
    for _ in range(int(rng.integers(1, cfg.cutout_max + 1))):
        rh = max(1, int(h * rng.uniform(lo, hi)))
        rw = max(1, int(w * rng.uniform(lo, hi)))
        y, x = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
        patch = image[y : y + rh, x : x + rw]
        patch[...] = patch.mean()
    return image
