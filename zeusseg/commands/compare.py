"""``zeusseg compare``: several methods on one dataset, one scorer, one report folder."""

from __future__ import annotations

import argparse
import logging

from zeusseg.compare.methods import METHODS
from zeusseg.errors import InputError

_logger = logging.getLogger(__name__)

_DESCRIPTION = f"""\
Run (or read the cached predictions of) each method on a registered dataset, score all of them
with the scorer of `zeusseg evaluate`, and write OUT/report.md, OUT/report.html, OUT/table.csv,
OUT/per_class.csv, OUT/bar_chart.png, OUT/pr_curve.png, OUT/montage.png and OUT/<method>/metrics.*.

Methods: {", ".join(METHODS)}.
  classical       Otsu + watershed floor (no model)
  zeus, zeus-lora the text-prompted model, zero-shot or with --zeus-adapter
  unet            the supervised dense baseline: a plain U-Net trained with `zeusseg train
                  --config configs/unet/unet-plain-visn.yaml`, given by --unet-model DIR
  maskrcnn, cascade, cascade-eva02, maskrcnn-r50
                  supervised detectors trained with `zeusseg baseline train` (maskrcnn and
                  cascade: the EfficientNet-Lite0-FPN CPU recipe); their run folders are
                  RUNS_DIR/<method> (--runs-dir, ZEUSSEG_RUNS_DIR, default runs/baselines)

Every method's row has sec_per_image (time inside the segmenter, no file I/O); the methods list
gives each trained model's provenance (backbone weights, training data, steps, training time).

Predictions are cached in CACHE/<method>/labels (default CACHE = OUT/predictions): a method whose
cache covers every image is not run again, so its model is not needed. A method with neither
cached predictions nor a model is an error (exit 2) that says what to train; --skip-missing
skips it instead and the report lists it as skipped.

Predictions of other tools: put a COCO results list (the JSON list of {{image_id, category_id,
segmentation, score}} that detectron2, mmdetection and COCO.loadRes use; image ids those of the
dataset's annotations.json) in CACHE/<name>/results.json, or label TIFFs <image>.tif in
CACHE/<name>/labels, and add <name> to --methods (e.g. --methods classical,detectron2)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="compare methods on a dataset (tables, bar chart, PR curve, montage, timing)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inp = p.add_argument_group("Input")
    inp.add_argument("--dataset", required=True, help="registered dataset, e.g. visn-val")
    inp.add_argument("--data-root", default=None, help="shared data folder (or ZEUSSEG_DATA_ROOT)")
    inp.add_argument("--methods", default="classical,zeus",
                     help="comma-separated methods (default: %(default)s); another name "
                     "compares the predictions cached under it (see below)")
    inp.add_argument("--limit", type=int, default=None,
                     help="only the first N images (quick check; scores only those)")
    mod = p.add_argument_group("Model")
    mod.add_argument("--runs-dir", default=None,
                     help="folder of trained baselines (RUNS_DIR/<method>/model.safetensors)")
    mod.add_argument("--zeus-model", default=None, help="zeus model name or checkpoint")
    mod.add_argument("--zeus-adapter", default=None, help="LoRA adapter folder for zeus-lora")
    mod.add_argument("--unet-model", default=None, metavar="DIR",
                     help="trained U-Net folder for unet (a `zeusseg train` run's best/)")
    mod.add_argument("-p", "--prompt", action="append", default=None,
                     help="prompt(s) for classical/zeus (default: the dataset's prompt)")
    mod.add_argument("--score-thresh", type=float, default=0.5,
                     help="minimum detection score of the detectors (%(default)s)")
    mod.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    out = p.add_argument_group("Output")
    out.add_argument("-o", "--out", default="compare_report", help="report folder (%(default)s)")
    out.add_argument("--cache", default=None, help="predictions cache (default OUT/predictions)")
    out.add_argument("--rerun", action="store_true", help="ignore cached predictions")
    out.add_argument("--skip-missing", action="store_true",
                     help="skip methods without predictions or model instead of failing")
    out.add_argument("--montage-images", type=int, default=4,
                     help="images in the overlay montage (%(default)s; 0 = none)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from zeusseg.compare.methods import MethodOptions
    from zeusseg.compare.report import run_compare, to_markdown, write_compare_report

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise InputError(None, f"--methods is empty; choose from {', '.join(METHODS)}")
    opts = MethodOptions(zeus_model=args.zeus_model, zeus_adapter=args.zeus_adapter,
                         unet_model=args.unet_model, prompts=tuple(args.prompt or ()),
                         score_thresh=args.score_thresh)
    if args.runs_dir:
        opts.runs_dir = Path(args.runs_dir)
    comp = run_compare(args.dataset, methods, args.out, cache=args.cache, opts=opts,
                       data_root=args.data_root, skip_missing=args.skip_missing,
                       rerun=args.rerun, limit=args.limit)
    write_compare_report(comp, args.out, data_root=args.data_root,
                         montage_images=args.montage_images)
    md = to_markdown(comp)
    table = md.split("## Main metrics (class-agnostic, pooled)")[1].split("## Per class")[0]
    print(f"## {args.dataset}: main metrics (class-agnostic, pooled){table.rstrip()}")
    for m, why in comp.skipped.items():
        print(f"skipped {m}: {why}")
    print(f"report: {Path(args.out) / 'report.md'} (and report.html)")
    return 0
