"""Instance class head: which of several named classes (e.g. virus species) is each instance?

The dense maps decide *where* the objects of a prompt are; on micrographs that hold one kind of
object of several look-alike species (RSV, SARS-CoV-2, FLUAV particles) they are a poor judge
of *which* species. The head scores each instance against the text embeddings of class prompts,
CLIP style: instance features (image-encoder features pooled over the instance mask, the same
features pooled over the whole image for context, log area) are projected into the text
encoder's sentence-embedding space, and the logit of a prompt is a scaled cosine similarity.
It is trained on frozen encoder features (``zeusseg.training.class_head``) and stored next to the
model weights as ``class_head.safetensors`` + ``class_head.json``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from torch import Tensor, nn

from zeusseg.modeling.head_files import load_head_files, save_head_files
from zeusseg.modeling.image_encoder import ImageFeatures
from zeusseg.pretrained import HEAD_CONFIG, HEAD_WEIGHTS


@dataclass
class ClassHeadSpec:
    """What a trained class head knows (``class_head.json``).

    Attributes:
        classes: canonical class name -> prompt phrasings it was trained with (first = canonical).
        parent_prompt: the class-agnostic prompt whose instances the head classifies
            (e.g. ``virus particles``).
        in_dim: length of ``instance_features`` vectors.
        text_dim: dimension of the text encoder's sentence embedding.
        text_encoder: registry name of that text encoder.
        provenance: how it was trained (config, data, accuracy), free-form.
    """

    classes: dict[str, list[str]]
    parent_prompt: str
    in_dim: int
    text_dim: int
    text_encoder: str = "minilm-l6-v2"
    provenance: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> ClassHeadSpec:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown class-head keys: {', '.join(sorted(unknown))}")
        spec = cls(**d)
        if len(spec.classes) < 2 or any(not v for v in spec.classes.values()):
            raise ValueError("a class head needs >= 2 classes, each with >= 1 phrasing")
        return spec


class InstanceClassHead(nn.Module):
    """Linear projection of instance features into text space + scaled cosine logits.

    Args:
        in_dim: length of the instance feature vectors.
        text_dim: dimension of the sentence embeddings of the class prompts.
    """

    def __init__(self, in_dim: int, text_dim: int) -> None:
        super().__init__()
        self.register_buffer("feat_mean", torch.zeros(in_dim))
        self.register_buffer("feat_std", torch.ones(in_dim))
        self.proj = nn.Linear(in_dim, text_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def embed(self, feats: Tensor) -> Tensor:
        """(N, in_dim) instance features -> (N, text_dim) unit vectors in text space."""
        x = (feats - self.feat_mean) / self.feat_std
        return F.normalize(self.proj(x), dim=-1)

    def forward(self, feats: Tensor, text: Tensor) -> Tensor:
        """Logits (N, K) of N instances for K prompts with sentence embeddings ``text`` (K, D)."""
        return self.logit_scale.exp() * self.embed(feats) @ F.normalize(text, dim=-1).T


def feature_dim(feats: ImageFeatures) -> int:
    """Length of the vectors ``instance_features`` returns for these encoder features."""
    c = feats.tokens.shape[-1] + (feats.skips[-1].shape[1] if feats.skips else 0)
    return 2 * c + 1


def _levels(feats: ImageFeatures) -> list[tuple[Tensor, int]]:
    """(C, h, w) maps with their strides: the token grid and the coarsest skip."""
    h, w = feats.grid
    out = [(feats.tokens[0].T.reshape(-1, h, w), feats.stride)]
    if feats.skips:
        out.append((feats.skips[-1][0], feats.skip_strides[-1]))
    return out


@torch.no_grad()
def instance_features(
    feats: ImageFeatures, labels: np.ndarray, ids: np.ndarray, model_shape: tuple[int, int]
) -> Tensor:
    """Per-instance feature vectors for the class head.

    Each pixel of ``labels`` (any resolution, e.g. the original image) is mapped to the feature
    cell that covers it at the model's input scale, so instances are pooled exactly without
    resizing the labels (an instance smaller than a cell still gets its cell's features).

    Args:
        feats: encoder features of ONE image (batch 1) given to the model at ``model_shape``.
        labels: (H, W) int instance labels of that image (0 = background).
        ids: (N,) the instance ids to describe.
        model_shape: (h, w) of the image the encoder saw, before padding.

    Returns:
        (N, feature_dim(feats)) float32: mean features inside each instance (token grid and
        coarsest skip), mean features over the image, log instance area in model pixels.
    """
    ids = np.asarray(ids, np.int64)
    big_h, big_w = labels.shape
    mh, mw = model_shape
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs].astype(np.int64)
    index = np.full(int(max(lab.max(initial=0), ids.max(initial=0))) + 1, -1, np.int64)
    index[ids] = np.arange(ids.size)
    row = index[lab]
    keep = row >= 0
    ys, xs, row = ys[keep], xs[keep], row[keep]
    n = ids.size
    parts_inst, parts_glob = [], []
    for fmap, stride in _levels(feats):
        c, h, w = fmap.shape
        flat = fmap.reshape(c, -1).float().cpu().numpy()
        cy = np.minimum((ys + 0.5) * (mh / big_h) // stride, h - 1).astype(np.int64)
        cx = np.minimum((xs + 0.5) * (mw / big_w) // stride, w - 1).astype(np.int64)
        weights = sparse.csr_matrix(
            (np.ones(row.size, np.float32), (row, cy * w + cx)), shape=(n, h * w))
        counts = np.maximum(np.asarray(weights.sum(1)), 1.0)
        parts_inst.append(np.asarray(weights @ flat.T) / counts)
        vh, vw = max(1, math.ceil(mh / stride)), max(1, math.ceil(mw / stride))
        glob = fmap[:, : min(vh, h), : min(vw, w)].float().mean((1, 2)).cpu().numpy()
        parts_glob.append(np.broadcast_to(glob, (n, c)))
    area = np.bincount(row, minlength=n).astype(np.float64) * (mh * mw) / (big_h * big_w)
    out = np.concatenate([*parts_inst, *parts_glob, np.log1p(area)[:, None]], axis=1)
    return torch.from_numpy(out.astype(np.float32))


def save_class_head(head: InstanceClassHead, spec: ClassHeadSpec,
                    folder: str | os.PathLike) -> Path:
    """Write ``class_head.safetensors`` + ``class_head.json`` into ``folder`` (atomically)."""
    folder = Path(folder)
    save_head_files(head, spec, folder / HEAD_WEIGHTS, folder / HEAD_CONFIG)
    return folder


def load_class_head(folder: str | os.PathLike) -> tuple[InstanceClassHead, ClassHeadSpec] | None:
    """The class head stored in a model folder, or None when the folder has none.

    Raises:
        InputError: the files exist but are damaged or do not fit each other.
    """
    folder = Path(folder)
    return load_head_files(folder / HEAD_WEIGHTS, folder / HEAD_CONFIG, "class head",
                           ClassHeadSpec.from_dict,
                           lambda spec: InstanceClassHead(spec.in_dim, spec.text_dim))
