"""Hugging Face CLIP text towers (``CLIPTextModel`` / ``CLIPTextModelWithProjection``)."""

from __future__ import annotations

import logging
import os

import torch
from transformers import (
    AutoTokenizer,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
)

from zeusseg.pretrained import resolve_hf_source
from zeusseg.text.base import TextEmbedding, TextEncoder

_logger = logging.getLogger(__name__)


class HFCLIPTextEncoder(TextEncoder):
    """The text tower of a Hugging Face CLIP model.

    ``tokens`` are the last hidden states (C = text hidden size); ``pooled`` is the projected
    text embedding (``text_embeds``, D = projection dim) when the model has a projection,
    otherwise the EOS-token ``pooler_output`` (D = C).

    Args:
        model: ``CLIPTextModel`` or ``CLIPTextModelWithProjection``.
        tokenizer: the matching tokenizer.
        encoder_id: the encoder's ``id``.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, *, encoder_id: str) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.id = encoder_id
        cfg = model.config
        self.dim = int(cfg.hidden_size)
        self._projected = hasattr(model, "text_projection")
        self.pooled_dim = int(cfg.projection_dim) if self._projected else self.dim
        self.max_length = int(cfg.max_position_embeddings)

    @classmethod
    def from_pretrained(
        cls, source: str | os.PathLike, *, random_init: bool = False, projection: bool = True
    ) -> HFCLIPTextEncoder:
        """Load the text tower of a CLIP checkpoint (full CLIP or text-only) by folder or hub id.

        Args:
            source: folder written by ``save_pretrained`` or a hub id in the HF cache.
            random_init: random weights from the checkpoint's config (tokenizer still loaded).
            projection: use ``CLIPTextModelWithProjection`` (pooled = projected embedding).

        Raises:
            WeightsNotFoundError: ``source`` is not available locally.
        """
        resolved = resolve_hf_source(source, model=f"hf-clip:{source}")
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        model_cls = CLIPTextModelWithProjection if projection else CLIPTextModel
        if random_init:
            model = model_cls(CLIPTextConfig.from_pretrained(resolved))
        else:
            model = model_cls.from_pretrained(resolved)
        encoder_id = f"hf-clip:{source}" + ("+random" if random_init else "")
        return cls(model, tokenizer, encoder_id=encoder_id)

    def _encode(self, texts: list[str]) -> TextEmbedding:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        tokens = out.last_hidden_state  # (B, L, C)
        pooled = out.text_embeds if self._projected else out.pooler_output  # (B, D)
        return TextEmbedding(tokens, batch["attention_mask"].bool(), pooled)
