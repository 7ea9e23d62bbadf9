"""Where a trained model's instance heads live, and loading them (class head, quality head).

A trained model folder (a bundled name, a run's ``best/`` folder or its ``model.safetensors``)
may hold ``class_head.*`` (``zeusseg.modeling.class_head``) and ``quality_head.*``
(``zeusseg.modeling.quality_head``) next to its weights.
"""

from __future__ import annotations

from pathlib import Path

from zeusseg.errors import InputError
from zeusseg.modeling.class_head import HEAD_CONFIG, load_class_head
from zeusseg.modeling.config import get_zeus_cfg
from zeusseg.modeling.quality_head import load_quality_head
from zeusseg.pretrained import is_pretrained, pretrained_paths

__all__ = ["find_class_head", "find_quality_head", "model_folder"]


def model_folder(model: str) -> Path | None:
    """The folder of trained model ``model`` (its heads live there), or None for an
    architecture name or a config file (no trained weights, no heads)."""
    if is_pretrained(model):
        return pretrained_paths(model)[1].parent
    p = Path(model)
    if p.suffix != ".safetensors" and not p.is_dir():
        return None
    return p if p.is_dir() else p.parent


def find_quality_head(model: str):
    """``(InstanceQualityHead, QualityHeadSpec)`` stored with trained model ``model``, or None.

    Raises:
        InputError: the head's files are damaged.
    """
    folder = model_folder(model)
    return load_quality_head(folder) if folder is not None else None


def find_class_head(model: str, net=None):
    """``(InstanceClassHead, ClassHeadSpec)`` stored with trained model ``model``, or None.

    Args:
        model: as for ``load_zeus`` (a bundled name, a folder, or a ``.safetensors`` file).
        net: the loaded model; its text encoder must be the one the head was trained with.

    Raises:
        InputError: the head's files are damaged or it expects another text encoder.
    """
    folder = model_folder(model)
    if folder is None:
        return None  # an architecture name or a config: no trained head
    found = load_class_head(folder)
    cfg = get_zeus_cfg(net)
    if found is not None and cfg is not None and found[1].text_encoder != cfg.text_cfg.encoder:
        raise InputError(folder / HEAD_CONFIG, f"class head expects text encoder "
                         f"'{found[1].text_encoder}', the model uses '{cfg.text_cfg.encoder}'")
    return found
