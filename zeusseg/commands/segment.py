"""``zeusseg segment``: instance masks for an image or a folder of images."""

from __future__ import annotations

import argparse
import logging

from zeusseg.errors import InputError
from zeusseg.inference.folder_outputs import (
    DEFAULT_FORMATS,
    DEFAULT_METHOD,
    METHODS,
    OUTPUT_FORMATS,
    output_path,
    parse_formats,
)
from zeusseg.tiling import DEFAULT_TILE_OVERLAP, DEFAULT_TILE_SIZE

_logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment an image or a folder of images",
        description=(
            "Segment every image (PNG, JPEG, TIFF; 8/16-bit, grey/RGB) of IMG_OR_DIR. Writes\n"
            "OUT/labels/<name>.tif (instance labels with classes and scores, opens in napari\n"
            "and Fiji), OUT/overlays/<name>.png and OUT/predictions.json (COCO, RLE); --format\n"
            "adds ImageJ/Fiji ROI sets (OUT/rois/<name>.zip) and QuPath GeoJSON\n"
            "(OUT/geojson/<name>.geojson). Every file is written atomically."
        ),
        epilog="output formats (--format, comma-separated):\n" + "\n".join(
            f"  {k:<8} {v}" for k, v in OUTPUT_FORMATS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inp = p.add_argument_group("Input")
    inp.add_argument(
        "input", metavar="IMG_OR_DIR", nargs="?", help="an image file or a folder of images"
    )
    inp.add_argument(
        "--dataset",
        default=None,
        help="segment the images of a registered dataset instead (e.g. visn-val; see docs/data.md)",
    )
    inp.add_argument("--data-root", default=None, help="shared data folder (or ZEUSSEG_DATA_ROOT)")
    inp.add_argument(
        "-p",
        "--prompt",
        action="append",
        default=None,
        help="what to segment, e.g. 'virus particles'; repeat for several classes "
        "(each instance gets the class of the prompt it answers best)",
    )
    mod = p.add_argument_group("Model")
    mod.add_argument(
        "--method",
        choices=METHODS,
        default=DEFAULT_METHOD,
        help="zeus: the text-prompted model; classical: Otsu + watershed floor "
        "(default: %(default)s)",
    )
    mod.add_argument("--model", default=None, help="model name or checkpoint (zeus)")
    mod.add_argument("--adapter", default=None, help="LoRA adapter folder to apply (zeus)")
    mod.add_argument(
        "--instruction-mode", choices=("name", "template", "llm"), default="name",
        help="text given to the zeus model per prompt: the prompt itself (name), or an "
        "instruction written per image from measured facts (template) or by the LLM (llm); "
        "instructions are cached in OUT/instructions.jsonl (default: %(default)s)",
    )
    mod.add_argument(
        "--no-class-head", action="store_true",
        help="answer class prompts (e.g. RSV, SARS-CoV-2, FLUAV) with the dense maps alone, "
        "not with the model's instance class head (ablation; default: use it when present)",
    )
    mod.add_argument(
        "--no-quality-head", action="store_true",
        help="keep every decoded instance, scored by the decoder, instead of dropping those "
        "the model's instance quality head rejects (ablation; default: use it when present; "
        "never with --adapter; docs/quality_head.md)",
    )
    mod.add_argument(
        "--quality-threshold", type=float, default=None, metavar="P",
        help="lowest instance quality kept, in [0, 1) (default: the head's own threshold, "
        "chosen on training images)",
    )
    mod.add_argument(
        "--tta", action="store_true",
        help="test-time augmentation: average the model's maps over the 4 flips of each image "
        "(4x slower; docs/BENCHMARKS.md has its effect on each dataset)",
    )
    dec = p.add_argument_group(
        "Instance decoding (zeus; default: the model's decode_cfg, docs/decoding.md)")
    for flag, what in (
        ("--fg-threshold", "foreground probability a pixel needs to belong to an instance"),
        ("--seed-threshold", "centre-map level a pixel needs to seed an instance (higher "
         "splits touching objects more readily)"),
        ("--boundary-threshold", "boundary-map level a pixel needs to seed an instance"),
    ):
        dec.add_argument(flag, type=float, default=None, metavar="P", help=what + ", in (0, 1)")
    dec.add_argument("--seeds", choices=("threshold", "hmax"), default=None,
                     help="seeds from the two thresholds above, or from the h-maxima of the "
                     "centre x boundary maps (splits touching objects whose maps barely dip)")
    dec.add_argument("--seed-h", type=float, default=None, metavar="H",
                     help="height of an h-maximum that seeds an instance (--seeds hmax), in (0, 1)")
    dec.add_argument("--min-size", type=int, default=None, metavar="PX",
                     help="drop instances smaller than PX pixels at the model's scale")
    big = p.add_argument_group("Large images (zeus)")
    big.add_argument(
        "--tile-size", type=int, default=DEFAULT_TILE_SIZE, metavar="PX",
        help="predict images larger than PX x PX (at the model's scale) in overlapping "
        "windows, blended and decoded without seams; 0 = never tile (default: %(default)s)",
    )
    big.add_argument(
        "--tile-overlap", type=int, default=DEFAULT_TILE_OVERLAP, metavar="PX",
        help="minimum overlap of neighbouring windows, pixels at the model's scale "
        "(default: %(default)s)",
    )
    out = p.add_argument_group("Output")
    out.add_argument("-o", "--out", default="zeusseg_output", help="output folder (%(default)s)")
    out.add_argument(
        "--format", default=",".join(DEFAULT_FORMATS), metavar="FMT[,FMT...]",
        help=f"what to write, a comma-separated list of {', '.join(OUTPUT_FORMATS)} (see "
        "below; default: %(default)s)",
    )
    out.add_argument("--no-overlay", action="store_true", help="do not write overlay PNGs")
    out.add_argument(
        "--skip-existing",
        action="store_true",
        help="keep label TIFFs already in OUT/labels (resume an interrupted run)",
    )
    out.add_argument(
        "--on-error",
        choices=("stop", "skip"),
        default="stop",
        help="on a bad image: stop (exit 2) or skip it, report it and exit 1 at the end",
    )
    p.set_defaults(run=run)


DECODE_FLAGS = ("fg_threshold", "seed_threshold", "boundary_threshold", "seeds", "seed_h",
                "min_size")


def run(args: argparse.Namespace) -> int:
    if (args.input is None) == (args.dataset is None):
        raise InputError(None, "give either IMG_OR_DIR or --dataset NAME (exactly one)")
    if args.tile_size < 0 or args.tile_overlap < 0:
        raise InputError(None, "--tile-size and --tile-overlap must be >= 0")
    if args.tile_size and args.tile_overlap >= args.tile_size:
        raise InputError(None, f"--tile-overlap {args.tile_overlap} must be smaller than "
                         f"--tile-size {args.tile_size}")
    formats = parse_formats(args.format)
    if args.skip_existing and "tif" not in formats:
        raise InputError(None, "--skip-existing resumes from the label TIFFs in OUT/labels: "
                         "add tif to --format")
    decode = {k: getattr(args, k) for k in DECODE_FLAGS if getattr(args, k) is not None}
    for key, value in decode.items():
        flag = "--" + key.replace("_", "-")
        if key == "min_size" and value < 0:
            raise InputError(None, f"{flag} must be >= 0, got {value}")
        if key not in ("min_size", "seeds") and not 0.0 < value < 1.0:
            raise InputError(None, f"{flag} must be between 0 and 1 (exclusive), got {value}")
    q = args.quality_threshold
    if q is not None and not 0.0 <= q < 1.0:
        raise InputError(None, f"--quality-threshold must be in [0, 1), got {q}")
    if decode and args.method != "zeus":
        raise InputError(None, f"--{next(iter(decode)).replace('_', '-')} needs --method zeus")
    if args.dataset is not None:
        from zeusseg.datasets import get_dataset

        ds = get_dataset(args.dataset, args.data_root)
        inputs = [ds.image_path(n) for n in ds.names]
        prompts = args.prompt or [ds.spec.prompt]
    else:
        inputs = args.input
        prompts = args.prompt or ["object"]
    from zeusseg.inference.folder_run import run_segment  # torch: keep `zeusseg --help` light

    report = run_segment(
        inputs,
        prompts,
        args.out,
        method=args.method,
        model=args.model,
        adapter=args.adapter,
        instruction_mode=args.instruction_mode,
        overlays=not args.no_overlay,
        skip_existing=args.skip_existing,
        on_error=args.on_error,
        formats=formats,
        segment_kwargs={"tile_size": args.tile_size or None, "tile_overlap": args.tile_overlap,
                        "use_class_head": not args.no_class_head,
                        "use_quality_head": not args.no_quality_head,
                        "quality_threshold": args.quality_threshold, "tta": args.tta, **decode},
    )
    n = len(report.done) + len(report.skipped_existing)
    print(f"segmented {n} image(s), {report.instances} new instance(s)")
    if n:
        where = {fmt: output_path(report.out, fmt, "x").parent for fmt in formats
                 if fmt != "coco"}
        for title, fmt in (("labels", "tif"), ("rois", "roi"), ("geojson", "geojson")):
            if fmt in where:
                print(f"{title + ':':<13}{where[fmt]}")
        if not args.no_overlay:
            print(f"overlays:    {report.out / 'overlays'}")
        if "coco" in formats:
            print(f"predictions: {report.predictions}")
    if report.failed:
        print(f"skipped {len(report.failed)} bad file(s):")
        for name, problem in report.failed.items():
            print(f"  {name}: {problem}")
        return 1
    return 0
