"""Frozen text encoder + in-memory cache: prompt strings -> padded token embeddings for Zeus."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor

from zeusseg.text import get_text_encoder

_logger = logging.getLogger(__name__)


class PromptEmbedder:
    """Embeds prompts once with a frozen ``zeusseg.text`` encoder and caches the result.

    Args:
        encoder: a registry name of ``zeusseg.text.get_text_encoder`` (e.g. ``minilm-l6-v2``) or a
            ready ``TextEncoder``.
        random_init: build the encoder with random weights (tests only).
    """

    def __init__(self, encoder="minilm-l6-v2", *, random_init: bool = False) -> None:
        if isinstance(encoder, str):
            encoder = get_text_encoder(encoder, random_init=random_init)
        self.encoder = encoder
        self._cache: dict[str, tuple[Tensor, Tensor]] = {}
        self._sentences: dict[str, Tensor] = {}

    @property
    def dim(self) -> int:
        """C of the token embeddings."""
        return int(self.encoder.dim)

    def warm(self, texts: Sequence[str]) -> None:
        """Embed every text not cached yet (one batched call)."""
        new = sorted({t for t in texts if t not in self._cache})
        if not new:
            return
        emb = self.encoder.encode(new)
        for i, t in enumerate(new):
            m = emb.mask[i]
            n = int(m.sum())
            self._cache[t] = (emb.tokens[i, :n].clone(), m[:n].clone())
        _logger.debug("embedded %d new prompt texts (%d cached)", len(new), len(self._cache))

    def sentences(self, texts: Sequence[str]) -> Tensor:
        """Unit-length sentence embeddings (the encoder's pooled output), cached per text.

        Args:
            texts: B strings.

        Returns:
            (B, D) float32, each row of norm 1.
        """
        texts = list(texts)
        new = sorted({t for t in texts if t not in self._sentences})
        if new:
            pooled = torch.nn.functional.normalize(self.encoder.encode(new).pooled.float(), dim=-1)
            self._sentences.update(zip(new, pooled, strict=True))
        if not texts:
            return torch.zeros(0, int(self.encoder.pooled_dim))
        return torch.stack([self._sentences[t] for t in texts])

    def __call__(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Embed a batch.

        Args:
            texts: B prompt strings.

        Returns:
            tokens (B, L, C) float32 and mask (B, L) bool (True = real token), right-padded.
        """
        texts = list(texts)
        if not texts:
            raise ValueError("no prompt text given")
        self.warm(texts)
        length = max(self._cache[t][0].shape[0] for t in texts)
        tokens = torch.zeros(len(texts), length, self.dim)
        mask = torch.zeros(len(texts), length, dtype=torch.bool)
        for i, t in enumerate(texts):
            tok, m = self._cache[t]
            tokens[i, : tok.shape[0]] = tok
            mask[i, : m.shape[0]] = m
        return tokens, mask
