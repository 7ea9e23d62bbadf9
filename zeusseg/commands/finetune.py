"""``zeusseg finetune``: few-shot LoRA fine-tuning from a YAML config (CPU or GPU, resumable)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

_logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="LoRA-fine-tune a Zeus model on a few annotated images (configs/finetune/*.yaml)",
        description=(
            "Fine-tune a LoRA adapter on N annotated images (a COCO JSON, a folder with "
            "images/ + labels/, or a registered dataset). Writes only the adapter to "
            "OUTPUT_DIR/adapter (use it with 'zeusseg segment --adapter'); --merge also writes "
            "a full merged model to OUTPUT_DIR/merged. Rerunning the same command resumes "
            "from OUTPUT_DIR/checkpoints. Multi-GPU: accelerate launch -m zeusseg.finetune "
            "--config ..."
        ),
    )
    add_finetune_args(p)
    p.set_defaults(run=run)


def add_finetune_args(p: argparse.ArgumentParser) -> None:
    """Add the fine-tuning options to a parser (also of ``python -m zeusseg.finetune``)."""
    g = p.add_argument_group("Training")
    g.add_argument("--config", required=True, help="fine-tuning YAML (configs/finetune/*.yaml)")
    g.add_argument("--output-dir", default=None, help="overrides the config's output_dir")
    g.add_argument("--merge", action="store_true",
                   help="also write OUTPUT_DIR/merged: the base with the adapter merged in")
    g.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override config entries, e.g. train.max_steps=10 (YAML values)")


def run(args: argparse.Namespace) -> int:
    from zeusseg.training.finetune import config_from_args, finetune

    summary = finetune(config_from_args(args), merge=args.merge)
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0
