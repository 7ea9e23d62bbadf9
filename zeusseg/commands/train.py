"""``zeusseg train``: train a Zeus model from a YAML config (CPU or GPU, resumable)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

_logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a Zeus model (configs/zeroshot/*.yaml)",
        description=(
            "Train a Zeus model as configured. Rerunning the same command resumes from the "
            "newest checkpoint in OUTPUT_DIR/checkpoints; the best model is written to "
            "OUTPUT_DIR/best. Multi-GPU: accelerate launch -m zeusseg.train --config ..."
        ),
    )
    add_train_args(p)
    p.set_defaults(run=run)


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Add the training options to a parser (also of ``python -m zeusseg.train``)."""
    g = p.add_argument_group("Training")
    g.add_argument("--config", required=True, help="training YAML (configs/zeroshot/*.yaml)")
    g.add_argument("--output-dir", default=None, help="overrides the config's output_dir")
    g.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override config entries, e.g. train.max_steps=10 (YAML values)")


def run(args: argparse.Namespace) -> int:
    from zeusseg.training.train import config_from_args, train

    best = train(config_from_args(args), args)
    sys.stdout.write(json.dumps({"best": best}, indent=2) + "\n")
    return 0
