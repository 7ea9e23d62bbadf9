"""Score predictions against ground truth: load both sides, pair images by stem, tabulate.

Either side may be a COCO JSON, a folder of label images (PNG/TIFF; TIFFs written by zeusseg
carry class ids and scores), a dataset folder holding ``annotations.json`` or ``labels/``, or
(for the ground truth) a registered dataset name such as ``visn-val``. The predictions may also
be a COCO *results list* (detectron2, mmdetection, ``COCO.loadRes``), whose ``image_id``s are
paired with file names through the ``images`` of a COCO ground truth.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from zeusseg.datasets import DATASETS, get_dataset
from zeusseg.errors import InputError
from zeusseg.evaluation.coco_map import coco_mask_ap
from zeusseg.evaluation.scoring import (
    AGNOSTIC,
    CLASS_AWARE,
    PER_CLASS,
    Counts,
    all_thresholds,
    count_columns,
    image_counts,
    scores,
)
from zeusseg.io.coco import CocoDataset, read_coco
from zeusseg.io.coco_results import is_results_list, read_coco_results
from zeusseg.io.labels import LABEL_SUFFIXES, read_label_image
from zeusseg.metrics import match_image
from zeusseg.structures import InstanceMasks

_logger = logging.getLogger(__name__)

PRED_SUFFIXES = ("_labels", "_label", "_masks", "_mask", "_cp_masks", "_pred", "_instances")
"""Stem endings dropped from a prediction's name when only the shortened stem matches the GT."""


@dataclass
class LabelSet:
    """Instance masks of a set of images keyed by file stem.

    Attributes:
        source: what was loaded (path or dataset name), for messages.
        masks: stem -> masks.
        origin: stem -> (file to name in an error, prefix of the problem text).
        class_names: class id -> name.
        coco: the COCO dataset the set was read from (None for label images); its image ids
            pair a COCO results list with this set.
    """

    source: str
    masks: dict[str, InstanceMasks]
    origin: dict[str, tuple[str, str]] = field(default_factory=dict)
    class_names: dict[int, str] = field(default_factory=dict)
    coco: CocoDataset | None = None


@dataclass
class EvaluationResult:
    """Scores of one evaluation.

    Attributes:
        per_image: one row per (image, scope[, class]) with counts and scores.
        summary: long table with columns scope, class, metric, image_mean, pooled.
        thresholds: the reported ``ap<t>`` thresholds.
        pred: the prediction source. gt: the ground-truth source.
        missing: GT images without prediction (scored as all false negatives unless dropped).
        unmatched: predictions without a GT image (ignored).
    """

    per_image: pd.DataFrame
    summary: pd.DataFrame
    thresholds: tuple[float, ...]
    pred: str = ""
    gt: str = ""
    missing: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)

    def metric(self, name: str, average: str = "pooled", scope: str = AGNOSTIC,
               class_name: str = "") -> float:
        """One summary value, e.g. ``metric("ap50", "image_mean")``; NaN if absent."""
        s = self.summary
        row = s[(s.metric == name) & (s.scope == scope) & (s["class"] == class_name)]
        return float(row[average].iloc[0]) if len(row) else math.nan

    def to_dict(self) -> dict:
        """JSON-ready dict: sources, thresholds, image lists and the nested summary."""
        nested: dict = {}
        for r in self.summary.itertuples(index=False):
            key = r.scope if r.scope != PER_CLASS else f"class:{r[1]}"
            nested.setdefault(key, {})[r.metric] = {
                "image_mean": _json_number(r.image_mean), "pooled": _json_number(r.pooled)}
        return {
            "pred": self.pred, "gt": self.gt, "thresholds": list(self.thresholds),
            "n_images": int((self.per_image.scope == AGNOSTIC).sum()),
            "missing_predictions": self.missing, "unmatched_predictions": self.unmatched,
            "summary": nested,
        }


def _json_number(v: float) -> float | int | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return int(v) if float(v).is_integer() and abs(v) > 1 else round(float(v), 6)


