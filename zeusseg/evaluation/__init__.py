"""Scoring of predicted instance masks against ground truth, with CSV/JSON/Markdown reports."""

from zeusseg.evaluation.coco_map import COCO_MAX_DETS, coco_mask_ap
from zeusseg.evaluation.evaluate import (
    EvaluationResult,
    LabelSet,
    evaluate,
    evaluate_masks,
    load_label_set,
)
from zeusseg.evaluation.report import REPORT_FILES, to_markdown, write_report

__all__ = [
    "COCO_MAX_DETS",
    "REPORT_FILES",
    "EvaluationResult",
    "LabelSet",
    "coco_mask_ap",
    "evaluate",
    "evaluate_masks",
    "load_label_set",
    "to_markdown",
    "write_report",
]
