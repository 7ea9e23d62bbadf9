"""Training samples for the baselines: torchvision R-CNN targets from zeusseg's readers.

Each sample is read once with ``zeusseg.io.read_image`` / the dataset's ``masks`` (COCO
polygons rasterised, label images read) and cached in memory (uint8 image, uint16/int32
labels). Per draw it is rescaled by ``model.scale`` times a jitter factor, flipped, rotated by
a multiple of 90 degrees and cut out (ViruSeg / mmdet ``CutOut``: rectangles filled with the
image mean; the annotations are left unchanged). Boxes are derived from the augmented masks,
never taken from the annotation file. Augmentation draws come from ``(seed, epoch, index)``,
so a resumed run sees the same samples as an uninterrupted one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from zeusseg.baselines.config import DataCfg
from zeusseg.datasets import get_dataset
from zeusseg.errors import InputError
from zeusseg.io import read_image
from zeusseg.structures import InstanceMasks

_logger = logging.getLogger(__name__)

Loader = Callable[[], tuple[np.ndarray, InstanceMasks]]
"""Returns one sample: (H, W) or (H, W, 3) float32 image in [0, 1] and its instance masks."""

MIN_AREA = 4
"""Instances with fewer pixels after augmentation are dropped from the targets."""


def class_mapping(class_names: Mapping[int, str], agnostic: bool
                  ) -> tuple[dict[int, int], tuple[str, ...]]:
    """Dataset class id -> contiguous training label 1..K, and the K names in label order."""
    if agnostic:
        return {int(c): 1 for c in class_names}, ("object",)
    ids = sorted(int(c) for c in class_names)
    return {c: k for k, c in enumerate(ids, start=1)}, tuple(class_names[c] for c in ids)


def dataset_loaders(name: str, data_root: str | None = None, max_images: int | None = None,
                    names: Sequence[str] | None = None
                    ) -> tuple[list[str], list[Loader], dict[int, str]]:
    """(sample names, one loader per sample, class names) of a registered dataset.

    Args:
        name: registered dataset.
        data_root: shared data folder.
        max_images: keep the first N samples (after ``names``).
        names: only these samples (file stems), in this order (few-shot training).

    Raises:
        InputError: data root or dataset missing, or a name the dataset does not have.
    """
    ds = get_dataset(name, data_root)
    if names is not None:
        unknown = [n for n in names if n not in set(ds.names)]
        if unknown or not names:
            raise InputError(None, f"data.names: {unknown or '[]'} not in dataset '{name}' "
                             f"({len(ds)} samples, e.g. {', '.join(list(ds.names)[:3])})")
    names = list(ds.names if names is None else names)[: max_images or None]

    def loader(n: str) -> Loader:
        return lambda: (read_image(ds.image_path(n)).data, ds.masks(n))

    return names, [loader(n) for n in names], ds.class_names


def boxes_from_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Instance ids and their XYXY boxes (pixel edges, x1/y1 exclusive) of an (H, W) label image.

    Returns:
        (N,) int64 ids and (N, 4) float32 boxes; instances under ``MIN_AREA`` px are left out.
    """
    from scipy import ndimage

    ids = np.unique(labels[labels > 0])
    if ids.size == 0:
        return ids.astype(np.int64), np.zeros((0, 4), np.float32)
    areas = np.bincount(labels.ravel(), minlength=int(ids.max()) + 1)[ids]
    ids = ids[areas >= MIN_AREA]
    slices = ndimage.find_objects(labels, max_label=int(ids.max(initial=0)))
    boxes = np.array([(slices[i - 1][1].start, slices[i - 1][0].start,
                       slices[i - 1][1].stop, slices[i - 1][0].stop) for i in ids], np.float32)
    return ids.astype(np.int64), boxes.reshape(-1, 4)


