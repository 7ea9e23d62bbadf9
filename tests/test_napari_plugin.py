"""napari plugin: manifest + widget, Segment, click/box refinement, export read by
``zeusseg evaluate``, label TIFF round trip through the reader, one-image fine-tuning.

Headless: ``QT_QPA_PLATFORM=offscreen`` (tests/conftest.py) and, on Linux without a display,
the Xvfb screen that pytest-xvfb starts (napari's canvas needs OpenGL). The model is the
bundled zeus-default with the bundled MiniLM text encoder on a 260 x 320 crop of
examples/visn-0008.png: deterministic and fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
napari = pytest.importorskip(
    "napari", reason="napari is not installed (pip install 'zeusseg[napari]')")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed (pip install 'zeusseg[dev]')")

import torch  # noqa: E402

from zeusseg.io import read_image, read_label_image  # noqa: E402
from zeusseg.napari.layers import layer_masks, masks_to_features  # noqa: E402
from zeusseg.napari.llvm_guard import guard_triton  # noqa: E402

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
CROP = (slice(40, 300), slice(480, 800))  # six particles of visn-0008
N_CROP = 6
PLUGIN, WIDGET = "zeusseg", "Text-prompted segmentation"


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    """(260, 320) uint8 crop of the bundled VISN example."""
    img = read_image(REPO / "examples" / "visn-0008.png")
    return np.rint(img.data[CROP] * 255).astype(np.uint8)


@pytest.fixture
def display() -> None:
    """Skip, loudly, without a display: napari's canvas needs OpenGL (scripts/install.sh
    installs Xvfb where it can; pytest-xvfb then provides the display)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        pytest.skip("napari's canvas needs OpenGL but there is no display: install Xvfb "
                    "(apt-get install xvfb; pytest-xvfb then starts it) or run in a desktop")


