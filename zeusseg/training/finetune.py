"""Few-shot LoRA fine-tuning of Zeus with accelerate (``zeusseg finetune``,
``accelerate launch -m zeusseg.finetune --config configs/finetune/<name>.yaml``).

The base model is frozen; LoRA (``zeusseg.training.lora``) adapts the configured towers on a
handful of annotated images (``zeusseg.training.fewshot``), with the zero-shot training's
crops, prompts, targets and loss (``training.data``, ``training.targets``, ``training.losses``).
BatchNorm statistics stay frozen (``train.freeze_norm_stats``) so the base is bit-identical
once the adapter is removed.

Output (``output_dir``)::

    adapter/          adapter_model.safetensors, adapter_config.json, zeusseg_base.json
    checkpoints/step_<n>/   accelerate save_state: adapter only (save hook), optimizer,
                            scheduler, RNG states, trainer.json; a rerun resumes from the newest
    merged/           with --merge: model.safetensors + config.json (a full Zeus model)
    metrics.jsonl     training losses
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zeusseg.training.step import list_checkpoints, training_step

_logger = logging.getLogger(__name__)


def _collate(items: list[dict]) -> dict[str, Any]:
    return {
        "image": torch.stack([it["image"] for it in items]),  # (B, 1, h, w)
        "targets": torch.stack([it["targets"] for it in items]),  # (B, 3, h, w)
        "text": [it["text"] for it in items],
    }


def lr_lambda(tc: dict[str, Any]):
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` at
    ``max_steps`` (a factor of the base learning rate, per optimizer step)."""
    warm, total, floor = int(tc["warmup_steps"]), int(tc["max_steps"]), float(tc["min_lr_ratio"])

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def freeze_norm_stats(model: torch.nn.Module) -> int:
    """Put every BatchNorm layer in eval mode (running stats fixed); returns how many."""
    n = 0
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
            n += 1
    return n


