"""Accelerate-native training of Zeus (``zeusseg train`` / ``accelerate launch -m zeusseg.train``).

The config is one YAML file (``configs/zeroshot/default.yaml``)::

    seed: 0
    output_dir: /work/runs/zeus-default   # checkpoints/, best/, train.log, metrics.jsonl
    model: zeus-hybrid-s                  # architecture name, config .json or dict
    init_checkpoint: null                 # weights to start from
    lora: null                            # {r, alpha, targets, ...}: train LoRA adapters only
    data: {...}                           # zeusseg.training.data_config
    train: {max_steps, batch_size, grad_accum, lr, ...}   # see TRAIN_DEFAULTS

Checkpoints (``zeusseg.training.loop``): ``save_state(output_dir/checkpoints/step_<n>)`` every
``save_every_min`` minutes (the newest ``keep_checkpoints`` kept); a rerun of the same command
resumes from the newest one (``load_state`` + ``skip_first_batches``). Validation with the
project scorer every ``eval_every_min`` minutes; the best model (mean F1/AP over the
validation sets) is written to ``output_dir/best`` (``model.safetensors`` + ``config.json``).
The text encoder is frozen, so the embeddings of the (few) prompt texts are computed once and
cached.

With a ``lora`` section (``zeusseg.training.lora.lora_config``: the same keys as in a
fine-tuning config) the model built from ``model`` + ``init_checkpoint`` is frozen and only
peft LoRA adapters train (the ablation's LoRA-vs-full axis); ``best`` then holds the merged
weights, so it loads like any trained model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from zeusseg.config_file import apply_overrides, parse_set_args, read_config
from zeusseg.errors import InputError
from zeusseg.factory import build_zeus
from zeusseg.modeling.text_embedder import PromptEmbedder
from zeusseg.training.checkpoints import freeze_norm_stats, save_model
from zeusseg.training.data import PromptedSegmentationDataset
from zeusseg.training.data_config import data_config
from zeusseg.training.loop import TrainingLoop, collate
from zeusseg.training.lora import apply_lora, lora_config
from zeusseg.training.lr_schedule import WarmupCosine
from zeusseg.training.step import training_step
from zeusseg.training.thread_governor import ThreadGovernor
from zeusseg.training.validate import validate
from zeusseg.training.validation_set import ValidationSet

_logger = logging.getLogger(__name__)

TRAIN_DEFAULTS: dict[str, Any] = {
    "max_steps": 2000,
    "time_limit_min": None,
    "batch_size": 8,
    "grad_accum": 1,
    "lr": 2e-3,
    "lr_scales": {},  # parameter-name prefix -> lr factor (e.g. a pretrained backbone: 0.2)
    "min_lr_ratio": 0.05,
    "weight_decay": 0.05,
    "warmup_steps": 100,
    "schedule": "steps",
    "grad_clip": 1.0,
    "mixed_precision": "no",
    "num_threads": 2,
    "num_workers": 1,
    "save_every_min": 5.0,
    "keep_checkpoints": 2,
    "eval_every_min": 10.0,
    "eval_at_end": True,
    "val_max_images": None,
    "log_every": 20,
    "loss_weights": [1.0, 1.0, 1.0, 1.0],
    "decode": {},
    "progress": True,
}


TOP_LEVEL_KEYS = {"seed", "output_dir", "model", "init_checkpoint", "lora", "data", "train"}


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a training YAML; ``train`` gets the defaults; ``overrides`` (dotted keys) win.

    Raises:
        InputError: unreadable YAML, an unknown top-level key or an unknown ``train`` key
            (the message names the file and the key).
    """
    cfg = apply_overrides(read_config(path, "training config"), overrides)
    unknown_top = set(cfg) - TOP_LEVEL_KEYS
    if unknown_top:
        raise InputError(
            path, f"unknown key(s) {sorted(unknown_top)}; valid: {sorted(TOP_LEVEL_KEYS)}"
        )
    unknown = set(cfg.get("train", {})) - set(TRAIN_DEFAULTS)
    if unknown:
        raise InputError(
            path, f"unknown train key(s) {sorted(unknown)}; valid: {sorted(TRAIN_DEFAULTS)}"
        )
    try:
        data_config(cfg.get("data"))  # unknown data/augment/source keys fail before any work
    except (ValueError, TypeError) as err:
        raise InputError(path, f"data: {err}") from err
    if lora_section(cfg) is not None:
        try:
            lora_config(lora_section(cfg))
        except (ValueError, TypeError) as err:
            raise InputError(path, f"lora: {err}") from err
    cfg["train"] = {**TRAIN_DEFAULTS, **cfg.get("train", {})}
    cfg.setdefault("seed", 0)
    cfg.setdefault("model", "zeus-hybrid-s")
    cfg.setdefault("output_dir", "runs/zeus")
    return cfg


