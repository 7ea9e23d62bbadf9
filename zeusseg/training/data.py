"""Random prompted training crops of preloaded images (``PromptedSegmentationDataset``).

The data config is described in ``zeusseg.training.data_config``.

Prompt sampling per item: a positive names a class present in the image (its name, a synonym,
or the source's class-agnostic prompt) and the target holds that class's instances; a negative
names a class of the same source absent from the image, or a class of another domain (another
source with a different class-agnostic prompt), and the target is empty.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from zeusseg.training.augment import (
    AugmentConfig,
    augment_geometry,
    augment_intensity,
    cutout,
)
from zeusseg.training.data_config import data_config
from zeusseg.training.instruction_texts import InstructionTexts
from zeusseg.training.microscope_augment import augment_microscope
from zeusseg.training.preload import PreloadedImage, Source, open_source, preload_source
from zeusseg.training.prompts import PromptTable, TextProvider
from zeusseg.training.sampling import BalancedSampler, image_weights
from zeusseg.transforms import resize_image, resize_labels

_logger = logging.getLogger(__name__)


class PromptedSegmentationDataset(Dataset):
    """Random prompted crops of preloaded training images.

    Each item is a dict: ``image`` (1, h, w) float32 tensor in [0, 1], ``targets`` (3, h, w)
    float32 tensor (``make_targets`` of the prompted instances; zeros for negatives), ``text``
    str, ``positive`` bool (the prompted class is in the image; a crop may still miss it),
    ``dataset`` str and ``class_name`` (the canonical class name); with ``contact_weight`` w > 0
    also ``weights`` (h, w) float32 = 1 + w * ``contact_map`` on the prompted objects, the
    per-pixel weight of the two distance-map losses.
    The index selects the image; crop, prompt and augmentation are random (seeded from torch's
    RNG, so DataLoader workers differ and ``torch.manual_seed`` makes runs repeatable).

    Args:
        config: the data config (see ``zeusseg.training.data_config``).
        sources: ready Sources to use instead of ``config["datasets"]``.
        text_provider: replaces the prompts table: ``(class name, image name, rng) -> text``.
        augment: turn augmentation off with False.
    """

    def __init__(
        self,
        config: Mapping | None = None,
        *,
        sources: Sequence[Source] | None = None,
        text_provider: TextProvider | None = None,
        augment: bool = True,
    ) -> None:
        self.config = data_config(config)
        cfg = self.config
        if sources is None:
            sources = [
                open_source(n, c or {}, cfg["data_root"]) for n, c in cfg["datasets"].items()
            ]
        if not sources:
            raise ValueError("the data config names no training dataset")
        self.sources = {s.name: s for s in sources}
        self.contact_weight = float(cfg["contact_weight"])
        if self.contact_weight < 0:
            raise ValueError(f"contact_weight must be >= 0, got {self.contact_weight}")
        self.records: list[PreloadedImage] = []
        for s in sources:
            self.records += preload_source(
                s, max_images=cfg["max_images"], workers=int(cfg["preload_workers"]),
                contact=self.contact_weight > 0,
            )
        self.crop_size = int(cfg["crop_size"])
        self.negative_prob = float(cfg["negative_prob"])
        self.agnostic_prob = float(cfg["agnostic_prob"])
        self.object_crop_prob = float(cfg["object_crop_prob"])
        self.augment = AugmentConfig.from_dict(cfg["augment"]) if augment else AugmentConfig.off()
        self.prompts = PromptTable(cfg["prompts"])
        mode = cfg["instruction_mode"]
        if mode == "name":
            self.prompts = PromptTable({k: [k] for k in self.prompts.table}, replace=True)
        if text_provider is None and mode in ("template", "llm"):
            paths = {r.name: _image_path(self.sources[r.source].samples, r.name)
                     for r in self.records}
            text_provider = InstructionTexts(paths, self.prompts, mode,
                                             cfg["instruction_prob"], cfg["instruction_cache"])
        self.text_provider = text_provider
        extra = [str(t) for t in cfg["negative_texts"]]
        self._foreign = {
            s.name: sorted({o.prompt for o in sources if o.prompt != s.prompt}
                           | {n for o in sources if o.prompt != s.prompt
                              for n in o.class_names.values()} | set(extra))
            for s in sources
        }

    def __len__(self) -> int:
        return len(self.records)

    def sampler(self, num_samples: int | None = None, seed: int = 0) -> BalancedSampler:
        """A BalancedSampler over this dataset with the configured weights."""
        weights = image_weights(
            [r.source for r in self.records],
            [r.classes for r in self.records],
            {n: s.weight for n, s in self.sources.items()},
            class_balance=bool(self.config["class_balance"]),
        )
        n = int(num_samples or self.config["samples_per_epoch"])
        return BalancedSampler(weights, n, seed=seed)

    def choose_prompt(
        self, rec: PreloadedImage, rng: np.random.Generator
    ) -> tuple[str, int | None, bool]:
        """(canonical class name, class id to keep, positive) for one item.

        The class id is None for "all instances" (class-agnostic prompt) and -1 for a negative
        (empty target).
        """
        src = self.sources[rec.source]
        present = {int(c) for c in rec.classes}
        if present and rng.random() >= self.negative_prob:
            if len(src.class_names) <= 1 or rng.random() < self.agnostic_prob:
                return src.prompt, None, True
            c = int(rng.choice(sorted(present)))
            return src.class_names[c], c, True
        same = [n for c, n in src.class_names.items() if c not in present and n != src.prompt]
        if not present:
            same.append(src.prompt)
        other = self._foreign[src.name]
        if same and (not other or rng.random() < 0.5):
            return same[int(rng.integers(len(same)))], -1, False
        if other:
            return other[int(rng.integers(len(other)))], -1, False
        return src.prompt, None, bool(present)  # nothing can serve as a negative

    def _window(
        self, rec: PreloadedImage, keep: int | None, rng: np.random.Generator
    ) -> tuple[int, int, int]:
        """Top-left corner and side of the crop window (before resizing to crop_size)."""
        s = 1.0
        j = self.augment.scale_jitter
        if j > 0:
            s = float(np.exp(rng.uniform(-np.log1p(j), np.log1p(j))))
        side = max(8, round(self.crop_size / s))
        h, w = rec.image.shape
        lo_y, hi_y = sorted((0, h - side))
        lo_x, hi_x = sorted((0, w - side))
        centres = rec.centres if keep in (None, -1) else rec.centres[rec.centre_classes == keep]
        if keep != -1 and len(centres) and rng.random() < self.object_crop_prob:
            cy, cx = centres[int(rng.integers(len(centres)))]
            top = int(np.clip(round(cy - rng.uniform(0.15, 0.85) * side), lo_y, hi_y))
            left = int(np.clip(round(cx - rng.uniform(0.15, 0.85) * side), lo_x, hi_x))
        else:
            top, left = int(rng.integers(lo_y, hi_y + 1)), int(rng.integers(lo_x, hi_x + 1))
        return top, left, side

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        rec = self.records[index]
        name, keep, positive = self.choose_prompt(rec, rng)
        top, left, side = self._window(rec, keep, rng)
        weighted = rec.contact is not None  # preloaded only with contact_weight > 0
        parts = [rec.image[None], rec.targets] + ([rec.contact[None]] if weighted else [])
        crop = np.concatenate([  # (5 or 6, side, side) uint8: image, targets, [contact], classes
            _crop_reflect(a, top, left, side) for a in (*parts, rec.class_map[None])
        ])
        if side != self.crop_size:  # scale jitter; Pillow, as torch ops stall on busy CPUs
            size = (self.crop_size, self.crop_size)
            crop = np.stack([resize_image(c, size) for c in crop[:-1]] + [
                resize_labels(crop[-1], size)])
        arr = crop.astype(np.float32)
        image, targets, class_map = arr[0] / 255.0, arr[1:4] / 255.0, arr[-1]
        if keep == -1:
            mask = np.zeros_like(class_map, dtype=bool)
        else:
            mask = class_map > 0 if keep is None else class_map == keep
        targets = targets * mask  # fg from the nearest-resized class map, distances masked
        targets[0] = mask
        # loss weight of the distance maps: 1 + w * contact (prompted objects only)
        weights = 1.0 + self.contact_weight * (arr[4] / 255.0) * mask if weighted else None
        objects = class_map > 0  # every annotated object, prompted or not (halo augmentation)
        image, targets, objects, *rest = augment_geometry(
            [image, targets, objects] + ([weights] if weights is not None else []),
            self.augment, rng)
        image = augment_microscope(image, objects, self.augment, rng)
        image = cutout(augment_intensity(image, self.augment, rng), self.augment, rng)
        if self.text_provider is not None:
            text = self.text_provider(name, rec.name, rng)
        else:
            text = self.prompts.sample(name, rng)
        item = {
            "image": torch.from_numpy(image.astype(np.float32))[None],
            "targets": torch.from_numpy(targets.astype(np.float32)),
            "text": text,
            "positive": bool(positive),
            "dataset": rec.source,
            "class_name": name,
        }
        if rest:
            item["weights"] = torch.from_numpy(rest[0].astype(np.float32))  # (h, w)
        return item


def _image_path(samples, name: str):
    """Path of sample ``name`` without reading its masks (registry datasets are lazy)."""
    if hasattr(samples, "image_path"):
        return samples.image_path(name)
    return next(smp.image_path for smp in samples if smp.name == name)


def _crop_reflect(arr: np.ndarray, top: int, left: int, side: int) -> np.ndarray:
    """(C, side, side) window of (C, H, W) ``arr``; parts outside are mirrored (reflect)."""
    _, h, w = arr.shape
    y0, y1 = max(top, 0), min(top + side, h)
    x0, x1 = max(left, 0), min(left + side, w)
    out = arr[:, y0:y1, x0:x1]
    pads = ((0, 0), (y0 - top, top + side - y1), (x0 - left, left + side - x1))
    if any(p for pair in pads for p in pair):
        out = np.pad(out, pads, mode="reflect" if min(out.shape[1:]) > 1 else "edge")
    return out
