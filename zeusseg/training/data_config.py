"""The data config of training: defaults and key checks (``data_config``).

Data config (the ``data`` section of a training config; every key is optional)::

    datasets:                 # training sources: registry names, or any name + folder
      visn-train: {weight: 1.0, scale: 0.5}
      dsb-train: {weight: 1.0, scale: 1.0, target_diameter: null}
      my-nuclei: {folder: /path/with/images+labels, prompt: cell nuclei, scale: 1.0}
    validation:               # same form, for ValidationSet
      visn-val: {scale: 0.5}
      dsb-val: {scale: 1.0}
    crop_size: 256
    negative_prob: 0.25       # share of prompts whose target is empty
    agnostic_prob: 0.5        # multi-class sources: share of class-agnostic positive prompts
    object_crop_prob: 0.8     # positives: share of crops placed on an object of the class
    class_balance: true       # BalancedSampler: rare classes drawn as often as frequent ones
    samples_per_epoch: 2000
    prompts: {RSV: [...]}     # merged over zeusseg.training.prompts.DEFAULT_PROMPTS
    negative_texts: []        # extra canonical names that are never present
    instruction_mode: phrasings   # phrasings | name | template | llm (training.instruction_texts)
    instruction_prob: 0.5     # template / llm: share of items whose text is the instruction
    instruction_cache: null   # template / llm: instruction-cache JSONL (read and appended)
    augment: {...}            # zeusseg.training.augment.AugmentConfig
    contact_weight: 0.0       # w: distance-map loss weight 1 + w * contact_map (touching seams)
    max_images: null          # cap per source (smoke runs)
    preload_workers: 2
    data_root: null
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from zeusseg.config_file import check_keys
from zeusseg.training.augment import AugmentConfig
from zeusseg.training.instruction_texts import check_mode

DEFAULT_DATA_CONFIG: dict = {
    "datasets": {
        "visn-train": {"weight": 1.0, "scale": 0.5},
        "dsb-train": {"weight": 1.0, "scale": 1.0},
    },
    "validation": {"visn-val": {"scale": 0.5}, "dsb-val": {"scale": 1.0}},
    "crop_size": 256,
    "negative_prob": 0.25,
    "agnostic_prob": 0.5,
    "object_crop_prob": 0.8,
    "class_balance": True,
    "samples_per_epoch": 2000,
    "prompts": {},
    "negative_texts": [],
    "instruction_mode": "phrasings",
    "instruction_prob": 0.5,
    "instruction_cache": None,
    "augment": {},
    "contact_weight": 0.0,
    "max_images": None,
    "preload_workers": 2,
    "data_root": None,
}


SOURCE_KEYS = ("weight", "scale", "target_diameter", "folder", "prompt")
"""Keys of one ``datasets`` / ``validation`` entry (read by ``preload.open_source``)."""


def data_config(cfg: Mapping | None = None) -> dict:
    """The data config with defaults filled in (``datasets``/``validation`` are replaced whole).

    Raises:
        ValueError: unknown keys, also in ``augment`` and in each ``datasets`` /
            ``validation`` entry (the message lists the valid ones).
    """
    if cfg is not None and not isinstance(cfg, Mapping):
        raise ValueError(f"the data config must be a mapping, got {type(cfg).__name__}")
    cfg = dict(cfg or {})
    check_keys(cfg, DEFAULT_DATA_CONFIG, "data config")
    out = copy.deepcopy(DEFAULT_DATA_CONFIG)
    out.update(copy.deepcopy(cfg))
    AugmentConfig.from_dict(out["augment"])
    check_mode(out["instruction_mode"], out["instruction_prob"])
    for section in ("datasets", "validation"):
        for name, entry in (out[section] or {}).items():
            bad = set(entry or {}) - set(SOURCE_KEYS)
            if bad:
                raise ValueError(f"unknown key(s) {sorted(bad)} in {section}.{name}; valid: "
                                 f"{list(SOURCE_KEYS)}")
    return out
