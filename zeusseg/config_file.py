"""YAML config files: read one as a mapping, apply dotted ``--set KEY=VALUE`` overrides.

Shared by ``zeusseg train``, ``zeusseg finetune``, ``zeusseg baseline train`` and the ablation
grid (``zeusseg.evaluation.ablation``), so every config command reports a bad file the same
way: one line naming the file and the problem (``InputError``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from zeusseg.errors import InputError


def check_keys(cfg: Mapping[str, Any], valid: Iterable[str], what: str) -> None:
    """Raise ``ValueError`` naming the keys of ``cfg`` not in ``valid`` (and listing ``valid``)."""
    unknown = set(cfg) - set(valid)
    if unknown:
        raise ValueError(f"unknown {what} keys {sorted(unknown)}; valid: {sorted(valid)}")


def read_config(path: str | os.PathLike, what: str, missing_hint: str = "") -> dict[str, Any]:
    """Read a YAML file whose top level must be a mapping (an empty file gives ``{}``).

    Args:
        path: the YAML file.
        what: what the file is, for messages ("training config").
        missing_hint: appended to the "no such file" message (e.g. where configs live).

    Raises:
        InputError: a missing or unreadable file, invalid YAML, or a top level that is not a
            mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"no such config file{missing_hint}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise InputError(path, f"cannot read {what} ({' '.join(str(err).split())})") from err
    if not isinstance(data, dict):
        raise InputError(path, f"{what} must be a YAML mapping")
    return data


def apply_overrides(cfg: dict[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Set each dotted ``section.key`` of ``overrides`` in ``cfg`` (in place; returns ``cfg``)."""
    for key, value in (overrides or {}).items():
        node = cfg
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg


def parse_set_args(items: Iterable[str] | None) -> dict[str, Any]:
    """``["train.lr=1e-3", ...]`` -> ``{"train.lr": 0.001}`` (values parsed as YAML).

    Raises:
        InputError: an entry without ``=``.
    """
    overrides = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(None, f"--set expects KEY=VALUE, got '{item}'")
        key, value = item.split("=", 1)
        overrides[key] = yaml.safe_load(value)
    return overrides


def merge_defaults(path: str | os.PathLike, cfg: Mapping[str, Any],
                   defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` (two levels: sections of keys) updated with ``cfg``; unknown keys refused.

    Raises:
        InputError: naming the file and the unknown key with the valid keys of its section,
            or a section given as something other than a mapping.
    """
    out = copy.deepcopy(dict(defaults))
    for key, value in cfg.items():
        if key not in defaults:
            raise InputError(path, f"unknown key '{key}'; valid keys here: "
                             f"{', '.join(sorted(defaults))}")
        if isinstance(defaults[key], dict):
            if not isinstance(value, dict):
                raise InputError(path, f"'{key}' must be a mapping")
            for sub in value:
                if sub not in defaults[key]:
                    raise InputError(path, f"unknown key '{key}.{sub}'; valid keys here: "
                                     f"{', '.join(sorted(defaults[key]))}")
            out[key].update(value)
        else:
            out[key] = value
    return out
