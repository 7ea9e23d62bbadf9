"""Registry of swappable components: kind -> name -> ``ComponentEntry``.

Kinds: ``describer``, ``writer``, ``text_encoder``, ``image_encoder``. ``zeusseg models`` lists
every entry with whether its weights are on this machine.

Adding a component (e.g. an image encoder) takes one call at import time of your module::

    from zeusseg.components import register_component

    register_component(
        "image_encoder", "sam-vit-b",
        builder=build_sam_vit_b,                 # builder(**kwargs) -> the component
        weights_present=lambda: ckpt.is_file(),  # cheap check, no loading
        description="SAM ViT-B image encoder",
        how_to_get="wget https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    )

and add your module's dotted name to ``BUILTIN_MODULES`` below so that listing the registry
imports it. Such modules must be cheap to import (import torch/transformers inside builders).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_logger = logging.getLogger(__name__)

KINDS = ("describer", "writer", "text_encoder", "image_encoder", "model")

# Modules whose import registers built-in components (imported lazily on first lookup).
BUILTIN_MODULES = [
    "zeusseg.instructions.registry",
    "zeusseg.text.registry",
    "zeusseg.modeling.registry",
]


def _always() -> bool:
    return True


@dataclass(frozen=True)
class ComponentEntry:
    """One registered component.

    Attributes:
        kind: one of ``KINDS``.
        name: registry name, unique within its kind.
        builder: ``builder(**kwargs)`` returns the component.
        weights_present: cheap check that the weights are available locally.
        description: one line for ``zeusseg models``.
        how_to_get: command or URL that provides the weights ("" when none are needed).
        default: whether this is the offline default of its kind.
    """

    kind: str
    name: str
    builder: Callable[..., Any]
    weights_present: Callable[[], bool] = _always
    description: str = ""
    how_to_get: str = ""
    default: bool = False

    def build(self, **kwargs: Any) -> Any:
        """Build the component (``kwargs`` go to the builder, e.g. ``random_init=True``)."""
        return self.builder(**kwargs)


_REGISTRY: dict[str, dict[str, ComponentEntry]] = {kind: {} for kind in KINDS}
_loaded = False


def register_component(
    kind: str,
    name: str,
    builder: Callable[..., Any],
    *,
    weights_present: Callable[[], bool] = _always,
    description: str = "",
    how_to_get: str = "",
    default: bool = False,
    overwrite: bool = False,
) -> ComponentEntry:
    """Register ``builder`` as component ``name`` of ``kind``.

    Raises:
        ValueError: unknown kind, or ``name`` taken and ``overwrite`` is False.
    """
    if kind not in _REGISTRY:
        raise ValueError(f"unknown component kind '{kind}'; expected one of {', '.join(KINDS)}")
    if name in _REGISTRY[kind] and not overwrite:
        raise ValueError(f"{kind} '{name}' is already registered (pass overwrite=True)")
    entry = ComponentEntry(kind, name, builder, weights_present, description, how_to_get, default)
    _REGISTRY[kind][name] = entry
    return entry


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as err:  # a missing optional dependency hides only its entries
            _logger.warning("components of %s not available: %s", module, err)


def list_components(kind: str | None = None) -> list[ComponentEntry]:
    """All entries (of one kind, or of every kind), in kind then registration order."""
    _load_builtins()
    if kind is not None and kind not in _REGISTRY:
        raise ValueError(f"unknown component kind '{kind}'; expected one of {', '.join(KINDS)}")
    kinds = [kind] if kind else list(KINDS)
    return [entry for k in kinds for entry in _REGISTRY[k].values()]


def get_component(kind: str, name: str) -> ComponentEntry:
    """The entry ``name`` of ``kind``.

    Raises:
        ValueError: unknown kind or name (the message lists the registered names).
    """
    _load_builtins()
    if kind not in _REGISTRY:
        raise ValueError(f"unknown component kind '{kind}'; expected one of {', '.join(KINDS)}")
    if name not in _REGISTRY[kind]:
        names = ", ".join(_REGISTRY[kind]) or "none"
        raise ValueError(f"unknown {kind} '{name}'; registered: {names}")
    return _REGISTRY[kind][name]


def default_component(kind: str) -> str:
    """Name of the default entry of ``kind``.

    Raises:
        ValueError: no entry of ``kind`` is marked default.
    """
    for entry in list_components(kind):
        if entry.default:
            return entry.name
    raise ValueError(f"no default {kind} is registered")


def build_component(kind: str, name: str, **kwargs: Any) -> Any:
    """Shorthand for ``get_component(kind, name).build(**kwargs)``."""
    return get_component(kind, name).build(**kwargs)
