"""``zeusseg baseline train|predict``: the supervised detectors (Cascade Mask R-CNN, Mask R-CNN)."""

from __future__ import annotations

import argparse
import logging

from zeusseg.errors import InputError

_logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "baseline",
        help="train or run a supervised baseline (Mask R-CNN / Cascade Mask R-CNN)",
        description="Supervised detectors trained on your own annotations: Mask R-CNN and "
        "Cascade Mask R-CNN on an ImageNet EfficientNet-Lite0-FPN (the CPU recipe, "
        "configs/baseline/*-effnet-*.yaml), an EVA-02 pyramid or a ResNet-FPN (GPU configs). "
        "See docs/baselines.md.",
    )
    sub = p.add_subparsers(dest="baseline_command", metavar="ACTION", required=True)

    t = sub.add_parser(
        "train",
        help="train a baseline from a config (resumes from the newest checkpoint)",
        description="Train with accelerate (use `accelerate launch -m zeusseg baseline train ...` "
        "for several GPUs). Writes OUT/model.safetensors, OUT/config.yaml, OUT/log.jsonl and "
        "OUT/checkpoints/step_N (save_state every train.save_every_minutes).",
    )
    t.add_argument("--config", required=True, help="configs/baseline/<name>.yaml")
    t.add_argument("--out", default=None, help="run folder (default: train.output_dir)")
    t.add_argument("--data-root", default=None, help="shared data folder (or ZEUSSEG_DATA_ROOT)")
    t.add_argument("--steps", type=int, default=None, help="override train.steps")
    t.add_argument("--max-minutes", type=float, default=None,
                   help="stop this session (after saving) after this many minutes; rerun to "
                   "resume")
    t.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                   help="override train.time_budget_minutes: total training minutes over all "
                   "sessions, followed by the cosine schedule")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(run=run_train)

    r = sub.add_parser(
        "predict",
        help="segment images with a trained baseline (same outputs as `zeusseg segment`)",
        description="Writes OUT/labels/<name>.tif, OUT/overlays/<name>.png and "
        "OUT/predictions.json, exactly like `zeusseg segment`.",
    )
    r.add_argument("input", metavar="IMG_OR_DIR", nargs="?", help="an image or a folder")
    r.add_argument("--dataset", default=None, help="segment a registered dataset (e.g. visn-val)")
    r.add_argument("--data-root", default=None, help="shared data folder (or ZEUSSEG_DATA_ROOT)")
    r.add_argument("--run", dest="run_dir", required=True,
                   help="trained run folder (holds model.safetensors)")
    r.add_argument("-o", "--out", default="zeusseg_output", help="output folder (%(default)s)")
    r.add_argument("--score-thresh", type=float, default=None,
                   help="minimum detection score (default 0.5)")
    r.add_argument("--no-overlay", action="store_true", help="do not write overlay PNGs")
    r.add_argument("--skip-existing", action="store_true", help="keep existing label TIFFs")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    r.set_defaults(run=run_predict)


def run_train(args: argparse.Namespace) -> int:
    import torch

    from zeusseg.baselines.backbones import backbone_origin
    from zeusseg.baselines.config import load_config
    from zeusseg.baselines.train import train

    overrides = {k: v for k, v in (("train.steps", args.steps),
                                   ("train.max_minutes", args.max_minutes),
                                   ("train.time_budget_minutes", args.time_budget),
                                   ("train.num_threads", args.threads),
                                   ("data.data_root", args.data_root)) if v is not None}
    cfg = load_config(args.config, overrides)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"baseline {cfg.name}: {cfg.model.arch} / {cfg.model.backbone.name} "
          f"(backbone: {backbone_origin(cfg.model.backbone)})")
    s = train(cfg, out=args.out, resume=not args.no_resume, progress=not args.no_progress)
    state = "complete" if s.complete else "stopped early (run again to resume)"
    print(f"steps {s.start_step} -> {s.steps_done} of {cfg.train.steps} in {s.seconds:.0f} s "
          f"({s.total_seconds / 60:.1f} min of training in all), last loss {s.last_loss:.3f}; "
          f"{state}")
    if s.skipped_steps:
        print(f"{s.skipped_steps} step(s) skipped for a non-finite loss")
    print(f"model: {s.out / 'model.safetensors'}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from zeusseg.baselines.predict import DEFAULT_SCORE_THRESH, predict_paths
    from zeusseg.io import list_images

    if (args.input is None) == (args.dataset is None):
        raise InputError(None, "give either IMG_OR_DIR or --dataset NAME (exactly one)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dataset is not None:
        from zeusseg.datasets import get_dataset

        ds = get_dataset(args.dataset, args.data_root)
        paths = [ds.image_path(n) for n in ds.names]
    else:
        paths = list_images(args.input)
    thresh = DEFAULT_SCORE_THRESH if args.score_thresh is None else args.score_thresh
    report = predict_paths(Path(args.run_dir), paths, args.out, score_thresh=thresh,
                           overlays=not args.no_overlay, skip_existing=args.skip_existing)
    n = len(report.done) + len(report.skipped_existing)
    print(f"segmented {n} image(s), {report.instances} new instance(s)")
    if n:
        print(f"labels:      {report.out / 'labels'}")
        print(f"predictions: {report.predictions}")
    return 0
