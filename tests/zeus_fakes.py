"""Test doubles for Zeus tests: a deterministic fake text encoder and synthetic two-domain data."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch

from zeusseg.text.base import TextEmbedding


class FakeTextEncoder:
    """Words -> fixed random 384-d vectors (seeded by the word), no weights needed."""

    id = "fake"
    dim = 384
    pooled_dim = 384

    def encode(self, texts):
        texts = [texts] if isinstance(texts, str) else list(texts)
        words = [t.lower().split() or [""] for t in texts]
        length = max(len(w) for w in words)
        tokens = torch.zeros(len(texts), length, self.dim)
        mask = torch.zeros(len(texts), length, dtype=torch.bool)
        for i, ws in enumerate(words):
            for j, w in enumerate(ws):
                g = torch.Generator().manual_seed(zlib.crc32(w.encode()))
                tokens[i, j] = torch.randn(self.dim, generator=g)
                mask[i, j] = True
        return TextEmbedding(tokens, mask, tokens.mean(1))


def fake_embedder():
    from zeusseg.modeling.text_embedder import PromptEmbedder

    return PromptEmbedder(FakeTextEncoder())


def disks(rng: np.random.Generator, size: int = 64, n: int = 4, radius: int = 6) -> np.ndarray:
    """(size, size) int32 labels of ``n`` non-overlapping disks."""
    from skimage.draw import disk

    labels = np.zeros((size, size), np.int32)
    k = 0
    for _ in range(50 * n):
        if k == n:
            break
        r, c = rng.integers(radius + 2, size - radius - 2, 2)
        rr, cc = disk((r, c), radius, shape=labels.shape)
        if labels[rr, cc].any():
            continue
        k += 1
        labels[rr, cc] = k
    return labels


def domain_image(labels: np.ndarray, domain: str, rng: np.random.Generator) -> np.ndarray:
    """uint8 image: ``bright`` disks on dark ("nuclei") or ``dark`` disks on grey ("viruses")."""
    fg = labels > 0
    if domain == "bright":
        img = 20 + 180 * fg
    else:
        img = 170 - 110 * fg
    return np.clip(img + rng.normal(0, 6, labels.shape), 0, 255).astype(np.uint8)


def write_folder(root: Path, domain: str, n: int = 3, size: int = 64, seed: int = 0) -> Path:
    """A folder with images/ and labels/ PNGs of one synthetic domain."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        lab = disks(rng, size)
        Image.fromarray(domain_image(lab, domain, rng)).save(root / "images" / f"s-{i}.png")
        Image.fromarray(lab.astype(np.uint16)).save(root / "labels" / f"s-{i}.png")
    return root


class FakeZeus(torch.nn.Module):
    """A deterministic stand-in for ``Zeus``: the dense maps are read off the image itself.

    Foreground probability = the image intensity (clipped to [0.02, 0.98]); centre and boundary
    maps = the normalised distance targets of the components of ``image > 0.1``, times the
    intensity. A faint object (intensity 0.3) is therefore missed by the automatic decoding
    (foreground < 0.5, no seed) but still visible to point/box prompts. Text is ignored.
    """

    pad_multiple = 8

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return image

    def decode(self, feats: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor):
        from scipy import ndimage

        from zeusseg.training.targets import make_targets

        img = feats[0, 0].cpu().numpy()
        labels, _ = ndimage.label(img > 0.1)
        maps = make_targets(labels.astype(np.int32))
        maps[0] = img
        maps[1:] *= img
        probs = torch.from_numpy(np.clip(maps, 0.02, 0.98).astype(np.float32))
        logits = torch.log(probs / (1 - probs))
        return logits[None].expand(text_tokens.shape[0], -1, -1, -1)


def prompt_scene(size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(size, size) float32 image in [0, 1] and its int32 labels for point/box prompt tests.

    1: bright disk, 2: bright disk 2 px from disk 1, 3: faint disk (intensity 0.3),
    4: bright larger disk.
    """
    from skimage.draw import disk

    labels = np.zeros((size, size), np.int32)
    image = np.zeros((size, size), np.float32)
    for k, (r, c, rad, val) in enumerate(
        [(30, 30, 10, 1.0), (30, 52, 10, 1.0), (90, 40, 10, 0.3), (90, 95, 12, 1.0)], start=1
    ):
        rr, cc = disk((r, c), rad, shape=labels.shape)
        labels[rr, cc] = k
        image[rr, cc] = val
    return image, labels
