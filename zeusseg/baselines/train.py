"""Train a baseline detector with accelerate (the shape of accelerate's ``complete_cv_example``).

One ``accelerator.prepare(model, optimizer, dataloader, scheduler)``; steps run inside
``accelerator.accumulate`` with ``accelerator.backward``. Every ``save_every_minutes`` the
whole state goes to ``<out>/checkpoints/step_<n>`` (``save_state``, written to a temporary
folder and renamed) together with ``<out>/model.safetensors`` + ``config.yaml`` (what
``predict`` reads). A new run in the same folder resumes from the newest checkpoint
(``load_state`` + ``skip_first_batches``), with the same shuffling and augmentation draws.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from zeusseg.baselines.build import CONFIG_FILE, build_model, save_run_model
from zeusseg.baselines.config import BaselineConfig, to_dict
from zeusseg.baselines.data import (
    BaselineDataset,
    Loader,
    class_mapping,
    collate,
    dataset_loaders,
)
from zeusseg.training.lr_schedule import warmup_cosine

_logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LOG_FILE = "log.jsonl"
_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass
class TrainSummary:
    """What a ``train`` call did."""

    out: Path
    steps_done: int
    start_step: int
    seconds: float
    last_loss: float
    skipped_steps: int
    complete: bool
    total_seconds: float = math.nan
    """Training wall time over every session of the run (resumed runs add up)."""


def latest_checkpoint(out: str | os.PathLike) -> tuple[Path, int] | None:
    """The newest ``checkpoints/step_<n>`` folder of a run and its step, or None."""
    folder = Path(out) / CHECKPOINTS
    found = [(int(m.group(1)), p) for p in folder.glob("step_*")
             if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    if not found:
        return None
    step, path = max(found)
    return path, step


def _lr_lambda(warmup: int, total: int, time_used: Callable[[], float] | None = None):
    """Linear warm-up, then cosine to 5 % of the peak over ``max(step, time)`` progress.

    Args:
        time_used: the share of the time budget spent so far (None: steps only).
    """

    def f(step: int) -> float:
        share = None if time_used is None or step < warmup else time_used()
        return warmup_cosine(step, warmup, total, 0.05, share)

    return f


class _Clock:
    """Training seconds of the run: earlier sessions (``earlier``) + this one since ``start``."""

    def __init__(self) -> None:
        self.earlier = 0.0
        self.start = time.monotonic()

    def total(self) -> float:
        return self.earlier + time.monotonic() - self.start


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms, position embeddings and tokens."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        flat = p.ndim <= 1 or name.endswith(("pos_embed", "cls_token"))
        (no_decay if flat else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def train(cfg: BaselineConfig, *, out: str | os.PathLike | None = None, resume: bool = True,
          progress: bool = True) -> TrainSummary:
    """Train ``cfg`` on its registered dataset (``cfg.data.dataset``).

    Raises:
        InputError: dataset or data root missing.
        WeightsNotFoundError: a pretrained backbone file named in the config is missing.
    """
    names, loaders, class_names = dataset_loaders(cfg.data.dataset, cfg.data.data_root,
                                                  cfg.data.max_images, cfg.data.names)
    _logger.info("%s: %d training images%s", cfg.data.dataset, len(names),
                 f" ({', '.join(names)})" if cfg.data.names else "")
    return train_on(cfg, loaders, class_names, out=out, resume=resume, progress=progress)


def train_on(cfg: BaselineConfig, loaders: Sequence[Loader], class_names: Mapping[int, str], *,
             out: str | os.PathLike | None = None, resume: bool = True,
             progress: bool = True) -> TrainSummary:
    """Train on explicit samples (``loaders``: one function per sample -> (image, masks)).

    Args:
        cfg: the config; ``cfg.model.class_names`` is filled from ``class_names`` when empty.
        loaders: the training samples.
        class_names: dataset class id -> name of the samples' ``class_ids``.
        out: run folder (default ``cfg.train.output_dir``).
        resume: continue from the newest checkpoint of ``out`` if there is one.
        progress: show a progress bar.
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed

    tc = cfg.train
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    out = Path(out or tc.output_dir)
    label_map, names_k = class_mapping(class_names, cfg.data.class_agnostic)
    model_cfg = cfg.model if cfg.model.class_names else dataclasses.replace(
        cfg.model, class_names=names_k)
    accelerator = Accelerator(
        cpu=tc.cpu, mixed_precision=tc.mixed_precision, project_dir=str(out),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=tc.seed))
    set_seed(tc.seed)
    model = build_model(model_cfg)
    model.train()
    dataset = BaselineDataset(loaders, label_map, cfg.data, scale=model_cfg.scale, seed=tc.seed)
    dl = torch.utils.data.DataLoader(dataset, batch_size=tc.batch_size, shuffle=True,
                                     collate_fn=collate, num_workers=0, drop_last=False)
    optimizer = torch.optim.AdamW(_param_groups(model, tc.weight_decay), lr=tc.lr)
    clock = _Clock()
    budget = tc.time_budget_minutes * 60 if tc.time_budget_minutes else None
    time_used = (lambda: clock.total() / budget) if budget else None
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(tc.warmup_steps, tc.steps, time_used))
    model, optimizer, dl, scheduler = accelerator.prepare(model, optimizer, dl, scheduler)

    start_step = 0
    found = latest_checkpoint(out) if resume else None
    if found is not None:
        accelerator.load_state(str(found[0]))
        start_step = found[1]
        clock.earlier = _earlier_seconds(out, start_step)
        accelerator.print(f"resumed from {found[0]} (step {start_step})")
    info = {"name": cfg.name, "dataset": cfg.data.dataset, "config": to_dict(cfg)}

    def save(step: int, complete: bool) -> None:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _save_checkpoint(accelerator, out, step, tc.keep_checkpoints)
            save_run_model(accelerator.unwrap_model(model), model_cfg, out,
                           {**info, "steps_done": step, "complete": complete,
                            "train_seconds": round(clock.total(), 1),
                            "torch_threads": torch.get_num_threads()})

    def budget_spent() -> bool:
        return budget is not None and clock.total() >= budget

    spe = len(dl)
    epoch, skip = divmod(start_step, spe)
    step, skipped, last_loss = start_step, 0, math.nan
    t0 = last_save = clock.start = time.monotonic()
    bar = tqdm(total=tc.steps, initial=step, desc=f"train {cfg.name}", unit="step",
               disable=not progress or not accelerator.is_local_main_process)
    log_path = out / LOG_FILE
    out.mkdir(parents=True, exist_ok=True)
    stop = step >= tc.steps or budget_spent()
    while not stop:
        dl.set_epoch(epoch)
        dataset.set_epoch(epoch)
        batches = accelerator.skip_first_batches(dl, skip) if skip else dl
        skip = 0
        for images, targets in batches:
            with accelerator.accumulate(model):
                losses = model(images, targets)
                loss = sum(losses.values())
                if torch.isfinite(loss):
                    accelerator.backward(loss)
                    if tc.grad_clip > 0:
                        accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip)
                    optimizer.step()
                else:
                    skipped += 1
                    _logger.warning("step %d: non-finite loss, update skipped", step)
                scheduler.step()
                optimizer.zero_grad()
            step += 1
            last_loss = float(loss.detach())
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.3f}")
            if step % tc.log_every == 0 or step == tc.steps:
                _append_log(log_path, step, losses, scheduler.get_last_lr()[0], t0)
            now = time.monotonic()
            out_of_time = tc.max_minutes is not None and now - t0 >= tc.max_minutes * 60
            stop = step >= tc.steps or out_of_time or budget_spent()
            if stop:
                break
            if now - last_save >= tc.save_every_minutes * 60:
                save(step, complete=False)
                last_save = time.monotonic()
        epoch += 1
    bar.close()
    complete = step >= tc.steps or budget_spent()
    save(step, complete=complete)
    accelerator.end_training()
    return TrainSummary(out=out, steps_done=step, start_step=start_step,
                        seconds=time.monotonic() - t0, last_loss=last_loss,
                        skipped_steps=skipped, complete=complete, total_seconds=clock.total())


