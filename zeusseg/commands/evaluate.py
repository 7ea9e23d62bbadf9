"""``zeusseg evaluate``: score predictions against ground truth, print a table, write reports."""

from __future__ import annotations

import argparse
import logging

_logger = logging.getLogger(__name__)

_DESCRIPTION = """\
Score predicted instance masks against ground truth. Images are paired by file name stem
(a prediction 'x_labels.tif' also matches 'x'). PRED and GT may each be a COCO JSON, a folder
of label images (PNG/TIFF, 0 = background; TIFFs written by 'zeusseg segment' carry classes
and scores), or a folder holding annotations.json or labels/ (e.g. the OUT of 'zeusseg
segment'); GT may also be a dataset name such as visn-val or coelho-u2os.
PRED may also be a COCO results list (a JSON list of {image_id, category_id, segmentation,
score}, as written by detectron2, mmdetection or COCO.loadRes): its image ids are paired with
file names through the 'images' of GT, which must then be COCO (a JSON, a folder holding
annotations.json, or a COCO dataset such as visn-val).

Metrics (full definitions in docs/metrics.md):
  apT        cellpose/CellSeg1 AP = TP/(TP+FP+FN) at IoU >= T, one-to-one Hungarian matching
             (a.k.a. segmentation accuracy); 1.0 for an image empty in both GT and prediction
  ap_mean    mean of apT over T = 0.50:0.05:0.95 (micro-sam's mSA)
  precisionT, recallT, f1_T
             TP/(TP+FP), TP/(TP+FN), 2TP/(2TP+FP+FN) at IoU 0.5 and 0.8 (ViruSeg/VISN)
  dice       foreground Dice 2|G&P|/(|G|+|P|) of the binary masks
  miou       mean over {background, foreground} of the pixel IoU (class-aware: over
             background and every class)
  coco_map, coco_ap50, coco_ap75
             COCO mask AP (pycocotools COCOeval, segm) with maxDets raised to 10000, so
             dense images are not capped at 100; ranks predictions by their scores
Every score is given as 'image mean' (mean of per-image scores) and 'pooled' (TP/FP/FN and
pixel counts summed over all images first); COCO values are dataset-level. With
--per-class, 'class-aware' scores only match instances of the same class, and each class
gets its own row.

Writes OUT/metrics.csv (summary), OUT/per_image.csv, OUT/metrics.json and OUT/metrics.md.
A GT image without prediction counts as all false negatives (warning); predictions
without GT are ignored (warning). Exit code 2 on bad input (nothing is written)."""


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from err
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"IoU threshold must lie in (0, 1], got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score predictions against ground truth (AP, F1, COCO mAP, Dice, mIoU)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inp = p.add_argument_group("Input")
    inp.add_argument("--pred", required=True, metavar="PRED",
                     help="predictions: COCO JSON, COCO results list, label-image folder, or "
                     "a segment OUT folder")
    inp.add_argument("--gt", required=True, metavar="GT",
                     help="ground truth: COCO JSON, label-image folder, dataset folder or name")
    inp.add_argument("--data-root", default=None,
                     help="shared data folder for dataset names (or ZEUSSEG_DATA_ROOT)")
    inp.add_argument("--only-predicted", action="store_true",
                     help="score only GT images that have a prediction (default: a missing "
                     "prediction counts as all false negatives)")
    met = p.add_argument_group("Metrics")
    met.add_argument("--thresholds", nargs="+", type=_threshold, default=[0.5, 0.75, 0.9],
                     metavar="T", help="IoU thresholds reported as apT columns "
                     "(default: %(default)s; ap_mean always uses 0.50:0.05:0.95)")
    met.add_argument("--per-class", action="store_true",
                     help="add class-aware scores (a match must share the class) and a row "
                     "per class")
    out = p.add_argument_group("Output")
    out.add_argument("-o", "--out", default="evaluation",
                     help="output folder for the reports (default: %(default)s)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from zeusseg.evaluation import evaluate, write_report
    from zeusseg.evaluation.report import class_table, main_table

    result = evaluate(args.pred, args.gt, thresholds=args.thresholds, per_class=args.per_class,
                      only_predicted=args.only_predicted, data_root=args.data_root)
    paths = write_report(result, args.out)
    console = Console()
    for title, (header, rows) in (("zeusseg evaluate", main_table(result)),
                                  ("per class (pooled)", class_table(result))):
        if not rows:
            continue
        table = Table(title=title)
        for k, h in enumerate(header):
            table.add_column(h, justify="left" if k == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    console.print(f"reports written to {paths[0].parent}: " + ", ".join(p.name for p in paths))
    return 0
