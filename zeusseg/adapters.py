"""Applying saved LoRA adapters to their base Zeus model: load, merge, remove.

An adapter folder (written by ``zeusseg.training.lora.save_adapter`` / ``zeusseg finetune``)
holds ``adapter_model.safetensors`` + ``adapter_config.json`` (peft's ``save_pretrained``) and
``zeusseg_base.json``: the base model's id and ``sha256`` fingerprint (``base_fingerprint``),
the LoRA settings, the training prompts and optionally the adapter's ``input_scale`` and
``decode_cfg``. It never holds the base weights. ``load_adapter`` refuses a base whose
fingerprint differs. ``peft`` (the ``train`` extra) is imported only when an adapter is applied.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zeusseg.errors import InputError
from zeusseg.modeling.config import ZeusCfg, ZeusDecodeCfg, get_zeus_cfg

_logger = logging.getLogger(__name__)

BASE_FILE = "zeusseg_base.json"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json", BASE_FILE)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, all) parameter counts; ``modules_to_save`` originals count in ``all``."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def trainable_summary(model: nn.Module) -> str:
    """``print_trainable_parameters``-style line: ``trainable params: ... || all params: ...``."""
    trainable, total = count_parameters(model)
    return (f"trainable params: {trainable:,} || all params: {total:,} || "
            f"trainable%: {100 * trainable / max(total, 1):.4f}")


def base_fingerprint(model: nn.Module) -> str:
    """SHA256 of a model's state dict (names, dtypes, shapes and bytes, in name order).

    The identity an adapter records of its base. Computed on a model without adapters.
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def read_adapter_base(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``zeusseg_base.json`` of an adapter folder.

    Raises:
        InputError: the folder is not a zeusseg adapter (a file is missing or unreadable).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "adapter folder not found")
    missing = [f for f in ADAPTER_FILES if not (folder / f).is_file()]
    if missing:
        raise InputError(folder, f"not a zeusseg LoRA adapter (missing {', '.join(missing)})")
    try:
        meta = json.loads((folder / BASE_FILE).read_text())
    except json.JSONDecodeError as err:
        raise InputError(folder / BASE_FILE, f"not valid JSON ({err})") from err
    if not isinstance(meta, dict) or "sha256" not in meta:
        raise InputError(folder / BASE_FILE, "lacks the base model's 'sha256'")
    return meta


def load_adapter(
    model: nn.Module, folder: str | os.PathLike, *, model_id: str | None = None,
    is_trainable: bool = False,
):
    """Apply a saved adapter to its base model.

    Args:
        model: the base Zeus model (no adapter yet); its fingerprint must match the adapter's.
        folder: an adapter folder written by ``save_adapter`` / ``zeusseg finetune``.
        model_id: the base's name, for the error message (default: ``model.zeus_model_id``).
        is_trainable: keep the LoRA weights trainable (resuming training).

    Returns:
        A ``PeftModel`` (it forwards ``encode_image``/``decode``/``zeus_cfg`` to the model, so
        ``ZeusPredictor`` takes it as is); ``merge_adapter`` / ``remove_adapter`` undo it.
        The model's ``zeus_cfg.input_cfg.scale`` becomes the adapter's ``input_scale`` (the
        scale of its training images) and its ``decode_cfg`` the adapter's ``decode_cfg``
        (written by ``scripts/tune_decoding.py --adapter ... --write``), until
        ``remove_adapter``.

    Raises:
        InputError: not an adapter folder, or it was trained on another base:
            ``adapter <dir> was trained on base <id>/<hash>, not <id>/<hash>``.
    """
    from peft import PeftModel  # optional: the train extra

    meta = read_adapter_base(folder)
    digest = base_fingerprint(model)
    if digest != meta["sha256"]:
        mine = model_id or getattr(model, "zeus_model_id", None) or "the given model"
        raise InputError(None, f"adapter {folder} was trained on base "
                         f"{meta.get('model')}/{meta['sha256'][:12]}, not {mine}/{digest[:12]}")
    peft_model = _from_pretrained(PeftModel, model, Path(folder), is_trainable)
    cfg = get_zeus_cfg(model)
    if cfg is not None and (meta.get("input_scale") or meta.get("decode_cfg")):
        model._zeusseg_base_cfg = cfg  # put back by remove_adapter
        if meta.get("input_scale"):
            cfg = with_input_scale(cfg, float(meta["input_scale"]))
        if meta.get("decode_cfg"):
            cfg = with_decode_cfg(cfg, meta["decode_cfg"], folder)
        model.zeus_cfg = cfg
    _logger.info("applied adapter %s to %s; %s", folder, meta.get("model"),
                 trainable_summary(peft_model))
    return peft_model


