"""Tables of an evaluation (for the terminal and Markdown) and the atomic report writers."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from zeusseg.evaluation.evaluate import EvaluationResult
from zeusseg.evaluation.scoring import AGNOSTIC, CLASS_AWARE, PER_CLASS, threshold_name
from zeusseg.io.atomic import write_text_atomic

REPORT_FILES = ("metrics.csv", "per_image.csv", "metrics.json", "metrics.md")
"""Files written by ``write_report`` into the output folder."""

_COUNT_METRICS = ("n_images", "n_true", "n_pred", "tp50", "fp50", "fn50")
_PER_CLASS_METRICS = ("n_true", "n_pred", "ap50", "ap_mean", "f1_50", "dice", "coco_map")


def main_metrics(result: EvaluationResult) -> list[str]:
    """The metrics shown in the main table, in display order."""
    aps = [f"ap{threshold_name(t)}" for t in result.thresholds]
    return [*_COUNT_METRICS, *aps, "ap_mean", "precision50", "recall50", "f1_50",
            "precision80", "recall80", "f1_80", "dice", "miou", "coco_map", "coco_ap50",
            "coco_ap75"]


def _fmt(v: float, metric: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if metric in _COUNT_METRICS:
        return f"{v:.1f}" if not float(v).is_integer() else str(int(v))
    return f"{v:.4f}"


def main_table(result: EvaluationResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows (metric, image mean, pooled[, class-aware image mean, pooled])."""
    scopes = [AGNOSTIC] + ([CLASS_AWARE] if (result.summary.scope == CLASS_AWARE).any() else [])
    header = ["metric"]
    for scope in scopes:
        header += [f"{scope} image mean", f"{scope} pooled"]
    rows = []
    for metric in main_metrics(result):
        row = [metric]
        for scope in scopes:
            row += [_fmt(result.metric(metric, "image_mean", scope), metric),
                    _fmt(result.metric(metric, "pooled", scope), metric)]
        rows.append(row)
    return header, rows


def class_table(result: EvaluationResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-class table (pooled values); no rows without per-class."""
    s = result.summary
    classes = list(dict.fromkeys(s.loc[s.scope == PER_CLASS, "class"]))
    header = ["class", *_PER_CLASS_METRICS]
    rows = [[c, *(_fmt(result.metric(m, "pooled", PER_CLASS, c), m) for m in _PER_CLASS_METRICS)]
            for c in classes]
    return header, rows


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def to_markdown(result: EvaluationResult) -> str:
    """The whole report as Markdown (sources, main table, per-class table, image lists)."""
    n = int((result.per_image.scope == AGNOSTIC).sum())
    parts = [
        "# zeusseg evaluation",
        "",
        f"- predictions: `{result.pred}`",
        f"- ground truth: `{result.gt}`",
        f"- images scored: {n}; IoU thresholds reported: "
        f"{', '.join(f'{t:g}' for t in result.thresholds)}",
        "- image mean = mean of the per-image scores; pooled = counts summed over images first. "
        "Definitions: docs/metrics.md.",
        "",
        _markdown_table(*main_table(result)),
    ]
    header, rows = class_table(result)
    if rows:
        parts += ["", "## Per class (pooled)", "", _markdown_table(header, rows)]
    if result.missing:
        parts += ["", f"GT images without prediction ({len(result.missing)}): "
                  + ", ".join(result.missing)]
    if result.unmatched:
        parts += ["", f"Predictions without GT, ignored ({len(result.unmatched)}): "
                  + ", ".join(result.unmatched)]
    return "\n".join(parts) + "\n"


def write_report(result: EvaluationResult, out_dir: str | os.PathLike) -> list[Path]:
    """Write metrics.csv (summary), per_image.csv, metrics.json and metrics.md, each atomically.

    Every text is built before the first file is written, so a failure while formatting leaves
    nothing behind.

    Returns:
        The written paths, in ``REPORT_FILES`` order.
    """
    out_dir = Path(out_dir)
    texts = {
        "metrics.csv": result.summary.to_csv(index=False, float_format="%.6g"),
        "per_image.csv": result.per_image.to_csv(index=False, float_format="%.6g"),
        "metrics.json": json.dumps(result.to_dict(), indent=2) + "\n",
        "metrics.md": to_markdown(result),
    }
    paths = []
    for name in REPORT_FILES:
        write_text_atomic(out_dir / name, texts[name])
        paths.append(out_dir / name)
    return paths