def load_label_set(source: str | os.PathLike, data_root: str | os.PathLike | None = None,
                   ids_from: LabelSet | None = None) -> LabelSet:
    """Load a COCO JSON, a label-image folder, a dataset folder or a registered dataset.

    Also a COCO results list, paired through the image ids of ``ids_from`` (the ground truth,
    read from COCO); the set then holds the images with at least one result.

    Raises:
        InputError: missing path, unknown dataset name, not COCO, unreadable label image; a
            results list without a COCO ``ids_from``, or with bad entries or unknown image ids.
    """
    path = Path(source)
    if path.is_dir():
        if (path / "annotations.json").is_file():
            return _coco_set(read_coco(path / "annotations.json"))
        files = _label_files(path)
        if not files and (path / "labels").is_dir():
            path, files = path / "labels", _label_files(path / "labels")
        if not files:
            raise InputError(path, "folder holds no label image (.png, .tif, .tiff) and no "
                             "annotations.json")
        return _load_folder(path, files)
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise InputError(path, "expected a COCO .json file or a folder of label images")

        if is_results_list(path):
            return _load_results(path, ids_from)
        return _coco_set(read_coco(path))

    if str(source) in DATASETS:
        ds = get_dataset(str(source), data_root)
        origin = {n: (str(ds.root / ("annotations.json" if ds.spec.kind == "coco" else
                                     f"labels/{n}.png")), "") for n in ds.names}
        return LabelSet(str(source), {n: ds.masks(n) for n in ds.names}, origin, ds.class_names,
                        ds.coco)
    raise InputError(path, "no such file or folder (nor a registered dataset name)")


def _label_files(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.iterdir()) if p.is_file()
            and p.suffix.lower() in LABEL_SUFFIXES and not p.name.startswith(".")]


def _load_folder(folder: Path, files: list[Path]) -> LabelSet:
    out = LabelSet(str(folder), {})
    for p in files:
        if p.stem in out.masks:
            raise InputError(p, f"two label images share the stem '{p.stem}'")
        out.masks[p.stem] = read_label_image(p)
        out.origin[p.stem] = (str(p), "")
        out.class_names.update(out.masks[p.stem].class_names)
    return out


def _coco_set(coco: CocoDataset) -> LabelSet:
    """The masks of every image of ``coco``, keyed by file stem."""
    path = coco.path
    out = LabelSet(str(path), {}, {}, dict(coco.categories), coco)
    for image_id, info in coco.images.items():
        stem = Path(info["file_name"]).stem
        if stem in out.masks:
            raise InputError(path, f"two images share the file stem '{stem}'")
        out.masks[stem] = coco.masks(image_id)
        out.origin[stem] = (str(path), f"image '{info['file_name']}': ")
    return out


def _load_results(path: Path, ids_from: LabelSet | None) -> LabelSet:
    if ids_from is None:  # read as the ground truth
        raise InputError(path, "a COCO results list (predictions without file names), not a "
                         "COCO dataset; score it with --pred against a COCO --gt")
    if ids_from.coco is None:
        raise InputError(path, f"a COCO results list needs a COCO ground truth whose 'images' "
                         f"map its image ids to file names, but the ground truth "
                         f"{ids_from.source} is not a COCO dataset (give --gt a COCO JSON, a "
                         "folder with annotations.json, or a COCO dataset name)")
    results = read_coco_results(path, ids_from.coco)
    return _coco_set(results)


