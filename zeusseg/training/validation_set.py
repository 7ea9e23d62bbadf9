"""Full-image validation sets at the model's scale (``ValidationSet`` of ``ValidationItem``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from zeusseg.io.images import read_image
from zeusseg.structures import InstanceMasks
from zeusseg.training.data_config import data_config
from zeusseg.training.preload import Source, open_source
from zeusseg.training.prompts import PromptTable
from zeusseg.transforms import (
    median_diameter,
    pad_to_multiple,
    rescale_factor,
    resize_image,
    resize_labels,
    scaled_shape,
)


@dataclass
class ValidationItem:
    """One validation image at the model's scale, with its ground truth at full resolution.

    Attributes:
        name: sample name.
        dataset: source name.
        image: (1, H_pad, W_pad) float32 tensor in [0, 1], rescaled then reflect-padded to
            multiples of 32.
        size: (h, w) of the rescaled image before padding.
        factor: resize factor from the original image.
        masks: ground truth at the original resolution.
        prompts: class id -> canonical prompt text of each class of the source.
        agnostic_prompt: the source's class-agnostic prompt.
    """

    name: str
    dataset: str
    image: torch.Tensor
    size: tuple[int, int]
    factor: float
    masks: InstanceMasks
    prompts: dict[int, str]
    agnostic_prompt: str

    def restore(self, labels: np.ndarray) -> np.ndarray:
        """Labels predicted on ``image`` (H_pad, W_pad) -> labels at the original resolution."""
        h, w = self.size
        return resize_labels(np.asarray(labels)[:h, :w], self.masks.shape)


class ValidationSet(Sequence):
    """Full validation images for the scorer (a list of ``ValidationItem``).

    Args:
        config: the data config; its ``validation`` entry names the sources. With
            ``target_diameter``, the scale comes from the ground-truth diameters (oracle scale).
        sources: ready Sources instead.
        max_images: cap per source (defaults to the config's ``max_images``).
    """

    def __init__(
        self,
        config: Mapping | None = None,
        *,
        sources: Sequence[Source] | None = None,
        max_images: int | None = None,
    ) -> None:
        cfg = data_config(config)
        if sources is None:
            sources = [open_source(n, c or {}, cfg["data_root"])
                       for n, c in cfg["validation"].items()]
        table = PromptTable(cfg["prompts"])
        cap = max_images if max_images is not None else cfg["max_images"]
        self.items: list[ValidationItem] = []
        for src in sources:
            n = len(src.samples) if cap is None else min(int(cap), len(src.samples))
            for i in range(n):
                self.items.append(_validation_item(src.samples[i], src, table))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _validation_item(sample, src: Source, table: PromptTable) -> ValidationItem:
    grey = read_image(sample.image_path).grey()
    factor = src.scale
    if src.target_diameter is not None:
        factor = rescale_factor(median_diameter(sample.masks.labels), src.target_diameter)
    small = resize_image(grey, scaled_shape(grey.shape, factor))
    padded = pad_to_multiple(small, 32)
    return ValidationItem(
        name=str(sample.name),
        dataset=src.name,
        image=torch.from_numpy(np.ascontiguousarray(padded, np.float32))[None],
        size=(int(small.shape[0]), int(small.shape[1])),
        factor=float(factor),
        masks=sample.masks,
        prompts={int(c): table.canonical(n) for c, n in src.class_names.items()},
        agnostic_prompt=table.canonical(src.prompt),
    )
