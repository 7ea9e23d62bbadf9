"""The learning-rate schedule of every training loop: linear warm-up, then cosine decay.

Pure arithmetic (no torch): full training and LoRA fine-tuning (``zeusseg.training.loop``)
and the baseline detectors (``zeusseg.baselines.train``) share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def warmup_cosine(step: int, warmup_steps: int, max_steps: int, min_lr_ratio: float,
                  time_share: float | None = None) -> float:
    """The factor of the base learning rate at optimizer step ``step``.

    Linear warm-up over ``warmup_steps``, then cosine decay from 1 to ``min_lr_ratio`` at
    ``max_steps``; with ``time_share`` (the share of a time budget spent) the decay follows
    whichever of the step and the time progress is further along.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    if time_share is not None:
        t = max(t, time_share)
    t = min(1.0, t)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


@dataclass(frozen=True)
class WarmupCosine:
    """``warmup_cosine`` with the settings of a ``train`` config section.

    Attributes:
        warmup_steps: optimizer steps of linear warm-up.
        max_steps: the step at which the decay reaches ``min_lr_ratio``.
        min_lr_ratio: the final factor.
        time_limit_s: with ``schedule: time``, the time budget the decay also follows.
    """

    warmup_steps: int
    max_steps: int
    min_lr_ratio: float
    time_limit_s: float | None = None

    @classmethod
    def from_train_config(cls, tc: dict[str, Any]) -> WarmupCosine:
        """From ``warmup_steps``, ``max_steps``, ``min_lr_ratio`` and, when ``schedule`` is
        ``time`` (absent: ``steps``) and ``time_limit_min`` is set, the time limit."""
        timed = tc.get("schedule", "steps") == "time" and tc.get("time_limit_min")
        return cls(int(tc["warmup_steps"]), int(tc["max_steps"]), float(tc["min_lr_ratio"]),
                   float(tc["time_limit_min"]) * 60 if timed else None)

    def __call__(self, step: int, seconds: float = 0.0) -> float:
        """The factor at ``step`` after ``seconds`` of training."""
        share = None if self.time_limit_s is None else seconds / self.time_limit_s
        return warmup_cosine(step, self.warmup_steps, self.max_steps, self.min_lr_ratio, share)
