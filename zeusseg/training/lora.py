"""LoRA adapters for Zeus with ``peft``: inject, count, save, load on the right base, merge, remove.

Targets are one regex string (peft full-matches it against module names), built from one
pattern per tower so that a projection name such as ``q_proj`` never hits every tower at once:

    image_encoder  attention projections of the encoder blocks (own ViT: ``q_proj``/``k_proj``/
                   ``v_proj``/``out_proj``; SAM/timm ViT: fused ``qkv`` + ``proj``)
    fusion         every attention of the two-way fusion (self, token->image, image->token,
                   final token->image)
    mask_decoder   the decoder's neck, stage convs, FiLM and hypernetwork linears (convs get
                   peft's Conv2d LoRA)

An adapter folder holds ``adapter_model.safetensors`` + ``adapter_config.json`` (peft's
``save_pretrained``) and ``zeusseg_base.json``: the base model's id and ``sha256`` fingerprint
(``base_fingerprint``), the LoRA settings and the training prompts. It never holds the base
weights. ``load_adapter`` refuses a base whose fingerprint differs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zeusseg.errors import InputError

_logger = logging.getLogger(__name__)

BASE_FILE = "zeusseg_base.json"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json", BASE_FILE)

_PROJ = r"(?:q_proj|k_proj|v_proj|out_proj)"
TOWER_PATTERNS: dict[str, str] = {
    "image_encoder": r"image_encoder\.(?:vit\.)?blocks\.\d+\.attn\.(?:q_proj|k_proj|v_proj|out_proj"
    r"|qkv|proj)",
    "fusion": r"fusion\.(?:layers\.\d+\.(?:self_attn|cross_attn_token_to_image"
    r"|cross_attn_image_to_token)|final_attn_token_to_image)\." + _PROJ,
    "mask_decoder": r"mask_decoder\.(?:neck\.0|stages\.\d+\.(?:conv1|conv2|film)"
    r"|hyper_mlps\.\d+\.(?:0\.lin1|0\.lin2|1))",
}

DEFAULT_LORA_CONFIG: dict[str, Any] = {
    "r": 8,
    "alpha": 16,
    "dropout": 0.0,
    "targets": {"image_encoder": True, "fusion": True, "mask_decoder": True},
    "modules_to_save": [],
}


def lora_config(cfg: Mapping | None = None) -> dict[str, Any]:
    """The LoRA settings with defaults filled in.

    ``targets`` maps a tower name to ``true`` (its preset pattern), ``false`` (off) or a regex
    string (full-matched against module names); towers not named keep their default.

    Raises:
        ValueError: unknown keys or bad values (the message lists the valid ones).
    """
    cfg = dict(cfg or {})
    unknown = set(cfg) - set(DEFAULT_LORA_CONFIG)
    if unknown:
        raise ValueError(f"unknown lora keys {sorted(unknown)}; "
                         f"valid: {sorted(DEFAULT_LORA_CONFIG)}")
    out = copy.deepcopy(DEFAULT_LORA_CONFIG)
    targets = dict(out["targets"])
    for tower, value in dict(cfg.pop("targets", None) or {}).items():
        if not isinstance(value, bool | str):
            raise ValueError(f"lora.targets.{tower} must be true, false or a regex string")
        if isinstance(value, bool) and tower not in TOWER_PATTERNS:
            raise ValueError(f"lora.targets.{tower}: no preset for this tower; presets: "
                             f"{sorted(TOWER_PATTERNS)} (or give a regex string)")
        targets[tower] = value
    out.update(cfg)
    out["targets"] = targets
    if int(out["r"]) < 1 or float(out["alpha"]) <= 0 or not 0 <= float(out["dropout"]) < 1:
        raise ValueError("lora needs r >= 1, alpha > 0 and 0 <= dropout < 1")
    return out


def target_regex(cfg: Mapping | None = None) -> str:
    """The one ``target_modules`` regex of the enabled towers (see ``lora_config``).

    Raises:
        ValueError: no tower is enabled, or a pattern is not a valid regex.
    """
    cfg = lora_config(cfg)
    parts = []
    for tower, value in cfg["targets"].items():
        if value is False:
            continue
        pattern = TOWER_PATTERNS[tower] if value is True else str(value)
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"lora.targets.{tower}: bad regex {pattern!r} ({err})") from err
        parts.append(f"(?:{pattern})")
    if not parts:
        raise ValueError("lora.targets enables no tower")
    return "|".join(parts)


def matching_modules(model: nn.Module, regex: str) -> list[str]:
    """Names of the ``nn.Linear``/``nn.Conv2d`` modules whose full name matches ``regex``."""
    pattern = re.compile(regex)
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Linear | nn.Conv2d) and pattern.fullmatch(n)]


def expected_trainable_parameters(
    model: nn.Module, names: list[str], r: int, modules_to_save: list[str] = ()
) -> int:
    """Parameters LoRA adds for ``names`` at rank ``r`` plus the ``modules_to_save`` copies.

    Linear (in, out): ``r * (in + out)``; Conv2d (in, out, k x k): ``r * in * k * k + out * r``
    (peft's A is a k x k conv to r channels, B a 1 x 1 conv).
    """
    modules = dict(model.named_modules())
    total = 0
    for name in names:
        m = modules[name]
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            total += r * m.in_channels // m.groups * kh * kw + m.out_channels * r
        else:
            total += r * (m.in_features + m.out_features)
    for name in modules_to_save:
        total += sum(p.numel() for p in modules[name].parameters())
    return total


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


def apply_lora(model: nn.Module, cfg: Mapping | None = None):
    """Freeze ``model`` and wrap it in a peft ``PeftModel`` with LoRA on the configured towers.

    Args:
        model: a Zeus model without adapters.
        cfg: LoRA settings (``lora_config``): ``r``, ``alpha``, ``dropout``, ``targets``,
            ``modules_to_save``.

    Returns:
        The ``PeftModel``; only the LoRA matrices (and ``modules_to_save`` copies) are trainable.

    Raises:
        ValueError: the targets match no Linear/Conv2d module of the model, or bad settings.
        RuntimeError: the trainable parameter count differs from the expected count.
    """
    from peft import LoraConfig, get_peft_model

    cfg = lora_config(cfg)
    regex = target_regex(cfg)
    names = matching_modules(model, regex)
    if not names:
        raise ValueError(f"LoRA targets {regex!r} match no Linear/Conv2d module of "
                         f"{type(model).__name__}; check lora.targets")
    keep = [str(n) for n in cfg["modules_to_save"]]
    model.requires_grad_(False)
    config = LoraConfig(
        r=int(cfg["r"]), lora_alpha=float(cfg["alpha"]), lora_dropout=float(cfg["dropout"]),
        target_modules=regex, modules_to_save=keep or None, bias="none",
    )
    expected = expected_trainable_parameters(model, names, int(cfg["r"]), keep)
    peft_model = get_peft_model(model, config)
    targeted = list(peft_model.targeted_module_names)
    if not targeted:
        raise ValueError(f"peft targeted no module with {regex!r}")
    trainable, _ = count_parameters(peft_model)
    if trainable != expected:
        raise RuntimeError(f"LoRA made {trainable} parameters trainable, expected {expected}")
    _logger.info("LoRA on %d modules (%s); %s", len(targeted), ", ".join(
        t for t, v in cfg["targets"].items() if v is not False), trainable_summary(peft_model))
    return peft_model


def save_adapter(
    peft_model, folder: str | os.PathLike, base: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the adapter (only) to ``folder``, replacing it atomically.

    Args:
        peft_model: from ``apply_lora`` or ``load_adapter``.
        folder: output folder: ``adapter_model.safetensors``, ``adapter_config.json``,
            ``zeusseg_base.json``.
        base: the base model's ``{"model": id, "sha256": base_fingerprint(...)}``.
        extra: more entries of ``zeusseg_base.json`` (LoRA settings, prompts, training info).

    Returns:
        The folder.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    os.chmod(tmp, 0o755)
    try:
        peft_model.save_pretrained(str(tmp), safe_serialization=True)
        meta = {"model": base["model"], "sha256": base["sha256"], **dict(extra or {})}
        (tmp / BASE_FILE).write_text(json.dumps(meta, indent=2))
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


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
    from peft import PeftModel

    meta = read_adapter_base(folder)
    digest = base_fingerprint(model)
    if digest != meta["sha256"]:
        mine = model_id or getattr(model, "zeus_model_id", None) or "the given model"
        raise InputError(None, f"adapter {folder} was trained on base "
                         f"{meta.get('model')}/{meta['sha256'][:12]}, not {mine}/{digest[:12]}")
    peft_model = _from_pretrained(PeftModel, model, Path(folder), is_trainable)
    cfg = getattr(model, "zeus_cfg", None)
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
    from peft.tuners.tuners_utils import BaseTunerLayer
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


def with_decode_cfg(cfg, decode: dict[str, Any], folder: str | os.PathLike | None = None):
    """A copy of a ``ZeusCfg`` with ``decode`` (keys of ``ZeusDecodeCfg``) as its decode settings.

    Raises:
        InputError: unknown keys or values out of range (naming ``folder``'s base file).
    """
    from dataclasses import replace

    from zeusseg.factory import ZeusDecodeCfg

    try:
        return replace(cfg, decode_cfg=ZeusDecodeCfg(**decode))
    except (TypeError, ValueError) as err:
        where = None if folder is None else Path(folder) / BASE_FILE
        raise InputError(where, f"bad decode_cfg: {err}") from err


def with_input_scale(cfg, scale: float):
    """A copy of a ``ZeusCfg`` whose ``input_cfg.scale`` (first-pass resize factor) is ``scale``.

    An adapter records the mean resize factor of its training images (``input_scale``): the
    scale at which the user's objects look like the base's ``target_diameter``. Applying the
    adapter (or merging it) makes that the first-pass scale of ``segment_image``.
    """
    from dataclasses import replace

    return replace(cfg, input_cfg=replace(cfg.input_cfg, scale=round(float(scale), 4)))