def _adapter_hooks(acc) -> None:
    """Make ``save_state`` write the adapter only, and ``load_state`` read it back."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    def save_hook(models, weights, output_dir):
        if acc.is_main_process:
            for model in models:
                acc.unwrap_model(model).save_pretrained(output_dir, safe_serialization=True)
        weights.clear()  # nothing else: no model.safetensors of the frozen base

    def load_hook(models, input_dir):
        while models:
            model = acc.unwrap_model(models.pop())
            state = load_file(str(Path(input_dir) / "adapter_model.safetensors"))
            set_peft_model_state_dict(model, state)

    acc.register_save_state_pre_hook(save_hook)
    acc.register_load_state_pre_hook(load_hook)


def finetune(
    config: dict[str, Any], *, merge: bool = False, embedder=None, base_model=None
) -> dict[str, Any]:
    """Fine-tune a LoRA adapter as configured (``fewshot.load_finetune_config``).

    Args:
        config: the validated config.
        merge: also write ``output_dir/merged`` (a full model with the adapter merged in).
        embedder: a ``PromptEmbedder`` instead of the base's text encoder (tests).
        base_model: a ready base model instead of loading ``config["base"]`` (tests).

    Returns:
        Summary: ``adapter`` folder, ``merged`` folder or None, ``steps``, ``seconds``,
        ``trainable_params``, ``all_params``, ``adapter_bytes``, ``train_images``,
        ``first_loss``/``last_loss`` (means over the first/last ``log_every`` steps).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from zeusseg.modeling.text_embedder import PromptEmbedder
    from zeusseg.training.data import PromptedSegmentationDataset
    from zeusseg.training.fewshot import dataset_config, training_source
    from zeusseg.training.lora import (
        apply_lora,
        base_fingerprint,
        count_parameters,
        merge_adapter,
        save_adapter,
        with_input_scale,
    )
    from zeusseg.training.train import save_model
    from zeusseg.inference.zeus_segmenter import load_zeus

    tc = config["train"]
    torch.set_num_threads(int(tc["num_threads"]))
    out = Path(config["output_dir"])
    acc = Accelerator(mixed_precision=tc["mixed_precision"],
                      gradient_accumulation_steps=int(tc["grad_accum"]))
    set_seed(int(config["seed"]))
    base = base_model if base_model is not None else load_zeus(str(config["base"]))
    base_id = str(config["base"])
    base.zeus_model_id = base_id
    base_info = {"model": base_id, "sha256": base_fingerprint(base)}
    source = training_source(config)
    data = PromptedSegmentationDataset(dataset_config(config), sources=[source])
    out.mkdir(parents=True, exist_ok=True)  # only now: bad data leaves no output folder
    input_scale = round(float(np.mean([r.factor for r in data.records])), 4)
    model = apply_lora(base, config["lora"])
    trainable, total = count_parameters(model)
    acc.print(f"{base_id}: LoRA r={config['lora']['r']} trainable params: {trainable:,} || "
              f"all params: {total:,} || trainable%: {100 * trainable / total:.4f}")
    embedder = embedder or PromptEmbedder(base.zeus_cfg.text_cfg.encoder)
    embedder.warm([t for texts in data.prompts.table.values() for t in texts]
                  + [source.prompt, *source.class_names.values(), *data.config["negative_texts"]])
    sampler = data.sampler(seed=int(config["seed"]))
    loader = torch.utils.data.DataLoader(
        data, batch_size=int(tc["batch_size"]), sampler=sampler, collate_fn=_collate,
        num_workers=int(tc["num_workers"]), drop_last=True,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(tc["lr"]),
                                  weight_decay=float(tc["weight_decay"]))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(tc))
    _adapter_hooks(acc)
    model, optimizer, loader, scheduler = acc.prepare(model, optimizer, loader, scheduler)

    state = {"step": 0, "epoch": 0, "seconds": 0.0, "losses": []}
    ckpts = list_checkpoints(out)
    if ckpts:
        acc.load_state(str(ckpts[-1]))
        state = json.loads((ckpts[-1] / "trainer.json").read_text())
        acc.print(f"resumed from {ckpts[-1]} (step {state['step']})")
    max_steps, steps_per_epoch = int(tc["max_steps"]), len(loader)
    limit = None if tc["time_limit_min"] is None else float(tc["time_limit_min"]) * 60
    t_start, base_seconds = time.time(), float(state["seconds"])
    log_every = int(tc["log_every"])

    def elapsed() -> float:
        return base_seconds + time.time() - t_start

    def checkpoint() -> None:
        folder = out / "checkpoints" / f"step_{state['step']}"
        if (folder / "trainer.json").is_file():
            return
        state["seconds"] = elapsed()
        acc.save_state(str(folder))
        if acc.is_main_process:
            (folder / "trainer.json").write_text(json.dumps(state))
            for old in list_checkpoints(out)[: -int(tc["keep_checkpoints"])]:
                shutil.rmtree(old, ignore_errors=True)

    model.train()
    if tc["freeze_norm_stats"]:
        freeze_norm_stats(model)
    running: list[float] = []
    while state["step"] < max_steps and (limit is None or elapsed() < limit):
        sampler.set_epoch(state["epoch"])
        skip = state["step"] * int(tc["grad_accum"]) % steps_per_epoch
        epoch_loader = acc.skip_first_batches(loader, skip) if skip else loader
        for batch in epoch_loader:
            loss, parts = training_step(acc, model, embedder, batch, optimizer,
                                        tc["loss_weights"], tc["grad_clip"], params, scheduler)
            if not acc.sync_gradients:
                continue
            state["step"] += 1
            running.append(float(loss.detach()))
            if len(running) == log_every:
                rec = {"kind": "train", "step": state["step"], "lr": scheduler.get_last_lr()[0],
                       "seconds": round(elapsed(), 1), "loss": round(sum(running) / log_every, 5),
                       **{k: round(v, 5) for k, v in parts.items()}}
                state["losses"].append(rec["loss"])
                running = []
                acc.print(json.dumps(rec))
                if acc.is_main_process:
                    with open(out / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(rec) + "\n")
            done = state["step"] >= max_steps or (limit is not None and elapsed() >= limit)
            if done or state["step"] % int(tc["save_every_steps"]) == 0:
                checkpoint()
            if done:
                break
        else:
            state["epoch"] += 1
    if running:
        state["losses"].append(round(sum(running) / len(running), 5))
    checkpoint()
    acc.wait_for_everyone()
    peft_model = acc.unwrap_model(model)
    summary: dict[str, Any] = {
        "steps": state["step"], "seconds": round(elapsed(), 1),
        "trainable_params": trainable, "all_params": total,
        "train_images": [str(s.name) for s in source.samples], "input_scale": input_scale,
        "first_loss": state["losses"][0] if state["losses"] else None,
        "last_loss": state["losses"][-1] if state["losses"] else None,
        "adapter": None, "merged": None,
    }
    if acc.is_main_process:
        extra = {"lora": config["lora"], "prompt": source.prompt, "input_scale": input_scale,
                 "class_names": {str(k): v for k, v in source.class_names.items()},
                 "train": {k: summary[k] for k in ("steps", "seconds", "train_images")},
                 "finetune_config": config}
        folder = save_adapter(peft_model, out / "adapter", base_info, extra)
        summary["adapter"] = str(folder)
        summary["adapter_bytes"] = (folder / "adapter_model.safetensors").stat().st_size
        if merge:
            merged = merge_adapter(peft_model)
            merged.zeus_cfg = with_input_scale(merged.zeus_cfg, input_scale)
            save_model(merged, out / "merged", {"base": base_info, "adapter": str(folder),
                                                "finetune_config": config})
            summary["merged"] = str(out / "merged")
    acc.end_training()
    return summary


def get_arg_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m zeusseg.finetune`` (also used by ``zeusseg finetune``)."""
    p = argparse.ArgumentParser(prog="zeusseg finetune",
                                description="Few-shot LoRA fine-tuning of a Zeus model.")
    add_finetune_args(p)
    return p


def add_finetune_args(p: argparse.ArgumentParser) -> None:
    """Add the fine-tuning options to a parser."""
    g = p.add_argument_group("Training")
    g.add_argument("--config", required=True, help="fine-tuning YAML (configs/finetune/*.yaml)")
    g.add_argument("--output-dir", default=None, help="overrides the config's output_dir")
    g.add_argument("--merge", action="store_true",
                   help="also write OUTPUT_DIR/merged: the base with the adapter merged in")
    g.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override config entries, e.g. train.max_steps=10 (YAML values)")


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The config named by ``--config`` with ``--output-dir`` and ``--set`` applied.

    Raises:
        InputError: a bad config or a ``--set`` entry without ``=``.
    """
    from zeusseg.config_file import parse_set_args
    from zeusseg.training.fewshot import load_finetune_config

    overrides = parse_set_args(args.set)
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    return load_finetune_config(args.config, overrides)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``accelerate launch -m zeusseg.finetune --config ...``."""
    args = get_arg_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    summary = finetune(config_from_args(args), merge=args.merge)
    _logger.info("finetune: %s", json.dumps(summary))
    return 0
