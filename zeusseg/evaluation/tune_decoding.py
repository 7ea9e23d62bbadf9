"""Choose a model's decode settings on training images (StarDist's ``optimize_thresholds``).

Two stages:

1. ``sweep``: the model's maps of each image are computed once (the auto-scale pass
   ``segment_image`` decodes, untiled); every setting is decoded from those cached maps and
   scored with AP@0.5 (TP / (TP + FP + FN), averaged over images). Fast, but blind to one
   thing: the decode also sets the scale of the final pass (auto-scale measures the instances
   it finds), so a setting that fragments large objects shrinks the measured diameter,
   magnifies the image further and fragments more.
2. ``pipeline_scores``: a shortlist (``shortlist``: the best few of each seed mode and the
   model's current setting) runs through the whole ``segment_image`` pipeline, also on the
   training images magnified (objects larger than any in training, as in a new lab's images),
   and the best mean over every (dataset, magnification) wins.

Only training splits belong here: settings picked on validation or test images would make
those scores optimistic (``scripts/tune_decoding.py`` refuses other splits).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from zeusseg.inference.instance_segmentation import decode_instances
from zeusseg.inference.zeus_segmenter import scaled_maps, segment_image
from zeusseg.metrics import average_precision
from zeusseg.structures import MicroscopyImage
from zeusseg.transforms import resize_image, resize_labels, scaled_shape

DEFAULT_GRID: dict[str, tuple] = {
    "fg_threshold": (0.4, 0.5, 0.6),
    "seed_threshold": (0.5, 0.55, 0.6, 0.65, 0.7),
    "boundary_threshold": (0.4, 0.5, 0.6),
}
"""Threshold-seed settings searched by default (45 combinations)."""
DEFAULT_HMAX_GRID: dict[str, tuple] = {
    "seeds": ("hmax",),
    "fg_threshold": (0.4, 0.5, 0.6),
    "seed_h": (0.02, 0.05, 0.1, 0.2),
}
"""h-maxima-seed settings searched by default (12 combinations)."""


def default_settings() -> list[dict]:
    """The default search: ``DEFAULT_GRID`` with threshold seeds, then ``DEFAULT_HMAX_GRID``."""
    return ([{"seeds": "threshold", **s} for s in grid_settings(DEFAULT_GRID)]
            + grid_settings(DEFAULT_HMAX_GRID))


@dataclass
class CachedMaps:
    """One image's maps at the model's scale with its ground truth at the original size."""

    name: str
    probs: np.ndarray  # (1, 3, h, w) float32 in [0, 1]
    truth: np.ndarray  # (H, W) int labels
    factor: float = 1.0  # h = round(H * factor)


def collect_maps(predictor, samples: Iterable[tuple[MicroscopyImage, np.ndarray]], prompt: str,
                 progress: bool = False) -> list[CachedMaps]:
    """Maps of ``prompt`` on each (image, truth labels) pair (``zeus_segmenter.scaled_maps``)."""
    out = []
    for image, truth in tqdm(list(samples), desc=f"maps '{prompt}'", disable=not progress):
        probs, factor = scaled_maps(predictor, image, [prompt])
        out.append(CachedMaps(image.name, probs, np.asarray(truth), factor))
    return out


def decode_cached(maps: CachedMaps, **decode_kwargs) -> np.ndarray:
    """(H, W) int32 instance labels of ``maps`` decoded with ``decode_kwargs``, original size."""
    labels, _ = decode_instances(maps.probs[0], **decode_kwargs)
    if labels.shape != maps.truth.shape:
        labels = resize_labels(labels, maps.truth.shape)
    return labels


def grid_settings(grid: Mapping[str, Sequence[float]]) -> list[dict[str, float]]:
    """Every combination of ``grid`` (key -> values) as a list of keyword dicts."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True))
            for values in itertools.product(*(grid[k] for k in keys))]


