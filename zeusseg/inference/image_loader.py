"""Read the images of a folder run ahead of the model, optionally in worker processes.

``iter_images`` yields one ``LoadedImage`` per path, in path order. With ``workers=0`` it reads
in the calling process, one image at a time, exactly when the caller asks for it (the plain
folder loop). With ``workers > 0`` a ``torch.utils.data.DataLoader`` decodes the next images in
worker processes while the caller segments the current one, so file decoding overlaps with
model inference (useful on a GPU; on a small CPU the workers compete with the model for cores).

A bad file never stops the loader: its ``InputError`` is carried in the item (as path and
problem, which pickle across processes) and the caller decides whether to stop or skip.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import DataLoader

from zeusseg.errors import InputError
from zeusseg.io import read_image, read_label_image
from zeusseg.structures import InstanceMasks, MicroscopyImage

_logger = logging.getLogger(__name__)


@dataclass
class LoadedImage:
    """One input of a folder run, read (or not) by ``iter_images``.

    Attributes:
        index: position of ``path`` in the list given to ``iter_images``.
        path: the image file.
        image: the decoded image, None when ``existing`` or ``error`` is set.
        existing: the earlier output kept by ``skip_existing`` (the image is then not decoded).
        error_path: the file named by the ``InputError`` (None when there was none).
        error: the problem of the ``InputError`` raised while reading, None if it read fine.
    """

    index: int
    path: Path
    image: MicroscopyImage | None = None
    existing: InstanceMasks | None = None
    error_path: str | None = None
    error: str | None = None

    def raise_error(self) -> None:
        """Re-raise the ``InputError`` met while reading, if there was one."""
        if self.error is not None:
            raise InputError(self.error_path, self.error)


class ImageFileDataset:
    """Map-style dataset: index -> ``LoadedImage`` (usable by ``torch.utils.data.DataLoader``).

    Args:
        paths: the image files.
        label_dir: where earlier label TIFFs (``<stem>.tif``) are looked for.
        skip_existing: keep a readable earlier label TIFF instead of decoding the image.
    """

    def __init__(
        self, paths: Sequence[Path], label_dir: Path | None = None, skip_existing: bool = False
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.label_dir = None if label_dir is None else Path(label_dir)
        self.skip_existing = skip_existing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> LoadedImage:
        path = self.paths[index]
        item = LoadedImage(index=index, path=path)
        if self.skip_existing and self.label_dir is not None:
            label_path = self.label_dir / f"{path.stem}.tif"
            if label_path.exists():
                try:
                    item.existing = read_label_image(label_path)
                    return item
                except InputError:
                    _logger.warning("%s: unreadable earlier output, segmenting again", label_path)
        try:
            item.image = read_image(path)
        except InputError as err:
            item.error_path, item.error = err.path, err.problem
        return item


def _identity(item: LoadedImage) -> LoadedImage:
    return item


def iter_images(
    paths: Sequence[Path],
    *,
    label_dir: Path | None = None,
    skip_existing: bool = False,
    workers: int = 0,
    prefetch: int = 2,
) -> Iterator[LoadedImage]:
    """Yield a ``LoadedImage`` for each path, in order.

    Args:
        paths: the image files.
        label_dir: folder of earlier outputs (``skip_existing``).
        skip_existing: yield the earlier label TIFF instead of decoding the image.
        workers: decode in this many worker processes (0 = in the calling process, lazily).
        prefetch: images each worker reads ahead.

    Raises:
        ValueError: negative ``workers`` or ``prefetch`` < 1.
    """
    if workers < 0 or prefetch < 1:
        raise ValueError(f"workers must be >= 0 and prefetch >= 1, got {workers}, {prefetch}")
    dataset = ImageFileDataset(paths, label_dir=label_dir, skip_existing=skip_existing)
    if workers == 0 or len(dataset) < 2:
        for i in range(len(dataset)):
            yield dataset[i]
        return

    loader = DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=min(workers, len(dataset)),
        collate_fn=_identity,
        prefetch_factor=prefetch,
    )
    yield from loader
