"""Light upsampling mask decoder with skips and text-conditioned dense heads.

From the (text-conditioned) stride-16/8 image tokens it upsamples through the encoder's
stride-8/4/2 skips (U-Net style); the maps are predicted at stride 2 and their logits upsampled
bilinearly to the input size (a full-resolution stage doubled the CPU cost for no gain on objects
of >= 10 px). Every stage is modulated (FiLM) by the fusion's condition
token, and the three dense maps come from a static 1x1 conv plus dynamic per-prompt weights made
by a hypernetwork from the three head tokens (segment-anything's mask-token trick):

    channel 0: foreground logit
    channel 1: centre-distance logit (target 1 - d_centre / max within the instance)
    channel 2: boundary-distance logit (target distance to boundary / max within the instance)

Point/box prompts are served without a learned prompt encoder: ``ZeusPredictor.predict_prompts``
offers SAM's ``predict`` API (points (X, Y) with labels 1/0, an XYXY box, ``multimask_output``)
on top of these three maps: ``zeusseg.inference.prompt_decoding`` selects and reshapes instances of
the text prompt's maps with a seeded watershed and a locally lowered foreground threshold. This
module has no prompt encoder and no per-prompt mask token, because training one needs SAM-style
click-simulation training that the bundled model never had; docs/decoding.md says what that means.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zeusseg.modeling.common import MLPBlock

NUM_MAPS = 3


class UpStage(nn.Module):
    """Upsample x2, concatenate a skip, conv-BN-GELU x2, then FiLM by a condition vector."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, cond_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels + skip_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.act = nn.GELU()
        self.film = nn.Linear(cond_dim, 2 * out_channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: Tensor, skip: Tensor, cond: Tensor) -> Tensor:
        """x (B, C_in, h, w), skip (B, C_skip, H, W), cond (B, C_cond) -> (B, C_out, H, W)."""
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = self.act(self.norm1(self.conv1(torch.cat([x, skip], dim=1))))
        x = self.norm2(self.conv2(x))
        gamma, beta = self.film(cond).chunk(2, dim=-1)  # (B, C_out) each
        return self.act(x * (1 + gamma[..., None, None]) + beta[..., None, None])


class MaskDecoder(nn.Module):
    """Dense text-conditioned decoder.

    Args:
        embed_dim: width of the image/output tokens.
        skip_channels: channels of the encoder skips at strides 2, 4, 8.
        decoder_channels: output channels of the stages at strides 8, 4, 2.
        token_stride: stride of the image tokens (8 or 16).
        hyper_dim: hidden width of the hypernetwork MLPs.
    """

    def __init__(
        self,
        *,
        embed_dim: int = 128,
        skip_channels: tuple[int, ...] = (32, 64, 96),
        decoder_channels: tuple[int, ...] = (96, 64, 32),
        token_stride: int = 16,
        hyper_dim: int = 64,
    ) -> None:
        super().__init__()
        if len(skip_channels) != 3 or len(decoder_channels) != 3:
            raise ValueError("skip_channels and decoder_channels need 3 values (strides 2, 4, 8)")
        self.token_stride = token_stride
        skips = list(skip_channels)[::-1]  # strides 8, 4, 2
        self.neck = nn.Sequential(nn.Conv2d(embed_dim, decoder_channels[0], 1), nn.GELU())
        stages = []
        c_in = decoder_channels[0]
        for c_skip, c_out in zip(skips, decoder_channels, strict=True):
            stages.append(UpStage(c_in, c_skip, c_out, embed_dim))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        c_final = decoder_channels[-1]
        self.static_head = nn.Conv2d(c_final, NUM_MAPS, 1)
        self.hyper_mlps = nn.ModuleList(
            nn.Sequential(MLPBlock(embed_dim, hyper_dim), nn.Linear(embed_dim, c_final))
            for _ in range(NUM_MAPS)
        )
        for mlp in self.hyper_mlps:
            nn.init.zeros_(mlp[-1].weight)
            nn.init.zeros_(mlp[-1].bias)

    def forward(
        self,
        image_tokens: Tensor,
        grid: tuple[int, int],
        skips: list[Tensor],
        output_tokens: Tensor,
    ) -> Tensor:
        """Decode dense maps.

        Args:
            image_tokens: (B, h * w, C) fused image tokens.
            grid: (h, w) of the token grid.
            skips: encoder skips at strides 2, 4, 8: (B, C_i, H / s, W / s).
            output_tokens: (B, 4, C): three head tokens + one condition token.

        Returns:
            (B, 3, H, W) logits at the input resolution.
        """
        b, _, c = image_tokens.shape
        x = image_tokens.transpose(1, 2).reshape(b, c, *grid)  # (B, C, h, w)
        x = self.neck(x)
        cond = output_tokens[:, NUM_MAPS]  # (B, C)
        for stage, skip in zip(self.stages, skips[::-1], strict=True):
            x = stage(x, skip, cond)
        weights = torch.stack(
            [mlp(output_tokens[:, k]) for k, mlp in enumerate(self.hyper_mlps)], dim=1
        )  # (B, 3, C_final)
        dynamic = torch.einsum("bkc,bchw->bkhw", weights, x)
        logits = self.static_head(x) + dynamic  # (B, 3, H / 2, W / 2)
        size = (skips[0].shape[-2] * 2, skips[0].shape[-1] * 2)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
