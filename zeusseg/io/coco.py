"""COCO JSON: reading instance datasets (polygons and RLE) and writing predictions (RLE).

Masks are always rasterised from ``segmentation``; the ``bbox`` field of an input file is
ignored (VISN's are padded) and boxes are derived from the masks. Where two annotations of one
image overlap, the later one owns the shared pixels in the label image.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from zeusseg.errors import InputError
from zeusseg.io.atomic import write_text_atomic
from zeusseg.structures import InstanceMasks


@dataclass
class CocoDataset:
    """A COCO instance dataset held in memory.

    Attributes:
        path: the JSON file.
        images: image id -> {"file_name", "height", "width"}.
        categories: category id -> name.
        annotations: image id -> list of annotation dicts (with ``segmentation``).
    """

    path: Path
    images: dict[int, dict]
    categories: dict[int, str]
    annotations: dict[int, list[dict]] = field(default_factory=dict)

    @property
    def image_dir(self) -> Path:
        """The ``images/`` folder next to the JSON file (the layout of the shared data)."""
        return self.path.parent / "images"

    def id_by_name(self) -> dict[str, int]:
        """Image file stem -> image id."""
        return {Path(v["file_name"]).stem: k for k, v in self.images.items()}

    def masks(self, image_id: int) -> InstanceMasks:
        """Rasterise the annotations of one image into an InstanceMasks."""
        info = self.images[image_id]
        h, w = int(info["height"]), int(info["width"])
        anns = self.annotations.get(image_id, [])
        labels = np.zeros((h, w), np.int32)
        class_ids, scores, ids = [], [], []
        for k, ann in enumerate(anns, start=1):
            try:
                m = mask_utils.decode(_to_rle(ann["segmentation"], h, w, self.path)).astype(bool)
            except (ValueError, TypeError, IndexError) as err:  # pycocotools on bad data
                raise InputError(self.path, f"annotation id {ann.get('id', '?')} of image id "
                                 f"{image_id}: unreadable segmentation ({err})") from err
            if m.shape[:2] != (h, w):
                raise InputError(self.path, f"annotation id {ann.get('id', '?')} of image id "
                                 f"{image_id}: RLE size {list(m.shape[:2])} differs from the "
                                 f"image size {[h, w]}")
            if m.ndim == 3:
                m = m.any(axis=2)
            if not m.any():
                continue
            labels[m] = k
            ids.append(k)
            class_ids.append(int(ann["category_id"]))
            scores.append(float(ann.get("score", 1.0)))
        ids_arr = np.asarray(ids, np.int64)
        present = np.isin(ids_arr, labels)  # drop instances fully covered by later ones
        return InstanceMasks(
            labels=labels,
            ids=ids_arr[present],
            class_ids=np.asarray(class_ids, np.int64)[present],
            scores=np.asarray(scores, np.float32)[present],
            class_names=dict(self.categories),
        ).relabelled()


def _to_rle(segm, h: int, w: int, path: Path):
    if isinstance(segm, list):  # polygons
        polys = [p for p in segm if isinstance(p, list) and len(p) >= 6]
        if not polys:
            return mask_utils.encode(np.zeros((h, w, 1), np.uint8, order="F"))
        return mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        if isinstance(segm["counts"], list):  # uncompressed RLE
            return mask_utils.frPyObjects(segm, h, w)
        rle = dict(segm)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
        return rle
    raise InputError(path, f"unsupported segmentation of type {type(segm).__name__}")


def _require(cond: bool, path: Path, problem: str) -> None:
    if not cond:
        raise InputError(path, problem)


def read_coco(path: str | os.PathLike) -> CocoDataset:
    """Read and validate a COCO instance JSON (a dict with images, annotations, categories).

    Raises:
        InputError: missing or unreadable file, not JSON, not COCO (missing keys, wrong types),
            annotations that refer to unknown images or categories.
    """
    path = Path(path)
    _require(path.is_file(), path, "no such file")
    _require(path.stat().st_size > 0, path, "file is empty (0 bytes)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"not valid JSON ({err})") from err
    if isinstance(data, list):
        raise InputError(path, "not a COCO dataset (top level is a list: a COCO results list, "
                         "which is read as predictions paired with a COCO ground truth)")
    _require(isinstance(data, dict), path, "not a COCO dataset (top level is not an object)")
    for key in ("images", "annotations", "categories"):
        _require(key in data, path, f"not a COCO dataset (missing key '{key}')")
        _require(isinstance(data[key], list), path, f"'{key}' must be a list")
    images: dict[int, dict] = {}
    for i, im in enumerate(data["images"]):
        _require(isinstance(im, dict), path, f"images[{i}] is not an object")
        for key in ("id", "file_name", "height", "width"):
            _require(key in im, path, f"images[{i}] lacks '{key}'")
        _require(
            isinstance(im["height"], int)
            and isinstance(im["width"], int)
            and im["height"] > 0
            and im["width"] > 0,
            path,
            f"images[{i}] has a bad height/width",
        )
        images[int(im["id"])] = {
            "file_name": str(im["file_name"]),
            "height": im["height"],
            "width": im["width"],
        }
    categories: dict[int, str] = {}
    for i, cat in enumerate(data["categories"]):
        _require(isinstance(cat, dict) and "id" in cat, path, f"categories[{i}] lacks 'id'")
        categories[int(cat["id"])] = str(cat.get("name", cat["id"]))
    annotations: dict[int, list[dict]] = {}
    for i, ann in enumerate(data["annotations"]):
        _require(isinstance(ann, dict), path, f"annotations[{i}] is not an object")
        for key in ("image_id", "category_id", "segmentation"):
            _require(key in ann, path, f"annotations[{i}] lacks '{key}'")
        _require(
            ann["image_id"] in images,
            path,
            f"annotations[{i}] refers to unknown image id {ann['image_id']!r}",
        )
        _require(
            ann["category_id"] in categories,
            path,
            f"annotations[{i}] refers to unknown category id {ann['category_id']!r}",
        )
        _require(
            isinstance(ann["segmentation"], (list, dict)),
            path,
            f"annotations[{i}] has a segmentation of type {type(ann['segmentation']).__name__}",
        )
        annotations.setdefault(int(ann["image_id"]), []).append(ann)
    return CocoDataset(path=path, images=images, categories=categories, annotations=annotations)


def _run_lengths(segment: np.ndarray, offset: int, total: int) -> list[int]:
    """Uncompressed COCO RLE counts of a mask that is False outside ``segment``.

    Args:
        segment: (n,) bool, the mask's pixels ``offset .. offset + n`` in column-major order.
        offset: pixels before the segment; ``total``: pixels in the image.

    Returns:
        Alternating run lengths, starting with a (possibly empty) run of zeros.
    """
    change = np.flatnonzero(segment[1:] != segment[:-1]) + 1
    runs = np.diff(np.concatenate([[0], change, [segment.size]])).tolist()
    if segment.size and segment[0]:
        runs.insert(0, 0)
    runs[0] += offset
    tail = total - offset - segment.size
    if len(runs) % 2 == 0:  # ends with ones: the rest of the image is a new zero run
        if tail:
            runs.append(tail)
    else:
        runs[-1] += tail
    return [int(r) for r in runs]


def masks_to_coco_annotations(masks: InstanceMasks, image_id: int, start_id: int = 1) -> list[dict]:
    """COCO annotation dicts (RLE ``segmentation``, XYWH ``bbox``, ``area``, ``score``)."""
    out = []
    boxes = masks.boxes()
    areas = masks.areas()
    h, w = masks.shape
    columns = np.ascontiguousarray(masks.labels.T)  # row x = image column x: COCO's pixel order
    for k, inst in enumerate(masks.ids):
        x0, x1 = int(boxes[k][0]), int(boxes[k][0] + boxes[k][2])
        runs = _run_lengths(columns[x0:x1].ravel() == inst, x0 * h, h * w)
        rle = mask_utils.frPyObjects({"counts": runs, "size": [h, w]}, h, w)
        rle["counts"] = rle["counts"].decode("ascii")
        out.append(
            {
                "id": start_id + k,
                "image_id": int(image_id),
                "category_id": int(masks.class_ids[k]),
                "segmentation": rle,
                "area": int(areas[k]),
                "bbox": [float(v) for v in boxes[k]],
                "iscrowd": 0,
                "score": round(float(masks.scores[k]), 6),
            }
        )
    return out


class CocoAccumulator:
    """Collects per-image results as compact COCO annotations (RLE), for long folder runs.

    Only RLE strings are kept, never the label images, so memory grows by kilobytes per image.
    """

    def __init__(self, categories: dict[int, str]) -> None:
        self.categories = dict(categories)
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def add(self, file_name: str, masks: InstanceMasks) -> None:
        """Append one image and its instances."""
        image_id = len(self.images) + 1
        h, w = masks.shape
        self.images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        self.annotations.extend(
            masks_to_coco_annotations(masks, image_id, len(self.annotations) + 1)
        )

    def to_dict(self) -> dict:
        """The COCO dataset dict (images, categories, annotations with scores)."""
        cats = [
            {"id": int(k), "name": v, "supercategory": "object"}
            for k, v in self.categories.items()
        ]
        return {"images": self.images, "categories": cats, "annotations": self.annotations}

    def write(self, path: str | os.PathLike) -> Path:
        """Write the JSON atomically. Returns the path."""
        path = Path(path)
        write_text_atomic(path, json.dumps(self.to_dict()))
        return path


def coco_dict(entries: list[tuple[str, InstanceMasks]], categories: dict[int, str]) -> dict:
    """A COCO dataset dict (images, categories, annotations with scores) for named results."""
    acc = CocoAccumulator(categories)
    for file_name, masks in entries:
        acc.add(file_name, masks)
    return acc.to_dict()


def write_coco_predictions(
    path: str | os.PathLike,
    entries: list[tuple[str, InstanceMasks]],
    categories: dict[int, str],
) -> Path:
    """Write predictions as a COCO JSON (RLE masks with scores and category ids), atomically.

    Args:
        path: output JSON file.
        entries: (image file name, masks) per image.
        categories: category id -> name.
    """
    path = Path(path)
    write_text_atomic(path, json.dumps(coco_dict(entries, categories)))
    return path
