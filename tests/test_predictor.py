"""ZeusPredictor caching, segment_image, and the bundled default model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from zeusseg.factory import build_zeus
from zeusseg.inference.zeus_segmenter import segment_image
from zeusseg.predictor import ZeusPredictor
from zeusseg.structures import MicroscopyImage

from .zeus_fakes import fake_embedder

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def _predictor():
    torch.manual_seed(0)
    return ZeusPredictor(build_zeus("zeus-tiny"), embedder=fake_embedder())


def test_predict_before_set_image_raises():
    with pytest.raises(RuntimeError, match="set_image"):
        _predictor().predict("cell nuclei")


def test_several_prompts_cost_one_encoder_pass(monkeypatch):
    pred = _predictor()
    calls = []
    original = pred.model.encode_image
    monkeypatch.setattr(pred.model, "encode_image", lambda x: calls.append(x.shape) or original(x))
    pred.set_image(np.random.default_rng(0).random((50, 70), dtype=np.float32))
    probs = pred.predict(["cell nuclei", "virus particles", "RSV"])
    more = pred.predict("FLUAV")
    assert calls == [(1, 1, 64, 96)]  # padded to multiples of 32, encoded once
    assert probs.shape == (3, 3, 50, 70) and more.shape == (1, 3, 50, 70)
    assert probs.min() >= 0 and probs.max() <= 1
    np.testing.assert_allclose(pred.predict("RSV")[0], probs[2], atol=1e-5)


def test_segment_image_returns_original_size():
    pred = _predictor()
    image = MicroscopyImage(np.random.default_rng(1).random((90, 70), dtype=np.float32))
    masks = segment_image(pred, image, ["cell nuclei", "virus particles"], scale=0.7)
    assert masks.shape == (90, 70)
    assert masks.class_names == {1: "cell nuclei", 2: "virus particles"}
    assert not pred.is_image_set


def test_tta_averages_the_maps_of_the_four_flips():
    from zeusseg.inference.zeus_segmenter import _predict

    pred = _predictor()
    image = np.random.default_rng(2).random((40, 56), dtype=np.float32)
    views = []
    for fy, fx in ((0, 0), (1, 0), (0, 1), (1, 1)):
        view = image[::-1] if fy else image
        pred.set_image(np.ascontiguousarray(view[:, ::-1] if fx else view))
        p = pred.predict(["cell nuclei"])
        p = p[..., ::-1, :] if fy else p
        views.append(p[..., ::-1] if fx else p)
    tta = _predict(pred, image, ["cell nuclei"], tta=True)
    np.testing.assert_allclose(tta, np.mean(views, axis=0), atol=1e-6)
    assert not np.allclose(tta, views[0], atol=1e-3)  # the flips do change the maps
    np.testing.assert_allclose(_predict(pred, image, ["cell nuclei"], tta=False), views[0],
                               atol=1e-6)
    # the predictor ends on the identity view (the class head reuses its features)
    np.testing.assert_allclose(pred.predict(["cell nuclei"]), views[0], atol=1e-6)
    masks = segment_image(pred, MicroscopyImage(image), ["cell nuclei"], scale=1.0, tta=True)
    assert masks.shape == (40, 56)


@pytest.fixture(scope="module")
def bundled_predictor():
    """The bundled model with its real MiniLM text encoder, loaded once for the module."""
    from zeusseg.pretrained import weights_present

    if not weights_present("zeus-default"):
        pytest.skip("bundled zeus-default model not present")
    return ZeusPredictor(build_zeus("zeus-default"))


# (example image, ground-truth labels in tests/data, right prompt, swapped prompt, AP@0.5 floor)
# Floors: AP@0.5 measured with the bundled model (0.630, 0.761, 0.933; docs/model_card.md)
# minus ~0.1 for platform noise.
BUNDLED_CASES = [
    ("visn-0008.png", "visn-0008-labels.png", "virus particles", "cell nuclei", 0.53),
    ("dsb-0010.png", "dsb-0010-labels.png", "cell nuclei", "virus particles", 0.66),
    ("coelho-u2os-dna-0.png", "coelho-u2os-dna-0-labels.png", "cell nuclei", "virus particles",
     0.83),
]


@pytest.mark.weights
@pytest.mark.parametrize(("image", "labels", "prompt", "swapped", "floor"), BUNDLED_CASES)
def test_bundled_model_segments_examples(
    bundled_predictor, image, labels, prompt, swapped, floor
):
    from zeusseg.io import read_image, read_label_image
    from zeusseg.metrics import average_precision

    if not (EXAMPLES / image).is_file():
        pytest.skip(f"example {image} not present")
    pred = bundled_predictor
    img = read_image(EXAMPLES / image)
    gt = read_label_image(REPO / "tests" / "data" / labels)
    masks = segment_image(pred, img, [prompt])
    ap, *_ = average_precision(gt.labels, masks.labels, thresholds=(0.5,))
    assert ap[0] >= floor, f"AP@0.5 {ap[0]:.3f} below the measured floor {floor}"
    swapped_masks = segment_image(pred, img, [swapped])
    assert len(swapped_masks) <= max(1, 0.05 * len(masks))