def _pair(pred: LabelSet, gt: LabelSet, only_predicted: bool, remap: Mapping[int, int]
          ) -> tuple[list[str], list[InstanceMasks], list[InstanceMasks], list[str], list[str]]:
    """Match predictions to GT images by stem; check sizes; remap class ids by name."""
    by_stem: dict[str, str] = {}
    for stem in pred.masks:
        key = stem
        if key not in gt.masks:
            key = next((stem[: -len(s)] for s in PRED_SUFFIXES
                        if stem.endswith(s) and stem[: -len(s)] in gt.masks), stem)
        by_stem.setdefault(key, stem)
    unmatched = sorted(s for k, s in by_stem.items() if k not in gt.masks)
    missing = [n for n in gt.masks if n not in by_stem]
    if not set(by_stem) & set(gt.masks):
        raise InputError(pred.source, f"no prediction matches a ground-truth image of "
                         f"{gt.source} by file name (e.g. '{next(iter(gt.masks), '')}')")
    if unmatched:
        _logger.warning("%d prediction(s) have no ground truth and are ignored: %s",
                        len(unmatched), ", ".join(unmatched[:5]))
    if missing:
        _logger.warning("%d ground-truth image(s) have no prediction%s: %s", len(missing),
                        " and are skipped" if only_predicted else
                        " and count as all false negatives", ", ".join(missing[:5]))
    names, gts, preds = [], [], []
    for name, g in gt.masks.items():
        if name not in by_stem:
            if only_predicted:
                continue
            p = InstanceMasks(labels=np.zeros(g.shape, np.int32))
        else:
            p = pred.masks[by_stem[name]]
            if p.shape != g.shape:
                file, prefix = pred.origin.get(by_stem[name], (pred.source, ""))
                gfile = gt.origin.get(name, (gt.source, ""))[0]
                raise InputError(file, f"{prefix}label size {p.shape[1]}x{p.shape[0]} differs "
                                 f"from the ground-truth size {g.shape[1]}x{g.shape[0]} (WxH) "
                                 f"of {gfile}")
            if remap:
                class_ids = np.array([remap.get(c, c) for c in p.class_ids.tolist()], np.int64)
                p = InstanceMasks(labels=p.labels, ids=p.ids, class_ids=class_ids,
                                  scores=p.scores, class_names=p.class_names)
        names.append(name)
        gts.append(g)
        preds.append(p)
    return names, gts, preds, missing, unmatched


def _class_remap(pred_names: Mapping[int, str], gt_names: Mapping[int, str]) -> dict[int, int]:
    """Pred class id -> GT class id, by class name where both sides name their classes.

    A predicted class named like a GT class takes that GT id. A predicted class whose id is a
    GT id but whose name is no GT name is a different class: it gets a new, unused id (so its
    instances are false positives in class-aware scores). Unnamed classes keep their ids.
    """
    def norm(name: str) -> str:
        return " ".join(str(name).lower().split())

    gt_by_name = {norm(v): k for k, v in gt_names.items()}
    next_id = max([*gt_names, *pred_names, 0]) + 1
    remap, unknown = {}, []
    for k, v in sorted(pred_names.items()):
        g = gt_by_name.get(norm(v))
        if g is None and gt_names:
            unknown.append(str(v))
            if k in gt_names:
                remap[int(k)], next_id = next_id, next_id + 1
        elif g is not None and g != k:
            remap[int(k)] = int(g)
    if unknown:
        _logger.warning("predicted class(es) %s match no ground-truth class name (%s); "
                        "class-aware scores count them as false positives", ", ".join(unknown),
                        ", ".join(gt_names.values()))
    return remap


def evaluate(
    pred: str | os.PathLike,
    gt: str | os.PathLike,
    *,
    thresholds: Sequence[float] = (0.5, 0.75, 0.9),
    per_class: bool = False,
    only_predicted: bool = False,
    data_root: str | os.PathLike | None = None,
) -> EvaluationResult:
    """Score the predictions at ``pred`` against the ground truth at ``gt``.

    Images are paired by file stem. A GT image without prediction counts as all false
    negatives (or is skipped with ``only_predicted``); a prediction without GT is ignored. Both
    are logged as warnings.

    Args:
        pred: COCO JSON, COCO results list (paired through ``gt``'s image ids; ``gt`` must then
            be COCO), label-image folder or dataset folder.
        gt: the same kinds, or a registered dataset name (``visn-val``, ``coelho-u2os``...).
        thresholds: IoU thresholds reported as ``ap<t>`` columns (the 0.50:0.95 mean, F1@0.5
            and F1@0.8 are always computed).
        per_class: add class-aware scores (a match must share the class) and per-class rows.
        only_predicted: score only the GT images that have a prediction.
        data_root: data root for dataset names (default: ``ZEUSSEG_DATA_ROOT`` or ../shared/data).

    Raises:
        InputError: unreadable input, no common image, or a prediction whose size differs from
            its GT image (the message names the file).
        ValueError: a threshold outside (0, 1].
    """
    gt_set = load_label_set(gt, data_root)
    pred_set = load_label_set(pred, data_root, ids_from=gt_set)
    remap = _class_remap(pred_set.class_names, gt_set.class_names)
    names, gts, preds, missing, unmatched = _pair(pred_set, gt_set, only_predicted, remap)
    class_names = {**{remap.get(k, k): v for k, v in pred_set.class_names.items()},
                   **gt_set.class_names}
    result = evaluate_masks(dict(zip(names, preds, strict=True)),
                            dict(zip(names, gts, strict=True)),
                            thresholds=thresholds, per_class=per_class, class_names=class_names)
    result.pred, result.gt = str(pred), str(gt)
    result.missing, result.unmatched = missing, unmatched
    return result


