"""Registry of the shared datasets with their suggested splits.

The data root is, in order: the ``data_root`` argument (CLI ``--data-root``), the
``ZEUSSEG_DATA_ROOT`` environment variable, then ``../shared/data`` relative to the current
folder. Splits follow ``shared/data/README.md``: VISN validation = every 8th image (0008, 0016,
..., 0256), DSB2018-fluo validation = every 10th file; Coelho 2009 is never trained on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from zeusseg.errors import InputError
from zeusseg.io.coco import read_coco
from zeusseg.io.labels import read_label_image
from zeusseg.structures import InstanceMasks

ENV_VAR = "ZEUSSEG_DATA_ROOT"
DEFAULT_RELATIVE_ROOT = Path("..") / "shared" / "data"


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """The folder that holds ``visn/``, ``dsb2018-fluo/`` and ``coelho2009/``.

    Raises:
        InputError: the folder does not exist.
    """
    root = Path(data_root or os.environ.get(ENV_VAR) or DEFAULT_RELATIVE_ROOT)
    if not root.is_dir():
        raise InputError(
            root,
            f"data root not found; pass --data-root or set {ENV_VAR} to the shared data folder",
        )
    return root


def _number(stem: str) -> int:
    m = re.search(r"(\d+)$", stem)
    return int(m.group(1)) if m else -1


@dataclass(frozen=True)
class DatasetSpec:
    """One named dataset.

    Attributes:
        name: registry key, e.g. ``visn-val``.
        folder: path relative to the data root.
        kind: ``coco`` (images/ + annotations.json) or ``labels`` (images/ + labels/).
        select: keeps a file stem or not (the split rule).
        prompt: the class-agnostic prompt for this data.
        description: one line for listings.
    """

    name: str
    folder: str
    kind: str
    select: Callable[[str], bool]
    prompt: str
    description: str


@dataclass
class Sample:
    """One (image path, ground-truth masks) pair of a dataset."""

    name: str
    image_path: Path
    masks: InstanceMasks


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "visn-train",
            "visn/train",
            "coco",
            lambda s: _number(s) % 8 != 0,
            "virus particles",
            "VISN TEM viruses, train split (224 images)",
        ),
        DatasetSpec(
            "visn-val",
            "visn/train",
            "coco",
            lambda s: _number(s) % 8 == 0,
            "virus particles",
            "VISN TEM viruses, validation = every 8th image (32)",
        ),
        DatasetSpec(
            "dsb-train",
            "dsb2018-fluo",
            "labels",
            lambda s: _number(s) % 10 != 0,
            "cell nuclei",
            "DSB2018 fluorescence nuclei, train split (487 images)",
        ),
        DatasetSpec(
            "dsb-val",
            "dsb2018-fluo",
            "labels",
            lambda s: _number(s) % 10 == 0,
            "cell nuclei",
            "DSB2018 fluorescence nuclei, validation = every 10th (54)",
        ),
        DatasetSpec(
            "coelho-u2os",
            "coelho2009/u2os",
            "labels",
            lambda s: True,
            "cell nuclei",
            "Coelho 2009 U2OS nuclei (zero-shot test, 48 images)",
        ),
        DatasetSpec(
            "coelho-nih3t3",
            "coelho2009/nih3t3",
            "labels",
            lambda s: True,
            "cell nuclei",
            "Coelho 2009 NIH3T3 nuclei (zero-shot test, 49 images)",
        ),
    ]
}


def list_datasets() -> list[str]:
    """Names of the registered datasets."""
    return sorted(DATASETS)


class Dataset:
    """Lazily reads the samples of one registered dataset."""

    def __init__(self, spec: DatasetSpec, root: Path) -> None:
        self.spec = spec
        self.root = root / spec.folder
        if not self.root.is_dir():
            raise InputError(self.root, f"folder of dataset '{spec.name}' not found")
        self._coco = None
        if spec.kind == "coco":
            self._coco = read_coco(self.root / "annotations.json")
            ids = self._coco.id_by_name()
            self._ids = {s: ids[s] for s in sorted(ids) if spec.select(s)}
            self.names = list(self._ids)
        else:
            stems = sorted((self.root / "labels").glob("*.png"), key=lambda p: _number(p.stem))
            self.names = [p.stem for p in stems if spec.select(p.stem)]

    @property
    def coco(self):
        """The ``CocoDataset`` of a ``coco`` dataset (all its images, every split); else None."""
        return self._coco

    @property
    def class_names(self) -> dict[int, str]:
        """Category id -> name (one class, named after the prompt, for label datasets)."""
        return dict(self._coco.categories) if self._coco else {1: self.spec.prompt}

    def __len__(self) -> int:
        return len(self.names)

    def image_path(self, name: str) -> Path:
        """Path of the image file of sample ``name``."""
        if self._coco is not None:
            return self._coco.image_dir / self._coco.images[self._ids[name]]["file_name"]
        return self.root / "images" / f"{name}.png"

    def masks(self, name: str) -> InstanceMasks:
        """Ground-truth instance masks of sample ``name``."""
        if self._coco is not None:
            return self._coco.masks(self._ids[name])

        masks = read_label_image(self.root / "labels" / f"{name}.png")
        masks.class_names = self.class_names
        return masks

    def __getitem__(self, i: int) -> Sample:
        name = self.names[i]
        return Sample(name=name, image_path=self.image_path(name), masks=self.masks(name))

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]


def get_dataset(name: str, data_root: str | os.PathLike | None = None) -> Dataset:
    """The registered dataset ``name`` under the data root.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
        InputError: data root or dataset folder missing.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset '{name}'; available: {', '.join(list_datasets())}")
    return Dataset(DATASETS[name], resolve_data_root(data_root))
