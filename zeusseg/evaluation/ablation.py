"""Train and score a grid of Zeus variants on the same data, seeds and budget (issue 10).

Usage (``scripts/run_ablation.py`` is the command line)::

    .venv/bin/python scripts/run_ablation.py --config configs/ablation/cpu-arch.yaml

Spec (one YAML file, see ``configs/ablation/*.yaml``)::

    output_dir: /work/runs/ablation-cpu-arch
    base_config: configs/zeroshot/default.yaml   # a ``zeusseg train`` config
    seeds: [0]
    budget: {time_limit_min: 18, max_steps: 100000, num_threads: 1}   # train.* for every run
    overrides: {train.warmup_steps: 20}          # dotted keys for every run
    variants:                                    # name -> how it differs from the base
      unet-plain: {model: unet-plain}
      hybrid-no-text: {model: zeus-hybrid-s, fusion: none}
      hybrid-names: {model: zeus-hybrid-s, instruction_mode: name, set: {data.crop_size: 192}}
    evaluation:                                  # scored after training, full images
      visn-val: {prompt: virus particles, metrics: [f1_50, ap50, dice, miou], label: VISN val}
      dsb-val: {prompt: cell nuclei, target_diameter: 27}   # oracle scale from the labels
      my-set: {folder: /path/with/images+labels, prompt: cell nuclei, scale: 0.5}
    segment: {}                                  # extra ``segment_image`` arguments

Evaluation scale: ``scale`` (fixed factor) or ``target_diameter`` (each image resized so its
ground-truth median diameter becomes that many px) score in one pass without auto-scale;
without either, ``segment_image`` runs at the model's scale with its auto-scale.

Variant keys: ``model`` (architecture name), ``fusion`` (``late`` | ``early`` | ``none``: edits
the model config; ``early`` inserts its layers after evenly spaced encoder blocks),
``instruction_mode`` (``data.instruction_mode``: ``phrasings``, the default prompt table;
``name``: every prompt is its canonical class name; ``template`` / ``llm``: the Zeus
instruction of each image, also read at scoring time; ``zeusseg.training.instruction_texts``),
``lora`` (``true`` or LoRA settings: train adapters only on the frozen ``init_checkpoint``
model; set one with ``set: {init_checkpoint: ...}``), ``set`` (any dotted training-config
keys), ``description``.

Each (variant, seed) trains through ``zeusseg.training.train.train`` into
``<output_dir>/<variant>/seed_<s>/train`` (interrupted runs resume from their checkpoints with
the elapsed time kept), is scored from its final checkpoint with ``segment_image`` + the project
scorer (``evaluate_masks``), and writes ``scores.json``; a run whose ``scores.json`` exists is
skipped on rerun. Finally ``runs.csv`` (one row per run), ``table.csv`` / ``table.md`` (mean and
std over seeds; image-mean scores) and ``plot.png`` are written
(``zeusseg.evaluation.ablation_tables``).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from zeusseg.adapters import merge_adapter
from zeusseg.config_file import read_config
from zeusseg.errors import InputError
from zeusseg.evaluation.ablation_tables import METRIC_NAMES, columns, write_tables
from zeusseg.evaluation.evaluate import evaluate_masks
from zeusseg.factory import build_zeus, get_model_config, load_checkpoint
from zeusseg.inference.folder_run import instruction_text_of
from zeusseg.inference.zeus_segmenter import segment_image
from zeusseg.io.atomic import write_text_atomic
from zeusseg.io.images import read_image
from zeusseg.predictor import ZeusPredictor
from zeusseg.training.checkpoints import list_checkpoints
from zeusseg.training.instruction_texts import MODES
from zeusseg.training.lora import apply_lora
from zeusseg.training.preload import open_source
from zeusseg.training.train import load_config, train
from zeusseg.transforms import median_diameter, rescale_factor

_logger = logging.getLogger("run_ablation")

SPEC_KEYS = {"name", "output_dir", "base_config", "seeds", "budget", "overrides", "variants",
             "evaluation", "segment", "data_root"}
VARIANT_KEYS = {"model", "fusion", "instruction_mode", "lora", "set", "description"}
EVAL_KEYS = {"dataset", "folder", "prompt", "metrics", "label", "max_images", "scale",
             "target_diameter"}


def load_spec(path: str | Path) -> dict[str, Any]:
    """Read and check an ablation YAML.

    Raises:
        InputError: unreadable YAML, unknown keys, no variants or no evaluation set.
    """
    spec = read_config(path, "ablation spec")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise InputError(path, f"unknown key(s) {sorted(unknown)}; valid: {sorted(SPEC_KEYS)}")
    for key in ("output_dir", "base_config", "variants", "evaluation"):
        if not spec.get(key):
            raise InputError(path, f"'{key}' is missing or empty")
    for name, v in spec["variants"].items():
        bad = set(v or {}) - VARIANT_KEYS
        if bad:
            raise InputError(path, f"variant '{name}': unknown key(s) {sorted(bad)}; valid: "
                             f"{sorted(VARIANT_KEYS)}")
    for name, e in spec["evaluation"].items():
        bad = set(e or {}) - EVAL_KEYS
        if bad or not (e or {}).get("prompt"):
            raise InputError(path, f"evaluation '{name}': needs 'prompt', valid keys "
                             f"{sorted(EVAL_KEYS)} (got {sorted(e or {})})")
    spec.setdefault("seeds", [0])
    for key in ("budget", "overrides", "segment"):
        spec[key] = dict(spec.get(key) or {})
    return spec


def _model_config(name: str | dict, fusion: str | None) -> str | dict:
    """The model entry of a variant: ``name`` or, with ``fusion``, its edited config dict."""
    if fusion is None:
        return name
    cfg = copy.deepcopy(name) if isinstance(name, dict) else get_model_config(name)
    f = cfg.setdefault("fusion_cfg", {})
    f.update(mode=fusion, insert_after=[])
    if fusion == "none":
        f["depth"] = 0
    elif fusion == "early":
        n, d = int(cfg["vision_cfg"].get("depth", 4)), int(f.get("depth", 2))
        if n < d:
            raise ValueError(f"early fusion needs >= {d} encoder blocks, the model has {n}")
        f["insert_after"] = [(k + 1) * n // d - 1 for k in range(d)]
    return cfg


def variant_overrides(name: str, variant: dict[str, Any]) -> dict[str, Any]:
    """Dotted training-config overrides of one variant.

    Raises:
        ValueError: an axis the training config cannot express (LoRA, generated texts).
    """
    v = dict(variant or {})
    out: dict[str, Any] = {}
    if v.get("lora"):  # true = the default LoRA settings, or a mapping of them
        out["lora"] = v["lora"] if isinstance(v["lora"], dict) else {}
    if "model" in v or "fusion" in v:
        out["model"] = _model_config(v.get("model", "zeus-hybrid-s"), v.get("fusion"))
    mode = v.get("instruction_mode")
    if mode is not None:
        if mode not in MODES:
            raise ValueError(f"variant '{name}': unknown instruction_mode '{mode}' "
                             f"(valid: {', '.join(MODES)})")
        out["data.instruction_mode"] = mode
    out.update(v.get("set") or {})
    return out


def training_config(spec: dict[str, Any], name: str, seed: int, out: Path) -> dict[str, Any]:
    """The full training config of one (variant, seed) run."""
    overrides = {**spec["overrides"], **{f"train.{k}": v for k, v in spec["budget"].items()},
                 **variant_overrides(name, spec["variants"][name]),
                 "seed": int(seed), "output_dir": str(out)}
    return load_config(spec["base_config"], overrides)


def _eval_samples(key: str, e: dict[str, Any], data_root) -> list:
    cfg = {"folder": e["folder"], "prompt": e["prompt"]} if "folder" in e else {}
    src = open_source(e.get("dataset", key), cfg, data_root)
    n = len(src.samples) if e.get("max_images") is None else int(e["max_images"])
    return [src.samples[i] for i in range(min(n, len(src.samples)))]


def _scale_kwargs(e: dict[str, Any], masks) -> dict[str, Any]:
    """Fixed ``scale``, or the oracle scale that brings the ground truth's median diameter to
    ``target_diameter`` (as the training validation does); both turn auto-scale off."""
    if e.get("target_diameter") is not None:
        d = median_diameter(masks.labels)
        return {"scale": rescale_factor(d, float(e["target_diameter"])), "auto_scale": False}
    if e.get("scale") is not None:
        return {"scale": float(e["scale"]), "auto_scale": False}
    return {}


def score_model(model, spec: dict[str, Any], embedder=None, instruction_mode: str | None = None,
                instruction_cache=None) -> dict[str, Any]:
    """Segment every evaluation set with its prompt and score it.

    With ``instruction_mode`` ``template`` or ``llm`` (a variant trained on instructions) the
    model reads the instruction made for each evaluation image and prompt, as
    ``zeusseg segment --instruction-mode`` does; otherwise the prompt itself.

    Returns:
        ``{"<set>/<metric>": {"image_mean": float, "pooled": float}, "<set>/seconds": float,
        "<set>/per_image": {image: {metric: float}}}``.
    """
    predictor = ZeusPredictor(model.eval(), embedder)
    text_of = _text_of(instruction_mode, instruction_cache)
    out: dict[str, Any] = {}
    for key, e in spec["evaluation"].items():
        t0 = time.time()
        samples = _eval_samples(key, e, spec.get("data_root"))
        preds = {}
        for s in samples:
            image = read_image(s.image_path)
            preds[s.name] = segment_image(predictor, image, [e["prompt"]],
                                          text_of=text_of(image) if text_of else None,
                                          **{**spec["segment"], **_scale_kwargs(e, s.masks)})
        res = evaluate_masks(preds, {s.name: s.masks for s in samples}, thresholds=(0.5,))
        for m in METRIC_NAMES:
            out[f"{key}/{m}"] = {"image_mean": res.metric(m, "image_mean"),
                                 "pooled": res.metric(m, "pooled")}
        per = res.per_image[res.per_image.scope == "agnostic"].set_index("image")
        out[f"{key}/per_image"] = per[list(METRIC_NAMES)].round(5).to_dict("index")
        out[f"{key}/seconds"] = round(time.time() - t0, 1)
    return out


def _text_of(mode: str | None, cache_path):
    """None (the model reads the prompts) or image -> (prompt -> its instruction), as
    ``zeusseg segment --instruction-mode`` makes them."""
    if mode not in ("template", "llm"):
        return None
    return instruction_text_of(mode, cache_path)


def run_one(spec: dict[str, Any], name: str, seed: int, embedder=None) -> dict[str, Any]:
    """Train + score one (variant, seed) unless its ``scores.json`` exists; returns the record."""
    folder = Path(spec["output_dir"]) / name / f"seed_{seed}"
    done = folder / "scores.json"
    if done.is_file():
        _logger.info("%s seed %d: done already (%s), skipped", name, seed, done)
        return json.loads(done.read_text())
    cfg = training_config(spec, name, seed, folder / "train")
    trained = folder / "trained.json"  # training finished; only the scoring is left
    if not trained.is_file():
        _logger.info("%s seed %d: training -> %s", name, seed, cfg["output_dir"])
        train(cfg, embedder=embedder)
        write_text_atomic(trained, json.dumps({"checkpoint": str(
            list_checkpoints(folder / "train")[-1])}))
    last = Path(json.loads(trained.read_text())["checkpoint"])
    state = json.loads((last / "trainer.json").read_text())
    if str(cfg["train"]["num_threads"]).isdigit():
        torch.set_num_threads(int(cfg["train"]["num_threads"]))
    if cfg.get("lora") is not None:  # the checkpoint holds the peft-wrapped model
        model = apply_lora(build_zeus(cfg["model"], cfg.get("init_checkpoint")), cfg["lora"])
        load_checkpoint(model, last / "model.safetensors")
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        model = merge_adapter(model)
    else:
        model = build_zeus(cfg["model"], last / "model.safetensors")
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    if model.fusion.mode == "none":  # as train() forced it (also when only scoring is left)
        cfg["data"] = {**(cfg.get("data") or {}), "negative_prob": 0.0}
    _logger.info("%s seed %d: scoring step %d", name, seed, state["step"])
    rec = {
        "variant": name, "seed": int(seed),
        "trainable_params": trainable,
        "train_min": round(float(state["seconds"]) / 60, 2), "steps": int(state["step"]),
        "checkpoint": str(last),
        "scores": score_model(model, spec, embedder, cfg["data"].get("instruction_mode"),
                              folder / "instructions-eval.jsonl"),
        "model_cfg": model.zeus_cfg.to_dict(), "train_config": cfg,
    }
    write_text_atomic(done, json.dumps(rec, indent=2, default=str))
    return rec


def run_ablation(spec: dict[str, Any], *, embedder=None,
                 only: list[str] | None = None) -> pd.DataFrame:
    """Run every (variant, seed) of ``spec`` not done yet, then write the tables.

    Args:
        spec: from ``load_spec``.
        embedder: a ``PromptEmbedder`` for training and scoring (tests); by default the
            model's text encoder.
        only: run just these variants (the tables still hold every finished run).
    """
    for name in spec["variants"]:  # refuse inexpressible axes before any training starts
        variant_overrides(name, spec["variants"][name])
    columns(spec)
    out = Path(spec["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    records = []
    for name in spec["variants"]:
        for seed in spec["seeds"]:
            done = out / name / f"seed_{seed}" / "scores.json"
            if only and name not in only:
                if done.is_file():
                    records.append(json.loads(done.read_text()))
                continue
            records.append(run_one(spec, name, int(seed), embedder))
            write_tables(spec, records)  # partial tables while the grid runs
    return write_tables(spec, records)
