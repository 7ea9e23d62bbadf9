"""Ablation for the quality head: a plain threshold on the decoder's own instance score.

The threshold is chosen on training-image predictions (the one that maximises the mean over
the training datasets of the pooled F1@0.5, as ``zeusseg train-quality-head`` chooses its
threshold), then applied to the prediction folders of the scored sets:

    .venv/bin/python scripts/ablation_score_threshold.py \\
        --train visn-train=runs/train-preds/visn-train \\
        --train dsb-train=runs/train-preds/dsb-train \\
        --apply visn-val=runs/card-noq/visn-val --apply dsb-val=runs/card-noq/dsb-val

Prediction folders are ``zeusseg segment`` outputs (``labels/*.tif``) made with
``--no-quality-head`` (or a model without one). Prints one Markdown row per scored set.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from zeusseg.datasets import get_dataset
from zeusseg.io.labels import read_label_image
from zeusseg.metrics import match_image
from zeusseg.training.quality_head import THRESHOLDS, choose_threshold, pooled_scores

_logger = logging.getLogger("ablation_score_threshold")


def instances(dataset: str, folder: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Decoder scores (N,), matched at IoU >= 0.5 (N,), and the ground-truth object count."""
    ds = get_dataset(dataset)
    scores, matched, n_true = [], [], 0
    for name in ds.names:
        truth = ds.masks(name)
        pred = read_label_image(f"{folder}/labels/{name}.tif")
        iou = match_image(truth, pred).iou
        n_true += len(truth)
        scores.append(pred.scores)
        matched.append((iou >= 0.5).any(0) if iou.shape[0] else np.zeros(len(pred), bool))
    return np.concatenate(scores), np.concatenate(matched), n_true


def _pairs(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="append", required=True, metavar="DATASET=DIR")
    parser.add_argument("--apply", action="append", required=True, metavar="DATASET=DIR")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    train = [instances(d, f) for d, f in _pairs(args.train).items()]
    q = np.concatenate([s for s, _, _ in train])
    m = np.concatenate([x for _, x, _ in train])
    d = np.concatenate([np.full(len(s), i) for i, (s, _, _) in enumerate(train)])
    threshold, _ = choose_threshold(q, m, d, np.array([n for _, _, n in train]))
    _logger.info("decoder-score threshold chosen on %s: %.2f (candidates %.2f-%.2f)",
                 ", ".join(_pairs(args.train)), threshold, THRESHOLDS[0], THRESHOLDS[-1])
    print("| set | threshold | pooled precision | recall | F1@0.5 | AP@0.5 |")  # noqa: T201
    print("|---|---|---|---|---|---|")  # noqa: T201
    for dataset, folder in _pairs(args.apply).items():
        s, matched, n_true = instances(dataset, folder)
        r = pooled_scores(s >= threshold, matched, n_true)
        print(f"| {dataset} | {threshold:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | "  # noqa: T201
              f"{r['f1']:.3f} | {r['ap50']:.3f} |")


if __name__ == "__main__":
    main()
