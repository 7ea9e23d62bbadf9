"""Losses of the three dense heads (foreground, centre distance, boundary distance)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def soft_dice_loss(logits: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """1 - soft Dice per sample, averaged: logits/target (B, H, W), target in [0, 1].

    ``eps`` keeps empty targets well-defined: then the loss is ``sum(p) / (sum(p) + eps)``, which
    pushes every probability to 0 (what a negative prompt must produce).
    """
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    inter = (p * t).sum(1)
    return (1 - (2 * inter + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def zeus_loss(
    logits: Tensor, targets: Tensor, weights: tuple[float, float, float, float] = (1, 1, 1, 1),
    pixel_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Loss of the dense maps.

    Args:
        logits: (B, 3, H, W) model output.
        targets: (B, 3, H, W) in [0, 1]: foreground, centre distance, boundary distance
            (``zeusseg.training.targets.make_targets``; all zero for a negative prompt).
        weights: weights of (fg BCE, fg Dice, centre BCE, boundary BCE).
        pixel_weights: (B, H, W) per-pixel weights of the two distance-map BCE terms (e.g.
            ``1 + w * contact_map``: stress the seams between touching objects); None = 1.

    Returns:
        The scalar loss and a dict of its float parts (for logging).
    """
    logits = logits.float()
    targets = targets.float()
    fg_bce = F.binary_cross_entropy_with_logits(logits[:, 0], targets[:, 0])
    fg_dice = soft_dice_loss(logits[:, 0], targets[:, 0])
    pw = None if pixel_weights is None else pixel_weights.float().to(logits.device)
    centre = F.binary_cross_entropy_with_logits(logits[:, 1], targets[:, 1], weight=pw)
    boundary = F.binary_cross_entropy_with_logits(logits[:, 2], targets[:, 2], weight=pw)
    parts = (fg_bce, fg_dice, centre, boundary)
    loss = sum(w * p for w, p in zip(weights, parts, strict=True))
    names = ("fg_bce", "fg_dice", "centre", "boundary")
    return loss, {n: float(p.detach()) for n, p in zip(names, parts, strict=True)}
