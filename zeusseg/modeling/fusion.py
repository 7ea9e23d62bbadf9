"""Two-way cross-attention between text tokens and image tokens (segment-anything style).

Queries are learned output tokens followed by the projected text tokens; keys are the image
tokens. Each layer does (1) self-attention of the queries, (2) queries -> image cross-attention,
(3) an MLP on the queries, (4) image -> queries cross-attention, so the image tokens become
text-conditioned and the output tokens summarise what the text selects in the image.

Modes:
    ``late`` (default): all layers run after the image encoder.
    ``early``: layer ``j`` runs right after image-encoder block ``insert_after[j]`` (fusion
    inside the encoder); ``Zeus`` drives this through ``ImageEncoderHybrid.forward_blocks``.
    ``none``: no text at all (the plain-CNN / no-text ablation): the text is ignored, the output
    tokens are the learned ones and the image tokens pass through unchanged; ``depth``,
    ``num_heads``, ``mlp_dim``, ``downsample_rate`` and ``insert_after`` are unused (no layers).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from zeusseg.modeling.common import Attention, MLPBlock

FUSION_MODES = ("late", "early", "none")


@dataclass
class FusionState:
    """Query-side state carried through the fusion layers.

    Attributes:
        queries: (B, N_out + L, C) current output + text tokens.
        query_pe: (B, N_out + L, C) the initial queries, added before every attention.
        query_mask: (B, N_out + L) bool, False at padded text positions.
    """

    queries: Tensor
    query_pe: Tensor
    query_mask: Tensor


class TwoWayAttentionBlock(nn.Module):
    """One two-way layer: query self-attn, query->image, MLP, image->query."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, downsample_rate: int) -> None:
        super().__init__()
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads, downsample_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample_rate)
        self.norm4 = nn.LayerNorm(dim)

    def forward(self, state: FusionState, keys: Tensor) -> tuple[FusionState, Tensor]:
        """Update queries (B, N_q, C) and image tokens ``keys`` (B, N_img, C)."""
        queries, pe, mask = state.queries, state.query_pe, state.query_mask
        q = queries + pe
        queries = self.norm1(queries + self.self_attn(q, q, queries, key_mask=mask))
        q = queries + pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, keys, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q = queries + pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(keys, q, queries, key_mask=mask))
        return FusionState(queries, pe, mask), keys


class TwoWayFusion(nn.Module):
    """Text <-> image fusion.

    Args:
        embed_dim: width of the image tokens and of the fusion.
        text_dim: width of the text encoder's token embeddings (384 for MiniLM-L6).
        depth: number of two-way layers.
        num_heads: attention heads.
        mlp_dim: hidden width of the query MLP.
        num_output_tokens: learned output tokens (Zeus uses 3 head tokens + 1 condition token).
        downsample_rate: channel reduction inside the cross-attentions.
        mode: ``late``, ``early`` or ``none`` (see the module docstring).
        insert_after: for ``early``, the encoder block index after which each layer runs.
    """

    def __init__(
        self,
        *,
        embed_dim: int = 128,
        text_dim: int = 384,
        depth: int = 2,
        num_heads: int = 4,
        mlp_dim: int = 256,
        num_output_tokens: int = 4,
        downsample_rate: int = 2,
        mode: str = "late",
        insert_after: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"fusion mode must be one of {FUSION_MODES}, got '{mode}'")
        if mode == "early" and len(insert_after) != depth:
            raise ValueError(f"early fusion needs {depth} insert_after indices, got {insert_after}")
        self.mode = mode
        self.insert_after = tuple(insert_after) if mode == "early" else ()
        self.num_output_tokens = num_output_tokens
        self.output_tokens = nn.Embedding(num_output_tokens, embed_dim)
        if mode == "none":  # no text path: only the learned output tokens
            self.layers = nn.ModuleList()
            return
        self.text_proj = nn.Sequential(nn.Linear(text_dim, embed_dim), nn.LayerNorm(embed_dim))
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embed_dim, num_heads, mlp_dim, downsample_rate)
            for _ in range(depth)
        )
        self.final_attn_token_to_image = Attention(embed_dim, num_heads, downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embed_dim)

    def init_state(self, text_tokens: Tensor, text_mask: Tensor) -> FusionState:
        """Build the queries from text.

        Args:
            text_tokens: (B, L, text_dim) token embeddings of the frozen text encoder.
            text_mask: (B, L) bool or {0, 1}, 1 = a real token.

        Returns:
            FusionState with queries (B, N_out + L, C).
        """
        b = text_tokens.shape[0]
        text = self.text_proj(text_tokens)  # (B, L, C)
        out = self.output_tokens.weight[None].expand(b, -1, -1)  # (B, N_out, C)
        queries = torch.cat([out, text.to(out.dtype)], dim=1)
        ones = torch.ones(b, self.num_output_tokens, dtype=torch.bool, device=text.device)
        mask = torch.cat([ones, text_mask.to(torch.bool)], dim=1)
        return FusionState(queries, queries, mask)

    def layer(self, j: int, state: FusionState, keys: Tensor) -> tuple[FusionState, Tensor]:
        """Apply fusion layer ``j`` to the queries and the image tokens (B, N_img, C)."""
        return self.layers[j](state, keys)

    def finish(self, state: FusionState, keys: Tensor) -> Tensor:
        """Final query -> image attention; returns the output tokens (B, N_out, C)."""
        q = state.queries + state.query_pe
        attn = self.final_attn_token_to_image(q, keys, keys)
        queries = self.norm_final_attn(state.queries + attn)
        return queries[:, : self.num_output_tokens]

    def forward(
        self, image_tokens: Tensor, text_tokens: Tensor, text_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Late fusion: run every layer after the encoder (``none``: ignore the text).

        Args:
            image_tokens: (B, N_img, C) encoder output tokens.
            text_tokens: (B, L, text_dim).
            text_mask: (B, L), 1 = real token.

        Returns:
            output tokens (B, N_out, C) and text-conditioned image tokens (B, N_img, C); with
            mode ``none`` the learned output tokens and the unchanged image tokens.
        """
        if self.mode == "none":
            b = image_tokens.shape[0]
            out = self.output_tokens.weight[None].expand(b, -1, -1)  # (B, N_out, C)
            return out.to(image_tokens.dtype), image_tokens
        state = self.init_state(text_tokens, text_mask)
        keys = image_tokens
        for j in range(len(self.layers)):
            state, keys = self.layer(j, state, keys)
        return self.finish(state, keys), keys
