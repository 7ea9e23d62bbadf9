"""Zeus architecture configs: the typed ``model_configs/*.json`` (``ZeusCfg`` and its parts).

``build_zeus`` stores the ``ZeusCfg`` of a model on it as ``model.zeus_cfg``; read it with
``get_zeus_cfg(model)`` (None for a model built otherwise, e.g. a bare ``nn.Module`` in tests;
a peft ``PeftModel`` forwards the attribute to its base model).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

SEED_MODES = ("threshold", "hmax")
"""How instance seeds are found (``ZeusDecodeCfg.seeds``, ``decode_instances(seeds=...)``)."""


@dataclass(frozen=True)
class ZeusVisionCfg:
    """Image encoder settings.

    ``type``: ``hybrid`` (our conv stem + ViT, from scratch) | ``efficientnet`` (ImageNet
    EfficientNet-Lite ``backbone`` to stride 16 + ViT blocks, ``freeze_stages`` CNN stages fixed)
    | ``sam`` | ``timm`` (ViT) | ``timm_cnn``.
    """

    type: str = "hybrid"
    stem_channels: tuple[int, ...] = (32, 64, 96)
    token_stride: int = 16
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 3.0
    pos_grid: int = 32
    model_type: str = "vit_b"
    model_name: str = "vit_small_patch16_224"
    checkpoint: str | None = None
    img_size: int = 224
    freeze: bool = True
    random_init: bool = False
    timm_kwargs: dict | None = None  # extra timm.create_model arguments (timm, timm_cnn)
    backbone: str = "efficientnet-lite0"  # efficientnet
    freeze_stages: int = 0  # efficientnet: stem + this many CNN stages fixed


@dataclass(frozen=True)
class ZeusTextCfg:
    """Which frozen text encoder produced the token embeddings the model was trained on."""

    encoder: str = "minilm-l6-v2"
    dim: int = 384


@dataclass(frozen=True)
class ZeusFusionCfg:
    """Text <-> image fusion settings (``mode``: ``late`` | ``early``)."""

    mode: str = "late"
    depth: int = 2
    num_heads: int = 4
    mlp_dim: int = 256
    downsample_rate: int = 2
    insert_after: tuple[int, ...] = ()


@dataclass(frozen=True)
class ZeusDecoderCfg:
    """Mask decoder settings."""

    decoder_channels: tuple[int, ...] = (96, 64, 32)
    hyper_dim: int = 64


@dataclass(frozen=True)
class ZeusInputCfg:
    """How images are prepared: fixed ``scale`` and/or object ``target_diameter`` (px)."""

    scale: float = 0.5
    target_diameter: float = 27.0
    pad_multiple: int = 32


@dataclass(frozen=True)
class ZeusDecodeCfg:
    """Instance decoding of the dense maps (``zeusseg.inference.instance_segmentation``).

    Kept with the weights, as StarDist keeps its tuned thresholds: a model's maps have their own
    best thresholds (``scripts/tune_decoding.py`` picks them on training images).
    """

    fg_threshold: float = 0.5
    seed_threshold: float = 0.5
    boundary_threshold: float = 0.5
    min_size: int = 15
    smoothing: float = 1.0
    seeds: str = "threshold"
    seed_h: float = 0.05

    def __post_init__(self) -> None:
        for key in ("fg_threshold", "seed_threshold", "boundary_threshold"):
            if not 0.0 < float(getattr(self, key)) < 1.0:
                raise ValueError(f"decode_cfg.{key} must be in (0, 1), got {getattr(self, key)}")
        if int(self.min_size) < 0 or float(self.smoothing) < 0:
            raise ValueError("decode_cfg.min_size and decode_cfg.smoothing must be >= 0")
        if self.seeds not in SEED_MODES:
            raise ValueError(f"decode_cfg.seeds must be one of {SEED_MODES}, got {self.seeds!r}")
        if not 0.0 < float(self.seed_h) < 1.0:
            raise ValueError(f"decode_cfg.seed_h must be in (0, 1), got {self.seed_h}")


@dataclass(frozen=True)
class ZeusCfg:
    """A whole Zeus architecture (one ``model_configs/<name>.json``)."""

    embed_dim: int = 128
    vision_cfg: ZeusVisionCfg = field(default_factory=ZeusVisionCfg)
    text_cfg: ZeusTextCfg = field(default_factory=ZeusTextCfg)
    fusion_cfg: ZeusFusionCfg = field(default_factory=ZeusFusionCfg)
    decoder_cfg: ZeusDecoderCfg = field(default_factory=ZeusDecoderCfg)
    input_cfg: ZeusInputCfg = field(default_factory=ZeusInputCfg)
    decode_cfg: ZeusDecodeCfg = field(default_factory=ZeusDecodeCfg)

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> ZeusCfg:
        """Parse a config dict; unknown keys raise ``TypeError``."""
        cfg = dict(cfg)

        def sub(kind, key):
            d = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.pop(key, {}).items()}
            return kind(**d)

        parts = dict(
            vision_cfg=sub(ZeusVisionCfg, "vision_cfg"),
            text_cfg=sub(ZeusTextCfg, "text_cfg"),
            fusion_cfg=sub(ZeusFusionCfg, "fusion_cfg"),
            decoder_cfg=sub(ZeusDecoderCfg, "decoder_cfg"),
            input_cfg=sub(ZeusInputCfg, "input_cfg"),
            decode_cfg=sub(ZeusDecodeCfg, "decode_cfg"),
        )
        return cls(**cfg, **parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))


def get_zeus_cfg(model: Any) -> ZeusCfg | None:
    """The ``ZeusCfg`` a model was built from (``model.zeus_cfg``), or None when it has none."""
    return getattr(model, "zeus_cfg", None)
