"""``ZeusPredictor``: embed an image once, then answer any number of text prompts."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from zeusseg.inference.prompt_decoding import PromptMaps, decode_prompts, prepare_prompt_maps
from zeusseg.modeling.config import ZeusCfg, get_zeus_cfg
from zeusseg.modeling.image_encoder import ImageFeatures
from zeusseg.modeling.text_embedder import PromptEmbedder
from zeusseg.modeling.zeus import Zeus
from zeusseg.transforms import rgb_to_grey

_logger = logging.getLogger(__name__)

_NOT_SET = "An image must be set with .set_image(...) before mask prediction."


class ZeusPredictor:
    """Caches the image embedding so that several prompts cost one encoder pass.

    The image is used at the resolution given (rescaling to the model's scale is the caller's
    job; ``zeusseg.inference.zeus_segmenter.segment_image`` does it); it is reflect-padded to the
    model's ``pad_multiple`` and the maps are cropped back.

    Args:
        model: a Zeus model (``build_zeus``).
        embedder: a ``PromptEmbedder``; by default the text encoder named in the model config.
    """

    def __init__(self, model: Zeus, embedder=None) -> None:
        self.model = model.eval()
        self._embedder = embedder
        self.reset_image()

    @property
    def embedder(self):
        """The prompt embedder (built on first use; a model without a config gets the
        ``ZeusCfg`` default text encoder)."""
        if self._embedder is None:
            cfg = get_zeus_cfg(self.model) or ZeusCfg()
            self._embedder = PromptEmbedder(cfg.text_cfg.encoder)
        return self._embedder

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def reset_image(self) -> None:
        """Forget the current image."""
        self.features: ImageFeatures | None = None
        self.original_size: tuple[int, int] | None = None
        self.is_image_set = False
        self._prompt_maps: dict[str, PromptMaps] = {}

    @torch.no_grad()
    def set_image(self, image: np.ndarray) -> None:
        """Embed an image.

        Args:
            image: (H, W) float32 grey image in [0, 1] (``MicroscopyImage.grey()``), or
                (H, W, 3) RGB in [0, 1] (converted to grey).
        """
        image = np.asarray(image, dtype=np.float32)
        if image.ndim == 3 and image.shape[-1] in (3, 4):
            image = rgb_to_grey(image)
        if image.ndim != 2:
            raise ValueError(f"image must be (H, W) or (H, W, 3), got shape {image.shape}")
        self.set_torch_image(torch.from_numpy(np.array(image, dtype=np.float32))[None, None])

    @torch.no_grad()
    def set_torch_image(self, image: Tensor) -> None:
        """Embed a (1, 1, H, W) float tensor in [0, 1] (any H, W; padded here)."""
        h, w = image.shape[-2:]
        m = self.model.pad_multiple
        ph, pw = -h % m, -w % m
        x = image.to(self.device, torch.float32)
        if ph or pw:
            mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
            x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
        self.features = self.model.encode_image(x)
        self._prompt_maps = {}
        self.original_size = (int(h), int(w))
        self.is_image_set = True

    @torch.no_grad()
    def predict_torch(self, text_tokens: Tensor, text_mask: Tensor) -> Tensor:
        """Dense logits for P prompts.

        Args:
            text_tokens: (P, L, C_text) token embeddings.
            text_mask: (P, L) bool, True = real token.

        Returns:
            (P, 3, H, W) logits (foreground, centre distance, boundary distance) at the size
            of the image given to ``set_image``.
        """
        if not self.is_image_set:
            raise RuntimeError(_NOT_SET)
        logits = self.model.decode(
            self.features, text_tokens.to(self.device), text_mask.to(self.device)
        )
        h, w = self.original_size
        return logits[..., :h, :w]

    def predict(self, texts: str | Sequence[str], batch_size: int = 8) -> np.ndarray:
        """Probabilities for each prompt.

        Args:
            texts: one prompt or P prompts.
            batch_size: prompts decoded together.

        Returns:
            (P, 3, H, W) float32 in [0, 1]: foreground, centre distance, boundary distance.
        """
        if not self.is_image_set:
            raise RuntimeError(_NOT_SET)
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = []
        for i in range(0, len(texts), batch_size):
            tokens, mask = self.embedder(texts[i : i + batch_size])
            out.append(torch.sigmoid(self.predict_torch(tokens, mask).float()).cpu().numpy())
        return np.concatenate(out)

    def prompt_maps(self, text: str) -> PromptMaps:
        """The dense maps of one text prompt, prepared for point/box prompts (cached per image).

        Args:
            text: the text prompt.

        Returns:
            ``PromptMaps`` at the size of the image given to ``set_image``.
        """
        if not self.is_image_set:
            raise RuntimeError(_NOT_SET)
        if text not in self._prompt_maps:
            cfg = get_zeus_cfg(self.model) or ZeusCfg()  # no config: the default diameter
            self._prompt_maps[text] = prepare_prompt_maps(
                self.predict(text)[0], default_diameter=cfg.input_cfg.target_diameter
            )
        return self._prompt_maps[text]

    def predict_prompts(
        self,
        text: str,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        multimask_output: bool = False,
        **decode_kwargs: float,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for point and/or box prompts, mirroring ``SamPredictor.predict``.

        The text prompt's dense maps (computed once per text and image) are the
        prompt-independent basis; the clicks and the box select and reshape instances of them
        (``zeusseg.inference.prompt_decoding``: seeded watershed with a locally lowered foreground
        threshold). There is no learned prompt encoder and no ``mask_input``.

        Args:
            text: the text prompt naming the kind of object (e.g. ``"virus particles"``).
            point_coords: (N, 2) points, (X, Y) in pixels of the image given to ``set_image``.
            point_labels: (N,) 1 = foreground point, 0 = background point.
            box: (4,) box, XYXY in pixels (corners inclusive).
            multimask_output: return three candidates (stricter to looser local threshold)
                instead of one. Unlike SAM, the default is one mask.
            **decode_kwargs: ``fg_threshold``, ``seed_threshold``, ``boundary_threshold`` of
                ``decode_prompts``.

        Returns:
            masks: (C, H, W) bool, C = 3 with ``multimask_output`` else 1, at the size of the
            image given to ``set_image`` (all False when the prompt selects nothing).
            scores: (C,) float32 in [0, 1], the decoder's instance score of each mask.
            soft: (C, H, W) float32, the evidence map ``max(fg, centre, boundary)`` inside each
            mask and 0 outside (SAM returns low-resolution logits here).

        Raises:
            RuntimeError: no image set.
            ValueError: malformed prompts (shapes, labels other than 0/1, points outside the
                image, no prompt).
        """
        maps = self.prompt_maps(text)
        return decode_prompts(maps, point_coords, point_labels, box,
                              multimask_output=multimask_output, **decode_kwargs)
