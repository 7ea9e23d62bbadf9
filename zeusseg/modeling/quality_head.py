"""Instance quality head: is a decoded instance a real object of the prompt?

The dense maps find almost every virus particle (visn-val recall 0.95) but also pale vesicles,
debris and stain blobs that annotators do not count (precision 0.76): the decoder's score
(mean foreground x max centre) ranks them only loosely. Two-stage detectors rescore each
proposal from pooled features (Mask R-CNN's box head, Mask Scoring R-CNN's MaskIoU head); SAM
predicts each mask's IoU. The quality head does the same for zeusseg's instances: a small MLP on
the frozen encoder features pooled inside the instance (optionally also over the whole image:
stain, magnification, preparation; ``zeusseg.modeling.class_head.instance_features``), plus the
decoder's own score, the instance's solidity and whether it touches the image border, gives
the probability that the instance matches a ground-truth object at IoU >= 0.5.

Inference (``zeusseg.inference.quality_filter``) drops instances below the head's threshold
and ranks the rest by that probability. The head is trained on the model's own predictions on
training images (``zeusseg.training.quality_head``) and stored next to the model weights as
``quality_head.safetensors`` + ``quality_head.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from skimage.measure import regionprops
from torch import Tensor, nn

from zeusseg.modeling.class_head import feature_dim, instance_features
from zeusseg.modeling.head_files import load_head_files, save_head_files
from zeusseg.modeling.image_encoder import ImageFeatures
from zeusseg.structures import InstanceMasks

QUALITY_WEIGHTS = "quality_head.safetensors"
QUALITY_CONFIG = "quality_head.json"
N_EXTRA = 3
"""Features after the pooled encoder features: decoder score, solidity, touches the border."""


@dataclass
class QualityHeadSpec:
    """What a trained quality head knows (``quality_head.json``).

    Attributes:
        in_dim: length of ``quality_features`` vectors.
        hidden: width of the MLP's hidden layer.
        threshold: instances with a quality below this are dropped.
        context: the features include the whole-image means (False: only what describes the
            instance itself; transfers better to objects the head never saw).
        provenance: how it was trained (config, data, held-out scores), free-form.
    """

    in_dim: int
    hidden: int = 64
    threshold: float = 0.5
    context: bool = True
    provenance: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> QualityHeadSpec:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown quality-head keys: {', '.join(sorted(unknown))}")
        spec = cls(**d)
        if not 0.0 <= float(spec.threshold) < 1.0 or spec.in_dim < 1 or spec.hidden < 1:
            raise ValueError("need in_dim >= 1, hidden >= 1 and threshold in [0, 1)")
        return spec


class InstanceQualityHead(nn.Module):
    """Standardised features -> Linear -> GELU -> Linear -> one logit per instance.

    Args:
        in_dim: length of the feature vectors.
        hidden: hidden width.
    """

    def __init__(self, in_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.register_buffer("feat_mean", torch.zeros(in_dim))
        self.register_buffer("feat_std", torch.ones(in_dim))
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, feats: Tensor) -> Tensor:
        """(N, in_dim) features -> (N,) logits of "matches a true object"."""
        return self.mlp((feats - self.feat_mean) / self.feat_std)[:, 0]


def quality_dim(feats: ImageFeatures, context: bool = True) -> int:
    """Length of the vectors ``quality_features`` returns for these encoder features."""
    full = feature_dim(feats)
    return (full if context else full - full // 2) + N_EXTRA


def without_context(x: Tensor, full_dim: int) -> Tensor:
    """Drop the whole-image-mean columns from (N, quality_dim(feats)) vectors, ``full_dim`` =
    ``feature_dim(feats)``: [instance means (c), image means (c), log area, extras]."""
    c = full_dim // 2
    return torch.cat([x[:, :c], x[:, 2 * c:]], 1)


def _shape_features(masks: InstanceMasks) -> np.ndarray:
    """(N, 2): solidity (area / convex area) and 1.0 where the instance touches the border."""
    labels = masks.labels
    props = {p.label: p for p in regionprops(labels)}
    border = np.zeros(int(labels.max(initial=0)) + 1, bool)
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    border[np.unique(edge)] = True
    out = np.zeros((len(masks), 2), np.float32)
    for i, lid in enumerate(masks.ids.tolist()):
        p = props.get(lid)
        if p is not None:
            out[i, 0] = float(p.solidity) if p.area > 2 else 1.0
        out[i, 1] = float(border[lid])
    return out


@torch.no_grad()
def quality_features(feats: ImageFeatures, masks: InstanceMasks,
                     model_shape: tuple[int, int], context: bool = True) -> Tensor:
    """Per-instance feature vectors for the quality head.

    Args:
        feats: encoder features of ONE image (batch 1) given to the model at ``model_shape``.
        masks: the decoded instances of that image (any resolution), with the decoder's scores.
        model_shape: (h, w) of the image the encoder saw, before padding.
        context: keep the whole-image means of ``instance_features``.

    Returns:
        (N, quality_dim(feats, context)) float32: ``instance_features`` (without its image means
        unless ``context``), then the decoder score, the solidity and the border flag.
    """
    pooled = instance_features(feats, masks.labels, masks.ids, model_shape)
    extra = np.concatenate([masks.scores.astype(np.float32)[:, None], _shape_features(masks)], 1)
    x = torch.cat([pooled, torch.from_numpy(extra)], 1)
    return x if context else without_context(x, feature_dim(feats))


def save_quality_head(head: InstanceQualityHead, spec: QualityHeadSpec,
                      folder: str | os.PathLike) -> Path:
    """Write ``quality_head.safetensors`` + ``quality_head.json`` into ``folder`` (atomically)."""
    folder = Path(folder)
    save_head_files(head, spec, folder / QUALITY_WEIGHTS, folder / QUALITY_CONFIG)
    return folder


def load_quality_head(folder: str | os.PathLike
                      ) -> tuple[InstanceQualityHead, QualityHeadSpec] | None:
    """The quality head stored in a model folder, or None when the folder has none.

    Raises:
        InputError: the files exist but are damaged or do not fit each other.
    """
    folder = Path(folder)
    return load_head_files(folder / QUALITY_WEIGHTS, folder / QUALITY_CONFIG, "quality head",
                           QualityHeadSpec.from_dict,
                           lambda spec: InstanceQualityHead(spec.in_dim, spec.hidden))
