"""Run a comparison of several methods on one dataset and write its report folder.

Every number comes from the one scorer, ``zeusseg.evaluation.evaluate`` (per method, with
``per_class=True``); the main table shows its class-agnostic *pooled* values (counts summed
over images first; COCO values are dataset-level). Report folder::

    report.md, report.html      tables, provenance, skipped methods, figures
    table.csv, per_class.csv    the two tables as numbers
    bar_chart.png               main metrics per method
    pr_curve.png                precision-recall at IoU 0.5 (class-agnostic)
    montage.png                 the same images overlaid for ground truth and each method
    <method>/metrics.*          the scorer's full report of each method
    predictions/<method>/       cached predictions (unless --cache points elsewhere)
"""

from __future__ import annotations

import html
import logging
import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from zeusseg.compare.curves import pr_curve
from zeusseg.compare.figures import bar_chart, montage, pr_plot
from zeusseg.compare.methods import (
    MethodOptions,
    MethodRun,
    MethodUnavailable,
    check_available,
    check_method_name,
    is_cached,
    method_predictions,
)
from zeusseg.datasets import get_dataset
from zeusseg.errors import InputError
from zeusseg.evaluation import EvaluationResult, evaluate, load_label_set, write_report
from zeusseg.evaluation.scoring import PER_CLASS
from zeusseg.io import read_image, read_label_image
from zeusseg.io.atomic import write_text_atomic
from zeusseg.structures import InstanceMasks

_logger = logging.getLogger(__name__)

MAIN_METRICS = ("n_pred", "ap50", "ap75", "ap_mean", "precision50", "recall50", "f1_50",
                "dice", "coco_map", "coco_ap50")
BAR_METRICS = ("ap50", "ap_mean", "f1_50", "dice", "coco_map")
CLASS_METRICS = ("n_true", "n_pred", "ap50", "f1_50", "coco_map")


@dataclass
class Comparison:
    """Everything a comparison report shows.

    Attributes:
        dataset: dataset name.
        runs: method -> its predictions.
        results: method -> the scorer's result.
        skipped: method -> why it was skipped.
        table: one row per method: ``MAIN_METRICS`` (pooled) + ``sec_per_image``.
        per_class: rows (method, class) with ``CLASS_METRICS`` (class-aware methods only).
        n_images: images scored. n_true: ground-truth instances.
    """

    dataset: str
    runs: dict[str, MethodRun]
    results: dict[str, EvaluationResult]
    skipped: dict[str, str] = field(default_factory=dict)
    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    per_class: pd.DataFrame = field(default_factory=pd.DataFrame)
    n_images: int = 0
    n_true: int = 0


def comparison_table(results: dict[str, EvaluationResult], runs: dict[str, MethodRun]
                     ) -> pd.DataFrame:
    """Methods x (``MAIN_METRICS`` pooled, class-agnostic; ``sec_per_image``)."""
    rows = {m: {k: r.metric(k, "pooled") for k in MAIN_METRICS} for m, r in results.items()}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(MAIN_METRICS))
    table["sec_per_image"] = [runs[m].seconds_per_image for m in table.index]
    table.index.name = "method"
    return table


def _class_aware(pred_names: Sequence[str], gt_names: Sequence[str]) -> bool:
    gt = {n.strip().lower() for n in gt_names}
    return bool(pred_names) and all(n.strip().lower() in gt for n in pred_names)


def per_class_table(results: dict[str, EvaluationResult], pred_classes: dict[str, list[str]],
                    gt_classes: Sequence[str]) -> pd.DataFrame:
    """(method, class) rows of the scorer's per-class pooled values.

    Only methods whose predicted class names are all ground-truth class names get rows: the
    per-class scope restricts both sides to one class id, which is meaningless for a
    class-agnostic method (its single class would be read as the first GT class).
    """
    rows = []
    for method, r in results.items():
        if not _class_aware(pred_classes.get(method, []), gt_classes):
            continue
        s = r.summary
        for cls in dict.fromkeys(s.loc[s.scope == PER_CLASS, "class"]):
            rows.append({"method": method, "class": cls,
                         **{k: r.metric(k, "pooled", PER_CLASS, cls) for k in CLASS_METRICS}})
    return pd.DataFrame(rows, columns=["method", "class", *CLASS_METRICS])


