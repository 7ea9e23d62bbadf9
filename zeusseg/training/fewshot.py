"""Fine-tuning configs and N-shot training sets from any COCO JSON or label-image folder.

A fine-tuning config is one YAML file (``configs/finetune/*.yaml``)::

    seed: 0
    base: zeus-default            # trained name, architecture, config .json, or a folder with
                                  # config.json + model.safetensors (what training writes)
    output_dir: runs/finetune/x   # adapter/, checkpoints/step_<n>/, merged/, metrics.jsonl
    data:
      dataset: coelho-u2os        # exactly one of dataset (registry name), folder
      folder: null                #   (images/ + labels/ with the same stems), coco (a COCO
      coco: null                  #   JSON; images in image_dir, default images/ next to it)
      names: [dna-0]              # the training images by file stem, or
      shots: null                 #   a count drawn with the config's seed
      prompt: null                # the class-agnostic prompt (default: the dataset's, or
                                  #   the single COCO category's name, or "objects")
      target_diameter: 27.0       # resize so the median object is this wide (px), or
      scale: null                 #   a fixed factor
      ...                         # crop_size, negative_prob, augment, ... (training.data)
    lora: {r: 8, alpha: 16, dropout: 0.0, targets: {...}, modules_to_save: []}
    train: {max_steps: 300, time_limit_min: 8, batch_size: 8, lr: 1.0e-3, ...}

Every unknown key is an ``InputError`` naming the file and the key. The class names (and
so the prompts) come from the data: COCO categories, or the one prompt of a label folder.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from zeusseg.config_file import apply_overrides, read_config
from zeusseg.datasets import get_dataset
from zeusseg.datasets.registry import Sample
from zeusseg.errors import InputError
from zeusseg.io import list_images, read_label_folder
from zeusseg.io.coco import read_coco
from zeusseg.training.augment import AugmentConfig
from zeusseg.training.lora import DEFAULT_LORA_CONFIG, lora_config
from zeusseg.training.preload import Source

SELECT_DEFAULTS: dict[str, Any] = {
    "dataset": None,
    "folder": None,
    "coco": None,
    "image_dir": None,
    "data_root": None,
    "names": None,
    "shots": None,
    "prompt": None,
    "scale": None,
    "target_diameter": 27.0,
}
"""Keys of the ``data`` section that say which images to train on."""

PASS_DEFAULTS: dict[str, Any] = {
    "crop_size": 256,
    "negative_prob": 0.1,
    "agnostic_prob": 0.5,
    "object_crop_prob": 0.8,
    "samples_per_epoch": 200,
    "prompts": {},
    "negative_texts": ["virus particles"],
    "augment": {"scale_jitter": 0.2},
    "preload_workers": 1,
}
"""Keys of the ``data`` section passed on to ``PromptedSegmentationDataset``."""

TRAIN_DEFAULTS: dict[str, Any] = {
    "max_steps": 300,
    "time_limit_min": None,
    "batch_size": 8,
    "grad_accum": 1,
    "lr": 1.0e-3,
    "min_lr_ratio": 0.1,
    "weight_decay": 0.01,
    "warmup_steps": 20,
    "grad_clip": 1.0,
    "mixed_precision": "no",
    "num_threads": 2,
    "num_workers": 0,
    "save_every_steps": 100,
    "keep_checkpoints": 2,
    "log_every": 10,
    "freeze_norm_stats": True,
    "loss_weights": [1.0, 1.0, 1.0, 1.0],
    "progress": False,
}

TOP_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "base": "zeus-default",
    "output_dir": "runs/finetune",
    "data": {},
    "lora": {},
    "train": {},
}


def _check_keys(path: Path, section: str, given: Mapping, valid: Mapping) -> None:
    for key in given:
        if key not in valid:
            where = f"{section}.{key}" if section else str(key)
            raise InputError(path, f"unknown key '{where}'; valid keys here: "
                             f"{', '.join(sorted(valid))}")


def load_finetune_config(
    path: str | os.PathLike, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Read and validate a fine-tuning YAML; ``overrides`` (dotted keys) win.

    Raises:
        InputError: missing/unreadable file, not a mapping, an unknown key (named with its
            section), bad LoRA settings, or a data section naming no or several sources.
    """
    path = Path(path)
    cfg = apply_overrides(read_config(path, "fine-tuning config"), overrides)
    _check_keys(path, "", cfg, TOP_DEFAULTS)
    for section in ("data", "lora", "train"):
        if not isinstance(cfg.get(section, {}) or {}, dict):
            raise InputError(path, f"'{section}' must be a mapping")
    data = dict(cfg.get("data") or {})
    _check_keys(path, "data", data, {**SELECT_DEFAULTS, **PASS_DEFAULTS})
    _check_keys(path, "train", cfg.get("train") or {}, TRAIN_DEFAULTS)
    lora = dict(cfg.get("lora") or {})
    _check_keys(path, "lora", lora, DEFAULT_LORA_CONFIG)
    try:
        lora = lora_config(lora)
    except ValueError as err:
        raise InputError(path, str(err)) from err
    out = {**copy.deepcopy(TOP_DEFAULTS), **cfg}
    out["data"] = {**copy.deepcopy(SELECT_DEFAULTS), **copy.deepcopy(PASS_DEFAULTS), **data}
    out["lora"] = lora
    out["train"] = {**TRAIN_DEFAULTS, **(cfg.get("train") or {})}
    try:
        AugmentConfig.from_dict(out["data"]["augment"])
    except (ValueError, TypeError) as err:
        raise InputError(path, f"data.augment: {err}") from err
    kinds = [k for k in ("dataset", "folder", "coco") if out["data"][k]]
    if len(kinds) != 1:
        raise InputError(path, "data needs exactly one of 'dataset', 'folder' or 'coco'")
    if (out["data"]["names"] is None) == (out["data"]["shots"] is None):
        raise InputError(path, "data needs exactly one of 'names' (file stems) or 'shots' (count)")
    return out


