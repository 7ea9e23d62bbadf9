"""What a folder run takes and writes: its methods and output formats, the ``SegmentReport``,
the per-image output files and the output folder (shared by ``folder_run`` and
``parallel_run``; light to import, so ``zeusseg segment --help`` reads its choices here).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from zeusseg.errors import InputError
from zeusseg.io import write_label_tiff, write_overlay
from zeusseg.io.atomic import remove_stale_temp_files
from zeusseg.io.geojson import write_geojson
from zeusseg.io.imagej_rois import write_imagej_rois
from zeusseg.structures import InstanceMasks, MicroscopyImage

_logger = logging.getLogger(__name__)

METHODS = ("zeus", "classical")
DEFAULT_METHOD = "zeus"

OUTPUT_FORMATS = {
    "tif": "labels/<name>.tif (label TIFF with classes and scores; napari, Fiji)",
    "coco": "predictions.json (COCO, RLE masks with scores)",
    "roi": "rois/<name>.zip (ImageJ/Fiji ROI set, one polygon per instance)",
    "geojson": "geojson/<name>.geojson (QuPath detections, polygons with class and score)",
}
"""Output format -> what ``zeusseg segment --format`` writes for it."""
DEFAULT_FORMATS = ("tif", "coco")

Segmenter = Callable[[MicroscopyImage], InstanceMasks]


@dataclass
class SegmentReport:
    """What a folder run did."""

    out: Path
    done: list[str] = field(default_factory=list)
    skipped_existing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    instances: int = 0
    formats: tuple[str, ...] = DEFAULT_FORMATS

    @property
    def predictions(self) -> Path:
        return self.out / "predictions.json"


def parse_formats(formats: str | Sequence[str] | None) -> tuple[str, ...]:
    """Output formats from ``"tif,coco,roi"`` (or a sequence), in ``OUTPUT_FORMATS`` order.

    None gives ``DEFAULT_FORMATS``.

    Raises:
        InputError: an unknown or no format.
    """
    if formats is None:
        return DEFAULT_FORMATS
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    items = [f.strip().lower() for f in items if f.strip()]
    unknown = [f for f in items if f not in OUTPUT_FORMATS]
    if unknown or not items:
        what = f"unknown format(s) {', '.join(unknown)}" if unknown else "no format given"
        raise InputError(None, f"--format: {what}; choose a comma-separated list of "
                         f"{', '.join(OUTPUT_FORMATS)} (default: {','.join(DEFAULT_FORMATS)})")
    return tuple(f for f in OUTPUT_FORMATS if f in items)


def output_path(out: Path, fmt: str, stem: str) -> Path:
    """Where ``fmt`` writes the result of image ``stem`` (not for ``coco``: one file per run)."""
    return {"tif": out / "labels" / f"{stem}.tif", "roi": out / "rois" / f"{stem}.zip",
            "geojson": out / "geojson" / f"{stem}.geojson"}[fmt]


def write_image_outputs(out: Path, name: str, masks: InstanceMasks, formats: Sequence[str],
                        image: MicroscopyImage | None = None, missing_only: bool = False) -> None:
    """Write the per-image files of ``formats`` (and the overlay when ``image`` is given).

    Args:
        name: the image's file name (outputs are named after its stem).
        missing_only: write only files that do not exist yet (resumed runs).
    """
    stem = Path(name).stem
    writers = {"tif": lambda p: write_label_tiff(p, masks),
               "roi": lambda p: write_imagej_rois(p, masks),
               "geojson": lambda p: write_geojson(p, masks, name)}
    for fmt, write in writers.items():
        path = output_path(out, fmt, stem)
        if fmt in formats and not (missing_only and path.exists()):
            write(path)
    if image is not None:
        write_overlay(out / "overlays" / f"{stem}.png", image, masks)


def class_table(prompts: Sequence[str]) -> dict[int, str]:
    """Category id (1-based, in prompt order) -> prompt."""
    return {i: p for i, p in enumerate(prompts, start=1)}


def prepare_output(out: str | os.PathLike, paths: Sequence[Path]) -> Path:
    """Remove temp files of an interrupted run from ``out``; check the output names are unique.

    Raises:
        InputError: two inputs share a file stem (their outputs would collide).
    """
    out = Path(out)
    for sub in (out, out / "labels", out / "overlays", out / "rois", out / "geojson"):
        if remove_stale_temp_files(sub):
            _logger.info("%s: removed temporary files of an interrupted run", sub)
    check_unique_stems(paths)
    return out


def check_unique_stems(paths: Sequence[Path]) -> None:
    """Raise InputError when two inputs share a file stem."""
    counts = Counter(Path(p).stem for p in paths)  # linear: folders hold thousands of images
    dupes = {stem for stem, n in counts.items() if n > 1}
    if dupes:
        raise InputError(paths[0].parent, f"several files share the name(s) {sorted(dupes)[:3]}")
