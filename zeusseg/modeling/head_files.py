"""Store and load a small instance head next to a model's weights: ``<name>.safetensors``
(tensors) + ``<name>.json`` (its spec dataclass), written atomically, loaded with one-line
errors naming the damaged file. Shared by the class head and the quality head."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from zeusseg.errors import InputError
from zeusseg.io.atomic import atomic_path


def save_head_files(head: nn.Module, spec: Any, weights: Path, config: Path) -> None:
    """Write ``head``'s state to ``weights`` and the dataclass ``spec`` to ``config``."""
    state = {k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    with atomic_path(config) as tmp:
        Path(tmp).write_text(json.dumps(asdict(spec), indent=2))


def load_head_files(weights: Path, config: Path, what: str, from_dict: Callable[[dict], Any],
                    build: Callable[[Any], nn.Module]) -> tuple[nn.Module, Any] | None:
    """``(head in eval mode, spec)`` from the two files, or None when neither exists.

    Args:
        what: the head's name for messages ("class head").
        from_dict: spec dict -> validated spec (raises ValueError / TypeError when invalid).
        build: spec -> an untrained head of the right shape.

    Raises:
        InputError: one file missing, a config that is not this head's, or weights that do
            not fit the config.
    """
    if not weights.is_file() and not config.is_file():
        return None
    if not (weights.is_file() and config.is_file()):
        missing = config if weights.is_file() else weights
        raise InputError(missing, f"{what} incomplete: this file is missing")
    try:
        spec = from_dict(json.loads(config.read_text()))
    except (ValueError, TypeError) as err:
        raise InputError(config, f"not a {what.replace(' ', '-')} config ({err})") from err
    head = build(spec)
    try:
        head.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()})
    except Exception as err:  # noqa: BLE001 - safetensors raises several types
        raise InputError(weights, f"{what} weights do not load ({err})") from err
    return head.eval(), spec
