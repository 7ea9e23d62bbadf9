"""Train and score a grid of Zeus variants on the same data, seeds and budget (issue 10).

Usage::

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
std over seeds; image-mean scores) and ``plot.png`` are written.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from zeusseg.config_file import read_config
from zeusseg.errors import InputError

_logger = logging.getLogger("run_ablation")

SPEC_KEYS = {"name", "output_dir", "base_config", "seeds", "budget", "overrides", "variants",
             "evaluation", "segment", "data_root"}
VARIANT_KEYS = {"model", "fusion", "instruction_mode", "lora", "set", "description"}
EVAL_KEYS = {"dataset", "folder", "prompt", "metrics", "label", "max_images", "scale",
             "target_diameter"}
METRIC_NAMES = {"f1_50": "F1@0.5", "ap50": "AP@0.5", "dice": "Dice", "miou": "mIoU"}
COST_COLUMNS = {"trainable_params": "trainable params", "train_min": "train min",
                "steps": "steps"}


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
    from zeusseg.factory import get_model_config

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
        from zeusseg.training.instruction_texts import MODES

        if mode not in MODES:
            raise ValueError(f"variant '{name}': unknown instruction_mode '{mode}' "
                             f"(valid: {', '.join(MODES)})")
        out["data.instruction_mode"] = mode
    out.update(v.get("set") or {})
    return out


def training_config(spec: dict[str, Any], name: str, seed: int, out: Path) -> dict[str, Any]:
    """The full training config of one (variant, seed) run."""
    from zeusseg.training.train import load_config

    overrides = {**spec["overrides"], **{f"train.{k}": v for k, v in spec["budget"].items()},
                 **variant_overrides(name, spec["variants"][name]),
                 "seed": int(seed), "output_dir": str(out)}
    return load_config(spec["base_config"], overrides)


def _eval_samples(key: str, e: dict[str, Any], data_root) -> list:
    from zeusseg.training.preload import open_source

    cfg = {"folder": e["folder"], "prompt": e["prompt"]} if "folder" in e else {}
    src = open_source(e.get("dataset", key), cfg, data_root)
    n = len(src.samples) if e.get("max_images") is None else int(e["max_images"])
    return [src.samples[i] for i in range(min(n, len(src.samples)))]


def _scale_kwargs(e: dict[str, Any], masks) -> dict[str, Any]:
    """Fixed ``scale``, or the oracle scale that brings the ground truth's median diameter to
    ``target_diameter`` (as the training validation does); both turn auto-scale off."""
    if e.get("target_diameter") is not None:
        from zeusseg.training.scaling import median_diameter, rescale_factor

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
    from zeusseg.evaluation import evaluate_masks
    from zeusseg.io.images import read_image
    from zeusseg.predictor import ZeusPredictor
    from zeusseg.inference.zeus_segmenter import segment_image

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
    from zeusseg.inference.folder_run import instruction_text_of

    return instruction_text_of(mode, cache_path)


def run_one(spec: dict[str, Any], name: str, seed: int, embedder=None) -> dict[str, Any]:
    """Train + score one (variant, seed) unless its ``scores.json`` exists; returns the record."""
    import torch

    from zeusseg.factory import build_zeus
    from zeusseg.io.atomic import write_text_atomic
    from zeusseg.training.step import list_checkpoints
    from zeusseg.training.train import train

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
        from zeusseg.factory import load_checkpoint
        from zeusseg.training.lora import apply_lora, merge_adapter

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


def _columns(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(score key, column title) of the table, in spec order."""
    cols = []
    for key, e in spec["evaluation"].items():
        for m in e.get("metrics") or ["ap50"]:
            if m not in METRIC_NAMES:
                raise ValueError(f"evaluation '{key}': unknown metric '{m}'; valid: "
                                 f"{sorted(METRIC_NAMES)}")
            cols.append((f"{key}/{m}", f"{e.get('label', key)} {METRIC_NAMES[m]}"))
    return cols


