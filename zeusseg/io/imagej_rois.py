"""ImageJ / Fiji ROI sets: one polygon ROI per instance in a ZIP (``roifile``), atomically.

Open in Fiji with *Analyze > Tools > ROI Manager > More > Open...* (or drag the ZIP onto Fiji).
Each ROI is the outline of the instance's largest connected part (holes are not kept: a
polygon ROI has none), in sub-pixel (x, y) coordinates along the pixel edges
(``zeusseg.io.contours``), so Fiji's mask of the ROI is the instance's pixels. The ROI name is
``<label>-<class>-<score>`` (e.g. ``0003-virus_particles-0.912``); the ROI properties hold
``class``, ``class_id``, ``label`` and ``score``, and the outline has the class colour of the
overlays.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import roifile

from zeusseg.io.atomic import atomic_path
from zeusseg.io.contours import instance_polygons
from zeusseg.io.overlay import PALETTE
from zeusseg.structures import InstanceMasks

_UNSAFE = re.compile(r"[\\/:*?\"<>|\s]+")


def class_name(masks: InstanceMasks, class_id: int) -> str:
    """The name of ``class_id`` (its number when ``masks`` does not name it)."""
    return str(masks.class_names.get(int(class_id), class_id))


def class_colour(class_id: int) -> tuple[int, int, int]:
    """RGB of a class: the Okabe-Ito colour the overlays use."""
    return tuple(int(v) for v in PALETTE[(int(class_id) - 1) % len(PALETTE)])


def roi_name(label: int, name: str, score: float) -> str:
    """``<label>-<class>-<score>``; characters a file name cannot hold become ``_``."""
    safe = _UNSAFE.sub("_", name.strip()).strip("_") or "object"
    return f"{label:04d}-{safe}-{score:.3f}"


def masks_to_rois(masks: InstanceMasks) -> list:
    """One ``roifile.ImagejRoi`` (type POLYGON) per instance with pixels, in label order."""
    rois = []
    for poly in instance_polygons(masks):
        name = class_name(masks, poly.class_id)
        roi = roifile.ImagejRoi.frompoints(poly.largest, name=roi_name(poly.label, name,
                                                                       poly.score))
        roi.roitype = roifile.ROI_TYPE.POLYGON
        roi.stroke_color = bytes((255, *class_colour(poly.class_id)))  # ARGB
        roi.props = "".join(f"{k}: {v}\n" for k, v in (
            ("class", name), ("class_id", poly.class_id), ("label", poly.label),
            ("score", round(poly.score, 6))))
        rois.append(roi)
    return rois


def write_imagej_rois(path: str | os.PathLike, masks: InstanceMasks) -> Path:
    """Write the ROI set of ``masks`` as an ImageJ ROI ZIP, atomically. Returns the path.

    An image without instances gives an empty ZIP (Fiji opens it as an empty ROI set).
    """
    path = Path(path)
    rois = masks_to_rois(masks)
    with atomic_path(path, suffix=".zip") as tmp:
        if rois:
            roifile.roiwrite(tmp, rois, mode="w")
        else:
            with zipfile.ZipFile(tmp, "w"):
                pass
    return path