def run_compare(
    dataset: str,
    methods: Sequence[str],
    out: str | os.PathLike,
    *,
    cache: str | os.PathLike | None = None,
    opts: MethodOptions | None = None,
    data_root: str | os.PathLike | None = None,
    skip_missing: bool = False,
    rerun: bool = False,
    limit: int | None = None,
    progress: bool = True,
) -> Comparison:
    """Get (run or read) each method's predictions on ``dataset`` and score them all.

    Args:
        dataset: registered dataset name (ground truth and images).
        methods: method names (``zeusseg.compare.methods.METHODS``).
        out: report folder.
        cache: predictions folder (default ``out/predictions``).
        opts: where the models are.
        data_root: shared data folder.
        skip_missing: skip methods with neither predictions nor model (else raise).
        rerun: ignore cached predictions.
        limit: only the first ``limit`` images (quick checks; scores only those).
        progress: progress bars.

    Raises:
        MethodUnavailable: a method cannot run and ``skip_missing`` is False.
        InputError: no, unknown or repeated method; missing dataset.
    """
    if len(set(methods)) != len(methods) or not methods:
        raise InputError(None, f"give each method once, got {list(methods)}")
    opts = opts or MethodOptions()
    ds = get_dataset(dataset, data_root)
    names = list(ds.names)[: limit or None]
    paths = [ds.image_path(n) for n in names]
    cache = Path(cache) if cache else Path(out) / "predictions"
    comp = Comparison(dataset=dataset, runs={}, results={}, n_images=len(names))
    missing = {}
    for m in methods:  # fail early, before any long run, unless cached predictions exist
        check_method_name(m)
        try:
            if rerun or not is_cached(cache / m, names):
                check_available(m, opts)
        except MethodUnavailable as err:
            missing[m] = str(err)
    if missing and not skip_missing:
        err = MethodUnavailable(", ".join(missing), "")
        err.args = ("; ".join(missing.values()) + " (or pass --skip-missing to compare the "
                    "others)",)
        raise err
    for m in methods:
        if m in missing:
            comp.skipped[m] = missing[m]
            continue
        try:
            comp.runs[m] = method_predictions(m, paths, cache, opts, ds.spec.prompt, rerun=rerun,
                                              progress=progress)
        except MethodUnavailable as err:
            if not skip_missing:
                raise
            comp.skipped[m] = str(err)
            continue
        comp.results[m] = evaluate(comp.runs[m].source, dataset, per_class=True,
                                   only_predicted=limit is not None, data_root=data_root)
    comp.table = comparison_table(comp.results, comp.runs)
    return comp


def _fmt(v, metric: str) -> str:
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if metric in ("n_pred", "n_true"):
        return str(int(v))
    return f"{v:.2f}" if metric == "sec_per_image" else f"{v:.3f}"


def _md_table(df: pd.DataFrame, first: str) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join([first, *cols]) + " |", "|" + "---|" * (len(cols) + 1)]
    for idx, row in df.iterrows():
        lines.append("| " + " | ".join([str(idx), *(_fmt(row[c], c) for c in cols)]) + " |")
    return "\n".join(lines)


def _provenance(comp: Comparison) -> list[tuple[str, str]]:
    lines = [(m, f"{r.origin}" + (" (cached predictions)" if r.cached else ""))
             for m, r in comp.runs.items()]
    return lines + [(m, f"SKIPPED: {why}") for m, why in comp.skipped.items()]


def write_compare_report(comp: Comparison, out: str | os.PathLike, *, data_root=None,
                         montage_images: int = 4) -> list[Path]:
    """Write the report folder (see the module docstring). Returns the written paths."""
    out = Path(out)
    gt = load_label_set(comp.dataset, data_root)
    results = {m: load_label_set(r.results, data_root, ids_from=gt).masks
               for m, r in comp.runs.items() if r.results is not None}
    names = [n for n in gt.masks if all(r.results is not None or (r.pred_dir / f"{n}.tif")
                                        .is_file() for r in comp.runs.values())]

    def masks_of(m: str, n: str) -> InstanceMasks:
        if m in results:
            if n in results[m]:
                return results[m][n]
            return InstanceMasks(labels=np.zeros(gt.masks[n].shape, np.int32))  # no result
        return read_label_image(comp.runs[m].pred_dir / f"{n}.tif")

    preds = {m: {n: masks_of(m, n) for n in names} for m in comp.runs}
    comp.n_true = sum(len(gt.masks[n]) for n in names)
    gt_classes = list(gt.class_names.values())
    pred_classes = {m: comp.runs[m].class_names or sorted(
        {c for p in by.values() for c in p.class_names.values()}) for m, by in preds.items()}
    comp.per_class = per_class_table(comp.results, pred_classes, gt_classes)
    written = []
    for m, r in comp.results.items():
        written += write_report(r, out / m)
    curves = {m: pr_curve([gt.masks[n] for n in names], [by[n] for n in names])
              for m, by in preds.items()}
    figs = {}
    if comp.results:
        figs["bar_chart.png"] = bar_chart(comp.table, BAR_METRICS, out / "bar_chart.png",
                                          f"{comp.dataset}: main metrics")
        figs["pr_curve.png"] = pr_plot(curves, out / "pr_curve.png")
    picks = [names[int(i)] for i in np.unique(np.linspace(0, len(names) - 1,
                                                          min(montage_images, len(names))))]
    if picks and montage_images > 0:
        ds_images = [(n, read_image(_image_path(comp.dataset, n, data_root))) for n in picks]
        columns = {"ground truth": {n: gt.masks[n] for n in picks},
                   **{m: {n: by[n] for n in picks} for m, by in preds.items()}}
        figs["montage.png"] = montage(ds_images, columns, out / "montage.png")
    written += list(figs.values())
    table_csv = comp.table.to_csv(float_format="%.6g")
    write_text_atomic(out / "table.csv", table_csv)
    write_text_atomic(out / "per_class.csv", comp.per_class.to_csv(index=False,
                                                                   float_format="%.6g"))
    write_text_atomic(out / "report.md", to_markdown(comp, list(figs)))
    write_text_atomic(out / "report.html", to_html(comp, list(figs)))
    return written + [out / f for f in ("table.csv", "per_class.csv", "report.md", "report.html")]


