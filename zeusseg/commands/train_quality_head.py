"""``zeusseg train-quality-head``: fit an instance quality head on a model's own predictions."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-quality-head",
        help="train the instance quality head that drops false positives "
        "(configs/quality_head/*.yaml)",
        description=(
            "Fit the instance quality head of a trained Zeus model: the model segments the "
            "training images as `zeusseg segment` does, and a small MLP learns from the frozen "
            "encoder features which decoded instances match a ground-truth object (IoU >= 0.5). "
            "The keep threshold is chosen on held-out training images. Writes "
            "OUTPUT_DIR/quality_head.safetensors + quality_head.json + metrics.json; copy the "
            "two quality_head files next to the model's model.safetensors to use it "
            "(docs/quality_head.md)."
        ),
    )
    p.add_argument("--config", required=True, help="YAML config (configs/quality_head/*.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set data.views=2 (repeatable)")
    p.add_argument("--data-root", default=None, help="shared data folder (or ZEUSSEG_DATA_ROOT)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import os

    from zeusseg.config_file import parse_set_args
    from zeusseg.training.quality_head import load_quality_head_config, train_quality_head

    if args.data_root:
        os.environ["ZEUSSEG_DATA_ROOT"] = args.data_root
    cfg = load_quality_head_config(args.config, parse_set_args(args.set))
    metrics = train_quality_head(cfg)
    sys.stdout.write(json.dumps(metrics, indent=2) + "\n")
    return 0