def evaluate_masks(
    pred: Mapping[str, InstanceMasks],
    gt: Mapping[str, InstanceMasks],
    *,
    thresholds: Sequence[float] = (0.5, 0.75, 0.9),
    per_class: bool = False,
    class_names: Mapping[int, str] | None = None,
) -> EvaluationResult:
    """Score in-memory predictions (name -> masks) against ground truth with the same names.

    A GT image missing from ``pred`` counts as an empty prediction; extra predictions are
    ignored. See ``evaluate`` for the arguments.

    Raises:
        ValueError: a threshold outside (0, 1], or a prediction whose shape differs from its GT.
    """
    report = tuple(float(t) for t in thresholds)
    if not report or any(not 0 < t <= 1 for t in report):
        raise ValueError(f"IoU thresholds must lie in (0, 1], got {list(report)}")
    ths = all_thresholds(report)
    names = {**{c: str(c) for g in gt.values() for c in g.class_ids.tolist()},
             **{c: n for g in gt.values() for c, n in g.class_names.items()},
             **dict(class_names or {})}
    rows, pooled, gts, preds = [], {}, [], []
    for name, g in gt.items():
        p = pred.get(name, InstanceMasks(labels=np.zeros(g.shape, np.int32)))
        if p.shape != g.shape:
            raise ValueError(f"{name}: prediction shape {p.shape} differs from GT {g.shape}")
        gts.append(g)
        preds.append(p)
        for key, counts in image_counts(g, p, match_image(g, p), ths, per_class).items():
            pooled[key] = pooled[key] + counts if key in pooled else counts
            rows.append(_row(name, key, counts, ths, report, names))
    per_image = pd.DataFrame(rows)
    summary = _summary(per_image, pooled, ths, report, names)
    coco = [(AGNOSTIC, coco_mask_ap(gts, preds))]
    if per_class:
        coco.append((CLASS_AWARE, coco_mask_ap(gts, preds, class_aware=True)))
    for scope, res in coco:
        for metric in ("map", "ap50", "ap75"):
            summary.append(((scope, 0), "", f"coco_{metric}", math.nan, res[metric]))
        if scope == CLASS_AWARE:
            summary += [((PER_CLASS, c), names.get(c, str(c)), "coco_map", math.nan, v)
                        for c, v in res["per_class"].items() if (PER_CLASS, c) in pooled]
    order = {AGNOSTIC: 0, CLASS_AWARE: 1, PER_CLASS: 2}
    summary.sort(key=lambda r: (order[r[0][0]], r[0][1]))  # stable: metric order is kept
    summary_df = pd.DataFrame([(k[0], *rest) for k, *rest in summary],
                              columns=["scope", "class", "metric", "image_mean", "pooled"])
    return EvaluationResult(per_image=per_image, summary=summary_df, thresholds=report)


def _row(image: str, key: tuple[str, int], counts: Counts, ths: Sequence[float],
         report: Sequence[float], names: Mapping[int, str]) -> dict:
    scope, c = key
    return {"image": image, "scope": scope,
            "class": names.get(c, str(c)) if scope == PER_CLASS else "",
            **count_columns(counts, ths), **scores(counts, ths, report)}


def _summary(per_image: pd.DataFrame, pooled: dict[tuple[str, int], Counts],
             ths: Sequence[float], report: Sequence[float], names: Mapping[int, str]
             ) -> list[tuple]:
    """Rows ``((scope, class_id), class, metric, image_mean, pooled)`` of the summary."""
    out = []
    for key, counts in pooled.items():
        scope, c = key
        cls = names.get(c, str(c)) if scope == PER_CLASS else ""
        sel = per_image[(per_image.scope == scope) & (per_image["class"] == cls)]
        out.append((key, cls, "n_images", math.nan, float(len(sel))))
        for metric, value in count_columns(counts, ths).items():
            out.append((key, cls, metric, float(sel[metric].mean()), float(value)))
        for metric, value in scores(counts, ths, report).items():
            out.append((key, cls, metric, float(sel[metric].mean()), value))
    return out
