"""Training sources, decoded once into RAM at their training scale with precomputed targets.

A *source* is one named set of annotated images: a registered dataset
(``zeusseg.datasets.get_dataset``), a folder with ``images/`` and ``labels/`` (same file stems,
instance label PNG/TIFF), or any list of ``Sample``-like objects (``name``, ``image_path``,
``masks``). Each image becomes a ``PreloadedImage``: uint8 grey pixels, uint8-quantised dense
targets (``make_targets``) and a per-pixel class map, all at the training scale, so that a
training crop is a slice plus cheap augmentation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zeusseg.datasets import get_dataset
from zeusseg.datasets.registry import Sample
from zeusseg.errors import InputError
from zeusseg.io.images import read_image
from zeusseg.io.labels import read_label_image
from zeusseg.structures import InstanceMasks
from zeusseg.training.targets import contact_map, make_targets
from zeusseg.transforms import (
    median_diameter,
    rescale_factor,
    resize_image,
    resize_labels,
    scaled_shape,
)

_logger = logging.getLogger(__name__)


@dataclass
class Source:
    """One named set of annotated images with its scale settings.

    Attributes:
        name: dataset name, e.g. ``visn-train``.
        samples: objects with ``name``, ``image_path`` and ``masks`` (InstanceMasks).
        prompt: the class-agnostic prompt (``virus particles``); also the name of the single
            class of one-class sources.
        class_names: class id -> canonical class name.
        scale: fixed resize factor (used when ``target_diameter`` is None).
        target_diameter: if set, each image is resized so its median object diameter becomes
            about this many pixels.
        weight: share of the training draws (relative to the other sources).
    """

    name: str
    samples: Sequence
    prompt: str
    class_names: dict[int, str]
    scale: float = 1.0
    target_diameter: float | None = None
    weight: float = 1.0


@dataclass
class PreloadedImage:
    """One training image at its training scale.

    Attributes:
        name: sample name (file stem).
        source: name of its Source.
        image: (H, W) uint8 grey pixels.
        targets: (3, H, W) uint8, ``round(255 * make_targets(labels))``.
        class_map: (H, W) uint8 class id of each pixel, 0 = background.
        classes: (K,) int class ids present.
        centres: (N, 2) float32 (y, x) centroid of each instance.
        centre_classes: (N,) int class id of each instance.
        factor: resize factor applied to the original image.
        contact: (H, W) uint8, ``round(255 * contact_map(labels))``: where objects touch;
            None unless asked for (``preload_image(..., contact=True)``).
    """

    name: str
    source: str
    image: np.ndarray
    targets: np.ndarray
    class_map: np.ndarray
    classes: np.ndarray
    centres: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    centre_classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    factor: float = 1.0
    contact: np.ndarray | None = None


@dataclass
class FolderSamples:
    """Samples of a folder with ``images/`` and ``labels/`` holding files of the same stem."""

    root: Path
    class_names: dict[int, str]
    names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        labels = self.root / "labels"
        if not labels.is_dir() or not (self.root / "images").is_dir():
            raise InputError(self.root, "expected sub-folders images/ and labels/")
        self._labels = {p.stem: p for p in sorted(labels.iterdir()) if p.is_file()}
        self._images = {p.stem: p for p in sorted((self.root / "images").iterdir()) if p.is_file()}
        self.names = [s for s in self._labels if s in self._images]
        if not self.names:
            raise InputError(self.root, "no image in images/ has a label file in labels/")

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> Sample:
        name = self.names[i]
        masks = read_label_image(self._labels[name])
        masks.class_names = dict(self.class_names)
        return Sample(name=name, image_path=self._images[name], masks=masks)


def open_source(
    name: str, cfg: Mapping, data_root: str | os.PathLike | None = None
) -> Source:
    """Build a Source from one ``datasets`` entry of the data config.

    Args:
        name: the entry's key; a registered dataset name unless ``cfg`` has ``folder``.
        cfg: ``weight``, ``scale``, ``target_diameter``, and for folders ``folder`` and
            ``prompt`` (the class-agnostic prompt = the name of the single class).
        data_root: data root for registered datasets.

    Raises:
        ValueError: unknown dataset name or bad settings.
        InputError: missing folder.
    """
    scale = float(cfg.get("scale", 1.0))
    if scale <= 0:
        raise ValueError(f"dataset '{name}': scale must be > 0, got {scale}")
    target = cfg.get("target_diameter")
    common = dict(
        scale=scale,
        target_diameter=None if target is None else float(target),
        weight=float(cfg.get("weight", 1.0)),
    )
    if "folder" in cfg:
        prompt = str(cfg.get("prompt", "objects"))
        names = {1: prompt}
        return Source(name, FolderSamples(cfg["folder"], names), prompt, names, **common)

    ds = get_dataset(name, data_root)
    return Source(name, ds, ds.spec.prompt, ds.class_names, **common)


def preload_image(sample, source: Source, contact: bool = False) -> PreloadedImage:
    """Read, rescale and precompute targets (and, with ``contact``, the seam map) for one sample.

    Raises:
        InputError: unreadable image or labels of a different size.
    """
    img = read_image(sample.image_path)
    masks: InstanceMasks = sample.masks
    if img.shape != masks.shape:
        raise InputError(sample.image_path, f"image is {img.shape} but labels are {masks.shape}")
    factor = source.scale
    if source.target_diameter is not None:
        factor = rescale_factor(median_diameter(masks.labels), source.target_diameter)
    shape = scaled_shape(img.shape, factor)
    grey = (img.grey() * 255.0 + 0.5).astype(np.uint8)  # data is in [0, 1]
    labels = resize_labels(masks.labels, shape)

    lut = np.zeros(int(masks.ids.max(initial=0)) + 1, np.int64)
    lut[masks.ids] = masks.class_ids
    if lut.max(initial=0) > 255:
        raise InputError(sample.image_path, "class ids above 255 are not supported for training")
    class_map = lut[labels].astype(np.uint8)
    fg_idx = np.flatnonzero(labels)
    fg_lab = labels.ravel()[fg_idx]
    counts = np.bincount(fg_lab, minlength=lut.size)
    present = np.flatnonzero(counts[1:]) + 1
    ys, xs = np.divmod(fg_idx, shape[1])
    cy = np.bincount(fg_lab, ys, lut.size)[present] / counts[present]
    cx = np.bincount(fg_lab, xs, lut.size)[present] / counts[present]
    return PreloadedImage(
        name=str(sample.name),
        source=source.name,
        image=resize_image(grey, shape),
        targets=(make_targets(labels) * 255.0 + 0.5).astype(np.uint8),
        class_map=class_map,
        classes=np.unique(lut[present]),
        centres=np.stack([cy, cx], axis=1).astype(np.float32),
        centre_classes=lut[present],
        factor=float(factor),
        contact=(contact_map(labels) * 255.0 + 0.5).astype(np.uint8) if contact else None,
    )


_WORKER_SOURCE: Source | None = None
_WORKER_CONTACT = False


def _init_worker(source: Source, contact: bool) -> None:
    global _WORKER_SOURCE, _WORKER_CONTACT
    _WORKER_SOURCE, _WORKER_CONTACT = source, contact


def _load_index(i: int) -> PreloadedImage:
    assert _WORKER_SOURCE is not None
    return preload_image(_WORKER_SOURCE.samples[i], _WORKER_SOURCE, _WORKER_CONTACT)


def preload_source(
    source: Source, *, max_images: int | None = None, workers: int = 1, contact: bool = False
) -> list[PreloadedImage]:
    """Preload the first ``max_images`` (all if None) samples of a source.

    Args:
        source: the Source.
        max_images: cap on the number of images (for smoke runs and tests).
        workers: processes used for decoding and targets; 1 = in this process.
        contact: also compute each image's seam map (``PreloadedImage.contact``).
    """
    n = len(source.samples) if max_images is None else min(max_images, len(source.samples))
    if workers > 1 and n > 1:
        with ProcessPoolExecutor(min(workers, n), initializer=_init_worker,
                                 initargs=(source, contact)) as pool:
            records = list(pool.map(_load_index, range(n), chunksize=max(1, n // (8 * workers))))
    else:
        records = [preload_image(source.samples[i], source, contact) for i in range(n)]
    _logger.info("preloaded %d images of %s", len(records), source.name)
    return records
