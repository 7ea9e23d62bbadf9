"""Auto-scale: the passes ``segment_image`` runs to bring objects to the target diameter."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

import zeusseg.inference.zeus_segmenter as zs
from zeusseg.inference import auto_scale
from zeusseg.structures import InstanceMasks

CFG = SimpleNamespace(input_cfg=SimpleNamespace(target_diameter=27.0))


def _fake_run(monkeypatch, diameter_at):
    """Replace the prediction pass by one whose median diameter is ``diameter_at(factor)``."""
    factors = []

    def run(predictor, grey, factor, prompts, tiling, tta=False, texts=None, **kw):
        factors.append(round(factor, 4))
        d = diameter_at(factor)
        return auto_scale._Pass(InstanceMasks(labels=np.zeros(grey.shape, np.int32)),
                        0 if math.isnan(d) else 5, d, 0.1, factor, True)

    monkeypatch.setattr(zs, "_run", run)
    return factors


def _passes(first=0.5, cap=math.inf):
    grey = np.zeros((8, 8), np.float32)
    return zs._scaled_pass(None, grey, first, cap, ["cell nuclei"], None, False, CFG, "x")


def test_objects_at_the_target_size_take_one_pass(monkeypatch):
    factors = _fake_run(monkeypatch, lambda f: 54.0 * f)  # 27 px at the first scale 0.5
    assert _passes().factor == 0.5 and factors == [0.5]


def test_a_consistent_size_estimate_rescales_once(monkeypatch):
    # 20 px objects: 10 px at 0.5 -> rescale to 1.35, where they read 27 px: no refinement
    factors = _fake_run(monkeypatch, lambda f: 20.0 * f)
    run = _passes()
    assert factors == [0.5, 1.35] and run.factor == pytest.approx(1.35)


def test_a_size_misread_far_from_scale_is_refined_once(monkeypatch):
    # at 0.5 small touching objects merge and read 10 px for 5 px (2x too large); at the
    # rescaled 1.35 they read their true 13.5 px, so one more pass goes to 2.7 (capped at 2)
    factors = _fake_run(monkeypatch, lambda f: 10.0 if f == 0.5 else 10.0 * f)
    run = _passes()
    assert factors == [0.5, 1.35, auto_scale.MAX_SCALE] and run.factor == auto_scale.MAX_SCALE


def test_refinement_within_tolerance_is_skipped(monkeypatch):
    # the rescaled pass reads 10 % off the target: inside REFINE_TOLERANCE, no third pass
    factors = _fake_run(monkeypatch, lambda f: 10.0 if f == 0.5 else 20.0 * f * 1.1)
    _passes()
    assert factors == [0.5, 1.35]


def test_refinement_stops_after_refine_passes(monkeypatch):
    # an estimate that never settles (always 3x the target) costs at most 2 + REFINE_PASSES
    factors = _fake_run(monkeypatch, lambda f: 81.0)
    run = _passes(first=1.0)
    assert len(factors) == 2 + auto_scale.REFINE_PASSES == 3
    assert factors == [1.0, round(1 / 3, 4), round(1 / 9, 4)] and run.factor == pytest.approx(1 / 9)


def test_no_instance_keeps_the_first_pass(monkeypatch):
    factors = _fake_run(monkeypatch, lambda f: float("nan"))
    assert _passes(first=1.5).factor == 1.5 and factors == [1.5]  # x2 probe would pass MAX_SCALE


def _disc(shape=(64, 64), centre=(32, 32), radius=20):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_inscribed_diameter_reads_the_foreground_width():
    from zeusseg.transforms import inscribed_diameter

    assert inscribed_diameter(_disc(radius=20)) == pytest.approx(40.0, abs=1.5)
    two = _disc((64, 128), (32, 30), 10) | _disc((64, 128), (32, 96), 20)
    assert inscribed_diameter(two) == pytest.approx(30.0, abs=1.5)  # median of 20 and 40
    assert inscribed_diameter(_disc(radius=2), min_size=15) != inscribed_diameter(_disc(radius=2))
    assert math.isnan(inscribed_diameter(np.zeros((8, 8), bool)))


def test_pass_diameter_trusts_the_foreground_only_for_fragments():
    masks = InstanceMasks(labels=np.zeros((4, 4), np.int32))
    whole = auto_scale._Pass(masks, 5, 30.0, 0.1, 0.5, True, fg_width=27.0)  # 0.9x: whole objects
    cut = auto_scale._Pass(masks, 5, 30.0, 0.1, 0.5, True, fg_width=45.0)  # 1.5x: fragments
    tiled = auto_scale._Pass(masks, 5, 30.0, 0.1, 0.5, False)  # no foreground width
    assert auto_scale.pass_diameter(whole) == 30.0 and auto_scale.pass_diameter(tiled) == 30.0
    assert auto_scale.pass_diameter(cut) == pytest.approx(45.0 / auto_scale.WHOLE_RATIO)


def test_objects_cut_into_fragments_are_rescaled_to_their_whole_size(monkeypatch):
    # 110 px nuclei: at 0.5 (55 px, twice the target) each is cut in fragments that read 35 px,
    # inside the tolerance bands; the foreground still reads them ~0.9 x 55 px wide
    factors = []

    def run(predictor, grey, factor, prompts, tiling, tta=False, texts=None, **kw):
        factors.append(round(factor, 4))
        whole = 110.0 * factor
        d, width = (35.0, 0.9 * whole) if factor > 0.4 else (whole, 0.9 * whole)
        return auto_scale._Pass(InstanceMasks(labels=np.zeros(grey.shape, np.int32)), 5, d, 0.1,
                        factor, True, fg_width=width)

    monkeypatch.setattr(zs, "_run", run)
    run_ = _passes()
    assert factors == [0.5, pytest.approx(27.0 / 110.0, abs=1e-3)]
    assert run_.factor == pytest.approx(27.0 / 110.0, abs=1e-3)


def test_objects_read_larger_use_the_narrower_down_band(monkeypatch):
    # 1.45x the target: outside DOWN_TOLERANCE (1.3), so rescaled down...
    factors = _fake_run(monkeypatch, lambda f: 27.0 * 1.45 * f / 0.5)
    _passes()
    assert factors == [0.5, pytest.approx(0.5 / 1.45, abs=1e-3)]
    # ...while 1 / 1.45x stays inside AUTO_SCALE_TOLERANCE (1.6): no upscaling pass
    factors = _fake_run(monkeypatch, lambda f: 27.0 / 1.45 * f / 0.5)
    _passes()
    assert factors == [0.5]


class _MapsPredictor:
    """Returns fixed (1, 3, H, W) maps: one disc of foreground whose centre/boundary maps cut
    it in two halves (the decoder's view of one large object split in two)."""

    def __init__(self):
        fg = _disc()
        self.probs = np.zeros((1, 3, 64, 64), np.float32)
        self.probs[0, 0] = fg
        self.probs[0, 1, 26:38, 14:20] = 1.0  # two centres
        self.probs[0, 1, 26:38, 44:50] = 1.0
        self.probs[0, 2] = fg
        self.probs[0, 2, :, 31:33] = 0.0  # a boundary line through the middle

    def set_image(self, image):
        assert image.shape == (64, 64)

    def predict(self, prompts):
        return self.probs.copy()


def test_a_pass_measures_fragments_and_the_foreground_width():
    run = zs._run(_MapsPredictor(), np.zeros((64, 64), np.float32), 1.0, ["cell nuclei"], None,
                  smoothing=0.0)
    assert run.n_found == 2
    assert run.diameter == pytest.approx(2 * math.sqrt(math.pi * 400 / 2 / math.pi), rel=0.1)
    assert run.fg_width == pytest.approx(40.0, abs=1.5)
    assert auto_scale.pass_diameter(run) == pytest.approx(run.fg_width / auto_scale.WHOLE_RATIO)
