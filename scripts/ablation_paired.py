"""Paired image-level bootstrap of score differences between two ablation variants.

Usage::

    .venv/bin/python scripts/ablation_paired.py /work/runs/ablation-cpu-arch \
        --pairs zeus-hybrid-s-late:unet-plain zeus-cnn-text:unet-plain \
        --scores visn-val/f1_50 visn-val/ap50 dsb-val/ap50

Reads the per-image scores of ``<dir>/<variant>/seed_<s>/scores.json`` (written by
``scripts/run_ablation.py``), and for each pair ``A:B`` and each score prints the mean of
A - B over the images with a 95 % percentile interval from resampling the images
(5000 draws, seed 0). The interval covers only which images happen to be in the evaluation
set. It does not cover training noise (another seed), so a difference whose interval excludes
0 can still be within seed-to-seed variation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def per_image(root: Path, variant: str, seed: int, score: str) -> dict[str, float]:
    """Image name -> value of ``score`` (``<set>/<metric>``) of one run."""
    key, metric = score.split("/")
    rec = json.loads((root / variant / f"seed_{seed}" / "scores.json").read_text())
    return {name: row[metric] for name, row in rec["scores"][f"{key}/per_image"].items()}


def paired_interval(a: np.ndarray, b: np.ndarray, draws: int = 5000) -> tuple[float, float, float]:
    """Mean of ``a - b`` and its 95 % bootstrap interval (images resampled with replacement)."""
    d = a - b
    idx = np.random.default_rng(0).integers(0, len(d), (draws, len(d)))
    lo, hi = np.percentile(d[idx].mean(axis=1), [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, help="the ablation output_dir")
    p.add_argument("--pairs", nargs="+", required=True, metavar="A:B")
    p.add_argument("--scores", nargs="+", default=["visn-val/f1_50", "visn-val/ap50"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print("| A - B | " + " | ".join(args.scores) + " |")  # noqa: T201 (script output)
    print("|---|" + "---|" * len(args.scores))  # noqa: T201
    for pair in args.pairs:
        a, b = pair.split(":")
        cells = []
        for score in args.scores:
            pa, pb = (per_image(args.runs, v, args.seed, score) for v in (a, b))
            names = sorted(pa)
            if sorted(pb) != names:
                raise SystemExit(f"{a} and {b} were scored on different images for {score}")
            mean, lo, hi = paired_interval(np.array([pa[n] for n in names]),
                                           np.array([pb[n] for n in names]))
            cells.append(f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        print(f"| {a} - {b} | " + " | ".join(cells) + " |")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
