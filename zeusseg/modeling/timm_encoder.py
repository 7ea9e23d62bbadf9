"""timm ViT / EVA-02 image encoder behind the Zeus encoder interface.

``timm.create_model(model_name, num_classes=0)`` with pretrained weights loaded only from a local
file (``checkpoint``: safetensors / torch state dict, through timm's own loader); without one,
``WeightsNotFoundError`` unless ``random_init``. The image is resized to ``img_size``, the patch
tokens (prefix tokens dropped) are resized to the (H / 16, W / 16) grid and projected to the
Zeus width; a conv stem provides the stride-2/4/8 skips. Late fusion only.
"""

from __future__ import annotations

import logging
import os

import timm
import torch.nn.functional as F
from torch import Tensor, nn

from zeusseg.errors import WeightsNotFoundError
from zeusseg.modeling.common import DownBlock
from zeusseg.modeling.image_encoder import ImageFeatures
from zeusseg.pretrained import resolve_checkpoint

_logger = logging.getLogger(__name__)


def create_timm_model(model_name: str, checkpoint: str | os.PathLike | None,
                      random_init: bool, **kwargs) -> nn.Module:
    """``timm.create_model(model_name, **kwargs)`` with weights from a local file only.

    Raises:
        WeightsNotFoundError: no weights file and ``random_init`` is False.
    """
    path = resolve_checkpoint(checkpoint)
    present = path is not None and path.is_file()
    if not present and not random_init:
        raise WeightsNotFoundError(
            f"timm:{model_name}", [str(path)] if path else [],
            f"save the timm weights of {model_name} (model.safetensors) and pass the file "
            "as vision_cfg.checkpoint",
        )
    if present:
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    return timm.create_model(model_name, **kwargs)


class TimmImageEncoder(nn.Module):
    """timm ViT + conv skip stem.

    Args:
        model_name: a timm model name (``vit_small_patch16_224``, ``eva02_tiny_patch14_224``...).
        checkpoint: local weights file for the timm model.
        img_size: input size of the ViT.
        embed_dim: Zeus token width.
        stem_channels: channels of the skip stem at strides 2, 4, 8.
        freeze: keep the ViT weights fixed.
        random_init: allow running without weights.
        timm_kwargs: extra ``timm.create_model`` arguments (tests: depth, embed_dim...).

    Raises:
        WeightsNotFoundError: no weights file and ``random_init`` is False.
    """

    def __init__(
        self,
        *,
        model_name: str = "vit_small_patch16_224",
        checkpoint: str | os.PathLike | None = None,
        img_size: int = 224,
        embed_dim: int = 128,
        stem_channels: tuple[int, ...] = (32, 64, 96),
        freeze: bool = False,
        random_init: bool = False,
        timm_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        self.vit = create_timm_model(model_name, checkpoint, random_init, num_classes=0,
                                     img_size=img_size, **(timm_kwargs or {}))
        if freeze:
            self.vit.requires_grad_(False)
        self.img_size = img_size
        self.in_chans = int(getattr(self.vit.patch_embed.proj, "in_channels", 3))
        self.prefix = int(getattr(self.vit, "num_prefix_tokens", 1))
        self.grid = tuple(self.vit.patch_embed.grid_size)
        c2, c4, c8 = stem_channels
        self.down2, self.down4, self.down8 = DownBlock(1, c2), DownBlock(c2, c4), DownBlock(c4, c8)
        self.proj = nn.Conv2d(self.vit.num_features, embed_dim, 1)
        self.token_stride = 16

    def forward(self, image: Tensor) -> ImageFeatures:
        """(B, 1, H, W) normalised image -> ImageFeatures with (H/16, W/16) tokens."""
        h, w = image.shape[-2:]
        s2 = self.down2(image)
        s4 = self.down4(s2)
        s8 = self.down8(s4)
        x = F.interpolate(image, size=(self.img_size, self.img_size), mode="bilinear",
                          align_corners=False).expand(-1, self.in_chans, -1, -1)
        x = self.vit.forward_features(x)[:, self.prefix :]  # (B, gh*gw, C_vit)
        b, _, c = x.shape
        x = x.transpose(1, 2).reshape(b, c, *self.grid)  # (B, C_vit, gh, gw)
        x = F.interpolate(x, size=(h // 16, w // 16), mode="bilinear", align_corners=False)
        x = self.proj(x)  # (B, C, h, w)
        grid = (int(x.shape[-2]), int(x.shape[-1]))
        return ImageFeatures(tokens=x.flatten(2).transpose(1, 2), grid=grid,
                             skips=[s2, s4, s8], skip_strides=[2, 4, 8], stride=16)
