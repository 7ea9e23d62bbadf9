"""Fine-tune from one corrected image: a one-image LoRA run with ``zeusseg.training.finetune``.

``finetune_on_image`` writes the image and its labels as a training folder
(``OUT/data/images/<name>.png``, ``OUT/data/labels/<name>.tif``) and the fine-tuning config
that trains on it (``OUT/finetune.yaml``, the format of ``configs/finetune/*.yaml``), then runs
``finetune``. The adapter lands in ``OUT/adapter``; the same run can be repeated with
``zeusseg finetune --config OUT/finetune.yaml``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from zeusseg.instructions import load_prompts
from zeusseg.io import write_label_tiff
from zeusseg.structures import InstanceMasks, MicroscopyImage

_logger = logging.getLogger(__name__)

OTHER_DOMAIN = {"viruses": "cell nuclei", "nuclei": "virus particles", "cells": "virus particles"}
"""Negative prompt per knowledge domain: a prompt of the other domain must give nothing."""


@dataclass(frozen=True)
class AdaptOptions:
    """Settings of a one-image LoRA run (the rest are ``configs/finetune`` defaults).

    Attributes:
        steps: optimizer steps.
        batch_size: crops per step.
        crop_size: crop side (px) after rescaling to ``target_diameter``.
        lr: learning rate.
        rank: LoRA rank (alpha = 2 * rank).
        target_diameter: objects are resized to look this wide (px), as in training.
        seed: random seed.
    """

    steps: int = 50
    batch_size: int = 4
    crop_size: int = 256
    lr: float = 2.0e-3
    rank: int = 8
    target_diameter: float = 27.0
    seed: int = 0


def finetune_config(
    out: Path, name: str, prompt: str, base: str, options: AdaptOptions
) -> dict[str, Any]:
    """The fine-tuning config of a one-image run (before ``load_finetune_config`` checks it)."""
    entry = load_prompts().find(prompt)
    negative = OTHER_DOMAIN.get(entry.domain) if entry is not None else None
    steps = int(options.steps)
    return {
        "seed": int(options.seed),
        "base": base,
        "output_dir": str(out),
        "data": {
            "folder": str(out / "data"),
            "names": [name],
            "prompt": prompt,
            "target_diameter": float(options.target_diameter),
            "crop_size": int(options.crop_size),
            "negative_prob": 0.1 if negative else 0.0,
            "negative_texts": [negative] if negative else [],
            "samples_per_epoch": max(8, steps * int(options.batch_size)),
        },
        "lora": {"r": int(options.rank), "alpha": 2 * int(options.rank)},
        "train": {
            "max_steps": steps,
            "batch_size": int(options.batch_size),
            "lr": float(options.lr),
            "warmup_steps": max(1, min(10, steps // 5)),
            "save_every_steps": steps,
            "keep_checkpoints": 1,
            "log_every": max(1, min(10, steps // 2)),
            "num_threads": 1,
        },
    }


def next_run_dir(root: str | os.PathLike, name: str) -> Path:
    """``root/<name>-<n>`` with the first unused n (a fresh folder, so nothing resumes)."""
    root = Path(root)
    n = 1
    while (root / f"{name}-{n}").exists():
        n += 1
    return root / f"{name}-{n}"


def finetune_on_image(
    image: MicroscopyImage,
    masks: InstanceMasks,
    prompt: str,
    out: str | os.PathLike,
    *,
    base: str = "zeus-default",
    options: AdaptOptions | None = None,
    embedder=None,
    base_model=None,
) -> dict[str, Any]:
    """Train a LoRA adapter on one image and its (corrected) instances.

    Args:
        image: the image (data float32 in [0, 1]); its ``name`` names the files.
        masks: the instances to learn (all of class ``prompt``).
        prompt: the text the adapter answers.
        out: a new run folder (see the module docstring).
        base: the base model (trained-model name or folder).
        options: run settings (default ``AdaptOptions()``).
        embedder: a ``PromptEmbedder`` instead of the base's text encoder (tests).
        base_model: a ready base model instead of loading ``base`` (tests).

    Returns:
        The summary of ``zeusseg.training.finetune.finetune`` (``adapter`` folder, ``steps``,
        ``seconds``, losses, ...) plus ``config`` (the YAML written).

    Raises:
        ValueError: ``masks`` holds no instance, or its size differs from the image.
    """
    from zeusseg.training.fewshot import load_finetune_config
    from zeusseg.training.finetune import finetune  # needs the train extra (accelerate, peft)

    if len(masks) == 0:
        raise ValueError("fine-tuning needs at least one instance in the labels")
    if masks.shape != image.shape:
        raise ValueError(f"labels {masks.shape} and image {image.shape} differ in size")
    options = options or AdaptOptions()
    out = Path(out)
    name = "image"
    (out / "data" / "images").mkdir(parents=True, exist_ok=True)
    (out / "data" / "labels").mkdir(parents=True, exist_ok=True)
    pixels = np.clip(np.rint(image.grey() * 255), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(out / "data" / "images" / f"{name}.png")
    one_class = InstanceMasks(labels=masks.labels, ids=masks.ids, class_names={1: prompt})
    write_label_tiff(out / "data" / "labels" / f"{name}.tif", one_class)
    config_path = out / "finetune.yaml"
    cfg = finetune_config(out, name, prompt, base, options)
    config_path.write_text(f"# one-image LoRA run from the napari widget ({image.name})\n"
                           + yaml.safe_dump(cfg, sort_keys=False))
    config = load_finetune_config(config_path)
    _logger.info("fine-tuning %s on %s (%d instances, %d steps) -> %s", base, image.name,
                 len(masks), options.steps, out)
    summary = finetune(config, embedder=embedder, base_model=base_model)
    summary["config"] = str(config_path)
    return summary
