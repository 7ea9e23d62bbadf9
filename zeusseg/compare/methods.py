"""The methods ``zeusseg compare`` knows, and running (or reusing) their predictions.

Predictions of a method live in ``<cache>/<method>/``: ``labels/<stem>.tif`` (what
``zeusseg segment`` writes) or ``results.json`` (a COCO results list, e.g. from detectron2 or
mmdetection, paired with the images through the dataset's COCO ground truth), and
``run.json`` (seconds per image, provenance). A method whose cache holds a label TIFF for every
image of the dataset, or a results list, is not run again (unless ``rerun``), so a method's
model is only needed when its predictions are missing. A method that must run but whose model
is absent raises ``MethodUnavailable`` naming what to train or download. Any other name (the
predictions of another tool) may be compared when its cache holds predictions.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zeusseg.baselines.config import BASELINE_CONFIGS
from zeusseg.errors import InputError, WeightsNotFoundError, ZeusSegError
from zeusseg.inference.folder_outputs import Segmenter
from zeusseg.io.atomic import write_text_atomic

_logger = logging.getLogger(__name__)

BASELINES = BASELINE_CONFIGS
"""Baseline method -> its config in configs/baseline/."""
METHODS = ("classical", "zeus", "zeus-lora", "unet", *BASELINES)
UNET_CONFIG = "configs/unet/unet-plain-visn.yaml"
"""The ``zeusseg train`` config of the ``unet`` method (writes runs/unet-plain-visn/best)."""
RUNS_ENV = "ZEUSSEG_RUNS_DIR"
DEFAULT_RUNS_DIR = Path("runs") / "baselines"
RUN_FILE = "run.json"
RESULTS_FILE = "results.json"
"""A COCO results list in ``<cache>/<method>/`` (predictions from another tool)."""


class MethodUnavailable(ZeusSegError):
    """A method has neither cached predictions nor a model to run (message: what to do)."""

    def __init__(self, method: str, problem: str) -> None:
        self.method = method
        super().__init__(f"method '{method}': {problem}")


@dataclass
class MethodOptions:
    """Where the methods' models are.

    Attributes:
        runs_dir: folder of trained baselines (``<runs_dir>/<method>/model.safetensors``).
        zeus_model: model name or checkpoint for ``zeus`` / ``zeus-lora``.
        zeus_adapter: LoRA adapter folder for ``zeus-lora``.
        unet_model: trained dense model folder for ``unet`` (a ``zeusseg train`` run's
            ``best/``: ``model.safetensors`` + ``config.json``).
        prompts: text prompts (default: the dataset's prompt).
        score_thresh: minimum detection score of the baselines.
    """

    runs_dir: Path = field(default_factory=lambda: Path(os.environ.get(RUNS_ENV)
                                                        or DEFAULT_RUNS_DIR))
    zeus_model: str | None = None
    zeus_adapter: str | None = None
    unet_model: str | None = None
    prompts: tuple[str, ...] = ()
    score_thresh: float = 0.5


@dataclass
class MethodRun:
    """Predictions of one method on the compared images.

    Attributes:
        method: method name.
        pred_dir: folder of the label TIFFs.
        seconds: image stem -> segmentation seconds (empty when unknown).
        origin: provenance line (e.g. ``backbone: from scratch``).
        cached: True when read from the cache, False when run now.
        class_names: the class names the method predicts ([] when unknown).
        results: the COCO results list holding the predictions instead of ``pred_dir``.
    """

    method: str
    pred_dir: Path
    seconds: dict[str, float]
    origin: str
    cached: bool
    class_names: list[str] = field(default_factory=list)
    results: Path | None = None

    @property
    def source(self) -> Path:
        """What the scorer reads: the results list, else the label-TIFF folder."""
        return self.results or self.pred_dir

    @property
    def seconds_per_image(self) -> float:
        """Mean seconds per image (NaN when unknown)."""
        return float(np.mean(list(self.seconds.values()))) if self.seconds else float("nan")


def check_available(method: str, opts: MethodOptions) -> None:
    """Cheap early check that a method's model files exist (before anything runs).

    Raises:
        MethodUnavailable: a trained baseline, the U-Net model or a LoRA adapter is missing.
        InputError: unknown method (one only cached predictions can stand for).
    """
    if method not in METHODS:
        raise InputError(None, f"unknown method '{method}'; choose from {', '.join(METHODS)}, "
                         f"or compare another tool's predictions by putting them in "
                         f"CACHE/{method}/{RESULTS_FILE} (COCO results list) or "
                         f"CACHE/{method}/labels/<image>.tif")
    if method in BASELINES:
        run = opts.runs_dir / method
        if not (run / "model.safetensors").is_file():
            raise MethodUnavailable(method, f"no trained model in {run}; train it with: zeusseg "
                                    f"baseline train --config configs/baseline/"
                                    f"{BASELINES[method]}.yaml --out {run}")
    if method == "unet":
        folder = Path(opts.unet_model) if opts.unet_model else None
        if folder is None or not all((folder / f).is_file()
                                     for f in ("model.safetensors", "config.json")):
            where = (f"{folder} (needs model.safetensors and config.json)" if folder
                     else "(no --unet-model given)")
            raise MethodUnavailable(method, f"trained U-Net not found: {where}; train it with "
                                    f"`zeusseg train --config {UNET_CONFIG}` and pass "
                                    "--unet-model runs/unet-plain-visn/best")
    if method == "zeus-lora" and not (opts.zeus_adapter and Path(opts.zeus_adapter).is_dir()):
        where = opts.zeus_adapter or "(no --zeus-adapter given)"
        raise MethodUnavailable(method, f"LoRA adapter not found: {where}; fine-tune one with "
                                "`zeusseg finetune --config ...` and pass --zeus-adapter DIR")


def build_method(method: str, opts: MethodOptions, default_prompt: str
                 ) -> tuple[Segmenter, list[str], str]:
    """(segmenter, prompts/class names, provenance line) of ``method``.

    Raises:
        MethodUnavailable: its model or weights are missing, or it cannot be imported yet.
    """
    check_available(method, opts)
    prompts = list(opts.prompts) or [default_prompt]
    try:
        if method in BASELINES:
            # torch: `zeusseg --help` imports this module (zeusseg.commands.compare)
            from zeusseg.baselines.predict import build_baseline_segmenter

            seg = build_baseline_segmenter(opts.runs_dir / method, name=method,
                                           score_thresh=opts.score_thresh)
            return seg, list(seg.cfg.class_names), baseline_origin(seg.meta, seg.cfg)
        from zeusseg.inference.folder_run import build_segmenter  # torch: as above

        if method == "classical":
            return build_segmenter("classical", prompts), prompts, "no training (Otsu+watershed)"
        if method == "unet":
            seg = build_segmenter("zeus", prompts, model=opts.unet_model)
            return seg, prompts, unet_origin(Path(opts.unet_model))
        adapter = opts.zeus_adapter if method == "zeus-lora" else None
        seg = build_segmenter("zeus", prompts, model=opts.zeus_model, adapter=adapter)
        origin = f"model: {opts.zeus_model or 'default'}" + (f"; adapter: {adapter}"
                                                              if adapter else "; zero-shot")
        return seg, prompts, origin
    except (WeightsNotFoundError, ImportError, ValueError) as err:
        raise MethodUnavailable(method, str(err)) from err


def _minutes(seconds) -> str:
    return f"{float(seconds) / 60:.1f} min" if seconds is not None else "time unknown"


def baseline_origin(meta: dict, cfg) -> str:
    """Provenance of a trained baseline: architecture, backbone, data, steps, training time.

    Args:
        meta: the run's ``config.yaml``.
        cfg: its ``ModelCfg``.
    """
    names = ((meta.get("config") or {}).get("data") or {}).get("names")
    trained_on = str(meta.get("dataset", "?")) + (f" [{', '.join(names)}]" if names else "")
    threads = meta.get("torch_threads")
    parts = [
        f"{cfg.arch} / {cfg.backbone.name}" + ("" if cfg.backbone.is_vit else "-FPN"),
        f"backbone: {meta.get('backbone_origin', '?')}",
        f"trained on {trained_on}",
        f"{meta.get('steps_done', '?')} training steps, {_minutes(meta.get('train_seconds'))}"
        + (f" on {threads} thread(s)" if threads else "")
        + ("" if meta.get("complete", True) else " (stopped early)"),
    ]
    return "; ".join(parts)


def unet_origin(folder: Path) -> str:
    """Provenance of a ``zeusseg train`` model folder: model, training data, best step."""
    try:
        meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        meta = {}
    train_cfg = meta.get("train_config") or {}
    datasets = ", ".join((train_cfg.get("data") or {}).get("datasets") or {}) or "?"
    step = (meta.get("scores") or {}).get("step", "?")
    fusion = ((meta.get("model_cfg") or {}).get("fusion_cfg") or {}).get("mode", "?")
    return (f"model: {folder} ({train_cfg.get('model', '?')}, text fusion: {fusion}); "
            f"trained on {datasets}; best step {step}")


def _cache_complete(pred_dir: Path, stems: Sequence[str]) -> bool:
    labels = pred_dir / "labels"
    return labels.is_dir() and all((labels / f"{s}.tif").is_file() for s in stems)


def is_cached(pred_dir: Path, stems: Sequence[str]) -> bool:
    """Whether ``pred_dir`` holds a label TIFF for every stem, or a COCO results list."""
    return _cache_complete(pred_dir, stems) or (pred_dir / RESULTS_FILE).is_file()


def check_method_name(method: str) -> None:
    """Raise InputError unless ``method`` can name a cache folder (no path separator)."""
    if not method or method in (".", "..") or any(c in method for c in "/\\"):
        raise InputError(None, f"method name {method!r} cannot name a predictions folder")


def read_cached(method: str, pred_dir: Path, results: bool = False) -> MethodRun:
    """The cached run of ``method`` (timing and provenance from ``run.json`` if present).

    Args:
        results: the predictions are ``pred_dir/results.json`` (a COCO results list).
    """
    meta = {}
    if (pred_dir / RUN_FILE).is_file():
        try:
            meta = json.loads((pred_dir / RUN_FILE).read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            _logger.warning("%s: unreadable, timing unknown", pred_dir / RUN_FILE)
    default = f"COCO results list {RESULTS_FILE}" if results else "cached predictions"
    return MethodRun(method, pred_dir / "labels", {k: float(v) for k, v in
                                                   meta.get("seconds", {}).items()},
                     str(meta.get("origin", default)), cached=True,
                     class_names=[str(c) for c in meta.get("class_names", [])],
                     results=pred_dir / RESULTS_FILE if results else None)


def _timed(segmenter: Segmenter, seconds: dict[str, float]) -> Segmenter:
    def run(image):
        t = time.perf_counter()
        masks = segmenter(image)
        seconds[image.name] = time.perf_counter() - t
        return masks

    return run


def method_predictions(
    method: str,
    paths: Sequence[Path],
    cache: Path,
    opts: MethodOptions,
    default_prompt: str,
    *,
    rerun: bool = False,
    progress: bool = True,
    build: Callable[..., tuple[Segmenter, list[str], str]] = build_method,
) -> MethodRun:
    """Predictions of ``method`` on ``paths``: reuse ``cache/<method>`` or run and cache them.

    The cache is a label TIFF per image in ``labels/`` or, failing that, a COCO results list
    ``results.json``.

    Raises:
        MethodUnavailable: predictions are missing and the method's model is too.
        InputError: a method that is not in ``METHODS`` and has no cached predictions.
    """
    # torch: `zeusseg --help` imports this module (zeusseg.commands.compare)
    from zeusseg.inference.folder_run import segment_paths

    check_method_name(method)
    pred_dir = cache / method
    stems = [p.stem for p in paths]
    if not rerun and _cache_complete(pred_dir, stems):
        _logger.info("%s: using cached predictions in %s", method, pred_dir)
        return read_cached(method, pred_dir)
    if not rerun and (pred_dir / RESULTS_FILE).is_file():
        _logger.info("%s: using the COCO results list %s", method, pred_dir / RESULTS_FILE)
        return read_cached(method, pred_dir, results=True)
    segmenter, prompts, origin = build(method, opts, default_prompt)
    seconds: dict[str, float] = {}
    segment_paths(list(paths), _timed(segmenter, seconds), pred_dir, prompts, overlays=False,
                  progress=progress)
    write_text_atomic(pred_dir / RUN_FILE, json.dumps(
        {"method": method, "origin": origin, "class_names": prompts, "seconds": seconds},
        indent=1))
    return MethodRun(method, pred_dir / "labels", seconds, origin, cached=False,
                     class_names=list(prompts))