@pytest.fixture
def viewer_widget(display, make_napari_viewer, crop, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(crop, name="visn-0008")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget.export_dir.value = tmp_path / "export"
    return viewer, widget


def _wait(qtbot, widget, timeout: float = 120) -> None:
    qtbot.waitUntil(lambda: not widget.busy, timeout=int(timeout * 1000))
    assert not widget.status.value.startswith("error"), widget.status.value


def _segment(qtbot, widget):
    widget.prompt.value = "virus particles"
    assert widget.run_segment() is not None
    _wait(qtbot, widget)
    return widget.labels_layer


def _press(viewer, position, modifiers=()):
    """A click (press + release, no move) through napari's mouse callback machinery."""
    from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

    event = SimpleNamespace(type="mouse_press", position=tuple(position), modifiers=modifiers,
                            button=1, is_dragging=False, handled=False, pos=(0, 0),
                            dims_displayed=(0, 1), view_direction=None, dims_point=None)
    mouse_press_callbacks(viewer, event)
    event.type = "mouse_release"
    mouse_release_callbacks(viewer, event)


def _centroid(labels: np.ndarray, label: int) -> tuple[float, float]:
    rr, cc = np.nonzero(labels == label)
    return float(np.median(rr)), float(np.median(cc))


def test_manifest_widget_and_choices(viewer_widget):
    from zeusseg.instructions import MODES
    from zeusseg.napari.widget import ZeusSegWidget

    viewer, widget = viewer_widget
    assert isinstance(widget, ZeusSegWidget)
    assert [layer.name for layer in widget.image.choices] == ["visn-0008"]
    assert widget.image.value.name == "visn-0008"
    assert "zeus-default" in widget.model.choices
    assert list(widget.mode.choices) == list(MODES)
    for prompt in ("virus particles", "cell nuclei", "RSV", "SARS-CoV-2", "FLUAV"):
        assert prompt in widget.known.choices
    widget.known.value = "RSV"
    assert widget.prompt.value == "RSV"
    viewer.add_image(np.zeros((8, 8), np.uint8), name="second")
    assert [layer.name for layer in widget.image.choices] == ["visn-0008", "second"]


@pytest.mark.weights
def test_segment_click_box_export_evaluate(viewer_widget, qtbot, tmp_path):
    from napari.layers import Labels

    from zeusseg.__main__ import main

    viewer, widget = viewer_widget
    layer = _segment(qtbot, widget)
    assert isinstance(layer, Labels) and layer.name == "virus particles"
    assert np.unique(layer.data[layer.data > 0]).size == N_CROP
    feats = layer.features
    assert list(feats["index"]) == list(range(1, N_CROP + 1))
    assert set(feats["class_name"]) == {"virus particles"}
    assert ((feats["score"] > 0) & (feats["score"] <= 1)).all()
    assert widget.instruction.value == "virus particles"
    assert widget.instruction.native.isReadOnly()
    assert widget.progress.value == widget.progress.max == 4
    shot = widget.native.grab()
    assert shot.save(str(tmp_path / "widget.png")) and shot.width() > 100

    # shift-click removes the instance under the cursor, a click brings it back
    widget.refine.value = True
    before = layer.data.copy()
    r, c = _centroid(before, 2)
    assert before[round(r), round(c)] == 2
    _press(viewer, _centroid(before, 2), modifiers=("Shift",))
    assert 2 not in layer.data and np.unique(layer.data[layer.data > 0]).size == N_CROP - 1
    _press(viewer, _centroid(before, 2))
    _wait(qtbot, widget)
    new_id = N_CROP + 1
    assert np.unique(layer.data[layer.data > 0]).size == N_CROP
    added, old = layer.data == new_id, before == 2
    assert (added & old).sum() / (added | old).sum() > 0.5
    assert float(layer.features.set_index("index").loc[new_id, "score"]) > 0

    # a rectangle on the box layer adds the object inside it
    _press(viewer, _centroid(layer.data, 4), modifiers=("Shift",))
    assert 4 not in layer.data
    rr, cc = np.nonzero(before == 4)
    boxes = widget.refiner.boxes
    boxes.add_rectangles([[rr.min() - 3, cc.min() - 3], [rr.max() + 3, cc.max() + 3]])
    _wait(qtbot, widget)
    assert np.unique(layer.data[layer.data > 0]).size == N_CROP
    box_id = int(layer.data.max())
    added = layer.data == box_id
    assert (added & (before == 4)).sum() / (added | (before == 4)).sum() > 0.5

    # export -> label TIFF + COCO JSON that zeusseg evaluate reads (prediction == truth)
    paths = widget.run_export()
    assert paths.labels.name == "visn-0008.tif" and paths.coco.name == "predictions.json"
    back = read_label_image(paths.labels)
    assert np.array_equal(back.labels, layer.data)
    assert back.class_names == {1: "virus particles"}
    coco = json.loads(paths.coco.read_text())
    assert len(coco["annotations"]) == N_CROP
    assert coco["images"][0]["file_name"] == "visn-0008.png"
    out = tmp_path / "evaluation"
    assert main(["evaluate", "--pred", str(paths.coco), "--gt", str(paths.labels.parent),
                 "-o", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "1.0" in json.dumps(metrics) and (out / "metrics.csv").is_file()
    per_image = (out / "per_image.csv").read_text().splitlines()
    assert len(per_image) == 2 and per_image[1].startswith("visn-0008")


@pytest.mark.weights
def test_reader_round_trip_of_segment_output(display, make_napari_viewer, crop, tmp_path):
    from PIL import Image

    from zeusseg.__main__ import main
    from zeusseg.napari.reader import get_reader

    Image.fromarray(crop).save(tmp_path / "crop.png")
    out = tmp_path / "seg"
    assert main(["segment", str(tmp_path / "crop.png"), "-p", "virus particles",
                 "-o", str(out)]) == 0
    tif = out / "labels" / "crop.tif"
    written = read_label_image(tif)
    assert len(written) == N_CROP
    assert get_reader(str(tmp_path / "crop.png")) is None  # only zeusseg label TIFFs
    viewer = make_napari_viewer()
    layers = viewer.open(str(tif), plugin=PLUGIN)
    assert len(layers) == 1 and layers[0].name == "crop"
    assert type(layers[0]).__name__ == "Labels"
    assert np.array_equal(layers[0].data, written.labels)
    assert np.allclose(layers[0].features["score"], written.scores)
    assert set(layers[0].features["class_name"]) == {"virus particles"}


@pytest.mark.weights
def test_finetune_from_corrected_layer(viewer_widget, qtbot):
    from zeusseg.napari.adapt import AdaptOptions

    viewer, widget = viewer_widget
    layer = _segment(qtbot, widget)
    widget.steps.value = 2
    widget.adapt_options = AdaptOptions(batch_size=2, crop_size=64)
    assert widget.run_finetune() is not None
    _wait(qtbot, widget, timeout=240)
    adapter = Path(widget.adapter.value)
    assert (adapter / "adapter_model.safetensors").is_file()
    assert not (adapter / "model.safetensors").exists()
    assert (adapter.parent / "finetune.yaml").is_file()
    assert widget.last_finetune["steps"] == 2
    adapted = viewer.layers["virus particles (LoRA)"]
    assert adapted is not layer and adapted.metadata["zeusseg"]["adapter"] == str(adapter)
    assert adapted.data.shape == layer.data.shape


def test_layer_features_round_trip_with_hand_edits():
    from zeusseg.structures import InstanceMasks

    labels = np.zeros((20, 20), np.int32)
    labels[2:6, 2:6], labels[10:15, 10:15] = 1, 3
    masks = InstanceMasks(labels=labels, ids=np.array([1, 3]), class_ids=np.array([1, 1]),
                          scores=np.array([0.4, 0.9], np.float32), class_names={1: "RSV"})
    feats = masks_to_features(masks)
    assert list(feats["index"]) == [1, 3] and list(feats["area"]) == [16, 25]
    edited = labels.copy()
    edited[2:6, 2:6] = 0  # instance 1 erased by hand
    edited[16:19, 1:4] = 7  # instance 7 painted by hand
    back = layer_masks(edited, feats)
    assert list(back.ids) == [3, 7]
    assert np.allclose(back.scores, [0.9, 1.0]) and list(back.class_ids) == [1, 1]
    assert back.class_names == {1: "RSV"}


def test_triton_guard_blocks_after_the_gl_driver_llvm(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text("7f00 r-xp /usr/lib/x86_64-linux-gnu/libLLVM-15.so.1\n")
    modules: dict = {}
    import importlib.util

    expected = "none" if importlib.util.find_spec("triton") is None else "blocked"
    assert guard_triton(modules, maps) == expected
    assert modules == ({} if expected == "none" else {"triton": None})
    assert guard_triton({"triton": object()}, maps) == "none"  # already imported: keep it
