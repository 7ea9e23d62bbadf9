"""``MeasuredDescriber``: facts measured from the pixels, stated as short sentences.

How it works (about 0.1 s for a 900x820 image on one CPU core):

1. Intensity statistics on the full image: percentiles, and the noise level sigma from the
   median absolute difference of horizontal neighbours (robust to edges).
2. Modality guess: a dark background with a bright tail is fluorescence; a bright, clean
   background (or colour) is brightfield; a mid-grey, grainy background is electron microscopy.
3. Objects: a Laplacian-of-Gaussian scale space on a block-averaged copy (longest side
   <= 256 px). Scale-normalised extrema above a contrast threshold are blobs; bright blobs and
   dark blobs are found in the same pass, and the stronger set sets the polarity. Overlapping
   blobs are pruned greedily (strongest first). Diameter = 2 * sqrt(2) * sigma.
4. Crowding from the area the blobs cover and how many touch a neighbour.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from zeusseg.instructions.describer import Describer, Description
from zeusseg.structures import MicroscopyImage

_logger = logging.getLogger(__name__)

MAX_SIDE = 256  # longest side of the downsampled copy used for blob detection
SIGMAS = (1.5, 2.2, 3.2, 4.6, 6.6, 9.5, 13.5, 19.0)  # LoG scales in downsampled pixels
MIN_RESPONSE = 0.12  # scale-normalised LoG response, in units of the p1..p99 intensity range


@dataclass(frozen=True)
class MeasuredFacts:
    """Numbers measured from one image (diameters in pixels of the original image).

    Attributes:
        modality: ``fluorescence``, ``brightfield`` or ``electron microscopy`` (a guess).
        polarity: ``light`` (objects brighter than background) or ``dark``.
        count: number of blobs found (approximate object count).
        diameter_px: median blob diameter.
        diameter_lo_px: 25th percentile of blob diameters.
        diameter_hi_px: 75th percentile of blob diameters.
        coverage: fraction of the image area covered by the blobs.
        touching: fraction of blobs whose nearest neighbour touches them.
        crowding: ``sparse``, ``moderately crowded`` or ``densely packed``.
        background: median intensity in [0, 1].
        contrast: p99 - p1 of the intensities in [0, 1].
        noise: estimated noise standard deviation in [0, 1] intensity units.
        snr: contrast / noise.
        height: image height in pixels.
        width: image width in pixels.
    """

    modality: str
    polarity: str
    count: int
    diameter_px: float
    diameter_lo_px: float
    diameter_hi_px: float
    coverage: float
    touching: float
    crowding: str
    background: float
    contrast: float
    noise: float
    snr: float
    height: int
    width: int


class MeasuredDescriber(Describer):
    """Describes an image by measuring it (no model, no weights; the offline default)."""

    id = "measured-v1"

    def describe(self, image: MicroscopyImage) -> Description:
        """Measure ``image`` and state the facts.

        Returns:
            Description whose ``facts`` are ``asdict(MeasuredFacts)``.
        """
        facts = measure(image)
        return Description(text=facts_to_text(facts), facts=asdict(facts), describer=self.id)


def measure(image: MicroscopyImage) -> MeasuredFacts:
    """The ``MeasuredFacts`` of ``image`` (see the module docstring for the method)."""
    grey = image.grey().astype(np.float32)
    h, w = grey.shape
    p1, p50, p99 = (float(v) for v in np.percentile(grey[::2, ::2], (1, 50, 99)))
    contrast = max(p99 - p1, 1e-6)
    diff = np.diff(grey[::2], axis=1).ravel()
    noise = float(1.4826 * np.median(np.abs(diff - np.median(diff))) / math.sqrt(2))
    snr = contrast / max(noise, 1e-6)
    colour = image.data.ndim == 3
    modality = _guess_modality(p1, p50, p99, snr, colour)

    factor = max(1, math.ceil(max(h, w) / MAX_SIDE))
    small = _block_mean(grey, factor)
    small = (small - p1) / contrast
    blobs, polarity = _find_blobs(small, prefer_light=modality == "fluorescence")
    radii = blobs[:, 2] * math.sqrt(2) * factor if len(blobs) else np.zeros(0)
    diam = 2 * radii
    coverage = float(np.pi * np.sum(radii**2) / (h * w))
    touching = _touching_fraction(blobs[:, :2] * factor, radii) if len(blobs) > 1 else 0.0
    if coverage > 0.3 or touching > 0.5:
        crowding = "densely packed"
    elif coverage > 0.08 or touching > 0.2:
        crowding = "moderately crowded"
    else:
        crowding = "sparse"
    q = np.percentile(diam, (25, 50, 75)) if len(diam) else np.zeros(3)
    return MeasuredFacts(
        modality=modality, polarity=polarity, count=int(len(blobs)),
        diameter_px=round(float(q[1]), 1), diameter_lo_px=round(float(q[0]), 1),
        diameter_hi_px=round(float(q[2]), 1), coverage=round(coverage, 4),
        touching=round(touching, 3), crowding=crowding, background=round(p50, 4),
        contrast=round(contrast, 4), noise=round(noise, 4), snr=round(snr, 1),
        height=h, width=w,
    )


def _guess_modality(p1: float, p50: float, p99: float, snr: float, colour: bool) -> str:
    bright_tail = p99 - p50
    dark_tail = p50 - p1
    if p50 < 0.3 and bright_tail > 1.5 * dark_tail:
        return "fluorescence"
    if colour or (p50 > 0.8 and dark_tail > bright_tail):
        return "brightfield"
    return "electron microscopy"


def _block_mean(x: np.ndarray, factor: int) -> np.ndarray:
    """(H, W) -> (H // factor, W // factor) block average."""
    if factor == 1:
        return x
    h, w = (x.shape[0] // factor) * factor, (x.shape[1] // factor) * factor
    return x[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def _find_blobs(small: np.ndarray, prefer_light: bool) -> tuple[np.ndarray, str]:
    """Blobs (N, 3) as (row, col, sigma) in downsampled pixels, and the polarity."""
    sigmas = [s for s in SIGMAS if 4 * s < min(small.shape)]
    if not sigmas:
        return np.zeros((0, 3)), "light" if prefer_light else "dark"
    # scale-normalised LoG; positive = bright blob
    cube = np.stack([-(s**2) * ndimage.gaussian_laplace(small, s) for s in sigmas])  # (S, h, w)
    found = {}
    for polarity, sign in (("light", 1.0), ("dark", -1.0)):
        found[polarity] = _prune(_extrema(sign * cube, sigmas))
    strength = {k: float(v[:, 3].sum()) if len(v) else 0.0 for k, v in found.items()}
    if prefer_light and strength["light"] > 0:
        polarity = "light"
    else:
        polarity = max(strength, key=strength.get)
    return found[polarity][:, :3], polarity


def _extrema(cube: np.ndarray, sigmas: list[float]) -> np.ndarray:
    """Local maxima of the (S, h, w) cube above MIN_RESPONSE: (N, 4) row, col, sigma, value."""
    peaks = (cube == ndimage.maximum_filter(cube, size=3, mode="nearest")) & (cube > MIN_RESPONSE)
    peaks[0] = peaks[-1] = False  # a blob's scale must lie inside the range, not at its ends
    s, r, c = np.nonzero(peaks)
    border = np.asarray(sigmas)[s]
    h, w = cube.shape[1:]
    inside = (r >= border) & (c >= border) & (r < h - border) & (c < w - border)
    s, r, c = s[inside], r[inside], c[inside]
    return np.stack([r, c, np.asarray(sigmas)[s], cube[s, r, c]], axis=1).astype(np.float64)


def _prune(blobs: np.ndarray) -> np.ndarray:
    """Greedy non-maximum suppression: drop blobs whose centre lies inside a stronger blob."""
    if len(blobs) == 0:
        return np.zeros((0, 4))
    blobs = blobs[np.argsort(-blobs[:, 3])][:2000]
    keep: list[int] = []
    for i, (r, c, s, _) in enumerate(blobs):
        ok = True
        for j in keep:
            rj, cj, sj, _ = blobs[j]
            if (r - rj) ** 2 + (c - cj) ** 2 < (math.sqrt(2) * max(s, sj)) ** 2:
                ok = False
                break
        if ok:
            keep.append(i)
    return blobs[keep]


def _touching_fraction(centres: np.ndarray, radii: np.ndarray) -> float:
    dist, idx = cKDTree(centres).query(centres, k=2)
    gap = dist[:, 1] - radii - radii[idx[:, 1]]
    return float(np.mean(gap < 0.1 * radii))


def facts_to_text(f: MeasuredFacts) -> str:
    """State ``MeasuredFacts`` as short sentences."""
    bg = {"light": "a darker background", "dark": "a lighter background"}[f.polarity]
    sentences = [f"The image looks like {_article(f.modality)} {f.modality} image."]
    if f.count == 0:
        sentences.append("No distinct round objects stand out from the background.")
    else:
        many = "one" if f.count == 1 else f"about {f.count}"
        noun = "object" if f.count == 1 else "objects"
        size = f"about {f.diameter_px:.0f} pixels across"
        if f.count > 3:
            size += f" (most between {f.diameter_lo_px:.0f} and {f.diameter_hi_px:.0f})"
        sentences.append(f"It shows {many} {f.polarity} roundish {noun} on {bg}, {size}.")
        sentences.append(f"The objects are {f.crowding}.")
    contrast = "low" if f.contrast < 0.25 else "moderate" if f.contrast < 0.6 else "high"
    noise = "low" if f.snr > 40 else "moderate" if f.snr > 12 else "high"
    sentences.append(f"Contrast is {contrast} and noise is {noise}.")
    return " ".join(sentences)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"
