"""What training writes and keeps: model folders, the checkpoint list, frozen norm statistics."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from zeusseg.adapters import merge_adapter
from zeusseg.io.atomic import atomic_path


def save_model(model: torch.nn.Module, folder: Path, extra: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` (fp32) + ``config.json`` (``model_cfg`` + ``extra``)."""
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "merge_and_unload"):  # LoRA training: save the merged weights
        model = merge_adapter(copy.deepcopy(model))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    meta = {"model_cfg": model.zeus_cfg.to_dict(), **extra}
    with atomic_path(folder / "config.json") as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2))
    return folder


def list_checkpoints(out) -> list[Path]:
    """``out/checkpoints/step_*`` folders holding a ``trainer.json``, oldest step first."""
    dirs = [p for p in (Path(out) / "checkpoints").glob("step_*")
            if (p / "trainer.json").is_file()]
    return sorted(dirs, key=lambda p: int(p.name.split("_")[1]))


def freeze_norm_stats(model: torch.nn.Module) -> int:
    """Put every BatchNorm layer in eval mode (running stats fixed); returns how many.

    LoRA training keeps the frozen base's statistics this way, so the base is bit-identical
    once the adapter is removed.
    """
    n = 0
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
            n += 1
    return n
