"""Auto-scale: the passes ``segment_image`` runs to bring objects to the target diameter."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

import zeusseg.inference.zeus_segmenter as zs
from zeusseg.structures import InstanceMasks

CFG = SimpleNamespace(input_cfg=SimpleNamespace(target_diameter=27.0))


def _fake_run(monkeypatch, diameter_at):
    """Replace the prediction pass by one whose median diameter is ``diameter_at(factor)``."""
    factors = []

    def run(predictor, grey, factor, prompts, tiling, tta=False, texts=None, **kw):
        factors.append(round(factor, 4))
        d = diameter_at(factor)
        return zs._Pass(InstanceMasks(labels=np.zeros(grey.shape, np.int32)),
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
    assert factors == [0.5, 1.35, zs.MAX_SCALE] and run.factor == zs.MAX_SCALE


def test_refinement_within_tolerance_is_skipped(monkeypatch):
    # the rescaled pass reads 10 % off the target: inside REFINE_TOLERANCE, no third pass
    factors = _fake_run(monkeypatch, lambda f: 10.0 if f == 0.5 else 20.0 * f * 1.1)
    _passes()
    assert factors == [0.5, 1.35]


def test_refinement_stops_after_refine_passes(monkeypatch):
    # an estimate that never settles (always 3x the target) costs at most 2 + REFINE_PASSES
    factors = _fake_run(monkeypatch, lambda f: 81.0)
    run = _passes(first=1.0)
    assert len(factors) == 2 + zs.REFINE_PASSES == 3
    assert factors == [1.0, round(1 / 3, 4), round(1 / 9, 4)] and run.factor == pytest.approx(1 / 9)


def test_no_instance_keeps_the_first_pass(monkeypatch):
    factors = _fake_run(monkeypatch, lambda f: float("nan"))
    assert _passes(first=1.5).factor == 1.5 and factors == [1.5]  # x2 probe would pass MAX_SCALE
