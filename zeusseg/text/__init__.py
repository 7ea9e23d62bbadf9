"""Frozen text encoders (MiniLM, open_clip, Hugging Face CLIP) and their embedding cache."""

from zeusseg.text.base import TextEmbedding, TextEncoder, mean_pool
from zeusseg.text.embedding_cache import EmbeddingCache
from zeusseg.text.registry import DEFAULT_TEXT_ENCODER, get_text_encoder

__all__ = [
    "DEFAULT_TEXT_ENCODER",
    "EmbeddingCache",
    "TextEmbedding",
    "TextEncoder",
    "get_text_encoder",
    "mean_pool",
]
