"""Accelerate-native training of Zeus (``zeusseg train`` / ``accelerate launch -m zeusseg.train``).

The config is one YAML file (``configs/zeroshot/default.yaml``)::

    seed: 0
    output_dir: /work/runs/zeus-default   # checkpoints/, best/, train.log, metrics.jsonl
    model: zeus-hybrid-s                  # architecture name, config .json or dict
    init_checkpoint: null                 # weights to start from
    lora: null                            # {r, alpha, targets, ...}: train LoRA adapters only
    data: {...}                           # zeusseg.training.data config
    train: {max_steps, batch_size, grad_accum, lr, ...}   # see TRAIN_DEFAULTS

Checkpoints: ``save_state(output_dir/checkpoints/step_<n>)`` every ``save_every_min`` minutes (the
newest ``keep_checkpoints`` kept); a rerun of the same command resumes from the newest one
(``load_state`` + ``skip_first_batches``). Validation with the project scorer every
``eval_every_min`` minutes; the best model (mean F1/AP over the validation sets) is written to
``output_dir/best`` (``model.safetensors`` + ``config.json``). The text encoder is frozen, so
the embeddings of the (few) prompt texts are computed once and cached.

With a ``lora`` section (``zeusseg.training.lora.lora_config``: the same keys as in a
fine-tuning config) the model built from ``model`` + ``init_checkpoint`` is frozen and only
peft LoRA adapters train (the ablation's LoRA-vs-full axis); ``best`` then holds the merged
weights, so it loads like any trained model.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from zeusseg.training.step import list_checkpoints, training_step

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
    from zeusseg.config_file import apply_overrides, read_config
    from zeusseg.errors import InputError
    from zeusseg.training.data import data_config

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
        from zeusseg.training.lora import lora_config

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


def _collate(items: list[dict]) -> dict[str, Any]:
    return {
        "image": torch.stack([it["image"] for it in items]),
        "targets": torch.stack([it["targets"] for it in items]),
        "text": [it["text"] for it in items],
        "positive": torch.tensor([it["positive"] for it in items]),
        **({"weights": torch.stack([it["weights"] for it in items])}
           if all("weights" in it for it in items) else {}),
    }


class ThreadGovernor:
    """``num_threads: auto``: 2+ torch threads while the CPU is otherwise idle, 1 when shared.

    On a CPU shared with other jobs, more threads than free cores make OpenMP spin and wait
    (measured here: one training step took 3x longer with 2 threads than with 1 while other
    jobs ran, and 1.6x shorter when the machine was idle). Every ``update`` compares the
    machine's busy time (``/proc/stat``) with this process's own CPU time since the last call.
    """

    def __init__(self, max_threads: int) -> None:
        self.max_threads = max(1, max_threads)
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                vals = [int(v) for v in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        busy = (sum(vals) - vals[3] - vals[4]) / self.hz
        t = os.times()
        return busy, t.user + t.system, time.monotonic()

    def update(self) -> int:
        """Set and return the torch thread count for the next steps."""
        now = self._sample()
        if now is None or self._last is None:
            return torch.get_num_threads()
        busy, own, wall = (a - b for a, b in zip(now, self._last, strict=True))
        self._last = now
        if wall <= 0:
            return torch.get_num_threads()
        others = (busy - own) / wall  # cores used by everything else (incl. data workers)
        free = (os.cpu_count() or 1) - others
        n = int(min(self.max_threads, max(1, round(free - 0.2))))
        if n != torch.get_num_threads():
            _logger.info("torch threads %d -> %d (other load %.2f cores)",
                         torch.get_num_threads(), n, others)
            torch.set_num_threads(n)
        return n


def lr_factor(tc: dict[str, Any], step: int, seconds: float) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio``.

    The decay follows ``step / max_steps``, or with ``schedule: time`` whichever of that and
    ``seconds / time_limit`` is further along (so a CPU run of fixed length ends annealed).
    """
    warm, total, floor = int(tc["warmup_steps"]), int(tc["max_steps"]), float(tc["min_lr_ratio"])
    if step < warm:
        return (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    if tc["schedule"] == "time" and tc["time_limit_min"]:
        t = max(t, seconds / (float(tc["time_limit_min"]) * 60))
    t = min(1.0, t)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def save_model(model: torch.nn.Module, folder: Path, extra: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` (fp32) + ``config.json`` (``model_cfg`` + ``extra``)."""
    from safetensors.torch import save_file

    from zeusseg.io.atomic import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "merge_and_unload"):  # LoRA training: save the merged weights
        import copy

        from zeusseg.training.lora import merge_adapter

        model = merge_adapter(copy.deepcopy(model))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    meta = {"model_cfg": model.zeus_cfg.to_dict(), **extra}
    with atomic_path(folder / "config.json") as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2))
    return folder


def train(
    config: dict[str, Any], args: argparse.Namespace | None = None, *, embedder=None
) -> dict[str, float]:
    """Train Zeus as configured; returns the best validation scores (empty if none ran).

    Args:
        config: from ``load_config``.
        args: the parsed command line (unused; kept for the accelerate example shape).
        embedder: a ``PromptEmbedder`` to use instead of the model's text encoder (tests).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from zeusseg.factory import build_zeus
    from zeusseg.modeling.text_embedder import PromptEmbedder
    from zeusseg.training.data import PromptedSegmentationDataset, ValidationSet
    from zeusseg.training.validate import validate

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
        from zeusseg.training.lora import apply_lora

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
        data, batch_size=int(tc["batch_size"]), sampler=sampler, collate_fn=_collate,
        num_workers=int(tc["num_workers"]), drop_last=True,
        persistent_workers=int(tc["num_workers"]) > 0,
    )
    optimizer = torch.optim.AdamW(
        param_groups(model, float(tc["lr"]), float(tc["weight_decay"]), tc["lr_scales"]),
        lr=float(tc["lr"]))
    model, optimizer, loader = acc.prepare(model, optimizer, loader)
    base_lrs = [g["lr"] for g in optimizer.param_groups]

    state = {"step": 0, "epoch": 0, "seconds": 0.0, "best": None}
    ckpts = list_checkpoints(out)
    if ckpts:
        acc.load_state(str(ckpts[-1]))
        state = json.loads((ckpts[-1] / "trainer.json").read_text())
        acc.print(f"resumed from {ckpts[-1]} (step {state['step']})")
    raw = acc.unwrap_model(model)
    log_path = out / "metrics.jsonl"
    max_steps, steps_per_epoch = int(tc["max_steps"]), len(loader)
    limit = None if tc["time_limit_min"] is None else float(tc["time_limit_min"]) * 60
    t_start, t_save, t_eval = time.time(), time.time(), time.time()
    base_seconds = float(state["seconds"])

    def elapsed() -> float:
        return base_seconds + time.time() - t_start

    def checkpoint() -> None:
        folder = out / "checkpoints" / f"step_{state['step']}"
        if (folder / "trainer.json").is_file():
            return
        acc.save_state(str(folder))
        if acc.is_main_process:
            state["seconds"] = elapsed()
            (folder / "trainer.json").write_text(json.dumps(state))
            for old in list_checkpoints(out)[: -int(tc["keep_checkpoints"])]:
                shutil.rmtree(old, ignore_errors=True)

    def train_mode() -> None:
        model.train()
        if lora:  # the frozen base keeps its BatchNorm statistics too
            from zeusseg.training.finetune import freeze_norm_stats

            freeze_norm_stats(model)

    def evaluate() -> None:
        scores = validate(raw, items, embedder, gather=acc.gather_for_metrics,
                          rank=acc.process_index, world=acc.num_processes, **tc["decode"])
        train_mode()
        scores["step"] = state["step"]
        acc.print("validation " + json.dumps({k: round(v, 4) for k, v in scores.items()}))
        if acc.is_main_process:
            with open(log_path, "a") as f:
                f.write(json.dumps({"kind": "val", **scores}) + "\n")
            if state["best"] is None or scores["score"] > state["best"]["score"]:
                state["best"] = scores
                save_model(raw, out / "best", {"scores": scores, "train_config": config})

    bar = tqdm(total=max_steps, initial=state["step"], disable=not (tc["progress"] and
               acc.is_local_main_process), desc="train", dynamic_ncols=True)
    running: dict[str, float] = {}
    train_mode()
    while state["step"] < max_steps and (limit is None or elapsed() < limit):
        sampler.set_epoch(state["epoch"])
        skip = state["step"] * int(tc["grad_accum"]) % steps_per_epoch
        epoch_loader = acc.skip_first_batches(loader, skip) if skip else loader
        for batch in epoch_loader:
            factor = lr_factor(tc, state["step"], elapsed())
            for g, lr in zip(optimizer.param_groups, base_lrs, strict=True):
                g["lr"] = lr * factor
            loss, parts = training_step(acc, model, embedder, batch, optimizer,
                                        tc["loss_weights"], tc["grad_clip"])
            if not acc.sync_gradients:
                continue
            state["step"] += 1
            bar.update(1)
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                running[k] = running.get(k, 0.0) + v
            if state["step"] % int(tc["log_every"]) == 0:
                if governor is not None:
                    governor.update()
                avg = {k: v / int(tc["log_every"]) for k, v in running.items()}
                running = {}
                bar.set_postfix(loss=f"{avg['loss']:.4f}")
                rec = {"kind": "train", "step": state["step"],
                       "lr": optimizer.param_groups[0]["lr"], "seconds": round(elapsed(), 1),
                       "threads": torch.get_num_threads(),
                       **{k: round(v, 5) for k, v in avg.items()}}
                _logger.info(json.dumps(rec))
                if acc.is_main_process:
                    with open(log_path, "a") as f:
                        f.write(json.dumps(rec) + "\n")
            done = state["step"] >= max_steps or (limit is not None and elapsed() >= limit)
            if time.time() - t_eval > float(tc["eval_every_min"]) * 60 and not done:
                evaluate()
                t_eval = time.time()
            if time.time() - t_save > float(tc["save_every_min"]) * 60 or done:
                checkpoint()
                t_save = time.time()
            if done:
                break
        else:
            state["epoch"] += 1
    bar.close()
    if tc["eval_at_end"] and items:
        evaluate()
        (out / "checkpoints" / f"step_{state['step']}" / "trainer.json").unlink(missing_ok=True)
    checkpoint()
    acc.end_training()
    return state["best"] or {}


def get_arg_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m zeusseg.train`` (also used by ``zeusseg train``)."""
    p = argparse.ArgumentParser(prog="zeusseg train", description="Train a Zeus model.")
    add_train_args(p)
    return p


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Add the training options to a parser."""
    g = p.add_argument_group("Training")
    g.add_argument("--config", required=True, help="training YAML (configs/zeroshot/*.yaml)")
    g.add_argument("--output-dir", default=None, help="overrides the config's output_dir")
    g.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override config entries, e.g. train.max_steps=10 (YAML values)")


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The config named by ``--config`` with ``--output-dir`` and ``--set`` applied.

    Raises:
        InputError: a ``--set`` entry without ``=``; a bad config file.
    """
    from zeusseg.config_file import parse_set_args

    overrides = parse_set_args(args.set)
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    return load_config(args.config, overrides)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``accelerate launch -m zeusseg.train --config ...``."""
    args = get_arg_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    best = train(config_from_args(args), args)
    _logger.info("best validation: %s", json.dumps(best))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