def sweep(datasets: Mapping[str, Sequence[CachedMaps]],
          settings: Sequence[Mapping[str, object]] | Mapping[str, Sequence[object]],
          base: Mapping[str, object] | None = None, progress: bool = False) -> pd.DataFrame:
    """Score decode settings on every dataset's cached maps.

    Args:
        datasets: dataset name -> its cached maps.
        settings: the settings to try, as a list of keyword dicts (``default_settings()``) or
            a grid (keyword -> values, every combination).
        base: decode settings a setting does not name (the model's ``decode_cfg``).

    Returns:
        One row per setting: every decode keyword used, ``<dataset>/ap50`` (AP@0.5 image mean),
        ``<dataset>/tp``, ``/fp``, ``/fn`` (pooled), ``score`` = mean of the datasets' AP@0.5
        and ``changes`` = how many keywords differ from ``base``; sorted by ``score``
        descending, then fewest ``changes`` (ties go to the model's current setting), then
        the order given.
    """
    if isinstance(settings, Mapping):
        settings = grid_settings(settings)
    base = dict(base or {})
    rows = []
    for setting in tqdm(list(settings), desc="decode settings", disable=not progress):
        kwargs = {**base, **setting}
        row: dict[str, object] = dict(kwargs)
        for name, maps in datasets.items():
            preds = [decode_cached(m, **kwargs) for m in maps]
            ap, tp, fp, fn = average_precision([m.truth for m in maps], preds, [0.5])
            row.update({f"{name}/ap50": float(ap[:, 0].mean()), f"{name}/tp": int(tp.sum()),
                        f"{name}/fp": int(fp.sum()), f"{name}/fn": int(fn.sum())})
        row["score"] = float(np.mean([row[f"{n}/ap50"] for n in datasets]))
        row["changes"] = sum(k in base and kwargs[k] != base[k] for k in kwargs)
        rows.append(row)
    table = pd.DataFrame(rows)
    table["_order"] = np.arange(len(table))
    table = table.sort_values(["score", "changes", "_order"], ascending=[False, True, True])
    return table.drop(columns="_order").reset_index(drop=True)


def setting_of(row: pd.Series, keys: Iterable[str]) -> dict[str, object]:
    """The values of ``keys`` in one row of a ``sweep`` table (Python scalars)."""
    return {k: (row[k].item() if hasattr(row[k], "item") else row[k]) for k in keys}


def best_setting(table: pd.DataFrame, keys: Iterable[str]) -> dict[str, object]:
    """The values of ``keys`` in the top row of a ``sweep`` table (Python scalars)."""
    return setting_of(table.iloc[0], keys)


def shortlist(table: pd.DataFrame, base: Mapping[str, object], per_mode: int = 3
              ) -> list[dict[str, object]]:
    """``base``, then the top ``per_mode`` settings of each seed mode in a ``sweep`` table.

    Returns:
        Full decode settings (every key of ``base``), duplicates removed; ``base`` first, so
        a tie in ``pipeline_scores`` (a stable sort) keeps the model's current setting.
    """
    keys = list(base)
    out: list[dict[str, object]] = [dict(base)]
    for _, group in table.groupby("seeds", sort=False):
        out += [setting_of(row, keys) for _, row in group.head(per_mode).iterrows()]
    unique: list[dict[str, object]] = []
    for setting in out:
        if setting not in unique:
            unique.append(setting)
    return unique


def magnified(image: MicroscopyImage, truth: np.ndarray, factor: float
              ) -> tuple[MicroscopyImage, np.ndarray]:
    """``image`` and its truth labels resized by ``factor`` (objects ``factor`` x larger)."""
    if factor == 1:
        return image, truth
    shape = scaled_shape(truth.shape, factor)
    return (MicroscopyImage(resize_image(image.grey(), shape), name=image.name),
            resize_labels(truth, shape))


def pipeline_scores(predictor, datasets: Mapping[str, tuple[str, Sequence, Sequence[float]]],
                    settings: Sequence[Mapping[str, object]], progress: bool = False
                    ) -> pd.DataFrame:
    """AP@0.5 of each setting through ``segment_image`` (auto-scale, tiling) per magnification.

    Args:
        predictor: a ``ZeusPredictor``.
        datasets: name -> (prompt, [(image, truth labels)], magnifications).
        settings: full decode settings (``shortlist``).

    Returns:
        One row per setting: its keys, ``<dataset>@<m>/ap50`` (image mean) and ``score`` =
        mean over every (dataset, magnification), sorted by ``score`` descending (ties keep
        the order given).
    """
    rows = []
    for setting in tqdm(list(settings), desc="pipeline", disable=not progress):
        row: dict[str, object] = dict(setting)
        for name, (prompt, samples, mags) in datasets.items():
            for m in mags:
                truths, preds = [], []
                for image, truth in samples:
                    big, big_truth = magnified(image, np.asarray(truth), m)
                    preds.append(segment_image(predictor, big, [prompt], **setting).labels)
                    truths.append(big_truth)
                ap = average_precision(truths, preds, [0.5])[0]
                row[f"{name}@{m:g}/ap50"] = float(ap[:, 0].mean())
        cols = [k for k in row if k.endswith("/ap50")]
        row["score"] = float(np.mean([row[k] for k in cols]))
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
