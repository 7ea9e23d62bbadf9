"""Named trained Zeus models: bundled in the package (offline) or in the cache directory.

``_PRETRAINED[name] = {"folder": ..., "sha256": ...}``: the folder holds ``model.safetensors``
(fp16 weights) and ``config.json`` (``model_cfg`` = the architecture, the text encoder it expects,
the input scale, and the training provenance). Relative folders are looked up in the package's
``assets/models`` first, then in ``$ZEUSSEG_CACHE_DIR/models`` (default ``~/.cache/zeusseg``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from zeusseg.errors import WeightsNotFoundError

_logger = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).parent / "assets" / "models"

_PRETRAINED: dict[str, dict[str, str | None]] = {
    "zeus-default": {"folder": "zeus-default", "sha256": None},
    "zeus-instruct": {"folder": "zeus-instruct", "sha256": None},
}


def _clean_tag(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def list_pretrained() -> list[str]:
    """Names of the trained models this package knows about."""
    return sorted(_PRETRAINED)


def is_pretrained(name: str) -> bool:
    """Whether ``name`` is a trained-model name (present or not)."""
    return _clean_tag(name) in _PRETRAINED


def cache_dir() -> Path:
    """``$ZEUSSEG_CACHE_DIR`` or ``~/.cache/zeusseg``."""
    return Path(os.environ.get("ZEUSSEG_CACHE_DIR", Path.home() / ".cache" / "zeusseg"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pretrained_paths(name: str) -> tuple[Path, Path]:
    """(config.json, model.safetensors) of trained model ``name``.

    Raises:
        ValueError: unknown name (lists the known ones).
        WeightsNotFoundError: neither the package nor the cache holds the files.
        RuntimeError: the weights do not match the recorded SHA256.
    """
    key = _clean_tag(name)
    if key not in _PRETRAINED:
        raise ValueError(f"unknown trained model '{name}'; available: {', '.join(_PRETRAINED)}")
    entry = _PRETRAINED[key]
    folders = [BUNDLED_DIR / str(entry["folder"]), cache_dir() / "models" / str(entry["folder"])]
    for folder in folders:
        config, weights = folder / "config.json", folder / "model.safetensors"
        if config.is_file() and weights.is_file():
            if entry["sha256"] and _sha256(weights) != entry["sha256"]:
                raise RuntimeError(f"{weights}: SHA256 does not match the recorded hash")
            return config, weights
    raise WeightsNotFoundError(
        name, [str(f) for f in folders],
        "reinstall zeusseg (the model ships in the package) or train one with "
        "`zeusseg train --config configs/zeroshot/default.yaml` and copy it there",
    )


def weights_present(name: str) -> bool:
    """Cheap check: are the files of trained model ``name`` on this machine?"""
    try:
        pretrained_paths(name)
    except (WeightsNotFoundError, ValueError, RuntimeError):
        return False
    return True


def export_model(src: str | os.PathLike, dst: str | os.PathLike, *, fp16: bool = True,
                 extra: dict | None = None) -> Path:
    """Copy a trained model folder (``model.safetensors`` + ``config.json``) for bundling.

    A class head in the folder (``class_head.safetensors`` + ``class_head.json``) is copied too.

    Floating-point tensors are stored as fp16 when ``fp16`` (loading casts them back to the
    model's dtype); ``extra`` entries are merged into ``config.json``.

    Returns:
        The destination folder.
    """
    import json

    import torch
    from safetensors.torch import load_file, save_file

    from zeusseg.io.atomic import atomic_path

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
    import shutil

    from zeusseg.modeling.class_head import HEAD_CONFIG, HEAD_WEIGHTS

    for name in (HEAD_WEIGHTS, HEAD_CONFIG):  # a class head travels with its model
        if (src / name).is_file():
            with atomic_path(dst / name) as tmp:
                shutil.copyfile(src / name, tmp)
    _logger.info("exported %s -> %s (%s)", src, dst, torch.float16 if fp16 else torch.float32)
    return dst
