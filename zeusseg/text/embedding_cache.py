"""Per-text embedding cache: each distinct instruction is encoded once per encoder.

In memory always; on disk optionally, one safetensors file per (encoder id, text):
``<directory>/<encoder slug>/<sha256(text)[:32]>.safetensors`` holding ``tokens`` (L, C) and
``pooled`` (D,) for the real tokens only. Files are written atomically, so an interrupted run
leaves no partial entry; every file is checked when read (keys, shapes, the encoder's dims,
finite values) and a bad one is encoded again and replaced.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from zeusseg.io.atomic import atomic_path
from zeusseg.text.base import TextEmbedding, TextEncoder

_logger = logging.getLogger(__name__)


def text_key(text: str) -> str:
    """32 hex digits of the sha256 of the UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _slug(encoder_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", encoder_id).strip("_") or "encoder"


class EmbeddingCache:
    """Wraps a ``TextEncoder``; ``encode`` only runs the encoder on texts it has not seen.

    Args:
        encoder: the text encoder.
        directory: folder for the on-disk cache, or None for memory only.

    Attributes:
        n_encoded: how many texts the encoder has actually embedded (for tests and logs).
    """

    def __init__(self, encoder: TextEncoder, directory: str | os.PathLike | None = None) -> None:
        self.encoder = encoder
        self.directory = None if directory is None else Path(directory) / _slug(encoder.id)
        self._memory: dict[str, TextEmbedding] = {}
        self.n_encoded = 0

    def encode(self, texts: str | Sequence[str]) -> TextEmbedding:
        """Embeddings of ``texts`` (same layout as ``TextEncoder.encode``: tokens (B, L, C),
        mask (B, L), pooled (B, D), L = longest text of this batch)."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        missing = [t for t in dict.fromkeys(texts) if not self._lookup(t)]
        if missing:
            emb = self.encoder.encode(missing)
            self.n_encoded += len(missing)
            for i, text in enumerate(missing):
                self._store(text, emb.row(i).trimmed())
        return TextEmbedding.concat([self._memory[text_key(t)] for t in texts])

    def _path(self, key: str) -> Path | None:
        return None if self.directory is None else self.directory / f"{key}.safetensors"

    def _lookup(self, text: str) -> bool:
        key = text_key(text)
        if key in self._memory:
            return True
        path = self._path(key)
        if path is None or not path.is_file():
            return False
        try:
            data = load_file(path)
        except (SafetensorError, OSError) as err:
            _logger.warning("ignoring unreadable embedding cache file %s: %s", path, err)
            return False
        problem = self._entry_problem(data)
        if problem:
            _logger.warning("ignoring embedding cache file %s: %s", path, problem)
            return False
        tokens = data["tokens"].unsqueeze(0)  # (1, L, C)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool)
        self._memory[key] = TextEmbedding(tokens, mask, data["pooled"].unsqueeze(0))
        return True

    def _entry_problem(self, data: dict[str, torch.Tensor]) -> str | None:
        """Why a loaded entry cannot be used (None if it can): it must hold ``tokens`` (L, C)
        and ``pooled`` (D,), finite floats, with C and D of this encoder."""
        tokens, pooled = data.get("tokens"), data.get("pooled")
        if tokens is None or pooled is None:
            return "lacks 'tokens' or 'pooled'"
        if tokens.ndim != 2 or pooled.ndim != 1 or tokens.shape[0] < 1:
            return f"bad shapes tokens {tuple(tokens.shape)}, pooled {tuple(pooled.shape)}"
        want = (self.encoder.dim or tokens.shape[1], self.encoder.pooled_dim or pooled.shape[0])
        if (tokens.shape[1], pooled.shape[0]) != want:
            return (f"dims ({tokens.shape[1]}, {pooled.shape[0]}) differ from the encoder's "
                    f"{want}")
        if not (tokens.is_floating_point() and torch.isfinite(tokens).all()
                and pooled.is_floating_point() and torch.isfinite(pooled).all()):
            return "non-finite or non-float values"
        return None

    def _store(self, text: str, emb: TextEmbedding) -> None:
        key = text_key(text)
        real = emb.mask[0]
        emb = TextEmbedding(emb.tokens[:, real], emb.mask[:, real], emb.pooled)  # drop padding
        self._memory[key] = emb
        path = self._path(key)
        if path is None:
            return
        with atomic_path(path) as tmp:
            save_file(
                {"tokens": emb.tokens[0].contiguous(), "pooled": emb.pooled[0].contiguous()},
                str(tmp),
                metadata={"encoder": self.encoder.id, "text": text},
            )
