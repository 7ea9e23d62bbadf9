"""One optimisation step of a Zeus model, shared by full training and LoRA fine-tuning."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from zeusseg.training.losses import zeus_loss


def training_step(acc, model: torch.nn.Module, embedder, batch: dict[str, Any], optimizer,
                  loss_weights: Sequence[float], grad_clip: float | None = None,
                  params: Iterable[torch.nn.Parameter] | None = None,
                  scheduler=None) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward, ``zeus_loss``, backward, clip, step (under ``accelerator.accumulate``).

    Args:
        acc: the ``accelerate.Accelerator`` that prepared ``model`` and ``optimizer``.
        batch: ``image`` (B, 1, h, w), ``targets`` (B, 3, h, w), ``text`` (B prompts),
            optionally ``weights`` (B, h, w) for the distance-map losses.
        params: the parameters to clip (default: all of ``model``'s).
        scheduler: stepped after the optimizer when given.

    Returns:
        The loss tensor and its parts. The optimizer steps only when ``acc.sync_gradients``
        (the last micro-batch of an accumulation window).
    """
    tokens, mask = embedder(batch["text"])
    with acc.accumulate(model), acc.autocast():
        logits = model(batch["image"], tokens.to(acc.device), mask.to(acc.device))
        loss, parts = zeus_loss(logits, batch["targets"], tuple(loss_weights),
                                pixel_weights=batch.get("weights"))
        acc.backward(loss)
        if acc.sync_gradients and grad_clip:
            acc.clip_grad_norm_(model.parameters() if params is None else params, float(grad_clip))
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad()
    return loss, parts
