"""Refine mode of the zeusseg widget: click adds the object under the cursor, shift-click
removes the instance under it, a rectangle drawn on the "zeusseg boxes" Shapes layer adds the
object in it (``zeusseg.inference.interactive`` through ``ZeusSession``).

Clicks are viewer mouse callbacks (a drag, e.g. panning, is not a click); positions are
turned from world into the image layer's (row, col) and passed on as (X, Y) pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from typing import Any, Protocol

import numpy as np

from zeusseg.napari.layers import LayerRecord, layer_image, layer_masks
from zeusseg.napari.session import ZeusSession
from zeusseg.structures import InstanceMasks

_logger = logging.getLogger(__name__)

BOX_LAYER = "zeusseg boxes"
MIN_BOX_SIDE = 2.0
"""Rectangles narrower than this (image px), e.g. from a plain click, are ignored."""


class RefineHost(Protocol):
    """What refine mode uses of its dock widget (``zeusseg.napari.widget.ZeusSegWidget``)."""

    viewer: Any
    session: ZeusSession
    image: Any  # the image-layer picker (its ``value`` is the layer)

    def say(self, text: str) -> None: ...

    def target_labels(self) -> Any: ...

    def image_for(self, labels_layer: Any) -> Any: ...

    def record_for(self, labels_layer: Any) -> LayerRecord: ...

    def show_masks(self, layer: Any, masks: InstanceMasks) -> None: ...

    def start(self, job: Callable[..., Generator], *args: Any, steps: int,
              on_done: Callable[[Any], None]) -> Any: ...


class RefineController:
    """Connects the viewer's mouse and the box layer to the widget's session.

    Args:
        widget: the dock widget (its session, status line and worker runner are used).
    """

    def __init__(self, widget: RefineHost) -> None:
        self.widget = widget
        self.viewer = widget.viewer
        self.boxes = None

    @property
    def enabled(self) -> bool:
        return self._on_mouse in self.viewer.mouse_drag_callbacks

    def enable(self, on: bool) -> None:
        """Turn refine mode on (mouse callback + box layer) or off."""
        callbacks = self.viewer.mouse_drag_callbacks
        if on and not self.enabled:
            callbacks.append(self._on_mouse)
            self._ensure_boxes()
            self.widget.say("refine: click adds, shift-click removes, draw a box on "
                            f"'{BOX_LAYER}' to add the object in it")
        elif not on and self.enabled:
            callbacks.remove(self._on_mouse)

    def _ensure_boxes(self) -> None:
        if self.boxes is not None and self.boxes in self.viewer.layers:
            return
        image = self.widget.image.value
        place = {"scale": image.scale, "translate": image.translate} if image is not None else {}
        selected = self.viewer.layers.selection.active
        self.boxes = self.viewer.add_shapes(name=BOX_LAYER, ndim=2, edge_color="yellow",
                                            face_color="transparent", edge_width=2, **place)
        self.boxes.mode = "add_rectangle"
        self.boxes.events.data.connect(self._on_box)
        if selected is not None:  # clicks keep going to the labels layer the user had
            self.viewer.layers.selection.active = selected

    # ---------------------------------------------------------------- events
    def _on_mouse(self, viewer, event) -> Generator[None, None, None]:
        if getattr(event, "button", 1) != 1:
            return
        position = tuple(event.position)
        remove = "Shift" in getattr(event, "modifiers", ())
        yield
        dragged = False
        while event.type == "mouse_move":
            dragged = True
            yield
        if not dragged:
            self.click(position, remove=remove)

    def _on_box(self, event) -> None:
        action = getattr(event, "action", None)
        if getattr(action, "value", action) != "added" or not len(self.boxes.data):
            return
        if self.boxes.shape_type[-1] != "rectangle":
            return
        corners = np.asarray(self.boxes.data[-1], dtype=np.float64)[:, -2:]
        world = np.stack([self.boxes.data_to_world(c) for c in corners])
        self.box(world)

    # ---------------------------------------------------------------- actions
    def _context(self, what: str):
        """(labels layer, image layer, record, masks) or None with a status message."""
        w = self.widget
        layer = w.target_labels()
        image_layer = w.image_for(layer) if layer is not None else None
        if layer is None or image_layer is None:
            w.say(f"{what}: segment first (no labels layer to edit)")
            return None
        record = w.record_for(layer)
        masks = layer_masks(layer.data, layer.features, {1: record.prompt})
        return layer, image_layer, record, masks

    def click(self, world_position, *, remove: bool = False) -> Any:
        """Add (or with ``remove`` delete) the instance at a world position.

        Returns:
            The worker of an add (None for a remove, which is immediate, or when nothing
            was done).
        """
        ctx = self._context("click")
        if ctx is None:
            return None
        layer, image_layer, record, masks = ctx
        row, col = np.asarray(image_layer.world_to_data(world_position), np.float64)[-2:]
        h, w = masks.shape
        if not (-0.5 <= row < h - 0.5 and -0.5 <= col < w - 0.5):
            self.widget.say("click outside the image")
            return None
        point = (float(col), float(row))
        if remove:
            new = self.widget.session.remove_instance(masks, point)
            self.widget.show_masks(layer, new)
            gone = len(masks) - len(new)
            self.widget.say(f"removed {gone} instance(s); {len(new)} left" if gone
                            else "no instance under the click")
            return None
        return self._add(layer, image_layer, record, masks, point=point)

    def box(self, world_corners) -> Any:
        """Add the object inside the box spanned by world-coordinate corners (N, ndim)."""
        ctx = self._context("box")
        if ctx is None:
            return None
        layer, image_layer, record, masks = ctx
        data = np.stack([np.asarray(image_layer.world_to_data(c), np.float64)[-2:]
                         for c in np.asarray(world_corners)])
        (r0, c0), (r1, c1) = data.min(0), data.max(0)
        h, w = masks.shape
        r0, r1 = max(r0, 0.0), min(r1, h - 1.0)
        c0, c1 = max(c0, 0.0), min(c1, w - 1.0)
        if r1 - r0 < MIN_BOX_SIDE or c1 - c0 < MIN_BOX_SIDE:
            return None
        return self._add(layer, image_layer, record, masks, box=(c0, r0, c1, r1))

    def _add(self, layer, image_layer, record: LayerRecord, masks, *, point=None, box=None):
        w = self.widget
        w.session.set_model(record.model, record.adapter or None)
        image = layer_image(image_layer.data, rgb=image_layer.rgb, name=image_layer.name)
        text = record.instruction or record.prompt
        return w.start(self._add_job, image, masks, text, point, box, steps=1,
                       on_done=lambda new: self._added(layer, masks, new))

    def _add_job(self, image, masks, text: str, point, box) -> Generator:
        yield 0, "adding the object " + (f"at {point}" if point else f"in box {box}")
        new = self.widget.session.add_instance(image, masks, text, point=point, box=box)
        yield 1, "done"
        return new

    def _added(self, layer, before, new) -> None:
        if len(new) <= len(before):
            self.widget.say("nothing new found there")
            return
        self.widget.show_masks(layer, new)
        self.widget.say(f"added instance {int(new.ids[-1])} (score {float(new.scores[-1]):.2f}); "
                        f"{len(new)} instances")