def select_names(available: list[str], names: list[str] | None, shots: int | None,
                 seed: int, where: str | os.PathLike) -> list[str]:
    """The training image stems: ``names`` as given, or ``shots`` drawn with ``seed``.

    Raises:
        InputError: a named image is not in the data, or more shots than images.
    """
    if names is not None:
        names = [str(n) for n in ([names] if isinstance(names, str) else names)]
        missing = [n for n in names if n not in available]
        if missing:
            raise InputError(where, f"no annotated image named {', '.join(missing[:5])}")
        return names
    shots = int(shots)
    if not 1 <= shots <= len(available):
        raise InputError(where, f"shots must be 1..{len(available)}, got {shots}")
    pick = np.random.default_rng(seed).choice(len(available), size=shots, replace=False)
    return [available[i] for i in sorted(pick)]


def _coco_samples(data: Mapping, seed: int) -> tuple[list[Sample], dict[int, str], str]:
    coco = read_coco(data["coco"])
    image_dir = Path(data["image_dir"]) if data["image_dir"] else coco.image_dir
    ids = coco.id_by_name()
    stems = [s for s in sorted(ids) if coco.annotations.get(ids[s])]
    chosen = select_names(stems, data["names"], data["shots"], seed, coco.path)
    samples = []
    for s in chosen:
        path = image_dir / coco.images[ids[s]]["file_name"]
        if not path.is_file():
            raise InputError(path, "image of a selected COCO entry not found")
        samples.append(Sample(name=s, image_path=path, masks=coco.masks(ids[s])))
    names = dict(coco.categories)
    prompt = names[min(names)] if len(names) == 1 else "objects"
    return samples, names, prompt


def _folder_samples(data: Mapping, seed: int) -> tuple[list[Sample], dict[int, str], str]:
    root = Path(data["folder"])
    images_dir = Path(data["image_dir"]) if data["image_dir"] else root / "images"
    if not images_dir.is_dir() or not (root / "labels").is_dir():
        raise InputError(root, "expected sub-folders images/ and labels/")
    images = {p.stem: p for p in list_images(images_dir)}
    label_stems = sorted(p.stem for p in (root / "labels").iterdir() if p.is_file())
    stems = [s for s in label_stems if s in images]
    chosen = select_names(stems, data["names"], data["shots"], seed, root)
    masks = read_label_folder(root / "labels", chosen)
    prompt = str(data["prompt"] or "objects")
    for m in masks.values():
        m.class_names = {1: prompt}
    return [Sample(s, images[s], masks[s]) for s in chosen], {1: prompt}, prompt


def _dataset_samples(data: Mapping, seed: int) -> tuple[list[Sample], dict[int, str], str]:
    ds = get_dataset(str(data["dataset"]), data["data_root"])
    chosen = select_names(list(ds.names), data["names"], data["shots"], seed, ds.root)
    return [ds[ds.names.index(s)] for s in chosen], ds.class_names, ds.spec.prompt


def training_source(config: Mapping[str, Any]) -> Source:
    """The N-shot training ``Source`` of a fine-tuning config (see the module docstring).

    Raises:
        InputError: unreadable data or a selection that does not exist.
    """
    data, seed = config["data"], int(config["seed"])
    if data["coco"]:
        samples, class_names, prompt = _coco_samples(data, seed)
        name = Path(data["coco"]).parent.name or "coco"
    elif data["folder"]:
        samples, class_names, prompt = _folder_samples(data, seed)
        name = Path(data["folder"]).name
    else:
        samples, class_names, prompt = _dataset_samples(data, seed)
        name = str(data["dataset"])
    if data["prompt"]:
        prompt = str(data["prompt"])
        if len(class_names) == 1:
            class_names = {c: prompt for c in class_names}
            for s in samples:
                s.masks.class_names = dict(class_names)
    target = data["target_diameter"]
    if data["scale"] is not None:
        target = None
    return Source(name, samples, prompt, class_names,
                  scale=float(data["scale"] or 1.0),
                  target_diameter=None if target is None else float(target))


def dataset_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``PromptedSegmentationDataset`` config of a fine-tuning config."""
    data = config["data"]
    return {k: copy.deepcopy(data[k]) for k in PASS_DEFAULTS} | {
        "datasets": {}, "validation": {}, "class_balance": True, "data_root": data["data_root"],
    }
