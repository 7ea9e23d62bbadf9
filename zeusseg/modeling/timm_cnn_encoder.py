"""timm CNN (ResNet, ...) image encoder behind the Zeus encoder interface.

``timm.create_model(model_name, features_only=True, out_indices=(0, 1, 2, 3), in_chans=1)``: the
stride-2/4/8 feature maps become the decoder's skips (1x1-projected to ``stem_channels``), the
stride-16 map the tokens (1x1-projected to the Zeus width). Unlike the ViT wrappers, a CNN runs
at the image's own size. Weights as for ``TimmImageEncoder``: a local file only
(``checkpoint``), else ``WeightsNotFoundError`` unless ``random_init``. Late fusion only. The
ablation's CNN-vs-ViT row uses ``resnet18`` at half width (``timm_kwargs``: ``channels``,
``stem_width``; ``model_configs/zeus-resnet18-half.json``).
"""

from __future__ import annotations

import os

from torch import Tensor, nn

from zeusseg.modeling.image_encoder import ImageFeatures
from zeusseg.modeling.timm_encoder import create_timm_model


class TimmCNNEncoder(nn.Module):
    """timm CNN features at strides 2, 4, 8 (skips) and 16 (tokens).

    Args:
        model_name: a timm CNN with ``features_only`` support (``resnet18``, ``resnet10t``...).
        checkpoint: local weights file for the timm model.
        embed_dim: Zeus token width.
        stem_channels: skip channels at strides 2, 4, 8 (what the mask decoder expects).
        freeze: keep the CNN weights fixed.
        random_init: allow running without weights.
        timm_kwargs: extra ``timm.create_model`` arguments (e.g. ``channels``, ``stem_width``).

    Raises:
        WeightsNotFoundError: no weights file and ``random_init`` is False.
        ValueError: the model's feature strides are not 2, 4, 8, 16.
    """

    def __init__(
        self,
        *,
        model_name: str = "resnet18",
        checkpoint: str | os.PathLike | None = None,
        embed_dim: int = 128,
        stem_channels: tuple[int, ...] = (32, 64, 96),
        freeze: bool = False,
        random_init: bool = False,
        timm_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        self.cnn = create_timm_model(model_name, checkpoint, random_init, features_only=True,
                                     out_indices=(0, 1, 2, 3), in_chans=1, **(timm_kwargs or {}))
        strides = list(self.cnn.feature_info.reduction())
        if strides != [2, 4, 8, 16]:
            raise ValueError(f"{model_name}: feature strides {strides}, need [2, 4, 8, 16]")
        if freeze:
            self.cnn.requires_grad_(False)
        channels = self.cnn.feature_info.channels()
        self.skip_proj = nn.ModuleList(
            nn.Conv2d(c, s, 1) for c, s in zip(channels[:3], stem_channels, strict=True))
        self.proj = nn.Conv2d(channels[3], embed_dim, 1)
        self.token_stride = 16

    def forward(self, image: Tensor) -> ImageFeatures:
        """(B, 1, H, W) normalised image (H, W multiples of 16) -> ImageFeatures."""
        f2, f4, f8, f16 = self.cnn(image)
        skips = [p(f) for p, f in zip(self.skip_proj, (f2, f4, f8), strict=True)]
        x = self.proj(f16)  # (B, C, H/16, W/16)
        grid = (int(x.shape[-2]), int(x.shape[-1]))
        return ImageFeatures(tokens=x.flatten(2).transpose(1, 2), grid=grid, skips=skips,
                             skip_strides=[2, 4, 8], stride=16)
