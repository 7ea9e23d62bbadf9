"""What changes between microscopes and labs, simulated on training crops (image only).

The targets never change: each function alters how the same objects look.

* ``add_halo``: signal around the objects, e.g. cytoplasmic stain around Hoechst nuclei: a
  textured band of random width outside each object, of the objects' polarity (brighter than the
  background when the objects are), a random fraction of the object-background contrast.
* ``defocus``: Gaussian blur (defocus, lower optical resolution).
* ``add_background``: a linear gradient plus a smooth low-frequency field plus an offset
  (uneven illumination, autofluorescence, carbon film).
* ``expose``: a dim exposure (low gain, then 8-bit quantisation: few grey levels) or an
  over-exposure (high gain, clipped: saturated objects).
* ``shot_noise``: Poisson noise at a random photon count of the brightest pixel.

``augment_microscope`` applies each with its probability of ``AugmentConfig``, in the order a
microscope would: sample (halo), optics (blur), illumination (background), detector (exposure,
noise).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from zeusseg.training.augment import AugmentConfig


def _smooth_field(shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-max-abs random field varying on ``scale`` pixels."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), scale)
    field -= field.mean()
    peak = float(np.abs(field).max())
    return field / peak if peak > 0 else field


def add_halo(
    image: np.ndarray, objects: np.ndarray, strength: float, rng: np.random.Generator
) -> np.ndarray:
    """Textured signal in a band around ``objects`` (bool (H, W)); no change without objects."""
    if not objects.any() or objects.all():
        return image
    inside, outside = float(image[objects].mean()), float(image[~objects].mean())
    contrast = inside - outside
    if abs(contrast) < 1e-3:
        return image
    size = float(np.sqrt(objects.sum() / max(1, ndimage.label(objects)[1])))  # ~object side
    width = rng.uniform(0.2, 1.0) * size
    dist = ndimage.distance_transform_edt(~objects)
    band = np.clip(1.0 - dist / max(width, 1.0), 0.0, 1.0)
    band = ndimage.gaussian_filter(band.astype(np.float32), max(1.0, width / 4)) * (~objects)
    texture = 1.0 + 0.5 * _smooth_field(image.shape, max(1.0, size / 6), rng)
    amplitude = rng.uniform(0.1, strength) * contrast
    return np.clip(image + amplitude * band * texture, 0.0, 1.0).astype(np.float32)


def defocus(image: np.ndarray, max_sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur with sigma uniform in [0.5, ``max_sigma``]."""
    return ndimage.gaussian_filter(image, rng.uniform(0.5, max(0.5, max_sigma)))


def add_background(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Linear gradient + smooth field + offset, each up to ``strength`` in amplitude."""
    h, w = image.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / max(w - 1, 1) + np.sin(angle) * yy / max(h - 1, 1))
    ramp -= ramp.mean()
    bg = rng.uniform(0, strength) * ramp
    bg += rng.uniform(0, strength) * _smooth_field((h, w), max(h, w) / 4, rng)
    bg += rng.uniform(-strength, strength)
    return np.clip(image + bg, 0.0, 1.0).astype(np.float32)


def expose(
    image: np.ndarray, dim_range: tuple[float, float], saturate_range: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Half the time a dim exposure (gain in ``dim_range``, 8-bit quantised), else saturated."""
    if rng.random() < 0.5:
        x = image * rng.uniform(*dim_range)
        return (np.round(x * 255.0) / 255.0).astype(np.float32)
    return np.clip(image * rng.uniform(*saturate_range), 0.0, 1.0).astype(np.float32)


def shot_noise(
    image: np.ndarray, peak: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """Poisson noise; the brightest possible pixel (1.0) collects ``peak`` photons."""
    photons = float(np.exp(rng.uniform(np.log(peak[0]), np.log(peak[1]))))
    noisy = rng.poisson(np.clip(image, 0.0, 1.0) * photons) / photons
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def augment_microscope(
    image: np.ndarray, objects: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> np.ndarray:
    """Apply the microscope changes of ``cfg`` (each with its own probability).

    Args:
        image: (H, W) float32 in [0, 1].
        objects: (H, W) bool, every annotated object of the crop (prompted or not).

    Returns:
        (H, W) float32 in [0, 1] (a new array when anything changed).
    """
    if cfg.halo_prob > 0 and rng.random() < cfg.halo_prob:
        image = add_halo(image, objects, cfg.halo_strength, rng)
    if cfg.blur_prob > 0 and rng.random() < cfg.blur_prob:
        image = defocus(image, cfg.blur_sigma, rng)
    if cfg.background_prob > 0 and rng.random() < cfg.background_prob:
        image = add_background(image, cfg.background_strength, rng)
    if cfg.exposure_prob > 0 and rng.random() < cfg.exposure_prob:
        image = expose(image, cfg.dim_range, cfg.saturate_range, rng)
    if cfg.shot_noise_prob > 0 and rng.random() < cfg.shot_noise_prob:
        image = shot_noise(image, cfg.shot_noise_peak, rng)
    return image
