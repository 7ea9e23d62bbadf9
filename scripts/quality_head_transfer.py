"""Does the quality head transfer to a virus it never saw? Leave-one-virus-out on training data.

For each virus class of visn-train, the head is refitted without that virus's images (the
``zeusseg train-quality-head`` recipe: fit without the held-out every-n-th images, choose the
threshold on them, refit on all), then scored on the left-out virus's instances, next to the
decoder alone and a plain decoder-score threshold chosen the same way. Feature variants:
``all`` (the bundle's features), ``no-context`` (without the whole-image means), ``instance``
(log area, decoder score, solidity, border only). Reads the ``samples.pt`` a training run
wrote; validation and test images are not touched.

    .venv/bin/python scripts/quality_head_transfer.py --samples runs/quality-head/default/samples.pt
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch

from zeusseg.datasets import get_dataset
from zeusseg.modeling.quality_head import N_EXTRA
from zeusseg.training.quality_head import (
    choose_threshold,
    fit_quality_head,
    holdout_threshold,
    pooled_scores,
)

_logger = logging.getLogger("quality_head_transfer")


def feature_columns(dim: int) -> dict[str, np.ndarray]:
    """Column indices of each variant (``quality_features`` layout: instance means of tokens and
    skip (c), whole-image means of both (c), log area, ``N_EXTRA`` extras)."""
    c = (dim - N_EXTRA) // 2
    cols = np.arange(dim)
    return {"all": cols, "no-context": np.r_[cols[:c], cols[2 * c:]],
            "instance": cols[2 * c:]}


def image_classes(dataset: str) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Per image: its majority class id and its number of true objects; class names."""
    ds = get_dataset(dataset)
    cls, n = [], []
    for name in ds.names:
        m = ds.masks(name)
        cls.append(int(np.bincount(m.class_ids).argmax()) if len(m) else 0)
        n.append(len(m))
    return np.array(cls), np.array(n), ds.class_names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None, help="JSON with every number")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(2)
    s = torch.load(args.samples, weights_only=False)
    meta = json.loads((args.samples.parent / "quality_head.json").read_text())["provenance"]
    cfg = meta["config"]
    datasets = list(cfg["data"]["datasets"])
    views = int(cfg["data"]["views"])
    fit = {"hidden": int(cfg["train"]["hidden"]), "steps": int(cfg["train"]["steps"]),
           "weight_decay": float(cfg["train"]["weight_decay"]), "seed": int(cfg["seed"])}
    vd = datasets.index("visn-train")
    cls_of_image, n_of_image, names = image_classes("visn-train")
    inst_cls = np.where(s["dataset"] == vd, cls_of_image[np.minimum(
        s["image"], len(cls_of_image) - 1)], 0)
    matched = s["y"].numpy() > 0.5
    n_true_all = s["n_true"].sum(1)
    columns = feature_columns(s["x"].shape[1])
    hold = s["holdout"]
    rows = []
    for c, cname in names.items():
        test = inst_cls == c
        if not test.any():
            continue
        train = ~test
        n_test = int(n_of_image[cls_of_image == c].sum()) * views
        row = {"left out": cname, "instances": int(test.sum()),
               "decoder": pooled_scores(np.ones(int(test.sum()), bool), matched[test], n_test)}
        # ground-truth objects of the training part per dataset: all, and held-out images
        n_tr = np.array([n_true_all[d] - (n_test if d == vd else 0) for d in
                         range(len(datasets))])
        held_n = s["n_true"][:, 1].copy()
        held_n[vd] -= int(n_of_image[(cls_of_image == c) & (np.arange(len(cls_of_image))
                                                              % cfg["data"]["holdout_every"]
                                                              == 0)].sum()) * views
        t_score, _ = choose_threshold(s["score"][train], matched[train], s["dataset"][train],
                                      n_tr)
        row["score_threshold"] = t_score
        row["score"] = pooled_scores(s["score"][test] >= t_score, matched[test], n_test)
        for variant, cols in columns.items():
            x = s["x"][:, cols]
            t, _, _ = holdout_threshold(x[train], s["y"][train], hold[train],
                                        s["dataset"][train], held_n, fit)
            head = fit_quality_head(x[train], s["y"][train], **fit)
            with torch.no_grad():
                q_test = torch.sigmoid(head(x[test])).numpy()
            row[f"head:{variant}"] = {**pooled_scores(q_test >= t, matched[test], n_test),
                                      "threshold": t}
        rows.append(row)
        _logger.info("%s: decoder F1 %.3f, score>=%.2f %.3f, %s", cname, row["decoder"]["f1"],
                     t_score, row["score"]["f1"], ", ".join(
                         f"{v} {row['head:' + v]['f1']:.3f}" for v in columns))
    # in-domain: the recipe itself (fit without the held-out images, threshold chosen on them,
    # scored on them), per variant, mean over the datasets of the pooled F1@0.5
    in_domain = {}
    t_score, _ = choose_threshold(s["score"][hold], matched[hold], s["dataset"][hold],
                                  s["n_true"][:, 1])
    per_ds = [pooled_scores(s["score"][hold & (s["dataset"] == d)] >= t_score,
                            matched[hold & (s["dataset"] == d)], int(s["n_true"][d, 1]))["f1"]
              for d in range(len(datasets))]
    in_domain["score"] = float(np.mean(per_ds))
    for variant, cols in columns.items():
        _, table, _ = holdout_threshold(s["x"][:, cols], s["y"], hold, s["dataset"],
                                        s["n_true"][:, 1], fit)
        in_domain[f"head:{variant}"] = max(table.values())
    keys = ["score", *[f"head:{v}" for v in columns]]
    loco = {k: float(np.mean([r[k]["f1"] for r in rows])) for k in keys}
    choice = {k: 0.5 * (in_domain[k] + loco[k]) for k in keys}
    _logger.info("in-domain held-out mean F1: %s", in_domain)
    _logger.info("leave-one-virus-out mean F1: %s", loco)
    _logger.info("selection (mean of the two): %s -> %s", choice, max(choice, key=choice.get))
    print("| left-out virus | instances | decoder F1 / AP@0.5 | score threshold | "  # noqa: T201
          + " | ".join(f"head ({v})" for v in columns) + " |")
    print("|---" * (4 + len(columns)) + "|")  # noqa: T201
    for r in rows:
        cells = [f"{r[k]['f1']:.3f} / {r[k]['ap50']:.3f}" for k in
                 ["decoder", "score", *[f"head:{v}" for v in columns]]]
        print(f"| {r['left out']} | {r['instances']} | " + " | ".join(cells) + " |")  # noqa: T201
    print("| mean, left-out viruses | | – | " + " | ".join(  # noqa: T201
        f"{loco[k]:.3f}" for k in keys) + " |")
    print("| in-domain held-out (mean of datasets) | | – | " + " | ".join(  # noqa: T201
        f"{in_domain[k]:.3f}" for k in keys) + " |")
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "in_domain": in_domain, "loco": loco,
                                        "selection": choice}, indent=2))


if __name__ == "__main__":
    main()
