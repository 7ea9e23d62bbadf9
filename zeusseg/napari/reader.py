"""napari reader for zeusseg label TIFFs: the Labels layer with classes and scores restored.

Only TIFFs written by ``zeusseg.io.write_label_tiff`` (``zeusseg segment``, the widget's
Export) are claimed; any other file is left to napari's own readers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zeusseg.io import read_label_image
from zeusseg.io.labels import is_zeusseg_label_tiff
from zeusseg.napari.layers import METADATA_KEY, masks_to_features

PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]
LayerData = tuple[Any, dict[str, Any], str]


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """The reader function when every path is a zeusseg label TIFF, else None (npe2 hook)."""
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    if not paths or not all(is_zeusseg_label_tiff(p) for p in paths):
        return None
    return read_label_tiffs


def read_label_tiffs(path: PathOrPaths) -> list[LayerData]:
    """One Labels layer per file: name = file stem, features = classes, scores, areas."""
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    out: list[LayerData] = []
    for p in paths:
        masks = read_label_image(p)
        names = masks.class_names
        prompt = names.get(1, "") if len(names) == 1 else ", ".join(names.values())
        meta = {"source": str(p), "class_names": {int(k): v for k, v in names.items()}}
        if prompt:
            meta["prompt"] = prompt
        out.append((masks.labels, {
            "name": Path(p).stem,
            "features": masks_to_features(masks),
            "metadata": {METADATA_KEY: meta},
        }, "labels"))
    return out
