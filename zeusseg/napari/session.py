"""What the napari widget does, without Qt: segment with a text prompt, refine with clicks and
boxes, export. One ``ZeusSession`` holds a loaded model (and adapter) across runs.

Everything here runs in napari worker threads as well as in plain scripts and tests.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zeusseg.components import list_components
from zeusseg.io import write_coco_predictions, write_label_tiff
from zeusseg.structures import InstanceMasks, Instruction, MicroscopyImage

_logger = logging.getLogger(__name__)

KNOWN_PROMPTS = ("virus particles", "cell nuclei", "RSV", "SARS-CoV-2", "FLUAV")
"""Offered first in the widget; the prompt library's other entries follow."""
DEFAULT_MODEL = "zeus-default"


def known_prompts() -> list[str]:
    """``KNOWN_PROMPTS`` then every entry name of the prompt library, without duplicates."""
    from zeusseg.instructions import load_prompts  # loads torch: not when napari opens the widget

    out = list(KNOWN_PROMPTS)
    for entry in load_prompts().entries:
        if entry.name.lower() not in {p.lower() for p in out}:
            out.append(entry.name)
    return out


def model_names() -> list[str]:
    """Trained models whose weights are on this machine (``zeusseg models``), default first."""
    entries = [e for e in list_components("model") if e.weights_present()]
    names = [e.name for e in sorted(entries, key=lambda e: not e.default)]
    return names or [DEFAULT_MODEL]


@dataclass
class SegmentResult:
    """One Segment run.

    Attributes:
        masks: the instances at the image size, ``class_names`` = {1: prompt}.
        instruction: what the model was told.
        model: model name or folder.
        adapter: LoRA adapter folder, "" for none.
        seconds: wall time of instruction + segmentation.
    """

    masks: InstanceMasks
    instruction: Instruction
    model: str
    adapter: str
    seconds: float


@dataclass(frozen=True)
class ExportPaths:
    """Files written by ``export``: the layout of ``zeusseg segment``'s OUT folder."""

    labels: Path
    coco: Path


