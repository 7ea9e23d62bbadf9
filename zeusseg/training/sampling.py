"""Draw training images so that every dataset (and every class within one) gets its share."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

_logger = logging.getLogger(__name__)


def image_weights(
    sources: Sequence[str],
    classes: Sequence[np.ndarray],
    source_weights: Mapping[str, float],
    *,
    class_balance: bool = True,
) -> np.ndarray:
    """Probability of drawing each image.

    Each source gets ``source_weights[source] / sum(weights)`` of the draws. Within a source,
    images are drawn uniformly, or, with ``class_balance``, with weight
    ``mean over its classes c of 1 / (number of images of the source that hold c)``, so a rare
    class is seen about as often as a frequent one.

    Args:
        sources: (N,) source name of each image.
        classes: (N,) arrays of the class ids present in each image.
        source_weights: relative weight of each source; a missing source weighs 1.

    Returns:
        (N,) float64 probabilities summing to 1.
    """
    names = np.asarray(sources, dtype=object)
    w = np.zeros(len(names), np.float64)
    for src in dict.fromkeys(names):
        idx = np.flatnonzero(names == src)
        inner = np.ones(idx.size)
        if class_balance:
            counts: dict[int, int] = {}
            for i in idx:
                for c in classes[i]:
                    counts[int(c)] = counts.get(int(c), 0) + 1
            mean_rare = np.mean([1.0 / n for n in counts.values()]) if counts else 1.0
            inner = np.array(
                [np.mean([1.0 / counts[int(c)] for c in classes[i]]) if len(classes[i])
                 else mean_rare for i in idx]
            )
        weight = float(source_weights.get(src, 1.0))
        if weight < 0:
            raise ValueError(f"source weight of '{src}' must be >= 0, got {weight}")
        w[idx] = weight * inner / inner.sum()
    if w.sum() <= 0:
        raise ValueError("all source weights are 0")
    return w / w.sum()


class BalancedSampler(Sampler[int]):
    """Random image indices (with replacement) drawn by ``image_weights``.

    Args:
        weights: (N,) probabilities of the images (``image_weights``).
        num_samples: indices per epoch.
        seed: base seed; epoch ``e`` uses ``seed + e`` (call ``set_epoch``).
    """

    def __init__(self, weights: np.ndarray, num_samples: int, *, seed: int = 0) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.weights = torch.as_tensor(np.asarray(weights, np.float64))
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration draw the indices of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        idx = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g)
        return iter(idx.tolist())