def _earlier_seconds(out: Path, step: int) -> float:
    """Training seconds of the sessions before a resume at ``step`` (0 when unknown).

    ``config.yaml`` is written together with each checkpoint, so its ``train_seconds`` belong
    to the checkpoint the run resumes from when their step counts agree.
    """
    try:
        meta = yaml.safe_load((out / CONFIG_FILE).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return 0.0
    if not isinstance(meta, dict) or meta.get("steps_done") != step:
        return 0.0
    return float(meta.get("train_seconds") or 0.0)


def _append_log(path: Path, step: int, losses: dict[str, torch.Tensor], lr: float,
                t0: float) -> None:
    """One JSON line per logged step (an append-only log; a partial last line is harmless)."""
    record = {"step": step, "lr": lr, "seconds": round(time.monotonic() - t0, 1),
              "loss": round(float(sum(v.detach() for v in losses.values())), 5),
              **{k: round(float(v.detach()), 5) for k, v in losses.items()}}
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _save_checkpoint(accelerator, out: Path, step: int, keep: int) -> Path:
    """``save_state`` into ``checkpoints/.step_<n>.tmp``, rename to ``step_<n>``, prune old."""
    folder = out / CHECKPOINTS
    final, tmp = folder / f"step_{step}", folder / f".step_{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    accelerator.save_state(str(tmp))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    old = sorted((int(m.group(1)), p) for p in folder.iterdir()
                 if (m := _STEP_DIR.match(p.name)))
    for _, p in old[: max(0, len(old) - max(1, keep))]:
        shutil.rmtree(p, ignore_errors=True)
    _logger.info("saved %s", final)
    return final
