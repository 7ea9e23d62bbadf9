"""Detector backbones: a timm EVA-02 ViT with a ViTDet simple feature pyramid, or ResNet-FPN.

Both return an ``OrderedDict`` of ``(B, out_channels, H / s, W / s)`` maps, finest first, plus a
max-pooled ``pool`` level, and carry ``out_channels`` (the contract of torchvision's
``GeneralizedRCNN``). No weights are downloaded: a backbone starts from random weights unless
``BackboneCfg.pretrained`` names a local file (a missing file raises ``WeightsNotFoundError``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from zeusseg.baselines.config import BackboneCfg
from zeusseg.errors import InputError, WeightsNotFoundError
from zeusseg.modeling.common import LayerNorm2d  # the same 2-D LayerNorm as the Zeus modules

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


def backbone_origin(cfg: BackboneCfg) -> str:
    """``"from scratch"`` or ``"pretrained: <file>"``: the line every report carries."""
    return f"pretrained: {cfg.pretrained}" if cfg.pretrained else "from scratch"


def _check_weights(cfg: BackboneCfg, how_to: str) -> Path | None:
    if not cfg.pretrained:
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


def build_vit_pyramid(cfg: BackboneCfg) -> SimpleFeaturePyramid:
    """EVA-02 (timm, ``features_only``) + simple pyramid; pretrained only from a local file.

    Raises:
        WeightsNotFoundError: ``cfg.pretrained`` is set but the file is missing.
        ValueError: the timm model name is unknown.
    """
    import timm

    path = _check_weights(cfg, _VIT_HOW_TO)
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


def build_resnet_fpn(cfg: BackboneCfg) -> nn.Module:
    """torchvision ResNet-FPN (``resnet_fpn_backbone``), all layers trainable.

    From scratch the ResNet uses GroupNorm (32 groups; batch statistics of 2 images are too
    noisy for BatchNorm and frozen BatchNorm only makes sense with pretrained statistics). With
    a local pretrained file it uses torchvision's frozen BatchNorm and loads the file.

    Raises:
        WeightsNotFoundError: ``cfg.pretrained`` is set but the file is missing.
    """
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops import misc

    path = _check_weights(cfg, _RESNET_HOW_TO)

    def group_norm(channels: int) -> nn.Module:
        return nn.GroupNorm(32, channels)

    norm = misc.FrozenBatchNorm2d if path else group_norm
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
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:  # weights_only: never runs code from the file
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors / pickle raise many types on corrupt files
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise InputError(path, f"corrupt, unsafe or unreadable backbone weights "
                         f"({type(err).__name__}: {first})") from err
    return {k.removeprefix("module."): v for k, v in state.items()}


def build_backbone(cfg: BackboneCfg) -> nn.Module:
    """The backbone named by ``cfg.name`` (EVA-02 pyramid or ResNet-FPN)."""
    return build_vit_pyramid(cfg) if cfg.is_vit else build_resnet_fpn(cfg)
