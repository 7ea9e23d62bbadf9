"""``python -m zeusseg.finetune`` / ``accelerate launch -m zeusseg.finetune --config ...``."""

from __future__ import annotations

import argparse
import json
import logging

from zeusseg.commands.finetune import add_finetune_args
from zeusseg.training.finetune import config_from_args, finetune

_logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Parse the ``zeusseg finetune`` options, fine-tune, log the summary."""
    p = argparse.ArgumentParser(prog="zeusseg finetune",
                                description="Few-shot LoRA fine-tuning of a Zeus model.")
    add_finetune_args(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    summary = finetune(config_from_args(args), merge=args.merge)
    _logger.info("finetune: %s", json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
