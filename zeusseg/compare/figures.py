"""Figures of a comparison report (matplotlib, Agg backend, written atomically as PNG)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from zeusseg.compare.curves import PRCurve
from zeusseg.io.atomic import atomic_path
from zeusseg.io.overlay import render_overlay
from zeusseg.structures import InstanceMasks, MicroscopyImage


def _save(fig, path: str | os.PathLike) -> Path:
    plt = _pyplot()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _pyplot():
    """matplotlib.pyplot on the Agg backend (chosen before pyplot is imported: no display)."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(table: pd.DataFrame, metrics: Sequence[str], path: str | os.PathLike,
              title: str = "") -> Path:
    """Grouped bars: one group per metric, one bar per method (rows of ``table``)."""
    plt = _pyplot()
    metrics = [m for m in metrics if m in table.columns]
    n = len(table.index)
    width = 0.8 / max(n, 1)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(metrics), 3.6))
    x = np.arange(len(metrics))
    for k, method in enumerate(table.index):
        values = table.loc[method, metrics].astype(float).fillna(0.0).to_numpy()
        bars = ax.bar(x + (k - (n - 1) / 2) * width, values, width, label=str(method))
        ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
    ax.set_xticks(x, metrics)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (pooled over images)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncols=min(n, 5), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def pr_plot(curves: Mapping[str, PRCurve], path: str | os.PathLike, iou: float = 0.5,
            title: str = "") -> Path:
    """Precision against recall of each method at one IoU threshold."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    for method, c in curves.items():
        label = f"{method} (AP {c.ap:.3f})" if np.isfinite(c.ap) else method
        if c.recall.size:
            ax.step(np.r_[0.0, c.recall], np.r_[c.precision[0], c.precision], where="post",
                    label=label)
        else:
            ax.plot([], [], label=f"{method} (no predictions)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title or f"precision-recall at IoU {iou:g} (class-agnostic)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path)


def montage(images: Sequence[tuple[str, MicroscopyImage]],
            columns: Mapping[str, Mapping[str, InstanceMasks]], path: str | os.PathLike,
            max_side: int = 320) -> Path:
    """Grid of overlays: one row per image, one column per source (ground truth, methods).

    Args:
        images: (stem, image) per row.
        columns: column title -> stem -> masks (a missing stem leaves the cell blank).
        path: PNG to write.
        max_side: long side of each cell in pixels (overlays are downsampled by striding).
    """
    plt = _pyplot()
    rows, cols = len(images), len(columns)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.3 * rows), squeeze=False)
    for r, (stem, image) in enumerate(images):
        step = max(1, int(np.ceil(max(image.shape) / max_side)))
        for c, (title, by_stem) in enumerate(columns.items()):
            ax = axes[r, c]
            ax.set_axis_off()
            masks = by_stem.get(stem)
            if masks is None:
                continue
            ax.imshow(render_overlay(image, masks)[::step, ::step])
            if r == 0:
                ax.set_title(title, fontsize=8)
            ax.text(2, 2, f"{stem}: {len(masks)}", color="yellow", fontsize=6, va="top")
    fig.tight_layout()
    return _save(fig, path)
