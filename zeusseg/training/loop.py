"""The step loop shared by full training (``training.train``) and LoRA fine-tuning
(``training.finetune``): batches, resume, checkpoint rotation and the metrics log.

Run folder (``out``)::

    checkpoints/step_<n>/   accelerate ``save_state`` + ``trainer.json`` (the loop state);
                            the newest ``keep_checkpoints`` are kept
    metrics.jsonl           one JSON record per line (``TrainingLoop.log``)

A rerun in the same folder resumes from the newest checkpoint: ``load_state`` restores the
model, optimizer and RNG states, and ``skip_first_batches`` skips the batches of the current
epoch already trained on, so the resumed run draws the same crops as an uninterrupted one.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from zeusseg.training.checkpoints import list_checkpoints

StepFn = Callable[[dict[str, Any]], tuple[torch.Tensor, dict[str, float]]]
"""One micro-batch -> (loss, loss parts): ``training.step.training_step`` and its settings."""

AfterStep = Callable[[torch.Tensor, dict[str, float]], bool]
"""Called after each optimizer step with its loss and parts; returns True to stop."""


def collate(items: list[dict]) -> dict[str, Any]:
    """Batch ``PromptedSegmentationDataset`` items.

    Returns:
        ``image`` (B, 1, h, w), ``targets`` (B, 3, h, w), ``text`` (B prompts), ``positive``
        (B,) bool and, when every item has them, ``weights`` (B, h, w).
    """
    return {
        "image": torch.stack([it["image"] for it in items]),
        "targets": torch.stack([it["targets"] for it in items]),
        "text": [it["text"] for it in items],
        "positive": torch.tensor([it["positive"] for it in items]),
        **({"weights": torch.stack([it["weights"] for it in items])}
           if all("weights" in it for it in items) else {}),
    }


class TrainingLoop:
    """Step counting, time limit, resume, checkpoints and metrics of one training run.

    Args:
        acc: the ``Accelerator`` that prepared the model, optimizer and loader.
        out: the run folder.
        tc: the config's ``train`` section (``max_steps``, ``time_limit_min``, ``grad_accum``,
            ``keep_checkpoints``).
        state: the initial loop state, saved as ``trainer.json``: ``step``, ``epoch``,
            ``seconds`` and what the caller keeps there (JSON values).
    """

    def __init__(self, acc: Accelerator, out: Path, tc: dict[str, Any],
                 state: dict[str, Any]) -> None:
        self.acc = acc
        self.out = Path(out)
        self.state = state
        self.max_steps = int(tc["max_steps"])
        self.limit = None if tc["time_limit_min"] is None else float(tc["time_limit_min"]) * 60
        self.grad_accum = int(tc["grad_accum"])
        self.keep = int(tc["keep_checkpoints"])
        self.t_start, self.base_seconds = time.time(), float(state["seconds"])

    def resume(self) -> TrainingLoop:
        """Load the newest checkpoint of ``out``, if any (``load_state`` + ``trainer.json``);
        the clock starts now."""
        ckpts = list_checkpoints(self.out)
        if ckpts:
            self.acc.load_state(str(ckpts[-1]))
            self.state = json.loads((ckpts[-1] / "trainer.json").read_text())
            self.acc.print(f"resumed from {ckpts[-1]} (step {self.state['step']})")
        self.t_start, self.base_seconds = time.time(), float(self.state["seconds"])
        return self

    def elapsed(self) -> float:
        """Training seconds of the run, earlier sessions included."""
        return self.base_seconds + time.time() - self.t_start

    def finished(self) -> bool:
        """``max_steps`` reached or the time limit spent."""
        return self.state["step"] >= self.max_steps or (
            self.limit is not None and self.elapsed() >= self.limit)

    def run(self, loader: Iterable, sampler, step: StepFn, after_step: AfterStep) -> None:
        """Train until ``finished`` or ``after_step`` returns True.

        Every epoch sets the sampler's epoch; a resumed epoch skips the batches already
        used. ``state["step"]`` counts optimizer steps (micro-batches / ``grad_accum``).
        """
        steps_per_epoch = len(loader)
        while not self.finished():
            sampler.set_epoch(self.state["epoch"])
            skip = self.state["step"] * self.grad_accum % steps_per_epoch
            for batch in self.acc.skip_first_batches(loader, skip) if skip else loader:
                loss, parts = step(batch)
                if not self.acc.sync_gradients:
                    continue
                self.state["step"] += 1
                if after_step(loss, parts):
                    return
            self.state["epoch"] += 1

    def checkpoint(self) -> None:
        """``save_state`` into ``checkpoints/step_<n>`` with ``trainer.json`` (once per step),
        then drop all but the newest ``keep_checkpoints``."""
        folder = self.out / "checkpoints" / f"step_{self.state['step']}"
        if (folder / "trainer.json").is_file():
            return
        self.acc.save_state(str(folder))
        if self.acc.is_main_process:
            self.state["seconds"] = self.elapsed()
            (folder / "trainer.json").write_text(json.dumps(self.state))
            for old in list_checkpoints(self.out)[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)

    def log(self, record: dict[str, Any]) -> None:
        """Append ``record`` to ``metrics.jsonl`` (main process only)."""
        if self.acc.is_main_process:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
