"""Copy a trained model folder into the form the package bundles (``zeusseg/assets/models``)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from zeusseg.io.atomic import atomic_path
from zeusseg.modeling.quality_head import QUALITY_CONFIG, QUALITY_WEIGHTS
from zeusseg.pretrained import HEAD_CONFIG, HEAD_WEIGHTS

_logger = logging.getLogger(__name__)


def export_model(src: str | os.PathLike, dst: str | os.PathLike, *, fp16: bool = True,
                 extra: dict | None = None) -> Path:
    """Copy a trained model folder (``model.safetensors`` + ``config.json``) for bundling.

    A class head (``class_head.safetensors`` + ``class_head.json``) and a quality head
    (``quality_head.*``) in the folder are copied too.

    Floating-point tensors are stored as fp16 when ``fp16`` (loading casts them back to the
    model's dtype); ``extra`` entries are merged into ``config.json``.

    Returns:
        The destination folder.
    """
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    state = load_file(str(src / "model.safetensors"))
    if fp16:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    with atomic_path(dst / "model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp),
                  metadata={"format": "pt", "dtype": "float16" if fp16 else "float32"})
    meta = json.loads((src / "config.json").read_text())
    meta.update(extra or {})
    with atomic_path(dst / "config.json") as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2))
    for name in (HEAD_WEIGHTS, HEAD_CONFIG, QUALITY_WEIGHTS, QUALITY_CONFIG):  # heads travel
        if (src / name).is_file():
            with atomic_path(dst / name) as tmp:
                shutil.copyfile(src / name, tmp)
    _logger.info("exported %s -> %s (%s)", src, dst, torch.float16 if fp16 else torch.float32)
    return dst
