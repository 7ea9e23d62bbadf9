"""Side-by-side comparison of segmentation methods on one dataset, scored by one scorer.

Names are imported lazily (PEP 562), so ``zeusseg --help`` does not load pandas or torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "PRCurve": "zeusseg.compare.curves",
    "pr_curve": "zeusseg.compare.curves",
    "METHODS": "zeusseg.compare.methods",
    "MethodOptions": "zeusseg.compare.methods",
    "MethodRun": "zeusseg.compare.methods",
    "MethodUnavailable": "zeusseg.compare.methods",
    "method_predictions": "zeusseg.compare.methods",
    "Comparison": "zeusseg.compare.report",
    "comparison_table": "zeusseg.compare.report",
    "per_class_table": "zeusseg.compare.report",
    "run_compare": "zeusseg.compare.report",
    "write_compare_report": "zeusseg.compare.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'zeusseg.compare' has no attribute '{name}'")
