"""Validation during training: full images -> dense maps -> instances -> per-image match counts.

Each image contributes a fixed-length float vector (so ``accelerator.gather_for_metrics`` can
gather counts, never masks): ``[tp, fp, fn, ap]`` at IoU 0.5 for the class-agnostic prompt,
then ``[tp, fp, fn]`` per class when the source has several classes (one prompt per class,
instances classed by ``assign_classes``), zero-padded to ``MAX_CLASSES``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch

from zeusseg.inference.instance_segmentation import assign_classes, decode_instances
from zeusseg.inference.zeus_segmenter import decode_settings
from zeusseg.metrics import average_precision
from zeusseg.modeling.config import get_zeus_cfg

_logger = logging.getLogger(__name__)

MAX_CLASSES = 3
N_COLS = 4 + 3 * MAX_CLASSES


def _counts(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float, float, float]:
    ap, tp, fp, fn = average_precision(gt, pred, thresholds=(0.5,))
    return float(tp[0]), float(fp[0]), float(fn[0]), float(ap[0])


@torch.no_grad()
def image_counts(model, item, embedder, *, per_class: bool = True, **decode_kwargs) -> np.ndarray:
    """(N_COLS,) float64 counts of one ``ValidationItem`` (see the module docstring)."""
    device = next(model.parameters()).device
    classes = sorted(item.prompts)
    multi = per_class and 1 < len(classes) <= MAX_CLASSES
    texts = [item.agnostic_prompt] + ([item.prompts[c] for c in classes] if multi else [])
    tokens, mask = embedder(texts)
    feats = model.encode_image(item.image[None].to(device))
    logits = model.decode(feats, tokens.to(device), mask.to(device))
    h, w = item.size
    probs = torch.sigmoid(logits.float())[:, :, :h, :w].cpu().numpy()
    out = np.zeros(N_COLS)
    gt = item.masks.labels
    labels, _ = decode_instances(probs[0], **decode_kwargs)
    out[:4] = _counts(gt, item.restore(labels))
    if multi:
        inst = assign_classes(probs[1:], class_ids=classes, **decode_kwargs)
        pred = item.restore(inst.labels)
        lut = np.zeros(int(inst.ids.max(initial=0)) + 1, np.int64)
        lut[inst.ids] = inst.class_ids
        pred_cls = lut[pred]
        gt_lut = np.zeros(int(item.masks.ids.max(initial=0)) + 1, np.int64)
        gt_lut[item.masks.ids] = item.masks.class_ids
        gt_cls = gt_lut[gt]
        for k, c in enumerate(classes):
            tp, fp, fn, _ = _counts(np.where(gt_cls == c, gt, 0), np.where(pred_cls == c, pred, 0))
            out[4 + 3 * k : 7 + 3 * k] = (tp, fp, fn)
    return out


def summarise(rows: np.ndarray, datasets: Sequence[str], class_names: dict) -> dict[str, float]:
    """Scores per dataset from per-image count rows (N, N_COLS).

    F1 pools counts over the images: 2 TP / (2 TP + FP + FN); AP is the mean over images of
    TP / (TP + FP + FN) at IoU 0.5 (the project scorer's definition).
    """
    out: dict[str, float] = {}
    datasets = np.asarray(datasets)
    for ds in sorted(set(datasets.tolist())):
        r = rows[datasets == ds]
        tp, fp, fn = r[:, 0].sum(), r[:, 1].sum(), r[:, 2].sum()
        out[f"{ds}/f1"] = float(2 * tp / max(2 * tp + fp + fn, 1))
        out[f"{ds}/ap"] = float(r[:, 3].mean())
        for k, name in enumerate(class_names.get(ds, [])):
            tp, fp, fn = (r[:, 4 + 3 * k + j].sum() for j in range(3))
            if tp + fn > 0:
                out[f"{ds}/f1_{name}"] = float(2 * tp / max(2 * tp + fp + fn, 1))
    return out


def validate(
    model,
    items: Sequence,
    embedder,
    *,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    rank: int = 0,
    world: int = 1,
    **decode_kwargs,
) -> dict[str, float]:
    """Score ``model`` on validation items (this process takes every ``world``-th item).

    Returns:
        ``{"<dataset>/f1": ..., "<dataset>/ap": ..., "<dataset>/f1_<class>": ..., "score": ...}``
        where ``score`` (checkpoint selection) is the mean of every dataset's F1 and AP.
    """
    decode_kwargs = decode_settings(get_zeus_cfg(model), decode_kwargs)
    was_training = model.training
    model.eval()
    mine = list(range(rank, len(items), world))
    rows = np.stack([image_counts(model, items[i], embedder, **decode_kwargs) for i in mine]
                    or [np.zeros(N_COLS)])
    idx = np.asarray(mine if mine else [-1])
    if gather is not None:
        rows = gather(torch.from_numpy(rows)).numpy()
        idx = gather(torch.from_numpy(idx)).numpy()
    keep = idx >= 0
    rows, idx = rows[keep], idx[keep]
    names = [items[i].dataset for i in idx]
    class_names = {it.dataset: [it.prompts[c] for c in sorted(it.prompts)] for it in items
                   if 1 < len(it.prompts) <= MAX_CLASSES}
    scores = summarise(rows, names, class_names)
    main = [v for k, v in scores.items() if k.endswith("/f1") or k.endswith("/ap")]
    scores["score"] = float(np.mean(main)) if main else 0.0
    model.train(was_training)
    return scores