def _image_path(dataset: str, name: str, data_root) -> Path:
    return get_dataset(dataset, data_root).image_path(name)


def _header_lines(comp: Comparison) -> list[str]:
    return [
        f"- dataset: `{comp.dataset}`, {comp.n_images} images, {comp.n_true} ground-truth "
        "instances",
        "- scorer: `zeusseg.evaluation.evaluate` (per_class=True); main table = class-agnostic, "
        "pooled over images (TP/FP/FN summed first); `apT` = TP/(TP+FP+FN) at IoU T; COCO "
        "values with maxDets 10000. Definitions: docs/metrics.md",
        f"- timing: seconds per image inside the segmenter (no file I/O), on "
        f"{platform.machine()} / {platform.processor() or 'cpu'}; cached runs show the time "
        "measured when they were made",
    ]


def to_markdown(comp: Comparison, figures: Sequence[str] = ()) -> str:
    """The report as Markdown."""
    parts = [f"# zeusseg comparison: {comp.dataset}", "", *_header_lines(comp), "",
             "## Methods", ""]
    parts += [f"- **{m}**: {line}" for m, line in _provenance(comp)]
    parts += ["", "## Main metrics (class-agnostic, pooled)", "", _md_table(comp.table, "method")]
    parts += ["", "## Per class (class-aware methods only, pooled)", ""]
    if len(comp.per_class):
        parts.append(_md_table(comp.per_class.set_index("method"), "method"))
    else:
        parts.append("No method predicts the dataset's classes (all are class-agnostic).")
    if figures:
        parts += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures]
    parts += ["", "Full scorer reports: `<method>/metrics.md` in this folder."]
    return "\n".join(parts) + "\n"


def _html_table(df: pd.DataFrame, first: str) -> str:
    cols = list(df.columns)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [first, *cols])
    body = "".join("<tr><td>" + html.escape(str(idx)) + "</td>" + "".join(
        f"<td>{_fmt(row[c], c)}</td>" for c in cols) + "</tr>" for idx, row in df.iterrows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(comp: Comparison, figures: Sequence[str] = ()) -> str:
    """The report as a standalone HTML page (figures linked relative to the report)."""
    esc = html.escape
    items = "".join(f"<li><b>{esc(m)}</b>: {esc(line)}</li>" for m, line in _provenance(comp))
    header = "".join(f"<li>{esc(line[2:])}</li>" for line in _header_lines(comp))
    per_class = (_html_table(comp.per_class.set_index("method"), "method")
                 if len(comp.per_class) else "<p>No class-aware method.</p>")
    figs = "".join(f'<p><img src="{esc(f)}" alt="{esc(f)}"></p>' for f in figures)
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "td:first-child{text-align:left}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>zeusseg comparison: "
            f"{esc(comp.dataset)}</title><style>{style}</style></head><body>"
            f"<h1>zeusseg comparison: {esc(comp.dataset)}</h1><ul>{header}</ul>"
            f"<h2>Methods</h2><ul>{items}</ul>"
            f"<h2>Main metrics (class-agnostic, pooled)</h2>{_html_table(comp.table, 'method')}"
            f"<h2>Per class (class-aware methods only, pooled)</h2>{per_class}"
            f"<h2>Figures</h2>{figs}</body></html>\n")
