"""Auto-scale's rules: how one prediction pass measures the objects' size, and when the next
pass runs at another scale (``zeusseg.inference.zeus_segmenter.segment_image``, which runs the
passes; docs/decoding.md#scale)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zeusseg.structures import InstanceMasks

AUTO_SCALE_TOLERANCE = 1.6
"""Rescale only when the median diameter leaves [target / 1.6, target * 1.6] = [17, 43] px
for the 27 px target: the object sizes the default model saw in training (visn-train particles
at scale 0.5: 5th-95th percentile 17-30 px; dsb-train nuclei 27 px with +-35 % jitter)."""
REFINE_PASSES = 1
REFINE_TOLERANCE = 1.15
"""After a rescale, the size is measured again and one more pass runs when it still misses the
target by more than 15 %: a first pass far from the objects' scale misjudges their size (at the
default 0.5, small touching nuclei merge, so their diameter reads too large), while the pass
near the target reads it within a few per cent (dsb-train, docs/decoding.md#scale)."""
DOWN_TOLERANCE = 1.3
"""Objects read larger than the target by more than 30 % are rescaled down in the first
rescale (the band stays 1.6 for objects read smaller: upscaling VISN gained false positives,
docs/ablations.md 'Auto-scale tolerance'); a downscaled pass is also the cheaper one."""
FRAGMENT_RATIO = 1.15
WHOLE_RATIO = 0.9
"""``pass_diameter``: on whole objects the foreground width (``inscribed_diameter``) reads
0.73-1.09x the instances' median diameter (5th-99th percentile of the first passes, 56
visn-train and 122 dsb-train images, median 0.9); above ``FRAGMENT_RATIO`` the instances are
fragments of larger objects, and the size is the foreground width / ``WHOLE_RATIO``."""
MIN_FOR_SIZE = 1
MIN_SCALE, MAX_SCALE = 0.1, 2.0


@dataclass
class _Pass:
    """One prediction pass: instances at the original size and what auto-scale needs."""

    masks: InstanceMasks
    n_found: int  # instances at the model scale (some may vanish in the resize back)
    diameter: float  # median equivalent diameter at the model scale, NaN without instances
    fg_share: float  # share of pixels with foreground probability > 0.5
    factor: float  # the scale of this pass
    whole: bool  # one encoder pass over the whole image (not tiled)
    probs: np.ndarray | None = None  # (P, 3, h, w) maps at the model scale; None when tiled
    fg_width: float = float("nan")  # inscribed_diameter of the foreground; NaN when tiled


def rescale_bands() -> tuple[tuple[float, float | None], ...]:
    """(tolerance, down_tolerance) of ``next_scale`` for each pass after the first, in order:
    the rescale, then ``REFINE_PASSES`` refinements."""
    return ((AUTO_SCALE_TOLERANCE, DOWN_TOLERANCE), *((REFINE_TOLERANCE, None),) * REFINE_PASSES)


def pass_diameter(run: _Pass) -> float:
    """The object size a pass measured (model-scale px): the instances' median diameter, or the
    foreground width / ``WHOLE_RATIO`` when that reads over ``FRAGMENT_RATIO`` times larger
    (the instances are fragments of objects too large for the model's scale)."""
    d = run.diameter
    if run.fg_width > 0 and d > 0 and run.fg_width / d > FRAGMENT_RATIO:
        return max(d, run.fg_width / WHOLE_RATIO)
    return d


def next_scale(run: _Pass, target: float, cap: float, tolerance: float,
               down_tolerance: float | None = None) -> float | None:
    """The factor that brings the size ``run`` measured (``pass_diameter``) to ``target`` px
    (clipped to [MIN_SCALE, min(MAX_SCALE, cap)]), or None when it stays within ``tolerance``
    (``down_tolerance`` for a smaller factor, when given) of the pass's own factor or the pass
    found too few instances to measure."""
    d = pass_diameter(run)
    if run.n_found < MIN_FOR_SIZE or not d > 0:
        return None
    new = float(np.clip(run.factor * target / d, MIN_SCALE, min(MAX_SCALE, cap)))
    if down_tolerance is not None and new < run.factor:
        tolerance = down_tolerance
    return None if abs(math.log(new / run.factor)) <= math.log(tolerance) else new
