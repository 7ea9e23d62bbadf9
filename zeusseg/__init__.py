"""zeusseg: text-prompted, zero-shot instance segmentation of microscopy images.

The public API is imported lazily (``zeusseg --version`` and ``--help`` never load torch).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "build_zeus": "zeusseg.factory",
    "list_models": "zeusseg.factory",
    "zeus_model_registry": "zeusseg.factory",
    "ZeusPredictor": "zeusseg.predictor",
    "segment_image": "zeusseg.inference.zeus_segmenter",
    "load_zeus": "zeusseg.inference.zeus_segmenter",
    "read_image": "zeusseg.io",
    "InstanceMasks": "zeusseg.structures",
    "MicroscopyImage": "zeusseg.structures",
    "Instruction": "zeusseg.structures",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zeusseg' has no attribute {name!r}")
