"""COCO *results* lists: the detections other tools write (detectron2, mmdetection, ``loadRes``).

A results list is a JSON list of ``{"image_id", "category_id", "segmentation", "score"}``
(segmentation: polygons, compressed or uncompressed RLE). It names no file: its ``image_id``s
are paired with file names and sizes through the ``images`` of a COCO ground-truth file.
Masks are rasterised like COCO annotations (``CocoDataset.masks``), painted in ascending score
order so that where detections overlap the higher-scored one owns the shared pixels.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from zeusseg.errors import InputError
from zeusseg.io.coco import CocoDataset

RESULT_KEYS = ("image_id", "category_id", "segmentation", "score")


def is_results_list(path: str | os.PathLike) -> bool:
    """Whether the JSON file ``path`` holds a top-level list (cheap: reads the first bytes)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return False
    return head[:1] == b"["


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _check_segmentation(segm, where: str, h: int, w: int, image: str, path: Path) -> None:
    """Raise InputError unless ``segm`` is polygons or an RLE of size [h, w]."""
    if isinstance(segm, list):
        for k, poly in enumerate(segm):
            if not (isinstance(poly, list) and all(_is_number(v) for v in poly)
                    and len(poly) % 2 == 0):
                raise InputError(path, f"{where}: segmentation[{k}] is not a polygon (a flat "
                                 "list of x, y numbers)")
        return
    if not (isinstance(segm, dict) and "counts" in segm and "size" in segm):
        raise InputError(path, f"{where}: segmentation must be polygons (a list) or an RLE "
                         f"(an object with 'counts' and 'size'), got {type(segm).__name__}")
    size = segm["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) for v in size)):
        raise InputError(path, f"{where}: RLE 'size' must be [height, width], got {size!r}")
    if size != [h, w]:
        raise InputError(path, f"{where}: RLE size {size} differs from the size {[h, w]} "
                         f"(height, width) of {image}")
    counts = segm["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        if not all(_is_int(v) and v >= 0 for v in counts) or sum(counts) != h * w:
            raise InputError(path, f"{where}: uncompressed RLE counts must be non-negative "
                             f"integers summing to height x width = {h * w}")
    elif not isinstance(counts, str) or not counts:
        raise InputError(path, f"{where}: RLE 'counts' must be a string (compressed) or a list "
                         f"of integers (uncompressed), got {type(counts).__name__}")


def read_coco_results(path: str | os.PathLike, gt: CocoDataset) -> CocoDataset:
    """Read and validate a COCO results list against the ground truth that gives its image ids.

    Returns:
        A CocoDataset holding the images of ``gt`` that have at least one result (file name
        and size from ``gt``), ``gt``'s categories (plus, named by their number, category ids
        ``gt`` lacks) and, per image, its results sorted by ascending score.

    Raises:
        InputError: missing, empty or non-JSON file, not a list, an entry that is no object,
            lacks a key, has a non-numeric score, an ``image_id`` that ``gt`` does not list, a
            bad segmentation, or an RLE whose size differs from its image's; a ``gt`` without
            images.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty (0 bytes)")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"not valid JSON ({err})") from err
    if not isinstance(data, list):
        raise InputError(path, "not a COCO results list (top level is not a list)")
    if not data:
        raise InputError(path, "the COCO results list is empty (no detection)")
    if not gt.images:
        raise InputError(gt.path, f"the ground truth lists no images, so the image ids of the "
                         f"COCO results list {path} cannot be paired")
    annotations: dict[int, list[dict]] = {}
    for i, entry in enumerate(data):
        where = f"results[{i}]"
        if not isinstance(entry, dict):
            raise InputError(path, f"{where} is not an object")
        for key in RESULT_KEYS:
            if key not in entry:
                raise InputError(path, f"{where} lacks '{key}' (a COCO result needs "
                                 f"{', '.join(RESULT_KEYS)})")
        image_id = entry["image_id"]
        if not _is_int(image_id) or image_id not in gt.images:
            raise InputError(path, f"{where} has image_id {image_id!r}, which the ground truth "
                             f"{gt.path} does not list (its ids: {_id_range(gt)})")
        if not _is_int(entry["category_id"]):
            raise InputError(path, f"{where} has a non-integer category_id "
                             f"{entry['category_id']!r}")
        if not _is_number(entry["score"]):
            raise InputError(path, f"{where} has a score that is not a finite number: "
                             f"{entry['score']!r}")
        info = gt.images[image_id]
        _check_segmentation(entry["segmentation"], where, int(info["height"]),
                            int(info["width"]), f"image id {image_id} ('{info['file_name']}')",
                            path)
        annotations.setdefault(image_id, []).append({
            "id": where, "image_id": image_id, "category_id": entry["category_id"],
            "segmentation": entry["segmentation"], "score": float(entry["score"])})
    for anns in annotations.values():
        anns.sort(key=lambda a: a["score"])  # stable: the later of equal scores stays on top
    categories = dict(gt.categories)
    for anns in annotations.values():
        for a in anns:
            categories.setdefault(int(a["category_id"]), str(a["category_id"]))
    images = {k: gt.images[k] for k in gt.images if k in annotations}
    return CocoDataset(path=path, images=images, categories=categories, annotations=annotations)


def _id_range(gt: CocoDataset) -> str:
    ids = sorted(gt.images)
    return ", ".join(map(str, ids)) if len(ids) <= 5 else f"{ids[0]}..{ids[-1]} ({len(ids)})"