def _resize(image: np.ndarray, labels: np.ndarray, factor: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """Image bilinear (antialiased), labels nearest, both to round(size * factor)."""
    if factor == 1.0:
        return image, labels
    h, w = labels.shape
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    img = F.interpolate(img, size=size, mode="bilinear", align_corners=False,
                        antialias=factor < 1)[0].permute(1, 2, 0).numpy()
    lab = torch.from_numpy(labels.astype(np.int64))[None, None].double()
    lab = F.interpolate(lab, size=size, mode="nearest")[0, 0].numpy().astype(labels.dtype)
    return img, lab


def _cutout(image: np.ndarray, rng: np.random.Generator, cfg: DataCfg) -> np.ndarray:
    """Fill ``randint(*cutout_holes)`` rectangles with the image mean (in place)."""
    h, w = image.shape[:2]
    fill = image.mean(axis=(0, 1))
    side = min(h, w)
    for _ in range(int(rng.integers(cfg.cutout_holes[0], cfg.cutout_holes[1] + 1))):
        ch = max(1, int(side * rng.uniform(*cfg.cutout_size)))
        cw = max(1, int(side * rng.uniform(*cfg.cutout_size)))
        y, x = int(rng.integers(0, max(1, h - ch + 1))), int(rng.integers(0, max(1, w - cw + 1)))
        image[y:y + ch, x:x + cw] = fill
    return image


class BaselineDataset(Dataset):
    """R-CNN training samples with augmentation.

    Args:
        loaders: one function per sample returning (image, InstanceMasks).
        label_map: dataset class id -> training label (``class_mapping``).
        cfg: augmentation settings.
        scale: the model's input scale (``ModelCfg.scale``).
        seed: base seed of the augmentation draws.
        augment: False gives the plain rescaled sample (no jitter, flips or cutout).
    """

    def __init__(self, loaders: Sequence[Loader], label_map: Mapping[int, int], cfg: DataCfg,
                 *, scale: float, seed: int = 0, augment: bool = True) -> None:
        self.loaders = list(loaders)
        self.label_map = dict(label_map)
        self.cfg = cfg
        self.scale = float(scale)
        self.seed = int(seed)
        self.augment = augment
        self.epoch = 0
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, dict[int, int]]] = {}

    def __len__(self) -> int:
        return len(self.loaders)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch``."""
        self.epoch = int(epoch)

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
        """Cached (H, W, C) uint8 image, (H, W) labels and instance id -> training label."""
        if i not in self._cache:
            image, masks = self.loaders[i]()
            image = image[..., None] if image.ndim == 2 else image[..., :3]
            img8 = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
            labels = masks.labels
            if labels.max(initial=0) < 65536:
                labels = labels.astype(np.uint16)
            classes = {int(k): self.label_map[int(c)]
                       for k, c in zip(masks.ids, masks.class_ids, strict=True)}
            self._cache[i] = (img8, labels, classes)
        return self._cache[i]

    def sample(self, i: int) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
        """Augmented (H', W', C) float32 image, (H', W') int64 labels, id -> training label."""
        img8, labels, classes = self._load(i)
        rng = np.random.default_rng((self.seed, self.epoch, i))
        image = img8.astype(np.float32) / 255.0
        labels = labels.astype(np.int64)
        factor = self.scale
        if self.augment:
            factor *= float(rng.uniform(*self.cfg.scale_jitter))
        image, labels = _resize(image, labels, factor)
        if self.augment:
            if rng.random() < self.cfg.hflip:
                image, labels = image[:, ::-1], labels[:, ::-1]
            if rng.random() < self.cfg.vflip:
                image, labels = image[::-1], labels[::-1]
            if self.cfg.rot90:
                k = int(rng.integers(0, 4))
                image, labels = np.rot90(image, k), np.rot90(labels, k)
            image = np.ascontiguousarray(image)
            if rng.random() < self.cfg.cutout_prob:
                image = _cutout(image, rng, self.cfg)
        return np.ascontiguousarray(image), np.ascontiguousarray(labels), classes

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(3, H, W) float32 image in [0, 1] and ``boxes`` (N, 4) XYXY float32, ``labels``
        (N,) int64, ``masks`` (N, H, W) uint8 (torchvision's R-CNN target format)."""
        image, labels, classes = self.sample(i)
        ids, boxes = boxes_from_labels(labels)
        img = torch.from_numpy(image).permute(2, 0, 1)
        if img.shape[0] == 1:
            img = img.expand(3, -1, -1).contiguous()
        masks = torch.from_numpy(labels[None] == ids[:, None, None]).to(torch.uint8)
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.tensor([classes[int(k)] for k in ids], dtype=torch.int64),
            "masks": masks,
        }
        return img, target


def collate(batch: list) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Keep images of different sizes as lists (the R-CNN transform batches them)."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
