"""The per-process loop of a folder run: segment images in order and write their outputs
(``folder_run`` runs it over all inputs, ``parallel_run`` over one process's share)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from zeusseg.errors import InputError
from zeusseg.inference.folder_outputs import (
    DEFAULT_FORMATS,
    Segmenter,
    SegmentReport,
    class_table,
    write_image_outputs,
)
from zeusseg.inference.image_loader import iter_images
from zeusseg.io.coco import CocoAccumulator

_logger = logging.getLogger(__name__)


def segment_loop(
    paths: Sequence[Path],
    segmenter: Segmenter,
    report: SegmentReport,
    prompts: Sequence[str],
    *,
    overlays: bool = True,
    skip_existing: bool = False,
    on_error: str = "stop",
    progress: bool = True,
    workers: int = 0,
    formats: Sequence[str] = DEFAULT_FORMATS,
) -> CocoAccumulator:
    """Segment ``paths`` in order, write the per-image outputs of ``formats`` (and overlays) to
    ``report.out``, fill ``report``.

    Returns:
        The COCO annotations of every image done or kept (``skip_existing``), in path order
        (none unless ``coco`` is one of ``formats``).

    Raises:
        InputError: the first bad input when ``on_error="stop"``.
    """
    out = report.out
    classes = class_table(prompts)
    results = CocoAccumulator(classes or {1: "object"})  # RLE only: memory stays flat
    items = iter_images(paths, label_dir=out / "labels", skip_existing=skip_existing,
                        workers=workers)
    for item in tqdm(items, total=len(paths), desc="segment", unit="img",
                     disable=not progress or len(paths) < 2):
        path = item.path
        if item.existing is not None:
            if "coco" in formats:
                results.add(path.name, item.existing)
            write_image_outputs(out, path.name, item.existing, formats, missing_only=True)
            report.skipped_existing.append(path.name)
            continue
        try:
            item.raise_error()
            image = item.image
            masks = segmenter(image)
        except InputError as err:
            if on_error == "stop":
                raise
            _logger.error("%s (skipped)", err)
            report.failed[path.name] = err.problem
            continue
        masks.class_names = dict(classes) or masks.class_names
        write_image_outputs(out, path.name, masks, formats, image if overlays else None)
        if "coco" in formats:
            results.add(path.name, masks)
        report.done.append(path.name)
        report.instances += len(masks)
    return results