def runs_frame(spec: dict[str, Any], records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: costs and the image-mean score of every table column."""
    cols = _columns(spec)
    return pd.DataFrame([{"variant": r["variant"], "seed": r["seed"],
                          **{k: r[k] for k in COST_COLUMNS},
                          **{k: r["scores"][k]["image_mean"] for k, _ in cols}} for r in records])


def summary_frame(spec: dict[str, Any], runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (ddof 1; NaN with one seed) over seeds per variant, in spec order."""
    keys = list(COST_COLUMNS) + [k for k, _ in _columns(spec)]
    rows = []
    for name in spec["variants"]:
        sub = runs[runs.variant == name]
        if sub.empty:
            continue
        row: dict[str, Any] = {"variant": name, "n_seeds": len(sub)}
        for k in keys:
            vals = sub[k].astype(float).to_numpy()
            row[f"{k} mean"] = float(np.mean(vals))
            row[f"{k} std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "n/a"
    text = f"{mean:.{digits}f}"
    return text if math.isnan(std) else f"{text} ± {std:.{digits}f}"


def to_markdown(spec: dict[str, Any], summary: pd.DataFrame) -> str:
    """The summary as a Markdown table (scores: image mean over the set's images)."""
    cols = _columns(spec)
    head = ["variant", "seeds", *[t for _, t in cols], *COST_COLUMNS.values()]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary.to_dict("records"):
        cells = [r["variant"], str(r["n_seeds"])]
        cells += [_cell(r[f"{k} mean"], r[f"{k} std"], 3) for k, _ in cols]
        cells += [f"{r['trainable_params mean'] / 1e6:.2f} M",
                  _cell(r["train_min mean"], r["train_min std"], 1),
                  _cell(r["steps mean"], r["steps std"], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(spec: dict[str, Any], summary: pd.DataFrame, path: Path) -> None:
    """Grouped bar plot: one group per score column, one bar per variant, std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = _columns(spec)
    n = len(summary)
    width = 0.8 / max(n, 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(cols) + 2), 4.0))
    x = np.arange(len(cols))
    for i, r in enumerate(summary.to_dict("records")):
        means = [r[f"{k} mean"] for k, _ in cols]
        stds = [0.0 if math.isnan(r[f"{k} std"]) else r[f"{k} std"] for k, _ in cols]
        ax.bar(x + (i - (n - 1) / 2) * width, means, width, yerr=stds if any(stds) else None,
               capsize=2, label=r["variant"])
    ax.set_xticks(x, [t for _, t in cols], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score (image mean)")
    ax.set_title(f"ablation: {spec.get('name', '')} (mean over seeds; error bars: std)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_tables(spec: dict[str, Any], records: list[dict[str, Any]]) -> pd.DataFrame:
    """Write runs.csv, table.csv, table.md, plot.png under output_dir; return the summary."""
    from zeusseg.io.atomic import atomic_path, write_text_atomic

    out = Path(spec["output_dir"])
    runs = runs_frame(spec, records)
    summary = summary_frame(spec, runs)
    write_text_atomic(out / "runs.csv", runs.to_csv(index=False))
    write_text_atomic(out / "table.csv", summary.to_csv(index=False))
    write_text_atomic(out / "table.md", to_markdown(spec, summary))
    with atomic_path(out / "plot.png") as tmp:
        plot(spec, summary, tmp)
    return summary


def run_ablation(spec: dict[str, Any], *, embedder=None,
                 only: list[str] | None = None) -> pd.DataFrame:
    """Run every (variant, seed) of ``spec`` not done yet, then write the tables.

    Args:
        spec: from ``load_spec``.
        embedder: a ``PromptEmbedder`` for training and scoring (tests); by default the
            model's text encoder.
        only: run just these variants (the tables still hold every finished run).
    """
    import zeusseg.inference.zeus_segmenter  # noqa: F401 (imported now: one scoring code for the grid)

    for name in spec["variants"]:  # refuse inexpressible axes before any training starts
        variant_overrides(name, spec["variants"][name])
    _columns(spec)
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train and score an ablation grid of Zeus variants.")
    p.add_argument("--config", required=True, help="ablation YAML (configs/ablation/*.yaml)")
    p.add_argument("--output-dir", default=None, help="overrides the spec's output_dir")
    p.add_argument("--only", nargs="*", default=None, help="run only these variants")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    spec = load_spec(args.config)
    spec["output_dir"] = args.output_dir or spec["output_dir"]
    summary = run_ablation(spec, only=args.only)
    print(to_markdown(spec, summary))  # noqa: T201 (script output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
