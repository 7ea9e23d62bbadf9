"""LoRA adapters for Zeus with ``peft``: configure, inject, count, save.

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
weights. Applying a saved adapter (``load_adapter``, ``merge_adapter``, ``remove_adapter``) is
``zeusseg.adapters``; ``load_adapter`` refuses a base whose fingerprint differs.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from zeusseg.adapters import BASE_FILE, count_parameters, trainable_summary
from zeusseg.config_file import check_keys

_logger = logging.getLogger(__name__)

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
    check_keys(cfg, DEFAULT_LORA_CONFIG, "lora")
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
    from peft import LoraConfig, get_peft_model  # optional: the train extra

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


