"""The Zeus model: image encoder + text<->image fusion + dense mask decoder."""

from __future__ import annotations

from torch import Tensor, nn

from zeusseg.modeling.fusion import TwoWayFusion
from zeusseg.modeling.image_encoder import ImageFeatures
from zeusseg.modeling.mask_decoder import MaskDecoder


class Zeus(nn.Module):
    """Text-prompted dense instance-map predictor.

    The frozen text encoder is not part of this module: it takes text token embeddings
    (B, L, C_text) + mask (B, L) (see ``zeusseg.modeling.text_embedder``), so training can cache
    them and the predictor can embed prompts once.

    Args:
        image_encoder: an encoder with ``forward_stem``/``forward_blocks`` returning
            ``ImageFeatures`` (``ImageEncoderHybrid``; SAM/timm wrappers for ``late`` fusion).
        fusion: ``TwoWayFusion`` (its ``mode`` decides late or early fusion).
        mask_decoder: ``MaskDecoder``.
        pad_multiple: H and W of the input must be multiples of this.
    """

    def __init__(
        self,
        *,
        image_encoder: nn.Module,
        fusion: TwoWayFusion,
        mask_decoder: MaskDecoder,
        pad_multiple: int = 32,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.fusion = fusion
        self.mask_decoder = mask_decoder
        self.pad_multiple = pad_multiple
        if fusion.mode == "early" and not hasattr(image_encoder, "forward_blocks"):
            raise ValueError("early fusion needs an image encoder with forward_blocks()")

    @staticmethod
    def preprocess(image: Tensor) -> Tensor:
        """Standardise each image: (B, C, H, W) in [0, 1] -> zero mean, unit std per image."""
        mean = image.mean(dim=(1, 2, 3), keepdim=True)
        std = image.std(dim=(1, 2, 3), keepdim=True).clamp_min(0.02)
        return (image - mean) / std

    def encode_image(self, image: Tensor) -> ImageFeatures:
        """The prompt-independent part: (B, 1, H, W) in [0, 1] -> ImageFeatures.

        For ``late`` fusion this is the whole encoder; for ``early`` fusion the transformer blocks
        depend on the text, so only the conv stem + patch embedding run here.
        """
        h, w = image.shape[-2:]
        if h % self.pad_multiple or w % self.pad_multiple:
            raise ValueError(f"H, W must be multiples of {self.pad_multiple}; got {(h, w)}")
        x = self.preprocess(image)
        if self.fusion.mode == "early":
            return self.image_encoder.forward_stem(x)
        return self.image_encoder(x)

    def decode(self, feats: ImageFeatures, text_tokens: Tensor, text_mask: Tensor) -> Tensor:
        """The per-prompt part: fusion + mask decoder.

        Args:
            feats: from ``encode_image``; batch 1 is broadcast to the text batch.
            text_tokens: (B, L, C_text) token embeddings.
            text_mask: (B, L), 1 = real token.

        Returns:
            (B, 3, H, W) logits: foreground, centre distance, boundary distance.
        """
        b = text_tokens.shape[0]
        if feats.tokens.shape[0] != b:
            feats = _expand(feats, b)
        if self.fusion.mode == "early":
            state = self.fusion.init_state(text_tokens, text_mask)
            where = {i: j for j, i in enumerate(self.fusion.insert_after)}

            def hook(i: int, tokens: Tensor) -> Tensor:
                nonlocal state
                if i in where:
                    state, tokens = self.fusion.layer(where[i], state, tokens)
                return tokens

            feats = self.image_encoder.forward_blocks(feats, hook=hook)
            out_tokens = self.fusion.finish(state, feats.tokens)
            image_tokens = feats.tokens
        else:
            out_tokens, image_tokens = self.fusion(feats.tokens, text_tokens, text_mask)
        return self.mask_decoder(image_tokens, feats.grid, feats.skips, out_tokens)

    def forward(self, image: Tensor, text_tokens: Tensor, text_mask: Tensor) -> Tensor:
        """(B, 1, H, W) image in [0, 1] + text (B, L, C_text), (B, L) -> (B, 3, H, W) logits."""
        return self.decode(self.encode_image(image), text_tokens, text_mask)


def _expand(feats: ImageFeatures, b: int) -> ImageFeatures:
    if feats.tokens.shape[0] != 1:
        raise ValueError(f"cannot broadcast {feats.tokens.shape[0]} images to {b} prompts")
    return ImageFeatures(
        tokens=feats.tokens.expand(b, -1, -1),
        grid=feats.grid,
        skips=[s.expand(b, -1, -1, -1) for s in feats.skips],
        skip_strides=feats.skip_strides,
        stride=feats.stride,
    )
