"""One module per CLI subcommand; each defines ``register(subparsers)`` and ``run(args)``.

To add a subcommand, write ``zeusseg/commands/<name>.py`` with those two functions and add
its module name to ``COMMANDS`` below (the order is the order in ``zeusseg --help``).
"""

COMMANDS = [
    "segment", "evaluate", "instruct", "models", "baseline", "compare", "train",
    "train_class_head", "train_quality_head", "finetune",
]
