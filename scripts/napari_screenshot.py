"""Screenshot of the napari plugin after a run: docs/images/napari.png.

Usage (headless: needs a display or Xvfb for napari's OpenGL canvas)::

    xvfb-run -s "-screen 0 1600x1000x24" env QT_QPA_PLATFORM=offscreen \\
        .venv/bin/python scripts/napari_screenshot.py [--out docs/images/napari.png]

Opens examples/visn-0008.png, segments "virus particles" (instruction mode name) with
zeus-default in the dock widget, turns refine mode on, shift-clicks one instance away and
clicks it back, then saves the whole window (canvas + widget).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]


def _wait(app, widget, timeout: float = 300) -> None:
    start = time.time()
    while widget.busy and time.time() - start < timeout:
        app.processEvents()
        time.sleep(0.02)
    app.processEvents()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", default=str(REPO / "examples" / "visn-0008.png"))
    p.add_argument("--prompt", default="virus particles")
    p.add_argument("--mode", default="name", help="instruction mode (name|template|llm)")
    p.add_argument("--out", default=str(REPO / "docs" / "images" / "napari.png"))
    args = p.parse_args()

    import torch

    torch.set_num_threads(1)
    import napari
    from PIL import Image
    from qtpy.QtWidgets import QApplication

    from zeusseg.io import read_image

    viewer = napari.Viewer(show=False, title="zeusseg")
    viewer.window._qt_window.resize(1500, 900)
    image = read_image(args.image)
    viewer.add_image(np.rint(image.data * 255).astype(np.uint8), name=image.name)
    _, widget = viewer.window.add_plugin_dock_widget("zeusseg", "Text-prompted segmentation")
    app = QApplication.instance()
    widget.prompt.value = args.prompt
    widget.mode.value = args.mode
    widget.run_segment()
    _wait(app, widget)
    layer = widget.labels_layer
    widget.refine.value = True
    rr, cc = np.nonzero(layer.data == 1)
    centre = (float(np.median(rr)), float(np.median(cc)))
    widget.refiner.click(centre, remove=True)
    widget.refiner.click(centre)
    _wait(app, widget)
    viewer.layers.selection.active = layer
    app.processEvents()
    viewer.reset_view()
    viewer.camera.zoom *= 1.15  # the offscreen canvas keeps a wide margin
    print(widget.status.value)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(shot).convert("RGB").save(out, optimize=True)
    print(f"wrote {out} ({shot.shape[1]}x{shot.shape[0]})")
    viewer.close()


if __name__ == "__main__":
    main()
