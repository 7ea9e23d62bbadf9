"""Train and score a grid of Zeus variants on the same data, seeds and budget (issue 10).

Usage::

    .venv/bin/python scripts/run_ablation.py --config configs/ablation/cpu-arch.yaml \\
        [--output-dir DIR] [--only VARIANT ...]

The spec format, the variant axes and what is written are described in
``zeusseg.evaluation.ablation`` (the grid) and ``zeusseg.evaluation.ablation_tables`` (the
tables and plot); docs/ablations.md has the runs.
"""

from __future__ import annotations

import argparse
import logging

from zeusseg.evaluation.ablation import load_spec, run_ablation
from zeusseg.evaluation.ablation_tables import to_markdown


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train and score an ablation grid of Zeus variants.")
    p.add_argument("--config", required=True, help="ablation YAML (configs/ablation/*.yaml)")
    p.add_argument("--output-dir", default=None, help="overrides the spec's output_dir")
    p.add_argument("--only", nargs="*", default=None, help="run only these variants")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    spec = load_spec(args.config)
    spec["output_dir"] = args.output_dir or spec["output_dir"]
    summary = run_ablation(spec, only=args.only)
    print(to_markdown(spec, summary))  # noqa: T201 (script output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