def lora_section(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The config's ``lora`` section: None (absent, null or false) = full training;
    ``true`` = LoRA with the default settings ({})."""
    lora = cfg.get("lora")
    if lora is None or lora is False:
        return None
    return lora if isinstance(lora, dict) else {}


def param_groups(
    model: torch.nn.Module, lr: float, weight_decay: float, lr_scales: dict[str, float]
) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices/kernels only (not norms, biases, position
    embeddings); a parameter whose name starts with a ``lr_scales`` prefix gets ``lr * factor``
    (the first matching prefix wins). Empty groups are left out.
    """
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = next((float(f) for pre, f in lr_scales.items() if name.startswith(pre)), 1.0)
        decay = p.ndim >= 2 and "pos_embed" not in name
        groups.setdefault((scale, decay), []).append(p)
    order = sorted(groups, key=lambda key: (-key[0], not key[1]))  # decayed group first
    return [{"params": groups[key], "lr": lr * key[0],
             "weight_decay": weight_decay if key[1] else 0.0} for key in order]


def train(
    config: dict[str, Any], args: argparse.Namespace | None = None, *, embedder=None
) -> dict[str, float]:
    """Train Zeus as configured; returns the best validation scores (empty if none ran).

    Args:
        config: from ``load_config``.
        args: the parsed command line (unused; kept for the accelerate example shape).
        embedder: a ``PromptEmbedder`` to use instead of the model's text encoder (tests).
    """
    tc = config["train"]
    governor = None
    if tc["num_threads"] == "auto":
        governor = ThreadGovernor(os.cpu_count() or 1)
        torch.set_num_threads(1)
    else:
        torch.set_num_threads(int(tc["num_threads"]))
    out = Path(config["output_dir"])
    acc = Accelerator(
        mixed_precision=tc["mixed_precision"], gradient_accumulation_steps=int(tc["grad_accum"])
    )
    set_seed(int(config["seed"]))
    model = build_zeus(config["model"], config.get("init_checkpoint"))
    if getattr(model.fusion, "mode", "") == "none":  # text ignored: negatives would contradict
        config["data"] = {**(config.get("data") or {}), "negative_prob": 0.0}
        _logger.warning("fusion mode 'none' ignores the text: data.negative_prob forced to 0")
    lora = lora_section(config) is not None
    if lora:
        model = apply_lora(model, lora_section(config))
    embedder = embedder or PromptEmbedder(model.zeus_cfg.text_cfg.encoder)
    dcfg = dict(config.get("data") or {})
    if dcfg.get("instruction_mode") in ("template", "llm") and not dcfg.get("instruction_cache"):
        dcfg["instruction_cache"] = str(out / "instructions.jsonl")  # made on first use
    data = PromptedSegmentationDataset(dcfg)
    embedder.warm([t for texts in data.prompts.table.values() for t in texts])
    items = ValidationSet(config.get("data"), max_images=tc["val_max_images"])
    out.mkdir(parents=True, exist_ok=True)  # only now: bad data leaves no output folder
    sampler = data.sampler(seed=int(config["seed"]))
    loader = torch.utils.data.DataLoader(
        data, batch_size=int(tc["batch_size"]), sampler=sampler, collate_fn=collate,
        num_workers=int(tc["num_workers"]), drop_last=True,
        persistent_workers=int(tc["num_workers"]) > 0,
    )
    optimizer = torch.optim.AdamW(
        param_groups(model, float(tc["lr"]), float(tc["weight_decay"]), tc["lr_scales"]),
        lr=float(tc["lr"]))
    model, optimizer, loader = acc.prepare(model, optimizer, loader)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    schedule = WarmupCosine.from_train_config(tc)

    loop = TrainingLoop(acc, out, tc, {"step": 0, "epoch": 0, "seconds": 0.0, "best": None})
    state = loop.resume().state
    raw = acc.unwrap_model(model)
    t_save = t_eval = time.time()

    def train_mode() -> None:
        model.train()
        if lora:  # the frozen base keeps its BatchNorm statistics too
            freeze_norm_stats(model)

    def evaluate() -> None:
        scores = validate(raw, items, embedder, gather=acc.gather_for_metrics,
                          rank=acc.process_index, world=acc.num_processes, **tc["decode"])
        train_mode()
        scores["step"] = state["step"]
        acc.print("validation " + json.dumps({k: round(v, 4) for k, v in scores.items()}))
        loop.log({"kind": "val", **scores})
        if acc.is_main_process and (state["best"] is None
                                    or scores["score"] > state["best"]["score"]):
            state["best"] = scores
            save_model(raw, out / "best", {"scores": scores, "train_config": config})

    def step(batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        factor = schedule(state["step"], loop.elapsed())
        for g, lr in zip(optimizer.param_groups, base_lrs, strict=True):
            g["lr"] = lr * factor
        return training_step(acc, model, embedder, batch, optimizer,
                             tc["loss_weights"], tc["grad_clip"])

    bar = tqdm(total=loop.max_steps, initial=state["step"], disable=not (
        tc["progress"] and acc.is_local_main_process), desc="train", dynamic_ncols=True)
    running: dict[str, float] = {}

    def after_step(loss: torch.Tensor, parts: dict[str, float]) -> bool:
        nonlocal t_eval, t_save
        bar.update(1)
        for k, v in {"loss": float(loss.detach()), **parts}.items():
            running[k] = running.get(k, 0.0) + v
        if state["step"] % int(tc["log_every"]) == 0:
            if governor is not None:
                governor.update()
            avg = {k: v / int(tc["log_every"]) for k, v in running.items()}
            running.clear()
            bar.set_postfix(loss=f"{avg['loss']:.4f}")
            rec = {"kind": "train", "step": state["step"],
                   "lr": optimizer.param_groups[0]["lr"], "seconds": round(loop.elapsed(), 1),
                   "threads": torch.get_num_threads(),
                   **{k: round(v, 5) for k, v in avg.items()}}
            _logger.info(json.dumps(rec))
            loop.log(rec)
        done = loop.finished()
        if time.time() - t_eval > float(tc["eval_every_min"]) * 60 and not done:
            evaluate()
            t_eval = time.time()
        if time.time() - t_save > float(tc["save_every_min"]) * 60 or done:
            loop.checkpoint()
            t_save = time.time()
        return done

    train_mode()
    loop.run(loader, sampler, step, after_step)
    bar.close()
    if tc["eval_at_end"] and items:
        evaluate()
        (out / "checkpoints" / f"step_{state['step']}" / "trainer.json").unlink(missing_ok=True)
    loop.checkpoint()
    acc.end_training()
    return state["best"] or {}


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The config named by ``--config`` with ``--output-dir`` and ``--set`` applied
    (the options of ``zeusseg.commands.train.add_train_args``).

    Raises:
        InputError: a ``--set`` entry without ``=``; a bad config file.
    """
    overrides = parse_set_args(args.set)
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    return load_config(args.config, overrides)
