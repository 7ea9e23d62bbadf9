"""GeoJSON for QuPath: one detection feature per instance in a FeatureCollection, atomically.

QuPath (0.4 and later) imports it with *File > Import objects from file* or by dragging the file
onto the image. Coordinates are image pixels, origin at the top-left corner, x right and y down
(the QuPath convention). Each feature::

    {"type": "Feature", "id": "<uuid>",
     "geometry": {"type": "Polygon", "coordinates": [[[x, y], ...], <holes>...]},
     "properties": {"objectType": "detection",
                    "classification": {"name": CLASS, "color": [r, g, b]},
                    "measurements": {"score": S}}}

An instance with several connected parts is a ``MultiPolygon``; holes are kept as inner rings.
Rings are closed (last position = first), exteriors counterclockwise and holes clockwise on
the numbers (RFC 7946), along the pixel edges (``zeusseg.io.contours``). Feature ids are
UUIDs derived from the image name and instance label, so a rerun writes the same file.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np

from zeusseg.io.atomic import write_text_atomic
from zeusseg.io.contours import instance_polygons
from zeusseg.io.imagej_rois import class_colour, class_name
from zeusseg.structures import InstanceMasks

_NAMESPACE = uuid.UUID("6f1b3c2e-5a57-4c1d-9d55-7a6b2f0e4c11")  # zeusseg detections


def _ring(ring: np.ndarray) -> list[list[float]]:
    """Closed GeoJSON ring of an open (n, 2) ring; integral values are written as integers."""
    pts = [[_number(x), _number(y)] for x, y in np.round(ring, 3).tolist()]
    return [*pts, pts[0]]


def _number(v: float) -> float | int:
    return int(v) if float(v).is_integer() else float(v)


def masks_to_features(masks: InstanceMasks, image_name: str = "") -> list[dict]:
    """QuPath detection features of every instance with pixels, in label order."""
    features = []
    for poly in instance_polygons(masks):
        polygons = [[_ring(ext), *(_ring(h) for h in holes)] for ext, holes in poly.parts]
        geometry = ({"type": "Polygon", "coordinates": polygons[0]} if len(polygons) == 1
                    else {"type": "MultiPolygon", "coordinates": polygons})
        features.append({
            "type": "Feature",
            "id": str(uuid.uuid5(_NAMESPACE, f"{image_name}/{poly.label}")),
            "geometry": geometry,
            "properties": {
                "objectType": "detection",
                "classification": {"name": class_name(masks, poly.class_id),
                                   "color": list(class_colour(poly.class_id))},
                "measurements": {"score": round(poly.score, 6)},
            },
        })
    return features


def geojson_dict(masks: InstanceMasks, image_name: str = "") -> dict:
    """The FeatureCollection of ``masks``."""
    return {"type": "FeatureCollection", "features": masks_to_features(masks, image_name)}


def write_geojson(path: str | os.PathLike, masks: InstanceMasks, image_name: str = "") -> Path:
    """Write the QuPath GeoJSON of ``masks`` atomically. Returns the path.

    Args:
        image_name: the image's file name; only seeds the feature ids (default: ``path``'s stem).
    """
    path = Path(path)
    write_text_atomic(path, json.dumps(geojson_dict(masks, image_name or path.stem)))
    return path
