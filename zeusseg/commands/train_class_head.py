"""``zeusseg train-class-head``: fit an instance class head on a model's frozen features."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-class-head",
        help="train the instance class head that tells named classes apart "
        "(configs/class_head/*.yaml)",
        description=(
            "Fit the instance class head of a trained Zeus model (e.g. which virus each "
            "particle is) on the frozen encoder features of a dataset's ground-truth instances. "
            "Writes OUTPUT_DIR/class_head.safetensors + class_head.json + metrics.json; copy "
            "the two class_head files next to the model's model.safetensors to use it "
            "(docs/class_head.md)."
        ),
    )
    p.add_argument("--config", required=True, help="YAML config (configs/class_head/*.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set data.views=4 (repeatable)")
    p.add_argument("--data-root", default=None, help="shared data folder (or ZEUSSEG_DATA_ROOT)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import os

    from zeusseg.config_file import parse_set_args
    from zeusseg.training.class_head import load_class_head_config, train_class_head

    if args.data_root:
        os.environ["ZEUSSEG_DATA_ROOT"] = args.data_root
    cfg = load_class_head_config(args.config, parse_set_args(args.set))
    metrics = train_class_head(cfg)
    sys.stdout.write(json.dumps(metrics, indent=2) + "\n")
    return 0
