"""SAM ViT image encoder (segment-anything checkpoint) behind the Zeus encoder interface.

The ViT sees the image resized to its ``img_size`` (1024 for SAM) with the grey channel repeated
three times; its stride-16 neck output is resized to the (H / 16, W / 16) token grid and
projected to the Zeus width. A small conv stem (as in ``ImageEncoderHybrid``) provides the
stride-2/4/8 skips the mask decoder needs. Late fusion only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zeusseg.errors import InputError, WeightsNotFoundError
from zeusseg.modeling.common import DownBlock
from zeusseg.modeling.image_encoder import ImageFeatures
from zeusseg.pretrained import SAM_URLS, resolve_checkpoint

_logger = logging.getLogger(__name__)


def _load_sam_state(path: Path) -> dict[str, Tensor]:
    try:  # weights_only: never runs code from the file
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle / zip raise many types on corrupt or unsafe files
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise InputError(path, f"corrupt, unsafe or unreadable SAM checkpoint "
                         f"({type(err).__name__}: {first})") from err
    if not isinstance(state, dict):
        raise InputError(path, f"not a SAM state dict (a {type(state).__name__})")
    if any(k.startswith("image_encoder.") for k in state):
        state = {k[len("image_encoder."):]: v for k, v in state.items()
                 if k.startswith("image_encoder.")}
    return state


class SamImageEncoder(nn.Module):
    """SAM ViT + conv skip stem.

    Args:
        model_type: ``vit_b`` | ``vit_l`` | ``vit_h`` (``sam_model_registry``) or ``custom``
            (``encoder_kwargs`` go to ``ImageEncoderViT``; tests use a tiny one).
        checkpoint: a SAM checkpoint (full SAM or image-encoder-only state dict).
        embed_dim: Zeus token width.
        stem_channels: channels of the skip stem at strides 2, 4, 8.
        freeze: keep the ViT weights fixed.
        random_init: allow running without a checkpoint (tests, ablations).
        encoder_kwargs: for ``custom``.

    Raises:
        WeightsNotFoundError: no checkpoint file and ``random_init`` is False.
    """

    def __init__(
        self,
        *,
        model_type: str = "vit_b",
        checkpoint: str | os.PathLike | None = None,
        embed_dim: int = 128,
        stem_channels: tuple[int, ...] = (32, 64, 96),
        freeze: bool = True,
        random_init: bool = False,
        encoder_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        from segment_anything import sam_model_registry  # optional: the models extra
        from segment_anything.modeling import ImageEncoderViT

        path = resolve_checkpoint(checkpoint)
        if (path is None or not path.is_file()) and not random_init:
            raise WeightsNotFoundError(
                f"sam-{model_type}", [str(path)] if path else [],
                f"wget {SAM_URLS.get(model_type, SAM_URLS['vit_b'])} -P "
                "$ZEUSSEG_CACHE_DIR/checkpoints (or pass its path as vision_cfg.checkpoint)",
            )
        if model_type == "custom":
            self.vit = ImageEncoderViT(**(encoder_kwargs or {}))
        elif model_type in sam_model_registry:
            self.vit = sam_model_registry[model_type](checkpoint=None).image_encoder
        else:
            raise ValueError(f"model_type must be custom or one of {sorted(sam_model_registry)}")
        if path is not None and path.is_file():
            try:
                result = self.vit.load_state_dict(_load_sam_state(path), strict=True)
            except RuntimeError as err:
                first = " ".join(str(err).split())[:300]
                raise InputError(path, f"SAM checkpoint does not fit {model_type} "
                                 f"({first})") from err
            _logger.info("loaded SAM image encoder from %s (%s)", path, result)
        if freeze:
            self.vit.requires_grad_(False)
        self.img_size = int(self.vit.img_size)
        out_chans = self.vit.neck[0].out_channels
        c2, c4, c8 = stem_channels
        self.down2, self.down4, self.down8 = DownBlock(1, c2), DownBlock(c2, c4), DownBlock(c4, c8)
        self.proj = nn.Conv2d(out_chans, embed_dim, 1)
        self.token_stride = 16

    def forward(self, image: Tensor) -> ImageFeatures:
        """(B, 1, H, W) normalised image -> ImageFeatures with (H/16, W/16) tokens."""
        h, w = image.shape[-2:]
        s2 = self.down2(image)
        s4 = self.down4(s2)
        s8 = self.down8(s4)
        x = F.interpolate(image, size=(self.img_size, self.img_size), mode="bilinear",
                          align_corners=False).expand(-1, 3, -1, -1)
        x = self.vit(x)  # (B, C_neck, img/16, img/16)
        x = F.interpolate(x, size=(h // 16, w // 16), mode="bilinear", align_corners=False)
        x = self.proj(x)  # (B, C, h, w)
        grid = (int(x.shape[-2]), int(x.shape[-1]))
        tokens = x.flatten(2).transpose(1, 2)  # (B, h*w, C)
        return ImageFeatures(tokens=tokens, grid=grid, skips=[s2, s4, s8],
                             skip_strides=[2, 4, 8], stride=16)