class ZeusSession:
    """A Zeus model (optionally with a LoRA adapter) and its predictor, loaded on first use.

    Args:
        model: trained-model name, architecture name, or model folder (``load_zeus``).
        adapter: LoRA adapter folder (``zeusseg finetune`` / ``finetune_on_image`` output).
        embedder: a ``PromptEmbedder`` instead of the model's text encoder (tests).
    """

    def __init__(self, model: str = DEFAULT_MODEL, adapter: str | None = None, *,
                 embedder=None) -> None:
        self.model = model
        self.adapter = adapter or ""
        self._embedder = embedder
        self._predictor = None
        self._class_head = None  # (head, spec) of the model, loaded with the predictor
        self._quality = None  # QualityFilter of the model's quality head (none with an adapter)
        self._prepared: tuple | None = None  # key of the image held for refinement

    def set_model(self, model: str, adapter: str | None = None) -> None:
        """Switch model/adapter (loaded again on next use only when they changed)."""
        if (model, adapter or "") != (self.model, self.adapter):
            self.model, self.adapter = model, adapter or ""
            self._predictor, self._prepared = None, None

    @property
    def predictor(self):
        """The ``ZeusPredictor`` (the model is loaded on first access)."""
        if self._predictor is None:
            import torch  # torch and the model load in the worker, not with the widget

            from zeusseg.inference.quality_filter import QualityFilter
            from zeusseg.inference.zeus_segmenter import (
                find_class_head,
                find_quality_head,
                load_zeus,
            )
            from zeusseg.predictor import ZeusPredictor

            torch.set_num_threads(max(1, torch.get_num_threads()))
            net = load_zeus(self.model)
            if self.adapter:
                from zeusseg.adapters import load_adapter

                net = load_adapter(net, self.adapter, model_id=self.model)
            self._predictor = ZeusPredictor(net, embedder=self._embedder)
            self._class_head = find_class_head(self.model, net)
            quality = None if self.adapter else find_quality_head(self.model)
            self._quality = QualityFilter(*quality) if quality is not None else None
            _logger.info("loaded %s%s", self.model,
                         f" + adapter {self.adapter}" if self.adapter else "")
        return self._predictor

    def instruction(self, image: MicroscopyImage, prompt: str, mode: str = "name") -> Instruction:
        """The text the model reads for ``prompt`` (``zeusseg.instructions.make_instruction``).

        Raises:
            ValueError: unknown mode or empty prompt.
        """
        from zeusseg.instructions import make_instruction

        return make_instruction(image, prompt, mode=mode)

    def segment(self, image: MicroscopyImage, prompt: str, mode: str = "name", *,
                instruction: Instruction | None = None) -> SegmentResult:
        """Segment every object named by ``prompt``.

        Args:
            image: the image (data (H, W) or (H, W, 3) float32 in [0, 1]).
            prompt: what to segment, e.g. ``"virus particles"``.
            mode: instruction mode: ``name`` (the prompt as is), ``template`` or ``llm``.
            instruction: an instruction already made for (image, prompt, mode).

        Raises:
            ValueError: unknown mode or empty prompt.
        """
        from zeusseg.inference.zeus_segmenter import segment_image

        t0 = time.perf_counter()
        instruction = instruction or self.instruction(image, prompt, mode)
        texts = {instruction.prompt: instruction.text}

        def text_of(p: str) -> str:  # the class head may add its parent prompt
            if p not in texts:
                texts[p] = self.instruction(image, p, mode).text
            return texts[p]

        masks = segment_image(self.predictor, image, [instruction.prompt],
                              class_head=self._class_head, quality_head=self._quality,
                              text_of=text_of)
        masks.class_names = {1: instruction.prompt}
        self._prepared = None  # segment_image left the predictor without an image
        return SegmentResult(masks, instruction, self.model, self.adapter,
                             round(time.perf_counter() - t0, 3))

    def _prepare(self, image: MicroscopyImage, masks: InstanceMasks) -> None:
        """Hold ``image`` in the predictor at the model's scale (once per image and model)."""
        from zeusseg.inference.interactive import prepare_predictor
        from zeusseg.instructions import image_content_hash

        key = (image_content_hash(image), self.model, self.adapter)
        if self._prepared != key or not self.predictor.is_image_set:
            prepare_predictor(self.predictor, image, labels=masks)
            self._prepared = key

    def add_instance(
        self,
        image: MicroscopyImage,
        masks: InstanceMasks,
        text: str,
        point: tuple[float, float] | None = None,
        box: tuple[float, float, float, float] | None = None,
    ) -> InstanceMasks:
        """``masks`` plus the object under ``point`` and/or in ``box`` (``add_instance_at``).

        Args:
            image: the image of ``masks``.
            masks: the current instances; class 1 stands for ``text``.
            text: what the model reads (the layer's instruction).
            point: (X, Y) pixel on the object.
            box: (X0, Y0, X1, Y1) pixels around the object (XYXY).

        Returns:
            New masks; the new instance has class 1 and the model's score. Unchanged (a copy)
            when the click is on an existing instance or selects nothing.
        """
        from zeusseg.inference.interactive import add_instance_at

        self._prepare(image, masks)
        # class 1 is named by the text the model reads, so the new instance gets class 1
        work = InstanceMasks(labels=masks.labels, ids=masks.ids, class_ids=masks.class_ids,
                             scores=masks.scores, class_names={1: text})
        out = add_instance_at(work, self.predictor, text, point=point, box=box)
        out.class_names = {1: text, **masks.class_names}
        return out

    @staticmethod
    def remove_instance(masks: InstanceMasks, point: tuple[float, float]) -> InstanceMasks:
        """``masks`` without the instance under ``point`` ((X, Y) pixel)."""
        from zeusseg.inference.interactive import remove_instance_at

        return remove_instance_at(masks, point)


def export(
    out: str | os.PathLike, name: str, masks: InstanceMasks, class_names: dict[int, str]
) -> ExportPaths:
    """Write ``out/labels/<name>.tif`` and ``out/predictions.json`` (COCO with scores).

    The layout of ``zeusseg segment``'s output folder, so ``zeusseg evaluate --pred OUT``
    reads it. An existing ``predictions.json`` is replaced (it then holds this image only).

    Args:
        out: output folder (created).
        name: image name; the label file stem and the COCO ``file_name`` (``<name>.png``).
        masks: the instances.
        class_names: class id -> name for the COCO categories.
    """
    out = Path(out)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    stem = _safe_stem(name)
    masks = InstanceMasks(labels=masks.labels, ids=masks.ids, class_ids=masks.class_ids,
                          scores=masks.scores, class_names=dict(class_names))
    labels = write_label_tiff(out / "labels" / f"{stem}.tif", masks)
    cats = dict(class_names) or {1: "object"}
    for c in np.unique(masks.class_ids):
        cats.setdefault(int(c), str(int(c)))
    coco = write_coco_predictions(out / "predictions.json", [(f"{stem}.png", masks)], cats)
    _logger.info("exported %d instances to %s and %s", len(masks), labels, coco)
    return ExportPaths(labels=labels, coco=coco)


def _safe_stem(name: str) -> str:
    """A file stem from a layer name (path separators and odd characters become '_')."""
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(name).stem)
    return keep.strip("._") or "image"
