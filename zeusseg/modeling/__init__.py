"""The Zeus model parts: image encoders, text<->image fusion, mask decoder, and the whole model."""

from zeusseg.modeling.fusion import TwoWayFusion
from zeusseg.modeling.image_encoder import ImageEncoderHybrid, ImageFeatures
from zeusseg.modeling.mask_decoder import MaskDecoder
from zeusseg.modeling.text_embedder import PromptEmbedder
from zeusseg.modeling.zeus import Zeus

__all__ = [
    "ImageEncoderHybrid",
    "ImageFeatures",
    "MaskDecoder",
    "PromptEmbedder",
    "TwoWayFusion",
    "Zeus",
]
