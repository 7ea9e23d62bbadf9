"""The text-encoder interface: texts in, token embeddings + mask + pooled embedding out."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

_logger = logging.getLogger(__name__)


@dataclass
class TextEmbedding:
    """Embeddings of a batch of B texts.

    Attributes:
        tokens: (B, L, C) float32 per-token features of the last layer.
        mask: (B, L) bool, True where ``tokens`` holds a real token (False = padding).
        pooled: (B, D) float32 one vector per text (the encoder's own sentence embedding).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def __post_init__(self) -> None:
        b, length, _ = self.tokens.shape
        assert self.mask.shape == (b, length), (self.mask.shape, self.tokens.shape)
        assert self.pooled.shape[0] == b, (self.pooled.shape, b)
        self.mask = self.mask.bool()

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def trimmed(self) -> TextEmbedding:
        """Drop trailing columns that are padding in every row, so L = longest real text."""
        valid = self.mask.any(dim=0).nonzero()
        length = int(valid.max()) + 1 if valid.numel() else 1
        return TextEmbedding(self.tokens[:, :length], self.mask[:, :length], self.pooled)

    def row(self, i: int) -> TextEmbedding:
        """Text ``i`` alone, trimmed: tokens (1, L_i, C)."""
        return TextEmbedding(self.tokens[i : i + 1], self.mask[i : i + 1], self.pooled[i : i + 1])

    @staticmethod
    def concat(parts: Sequence[TextEmbedding]) -> TextEmbedding:
        """Stack embeddings along B, right-padding tokens with zeros (mask False)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        length = max(p.tokens.shape[1] for p in parts)
        tokens, masks = [], []
        for p in parts:
            pad = length - p.tokens.shape[1]
            tokens.append(torch.nn.functional.pad(p.tokens, (0, 0, 0, pad)))
            masks.append(torch.nn.functional.pad(p.mask, (0, pad), value=False))
        return TextEmbedding(
            torch.cat(tokens), torch.cat(masks), torch.cat([p.pooled for p in parts])
        )


class TextEncoder(ABC):
    """A frozen text encoder.

    Subclasses implement ``_encode`` and set ``id`` (stable string naming architecture and
    weights; it keys embedding caches, so random-weight models end in ``+random``),
    ``dim`` (C of ``tokens``) and ``pooled_dim`` (D of ``pooled``).
    """

    id: str = ""
    dim: int = 0
    pooled_dim: int = 0
    model: torch.nn.Module

    @torch.no_grad()
    def encode(self, texts: str | Sequence[str]) -> TextEmbedding:
        """Embed ``texts``.

        Args:
            texts: one string or a sequence of B strings.

        Returns:
            TextEmbedding with tokens (B, L, C), mask (B, L), pooled (B, D), on the CPU,
            float32, trimmed to the longest text of the batch; padded token features are
            zero.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ValueError("encode() needs at least one text")
        self.model.eval()
        emb = self._encode(texts)
        mask = emb.mask.bool().cpu()
        tokens = emb.tokens.float().cpu() * mask.unsqueeze(-1)  # (B, L, C), padding zeroed
        return TextEmbedding(tokens, mask, emb.pooled.float().cpu()).trimmed()

    @abstractmethod
    def _encode(self, texts: list[str]) -> TextEmbedding:
        """Embed a non-empty list of texts (called under ``torch.no_grad``)."""

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> TextEncoder:
        """Move the model to ``device``; returns self."""
        self.model.to(device)
        return self

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(id={self.id!r}, dim={self.dim}, pooled_dim={self.pooled_dim})"


def mean_pool(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real tokens.

    Args:
        tokens: (B, L, C).
        mask: (B, L) bool.

    Returns:
        (B, C) mean over positions where ``mask`` is True.
    """
    m = mask.to(tokens.dtype).unsqueeze(-1)  # (B, L, 1)
    return (tokens * m).sum(1) / m.sum(1).clamp(min=1e-9)
