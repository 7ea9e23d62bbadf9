"""Between napari layers and zeusseg data: image layer -> ``MicroscopyImage``, ``InstanceMasks``
<-> Labels layer data + features table. No napari import: plain arrays and dicts.

A Labels layer made by zeusseg has a ``features`` table with one row per instance:
``index`` (the label value; napari looks rows up by this column), ``class_id``,
``class_name``, ``score`` and ``area`` (pixels). Its ``metadata["zeusseg"]`` records how it
was made (``LayerRecord``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from zeusseg.io.images import normalise_intensity
from zeusseg.structures import InstanceMasks, MicroscopyImage

FEATURE_COLUMNS = ("index", "class_id", "class_name", "score", "area")
METADATA_KEY = "zeusseg"


@dataclass(frozen=True)
class LayerRecord:
    """How a Labels layer was made (stored in ``layer.metadata["zeusseg"]``).

    Attributes:
        prompt: what the user typed.
        instruction: the text the model read (the prompt itself in ``name`` mode; "" when
            unknown, e.g. a layer read from a file).
        mode: instruction mode (``name``, ``template``, ``llm``).
        model: model name or folder.
        adapter: LoRA adapter folder ("" for none).
        image: name of the image layer it belongs to.
    """

    prompt: str
    instruction: str = ""
    mode: str = "name"
    model: str = "zeus-default"
    adapter: str = ""
    image: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any] | None) -> LayerRecord | None:
        """The record in a layer's metadata, or None when the layer was not made by zeusseg."""
        entry = (metadata or {}).get(METADATA_KEY)
        if not isinstance(entry, dict) or "prompt" not in entry:
            return None
        return cls(**{k: str(v) for k, v in entry.items() if k in cls.__dataclass_fields__})


def layer_image(data: Any, *, rgb: bool = False, name: str = "image") -> MicroscopyImage:
    """A ``MicroscopyImage`` from an image layer's data.

    Args:
        data: (H, W) array, or (H, W, 3|4) when ``rgb``; any numeric dtype, scaled to [0, 1]
            like image files (``zeusseg.io.images.normalise_intensity``).
        rgb: the layer is RGB(A).
        name: the layer name (used for output file names).

    Raises:
        ValueError: not a 2-D grey or RGB image.
    """
    arr = np.asarray(data)
    if rgb and arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3]
    elif arr.ndim != 2:
        raise ValueError(f"layer '{name}' has shape {arr.shape}; zeusseg segments 2-D grey "
                         "or RGB images (pick a 2-D layer)")
    return MicroscopyImage(data=normalise_intensity(arr), source_dtype=str(arr.dtype),
                           source_shape=tuple(int(s) for s in arr.shape), name=name)


def masks_to_features(masks: InstanceMasks) -> dict[str, np.ndarray]:
    """The features table (columns ``FEATURE_COLUMNS``, one row per instance) of ``masks``."""
    names = [masks.class_names.get(int(c), str(int(c))) for c in masks.class_ids]
    return {
        "index": masks.ids.astype(np.int64),
        "class_id": masks.class_ids.astype(np.int64),
        "class_name": np.asarray(names, dtype=object),
        "score": masks.scores.astype(np.float32),
        "area": masks.areas(),
    }


def layer_masks(
    labels: Any, features: Any = None, class_names: dict[int, str] | None = None
) -> InstanceMasks:
    """``InstanceMasks`` from a Labels layer's data and features, after any hand edits.

    Instances painted by hand (label values without a features row) get class 1 and score
    1.0; rows whose label value no longer occurs are dropped.

    Args:
        labels: (H, W) integer label array, 0 = background.
        features: the layer's features (a pandas DataFrame or a dict of columns), or None.
        class_names: class id -> name (default: from the ``class_name`` column).

    Raises:
        ValueError: not a 2-D integer label array.
    """
    arr = np.asarray(labels)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be a 2-D integer array, got {arr.dtype} {arr.shape}")
    ids = np.unique(arr[arr > 0]).astype(np.int64)
    table = _columns(features)
    cls = dict(zip(table.get("index", []), table.get("class_id", []), strict=False))
    score = dict(zip(table.get("index", []), table.get("score", []), strict=False))
    names = dict(class_names or {})
    for c, n in zip(table.get("class_id", []), table.get("class_name", []), strict=False):
        names.setdefault(int(c), str(n))
    class_ids = np.array([int(cls.get(i, 1)) for i in ids], np.int64)
    scores = np.array([float(score.get(i, 1.0)) for i in ids], np.float32)
    return InstanceMasks(labels=arr.astype(np.int32), ids=ids, class_ids=class_ids,
                         scores=scores, class_names=names)


def _columns(features: Any) -> dict[str, list]:
    """Column name -> list of Python values, from a DataFrame, a dict or None."""
    if features is None:
        return {}
    if hasattr(features, "to_dict") and hasattr(features, "columns"):
        features = {c: features[c].tolist() for c in features.columns}
    out = {k: list(np.asarray(v).tolist()) for k, v in dict(features).items()}
    if "index" in out:
        out["index"] = [int(i) for i in out["index"]]
    return out