def _from_pretrained(peft_model_cls, model: nn.Module, folder: Path, is_trainable: bool):
    """``PeftModel.from_pretrained`` with its errors turned into one-line InputErrors."""
    weights, config = folder / ADAPTER_FILES[0], folder / ADAPTER_FILES[1]
    try:
        json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(config, f"not a valid adapter config ({err})") from err
    try:
        return peft_model_cls.from_pretrained(model, str(folder), is_trainable=is_trainable)
    except RuntimeError as err:  # load_state_dict: shapes of another rank / architecture
        lines = [ln.strip() for ln in str(err).splitlines() if "mismatch" in ln]
        raise InputError(weights, "adapter does not fit the model: "
                         f"{(lines or [str(err)])[0][:300]}") from err
    except Exception as err:  # safetensors / peft raise many types on corrupt files
        raise InputError(weights, f"corrupt or unreadable adapter ({type(err).__name__}: "
                         f"{err})") from err


def merge_adapter(peft_model) -> nn.Module:
    """The base model with the LoRA update merged into its weights (adapter layers gone)."""
    return peft_model.merge_and_unload()


def remove_adapter(peft_model) -> nn.Module:
    """The base model exactly as before the adapter: LoRA layers and ``modules_to_save`` copies
    are dropped, the original modules put back (peft's ``unload`` would keep the trained copies).
    """
    from peft.tuners.tuners_utils import BaseTunerLayer  # optional: the train extra
    from peft.utils.other import ModulesToSaveWrapper

    model = peft_model.get_base_model()
    for name, module in list(model.named_modules()):
        if not name or not isinstance(module, BaseTunerLayer | ModulesToSaveWrapper):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if not isinstance(getattr(parent, child, None), BaseTunerLayer | ModulesToSaveWrapper):
            continue  # already replaced through an enclosing wrapper
        original = (module.original_module if isinstance(module, ModulesToSaveWrapper)
                    else module.get_base_layer())
        setattr(parent, child, original)
    if hasattr(model, "peft_config"):
        del model.peft_config
    if hasattr(model, "_zeusseg_base_cfg"):
        model.zeus_cfg = model._zeusseg_base_cfg
        del model._zeusseg_base_cfg
    return model


def with_decode_cfg(cfg: ZeusCfg, decode: dict[str, Any],
                    folder: str | os.PathLike | None = None) -> ZeusCfg:
    """A copy of a ``ZeusCfg`` with ``decode`` (keys of ``ZeusDecodeCfg``) as its decode settings.

    Raises:
        InputError: unknown keys or values out of range (naming ``folder``'s base file).
    """
    try:
        return replace(cfg, decode_cfg=ZeusDecodeCfg(**decode))
    except (TypeError, ValueError) as err:
        where = None if folder is None else Path(folder) / BASE_FILE
        raise InputError(where, f"bad decode_cfg: {err}") from err


def with_input_scale(cfg: ZeusCfg, scale: float) -> ZeusCfg:
    """A copy of a ``ZeusCfg`` whose ``input_cfg.scale`` (first-pass resize factor) is ``scale``.

    An adapter records the mean resize factor of its training images (``input_scale``): the
    scale at which the user's objects look like the base's ``target_diameter``. Applying the
    adapter (or merging it) makes that the first-pass scale of ``segment_image``.
    """
    return replace(cfg, input_cfg=replace(cfg.input_cfg, scale=round(float(scale), 4)))
