"""Zeus model registry: architectures in ``model_configs/*.json``, bundled weights by name.

``build_zeus(name_or_config, checkpoint=None)`` accepts

* a bundled model name (``zeus-default``; see ``zeusseg.pretrained``): config + trained weights,
  offline; a missing weights file raises ``WeightsNotFoundError``;
* an architecture name (``zeus-hybrid-s``, ``zeus-tiny``, ...; ``list_models()``): random init,
  then ``checkpoint`` if given;
* a path to a config ``.json`` or a config dict.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from zeusseg.errors import InputError
from zeusseg.modeling.config import ZeusCfg
from zeusseg.modeling.efficientnet_encoder import EfficientNetHybridEncoder
from zeusseg.modeling.fusion import TwoWayFusion
from zeusseg.modeling.image_encoder import ImageEncoderHybrid
from zeusseg.modeling.mask_decoder import MaskDecoder
from zeusseg.modeling.sam_encoder import SamImageEncoder
from zeusseg.modeling.timm_cnn_encoder import TimmCNNEncoder
from zeusseg.modeling.timm_encoder import TimmImageEncoder
from zeusseg.modeling.zeus import Zeus
from zeusseg.pretrained import is_pretrained, list_pretrained, pretrained_paths

_logger = logging.getLogger(__name__)

_MODEL_CONFIG_PATHS = [Path(__file__).parent / "model_configs"]
_MODEL_CONFIGS: dict[str, dict[str, Any]] = {}


def _rescan_model_configs() -> None:
    _MODEL_CONFIGS.clear()
    for folder in _MODEL_CONFIG_PATHS:
        for path in sorted(Path(folder).glob("*.json")):
            _MODEL_CONFIGS[path.stem] = json.loads(path.read_text())


def list_models() -> list[str]:
    """Names of the architectures (``model_configs/*.json``) and of the bundled models."""
    if not _MODEL_CONFIGS:
        _rescan_model_configs()
    return sorted(set(_MODEL_CONFIGS) | set(list_pretrained()))


def add_model_config(path: str | os.PathLike) -> None:
    """Register a config file, or every ``*.json`` of a folder."""
    path = Path(path)
    _MODEL_CONFIG_PATHS.append(path if path.is_dir() else path.parent)
    _rescan_model_configs()
    if path.is_file():
        _MODEL_CONFIGS[path.stem] = json.loads(path.read_text())


def get_model_config(name: str) -> dict[str, Any]:
    """A deep copy of architecture ``name``'s config dict.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    if not _MODEL_CONFIGS:
        _rescan_model_configs()
    if name not in _MODEL_CONFIGS:
        raise ValueError(f"unknown Zeus model '{name}'; available: {', '.join(list_models())}")
    return copy.deepcopy(_MODEL_CONFIGS[name])


def _build_image_encoder(cfg: ZeusCfg, backbone_weights: bool = True) -> torch.nn.Module:
    """The image encoder of ``cfg``; ``backbone_weights=False`` skips loading ImageNet weights
    (a full checkpoint is loaded next and replaces them)."""
    v = cfg.vision_cfg
    if v.type == "hybrid":
        return ImageEncoderHybrid(
            stem_channels=v.stem_channels, token_stride=v.token_stride, embed_dim=cfg.embed_dim,
            depth=v.depth, num_heads=v.num_heads, mlp_ratio=v.mlp_ratio, pos_grid=v.pos_grid,
        )
    if v.type == "efficientnet":
        return EfficientNetHybridEncoder(
            backbone=v.backbone, pretrained=backbone_weights and not v.random_init,
            embed_dim=cfg.embed_dim, skip_channels=v.stem_channels, depth=v.depth,
            num_heads=v.num_heads, mlp_ratio=v.mlp_ratio, freeze_stages=v.freeze_stages,
        )
    if v.type == "sam":
        return SamImageEncoder(
            model_type=v.model_type, checkpoint=v.checkpoint, embed_dim=cfg.embed_dim,
            stem_channels=v.stem_channels, freeze=v.freeze, random_init=v.random_init,
        )
    if v.type == "timm":
        return TimmImageEncoder(
            model_name=v.model_name, checkpoint=v.checkpoint, img_size=v.img_size,
            embed_dim=cfg.embed_dim, stem_channels=v.stem_channels, freeze=v.freeze,
            random_init=v.random_init, timm_kwargs=v.timm_kwargs,
        )
    if v.type == "timm_cnn":
        return TimmCNNEncoder(
            model_name=v.model_name, checkpoint=v.checkpoint, embed_dim=cfg.embed_dim,
            stem_channels=v.stem_channels, freeze=v.freeze, random_init=v.random_init,
            timm_kwargs=v.timm_kwargs,
        )
    raise ValueError(
        f"vision_cfg.type must be one of hybrid, efficientnet, sam, timm, timm_cnn; "
        f"got '{v.type}'")


def _build_zeus(cfg: ZeusCfg | dict[str, Any], checkpoint: str | os.PathLike | None = None) -> Zeus:
    """Assemble a Zeus model from a config and optionally load a checkpoint."""
    if isinstance(cfg, dict):
        cfg = ZeusCfg.from_dict(cfg)
    f = cfg.fusion_cfg
    token_stride = cfg.vision_cfg.token_stride if cfg.vision_cfg.type == "hybrid" else 16
    model = Zeus(
        image_encoder=_build_image_encoder(cfg, backbone_weights=checkpoint is None),
        fusion=TwoWayFusion(
            embed_dim=cfg.embed_dim, text_dim=cfg.text_cfg.dim, depth=f.depth,
            num_heads=f.num_heads, mlp_dim=f.mlp_dim, downsample_rate=f.downsample_rate,
            mode=f.mode, insert_after=f.insert_after,
        ),
        mask_decoder=MaskDecoder(
            embed_dim=cfg.embed_dim, skip_channels=cfg.vision_cfg.stem_channels,
            decoder_channels=cfg.decoder_cfg.decoder_channels, token_stride=token_stride,
            hyper_dim=cfg.decoder_cfg.hyper_dim,
        ),
        pad_multiple=cfg.input_cfg.pad_multiple,
    )
    model.zeus_cfg = cfg
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model


def load_checkpoint(
    model: torch.nn.Module, checkpoint: str | os.PathLike, strict: bool = True
) -> tuple[list[str], list[str]]:
    """Load ``.safetensors`` or a torch file (``weights_only``) into ``model``.

    A folder holding ``model.safetensors`` (a run's ``best/``) stands for that file. A
    ``module.`` prefix (DDP) is stripped; a torch file may hold ``{"model": state_dict}``.

    Returns:
        (missing_keys, unexpected_keys).

    Raises:
        FileNotFoundError: no such file.
        InputError: a corrupt file, or weights that do not fit the model (names the file and
            the first mismatching tensors).
    """
    path = Path(checkpoint)
    if path.is_dir() and (path / "model.safetensors").is_file():
        path = path / "model.safetensors"  # a run's best/ or an export folder
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if "model" in state and isinstance(state["model"], dict):
                state = state["model"]
    except Exception as err:  # safetensors/pickle raise many types on corrupt files
        raise InputError(path, f"corrupt or unreadable checkpoint ({err})") from err
    state = {k.removeprefix("module."): v for k, v in state.items()}
    ref = model.state_dict()
    bad = [k for k, v in state.items() if k in ref and tuple(v.shape) != tuple(ref[k].shape)]
    if bad:
        raise InputError(
            path, f"checkpoint does not fit the model: shape mismatch in {', '.join(bad[:3])}"
        )
    state = {k: v.to(ref[k].dtype) if k in ref else v for k, v in state.items()}
    try:
        result = model.load_state_dict(state, strict=strict)
    except RuntimeError as err:
        first = " ".join(str(err).split())[:300]
        raise InputError(path, f"checkpoint does not fit the model ({first})") from err
    if result.missing_keys or result.unexpected_keys:
        _logger.warning("checkpoint %s: missing %s, unexpected %s", path,
                        result.missing_keys, result.unexpected_keys)
    return list(result.missing_keys), list(result.unexpected_keys)


def build_zeus(
    name_or_config: str | os.PathLike | dict[str, Any] | ZeusCfg,
    checkpoint: str | os.PathLike | None = None,
) -> Zeus:
    """Build a Zeus model (see the module docstring for what ``name_or_config`` may be).

    Raises:
        ValueError: unknown name.
        WeightsNotFoundError: a bundled model whose weights file is missing.
        FileNotFoundError: ``checkpoint`` or a config path does not exist.
    """
    if isinstance(name_or_config, ZeusCfg | dict):
        return _build_zeus(name_or_config, checkpoint)
    name = str(name_or_config)
    if is_pretrained(name):
        config_path, weights_path = pretrained_paths(name)
        cfg = json.loads(Path(config_path).read_text())
        return _build_zeus(cfg["model_cfg"], checkpoint or weights_path).eval()
    if name.endswith(".json"):
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(name)
        cfg = json.loads(path.read_text())
        return _build_zeus(cfg.get("model_cfg", cfg), checkpoint)
    return _build_zeus(get_model_config(name), checkpoint)


def _registry_entry(name: str):
    def build(checkpoint: str | os.PathLike | None = None) -> Zeus:
        return build_zeus(name, checkpoint)

    build.__doc__ = f"Build '{name}' (see ``build_zeus``)."
    return build


zeus_model_registry = {
    "default": _registry_entry("zeus-default"),
    "zeus-default": _registry_entry("zeus-default"),
    "hybrid_s": _registry_entry("zeus-hybrid-s"),
    "hybrid_s_early": _registry_entry("zeus-hybrid-s-early"),
    "tiny": _registry_entry("zeus-tiny"),
    "sam_vit_b": _registry_entry("zeus-sam-vit-b"),
    "timm_vit_s": _registry_entry("zeus-timm-vit-s"),
}
