"""Tables and plot of an ablation grid (``zeusseg.evaluation.ablation``): ``runs.csv`` (one
row per run), ``table.csv`` / ``table.md`` (mean and std over seeds; image-mean scores) and
``plot.png`` under the spec's ``output_dir``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd

from zeusseg.io.atomic import atomic_path, write_text_atomic

METRIC_NAMES = {"f1_50": "F1@0.5", "ap50": "AP@0.5", "dice": "Dice", "miou": "mIoU"}
COST_COLUMNS = {"trainable_params": "trainable params", "train_min": "train min",
                "steps": "steps"}


def columns(spec: dict[str, Any]) -> list[tuple[str, str]]:
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
    cols = columns(spec)
    return pd.DataFrame([{"variant": r["variant"], "seed": r["seed"],
                          **{k: r[k] for k in COST_COLUMNS},
                          **{k: r["scores"][k]["image_mean"] for k, _ in cols}} for r in records])


def summary_frame(spec: dict[str, Any], runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (ddof 1; NaN with one seed) over seeds per variant, in spec order."""
    keys = list(COST_COLUMNS) + [k for k, _ in columns(spec)]
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
    cols = columns(spec)
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
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): no display needed

    cols = columns(spec)
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
    out = Path(spec["output_dir"])
    runs = runs_frame(spec, records)
    summary = summary_frame(spec, runs)
    write_text_atomic(out / "runs.csv", runs.to_csv(index=False))
    write_text_atomic(out / "table.csv", summary.to_csv(index=False))
    write_text_atomic(out / "table.md", to_markdown(spec, summary))
    with atomic_path(out / "plot.png") as tmp:
        plot(spec, summary, tmp)
    return summary
