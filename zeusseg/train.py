"""``python -m zeusseg.train`` / ``accelerate launch -m zeusseg.train --config ...``."""

from __future__ import annotations

import argparse
import json
import logging

from zeusseg.commands.train import add_train_args
from zeusseg.training.train import config_from_args, train

_logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Parse the ``zeusseg train`` options, train, log the best validation scores."""
    p = argparse.ArgumentParser(prog="zeusseg train", description="Train a Zeus model.")
    add_train_args(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    best = train(config_from_args(args), args)
    _logger.info("best validation: %s", json.dumps(best))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
