"""Few-shot LoRA fine-tuning of Zeus with accelerate (``zeusseg finetune``,
``accelerate launch -m zeusseg.finetune --config configs/finetune/<name>.yaml``).

The base model is frozen; LoRA (``zeusseg.training.lora``) adapts the configured towers on a
handful of annotated images (``zeusseg.training.fewshot``), with the zero-shot training's
crops, prompts, targets, loss and step loop (``training.data``, ``training.targets``,
``training.losses``, ``training.loop``).
BatchNorm statistics stay frozen (``checkpoints.freeze_norm_stats``) so the base is bit-identical
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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from peft import set_peft_model_state_dict
from safetensors.torch import load_file

from zeusseg.adapters import base_fingerprint, count_parameters, merge_adapter, with_input_scale
from zeusseg.config_file import parse_set_args
from zeusseg.inference.zeus_segmenter import load_zeus
from zeusseg.modeling.text_embedder import PromptEmbedder
from zeusseg.training.checkpoints import freeze_norm_stats, save_model
from zeusseg.training.data import PromptedSegmentationDataset
from zeusseg.training.fewshot import dataset_config, load_finetune_config, training_source
from zeusseg.training.loop import TrainingLoop, collate
from zeusseg.training.lora import apply_lora, save_adapter
from zeusseg.training.lr_schedule import WarmupCosine
from zeusseg.training.step import training_step

_logger = logging.getLogger(__name__)


def _adapter_hooks(acc) -> None:
    """Make ``save_state`` write the adapter only, and ``load_state`` read it back."""
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
        data, batch_size=int(tc["batch_size"]), sampler=sampler, collate_fn=collate,
        num_workers=int(tc["num_workers"]), drop_last=True,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(tc["lr"]),
                                  weight_decay=float(tc["weight_decay"]))
    schedule = WarmupCosine.from_train_config(tc)  # steps only: no ``schedule`` key here
    # a plain function: LambdaLR would save a callable object's attributes in scheduler.bin
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule(step))
    _adapter_hooks(acc)
    model, optimizer, loader, scheduler = acc.prepare(model, optimizer, loader, scheduler)

    loop = TrainingLoop(acc, out, tc, {"step": 0, "epoch": 0, "seconds": 0.0, "losses": []})
    state = loop.resume().state
    log_every = int(tc["log_every"])

    def step(batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        return training_step(acc, model, embedder, batch, optimizer,
                             tc["loss_weights"], tc["grad_clip"], params, scheduler)

    running: list[float] = []

    def after_step(loss: torch.Tensor, parts: dict[str, float]) -> bool:
        running.append(float(loss.detach()))
        if len(running) == log_every:
            rec = {"kind": "train", "step": state["step"], "lr": scheduler.get_last_lr()[0],
                   "seconds": round(loop.elapsed(), 1), "loss": round(sum(running) / log_every, 5),
                   **{k: round(v, 5) for k, v in parts.items()}}
            state["losses"].append(rec["loss"])
            running.clear()
            acc.print(json.dumps(rec))
            loop.log(rec)
        done = loop.finished()
        if done or state["step"] % int(tc["save_every_steps"]) == 0:
            loop.checkpoint()
        return done

    model.train()
    if tc["freeze_norm_stats"]:
        freeze_norm_stats(model)
    loop.run(loader, sampler, step, after_step)
    if running:
        state["losses"].append(round(sum(running) / len(running), 5))
    loop.checkpoint()
    acc.wait_for_everyone()
    peft_model = acc.unwrap_model(model)
    summary: dict[str, Any] = {
        "steps": state["step"], "seconds": round(loop.elapsed(), 1),
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


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The config named by ``--config`` with ``--output-dir`` and ``--set`` applied
    (the options of ``zeusseg.commands.finetune.add_finetune_args``).

    Raises:
        InputError: a bad config or a ``--set`` entry without ``=``.
    """
    overrides = parse_set_args(args.set)
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    return load_finetune_config(args.config, overrides)
