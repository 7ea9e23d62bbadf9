"""Apply a model's instance quality head (``zeusseg.modeling.quality_head``) to decoded instances.

``segment_image(..., quality_head=QualityFilter(head, spec))`` calls it with the encoder
features of the final pass: instances whose quality is below the head's threshold are dropped,
the others are ranked (scored) by their quality.
"""

from __future__ import annotations

import numpy as np
import torch

from zeusseg.modeling.image_encoder import ImageFeatures
from zeusseg.modeling.quality_head import InstanceQualityHead, QualityHeadSpec, quality_features
from zeusseg.structures import InstanceMasks


class QualityFilter:
    """Callable ``(masks, features, model_shape) -> masks`` for ``segment_image``.

    Args:
        head: the trained quality head.
        spec: its spec (``threshold``: the lowest quality kept).
        threshold: overrides ``spec.threshold`` when given.
    """

    def __init__(self, head: InstanceQualityHead, spec: QualityHeadSpec,
                 threshold: float | None = None) -> None:
        self.head, self.spec = head, spec
        self.threshold = float(spec.threshold if threshold is None else threshold)

    @torch.no_grad()
    def quality(self, masks: InstanceMasks, feats: ImageFeatures,
                model_shape: tuple[int, int]) -> np.ndarray:
        """(N,) float32 probability that each instance matches a true object (IoU >= 0.5)."""
        if len(masks) == 0:
            return np.zeros(0, np.float32)
        x = quality_features(feats, masks, model_shape, context=self.spec.context)
        if x.shape[1] != self.spec.in_dim:
            raise ValueError(f"quality head expects {self.spec.in_dim} features, the model "
                             f"gives {x.shape[1]}: it was trained for another model")
        return torch.sigmoid(self.head(x)).numpy().astype(np.float32)

    def __call__(self, masks: InstanceMasks, feats: ImageFeatures,
                 model_shape: tuple[int, int]) -> InstanceMasks:
        q = self.quality(masks, feats, model_shape)
        return masks.select(q >= self.threshold, scores=q)
