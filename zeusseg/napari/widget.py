"""The zeusseg dock widget: type a prompt, get a Labels layer, refine, export, fine-tune.

Long work (model loading, instructions, segmentation, refinement, fine-tuning) runs in napari
worker threads; the widget shows a progress bar and a status line meanwhile, and ``busy`` is
True until the worker has finished.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
    TextEdit,
)
from magicgui.widgets import FileEdit as _FileEdit

from zeusseg.napari.layers import (
    METADATA_KEY,
    LayerRecord,
    layer_image,
    layer_masks,
    masks_to_features,
)
from zeusseg.napari.refine import RefineController
from zeusseg.napari.session import (
    SegmentResult,
    ZeusSession,
    _safe_stem,
    export,
    known_prompts,
    model_names,
)

if TYPE_CHECKING:
    import napari

_logger = logging.getLogger(__name__)

DEFAULT_EXPORT_DIR = "zeusseg_napari"
PICK = "(known prompts)"


class ZeusSegWidget(Container):
    """Text-prompted segmentation of the selected image layer.

    Args:
        napari_viewer: the viewer (napari passes it when the widget is opened from the menu).
        session: the model session (default: ``ZeusSession()``, zeus-default loaded on first
            use).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, session: ZeusSession | None = None
                 ) -> None:
        from zeusseg.instructions import MODES  # loads torch: not when napari starts

        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.session = session or ZeusSession()
        self.busy = False
        self.last_result: SegmentResult | None = None
        self.last_finetune: dict[str, Any] | None = None
        self.labels_layer = None

        self.image = ComboBox(label="image", choices=self._image_choices)
        self.prompt = LineEdit(label="prompt", value="virus particles")
        self.known = ComboBox(label="", choices=[PICK, *known_prompts()], value=PICK)
        self.mode = ComboBox(label="instruction mode", choices=list(MODES), value="name")
        self.model = ComboBox(label="model", choices=model_names())
        self.adapter = LineEdit(label="LoRA adapter", value="")
        self.segment_button = PushButton(text="Segment")
        self.progress = ProgressBar(label="progress", min=0, max=4, value=0)
        self.instruction = TextEdit(label="instruction", value="")
        self.instruction.native.setReadOnly(True)
        self.instruction.native.setMaximumHeight(70)
        self.refine = CheckBox(text="refine: click adds, shift-click removes, box adds")
        self.export_dir = _FileEdit(label="export to", mode="d", value=Path(DEFAULT_EXPORT_DIR))
        self.export_button = PushButton(text="Export labels + COCO")
        self.steps = SpinBox(label="fine-tune steps", value=50, min=1, max=5000)
        self.finetune_button = PushButton(text="Fine-tune from this image")
        self.status = Label(value="")
        self.extend([self.image, self.prompt, self.known, self.mode, self.model, self.adapter,
                     self.segment_button, self.progress, self.instruction, self.refine,
                     self.export_dir, self.export_button, self.steps, self.finetune_button,
                     self.status])
        self.adapt_options = None  # AdaptOptions for fine-tuning (None: defaults + steps)
        self.refiner = RefineController(self)

        self.known.changed.connect(self._on_known)
        self.segment_button.changed.connect(self.run_segment)
        self.export_button.changed.connect(self.run_export)
        self.finetune_button.changed.connect(self.run_finetune)
        self.refine.changed.connect(self.refiner.enable)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_images)

    # ---------------------------------------------------------------- layers
    def _image_choices(self, _widget=None) -> list[tuple[str, Any]]:
        from napari.layers import Image

        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def _refresh_images(self, _event=None) -> None:
        self.image.reset_choices()

    def _on_known(self, value: str) -> None:
        if value != PICK:
            self.prompt.value = value

    def say(self, text: str) -> None:
        """Show ``text`` in the status line (and the log)."""
        self.status.value = text
        _logger.info("%s", text)

    def target_labels(self):
        """The Labels layer edited by refine/export/fine-tune: the selected Labels layer, else
        the last result."""
        from napari.layers import Labels

        active = self.viewer.layers.selection.active
        if isinstance(active, Labels):
            return active
        if self.labels_layer is not None and self.labels_layer in self.viewer.layers:
            return self.labels_layer
        return None

    def image_for(self, labels_layer):
        """The image layer a Labels layer was made from (else the picked image)."""
        record = LayerRecord.from_metadata(labels_layer.metadata)
        if record is not None and record.image in self.viewer.layers:
            return self.viewer.layers[record.image]
        return self.image.value

    def record_for(self, labels_layer) -> LayerRecord:
        """The layer's ``LayerRecord``, or one made from the current prompt box."""
        record = LayerRecord.from_metadata(labels_layer.metadata)
        if record is None:
            prompt = self.prompt.value.strip()
            record = LayerRecord(prompt=prompt, instruction=prompt)
        return record

    def show_masks(self, layer, masks) -> None:
        """Put ``masks`` into a Labels layer (data + features)."""
        layer.data = masks.labels
        layer.features = masks_to_features(masks)

    # ---------------------------------------------------------------- workers
    def start(self, job: Callable[..., Generator], *args: Any, steps: int,
              on_done: Callable[[Any], None]) -> Any:
        """Run generator function ``job(*args)`` in a worker; it yields (step, message) with
        step in 1..``steps`` and returns what ``on_done`` receives. Returns the worker (None
        while another run is going on)."""
        from napari.qt.threading import create_worker

        if self.busy:
            self.say("busy: wait for the current run to finish")
            return None
        worker = create_worker(job, *args, _start_thread=False)
        worker.yielded.connect(self._on_yield)
        worker.returned.connect(on_done)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.busy = True
        self.progress.max, self.progress.value = steps, 0
        for button in (self.segment_button, self.export_button, self.finetune_button):
            button.enabled = False
        worker.start()
        return worker

    def _on_yield(self, item: tuple[int, str]) -> None:
        step, message = item
        self.progress.value = step
        self.say(message)

    def _on_error(self, err: Exception) -> None:
        self.progress.value = 0
        self.say(f"error: {' '.join(str(err).split())}")
        _logger.error("zeusseg worker failed", exc_info=err)

    def _on_finished(self) -> None:
        self.busy = False
        for button in (self.segment_button, self.export_button, self.finetune_button):
            button.enabled = True

    # ---------------------------------------------------------------- segment
    def run_segment(self, _value=None) -> Any:
        """Segment the picked image with the prompt (in a worker). Returns the worker."""
        layer = self.image.value
        prompt = " ".join(self.prompt.value.split())
        if layer is None or not prompt:
            self.say("pick an image layer and type a prompt")
            return None
        try:
            image = layer_image(layer.data, rgb=layer.rgb, name=layer.name)
        except ValueError as err:
            self.say(str(err))
            return None
        self.session.set_model(self.model.value, self.adapter.value.strip() or None)
        mode = self.mode.value
        return self.start(self._segment_job, image, prompt, mode, steps=4,
                          on_done=lambda r: self._show_result(layer, r))

    def _segment_job(self, image, prompt: str, mode: str) -> Generator:
        yield 1, f"loading {self.session.model}"
        self.session.predictor  # noqa: B018 (loads the model here, in the worker)
        yield 2, f"making the {mode} instruction"
        instruction = self.session.instruction(image, prompt, mode)
        yield 3, "segmenting"
        result = self.session.segment(image, prompt, mode, instruction=instruction)
        yield 4, "done"
        return result

    def _show_result(self, image_layer, result: SegmentResult) -> None:
        from napari.layers import Labels

        self.last_result = result
        masks = result.masks
        name = result.instruction.prompt + (" (LoRA)" if result.adapter else "")
        record = LayerRecord(prompt=result.instruction.prompt, instruction=result.instruction.text,
                             mode=result.instruction.mode, model=result.model,
                             adapter=result.adapter, image=image_layer.name)
        meta = {METADATA_KEY: record.to_dict()}
        existing = self.viewer.layers[name] if name in self.viewer.layers else None
        if isinstance(existing, Labels) and METADATA_KEY in existing.metadata:
            layer = existing
            self.show_masks(layer, masks)
            layer.metadata = meta
        else:
            layer = self.viewer.add_labels(
                masks.labels, name=name, features=masks_to_features(masks), metadata=meta,
                scale=image_layer.scale, translate=image_layer.translate)
        self.labels_layer = layer
        self.viewer.layers.selection.active = layer
        self.instruction.value = result.instruction.text
        self.say(f"{len(masks)} instances of '{record.prompt}' in {result.seconds:.1f} s")

    # ---------------------------------------------------------------- export
    def run_export(self, _value=None):
        """Write the target Labels layer as label TIFF + COCO JSON. Returns ``ExportPaths``."""
        layer = self.target_labels()
        if layer is None:
            self.say("nothing to export: segment first")
            return None
        image_layer = self.image_for(layer)
        record = self.record_for(layer)
        masks = layer_masks(layer.data, layer.features, {1: record.prompt})
        name = image_layer.name if image_layer is not None else layer.name
        paths = export(self.export_dir.value, name, masks, masks.class_names or {1: "object"})
        self.say(f"wrote {paths.labels} and {paths.coco}")
        return paths

    # ---------------------------------------------------------------- fine-tune
    def run_finetune(self, _value=None) -> Any:
        """One-image LoRA run on the target Labels layer, then re-segment (in a worker)."""
        from zeusseg.napari.adapt import AdaptOptions, next_run_dir  # loads torch: on use only

        layer = self.target_labels()
        image_layer = self.image_for(layer) if layer is not None else None
        if layer is None or image_layer is None:
            self.say("fine-tuning needs a Labels layer from Segment (or corrected by hand)")
            return None
        record = self.record_for(layer)
        image = layer_image(image_layer.data, rgb=image_layer.rgb, name=image_layer.name)
        masks = layer_masks(layer.data, layer.features, {1: record.prompt})
        if len(masks) == 0:
            self.say("the labels hold no instance to learn from")
            return None
        options = replace(self.adapt_options or AdaptOptions(), steps=int(self.steps.value))
        out = next_run_dir(Path(self.export_dir.value) / "finetune", _safe_stem(image.name))
        base = self.model.value
        return self.start(self._finetune_job, image, masks, record, base, options, out, steps=3,
                          on_done=lambda r: self._finetuned(image_layer, r))

    def _finetune_job(self, image, masks, record: LayerRecord, base: str, options, out: Path
                      ) -> Generator:
        from zeusseg.napari.adapt import finetune_on_image  # loads torch: on use only

        yield 1, f"fine-tuning {base} on {image.name}: {options.steps} steps -> {out}"
        self.session.set_model(base, None)
        embedder = self.session.predictor.embedder
        summary = finetune_on_image(image, masks, record.prompt, out, base=base,
                                    options=options, embedder=embedder)
        yield 2, "re-segmenting with the adapter"
        self.session.set_model(base, summary["adapter"])
        result = self.session.segment(image, record.prompt, record.mode)
        yield 3, "done"
        return summary, result

    def _finetuned(self, image_layer, done: tuple[dict[str, Any], SegmentResult]) -> None:
        summary, result = done
        self.last_finetune = summary
        self.adapter.value = str(summary["adapter"])
        self._show_result(image_layer, result)
        self.say(f"adapter {summary['adapter']} ({summary['steps']} steps, "
                 f"{summary['seconds']:.0f} s): {len(result.masks)} instances")
