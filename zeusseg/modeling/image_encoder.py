"""Zeus's own compact hybrid image encoder: a conv stem with high-resolution skips + ViT blocks.

The conv stem keeps the fine detail that small objects need (its stride-2/4/8 features feed the
mask decoder as skips); the ViT blocks run on stride-16 (or stride-8) patch tokens, where global
context and, in ``early`` fusion mode, the text cross-attention happen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zeusseg.modeling.common import Attention, DownBlock, MLPBlock


@dataclass
class ImageFeatures:
    """What every image encoder returns.

    Attributes:
        tokens: (B, N_tokens, C) patch tokens, row-major over the (h, w) token grid.
        grid: (h, w) of the token grid (``N_tokens == h * w``).
        skips: high-resolution feature maps, finest first: (B, C_i, H / s_i, W / s_i).
        skip_strides: the stride ``s_i`` of each skip.
        stride: the stride of the token grid relative to the input image.
    """

    tokens: Tensor
    grid: tuple[int, int]
    skips: list[Tensor]
    skip_strides: list[int]
    stride: int


class Block(nn.Module):
    """Pre-norm transformer block: self-attention + MLP on (B, N, C) tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h)
        return x + self.mlp(self.norm2(x))


def run_blocks(
    blocks: nn.ModuleList, norm: nn.Module, feats: ImageFeatures,
    hook: Callable[[int, Tensor], Tensor] | None = None,
) -> ImageFeatures:
    """Transformer ``blocks`` then ``norm`` on ``feats.tokens`` (``hook(i, tokens)`` after
    block ``i``); the other fields of ``feats`` pass through."""
    x = feats.tokens
    for i, blk in enumerate(blocks):
        x = blk(x)
        if hook is not None:
            x = hook(i, x)
    return ImageFeatures(tokens=norm(x), grid=feats.grid, skips=feats.skips,
                         skip_strides=feats.skip_strides, stride=feats.stride)


class ImageEncoderHybrid(nn.Module):
    """Conv stem (strides 2, 4, 8) + patch embedding + ViT blocks.

    Args:
        in_chans: input channels (1: grey images).
        stem_channels: channels of the stem levels at strides 2, 4, 8 (3 values).
        token_stride: 8 or 16, stride of the ViT tokens.
        embed_dim: token width.
        depth: number of ViT blocks.
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden width / ``embed_dim``.
        pos_grid: size of the learned position-embedding grid, interpolated to the input;
            0 = none (translation-invariant tokens: training crops and whole images then see
            the same features; the conv stem already encodes local position).
    """

    def __init__(
        self,
        *,
        in_chans: int = 1,
        stem_channels: tuple[int, ...] = (32, 64, 96),
        token_stride: int = 16,
        embed_dim: int = 128,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 3.0,
        pos_grid: int = 32,
    ) -> None:
        super().__init__()
        if token_stride not in (8, 16):
            raise ValueError(f"token_stride must be 8 or 16, got {token_stride}")
        if len(stem_channels) != 3:
            raise ValueError(f"stem_channels needs 3 values (strides 2/4/8), got {stem_channels}")
        c2, c4, c8 = stem_channels
        self.embed_dim = embed_dim
        self.token_stride = token_stride
        self.skip_channels = [c2, c4, c8]
        self.down2 = DownBlock(in_chans, c2)
        self.down4 = DownBlock(c2, c4)
        self.down8 = DownBlock(c4, c8)
        k = token_stride // 8
        self.patch_embed = nn.Conv2d(c8, embed_dim, kernel_size=k, stride=k)
        self.pos_embed = None
        if pos_grid > 0:
            self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, pos_grid, pos_grid))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)

    def forward_stem(self, image: Tensor) -> ImageFeatures:
        """Run the conv stem and the patch embedding (no transformer block).

        Args:
            image: (B, C_in, H, W) normalised image; H and W multiples of ``token_stride``.

        Returns:
            ImageFeatures whose ``tokens`` are the position-embedded patch tokens.
        """
        s2 = self.down2(image)
        s4 = self.down4(s2)
        s8 = self.down8(s4)
        x = self.patch_embed(s8)  # (B, C, h, w)
        h, w = x.shape[-2:]
        if self.pos_embed is not None:
            pos = self.pos_embed
            if pos.shape[-2:] != (h, w):
                pos = F.interpolate(pos, size=(h, w), mode="bilinear", align_corners=False)
            x = x + pos
        x = x.flatten(2).transpose(1, 2)  # (B, h*w, C)
        return ImageFeatures(
            tokens=x, grid=(h, w), skips=[s2, s4, s8], skip_strides=[2, 4, 8],
            stride=self.token_stride,
        )

    def forward_blocks(
        self, feats: ImageFeatures, hook: Callable[[int, Tensor], Tensor] | None = None
    ) -> ImageFeatures:
        """Run the transformer blocks on the stem output.

        Args:
            feats: the output of ``forward_stem``.
            hook: optional ``hook(i, tokens) -> tokens`` called after block ``i`` (early fusion).

        Returns:
            ImageFeatures with the final, normalised tokens (B, N_tokens, C).
        """
        return run_blocks(self.blocks, self.norm, feats, hook)

    def forward(self, image: Tensor) -> ImageFeatures:
        """(B, C_in, H, W) image -> ImageFeatures (tokens (B, H/s * W/s, C), skips)."""
        return self.forward_blocks(self.forward_stem(image))
