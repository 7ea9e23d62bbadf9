"""The methods ``zeusseg compare`` knows, and running (or reusing) their predictions.

Predictions of a method live in ``<cache>/<method>/``: ``labels/<stem>.tif`` (what
``zeusseg segment`` writes) and ``run.json`` (seconds per image, provenance). A method whose
cache holds a label TIFF for every image of the dataset is not run again (unless ``rerun``),
so a method's model is only needed when its predictions are missing. A method that must run
but whose model is absent raises ``MethodUnavailable`` naming what to train or download.
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
from zeusseg.errors import InputError, ZeusSegError
from zeusseg.io.atomic import write_text_atomic
from zeusseg.segment import Segmenter

_logger = logging.getLogger(__name__)

BASELINES = BASELINE_CONFIGS
"""Baseline method -> its config in configs/baseline/."""
METHODS = ("classical", "zeus", "zeus-lora", *BASELINES)
RUNS_ENV = "ZEUSSEG_RUNS_DIR"
DEFAULT_RUNS_DIR = Path("runs") / "baselines"
RUN_FILE = "run.json"


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
        prompts: text prompts (default: the dataset's prompt).
        score_thresh: minimum detection score of the baselines.
    """

    runs_dir: Path = field(default_factory=lambda: Path(os.environ.get(RUNS_ENV)
                                                        or DEFAULT_RUNS_DIR))
    zeus_model: str | None = None
    zeus_adapter: str | None = None
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
    """

    method: str
    pred_dir: Path
    seconds: dict[str, float]
    origin: str
    cached: bool
    class_names: list[str] = field(default_factory=list)

    @property
    def seconds_per_image(self) -> float:
        """Mean seconds per image (NaN when unknown)."""
        return float(np.mean(list(self.seconds.values()))) if self.seconds else float("nan")


def check_available(method: str, opts: MethodOptions) -> None:
    """Cheap early check that a method's model files exist (before anything runs).

    Raises:
        MethodUnavailable: a trained baseline or a LoRA adapter is missing.
        InputError: unknown method.
    """
    if method not in METHODS:
        raise InputError(None, f"unknown method '{method}'; choose from {', '.join(METHODS)}")
    if method in BASELINES:
        run = opts.runs_dir / method
        if not (run / "model.safetensors").is_file():
            raise MethodUnavailable(method, f"no trained model in {run}; train it with: zeusseg "
                                    f"baseline train --config configs/baseline/"
                                    f"{BASELINES[method]}.yaml --out {run}")
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
    from zeusseg.errors import WeightsNotFoundError

    check_available(method, opts)
    prompts = list(opts.prompts) or [default_prompt]
    try:
        if method in BASELINES:
            from zeusseg.baselines.predict import build_baseline_segmenter

            seg = build_baseline_segmenter(opts.runs_dir / method, name=method,
                                           score_thresh=opts.score_thresh)
            steps = seg.meta.get("steps_done", "?")
            origin = f"backbone: {seg.meta.get('backbone_origin', '?')}; {steps} training steps"
            return seg, list(seg.cfg.class_names), origin
        from zeusseg.segment import build_segmenter

        if method == "classical":
            return build_segmenter("classical", prompts), prompts, "no training (Otsu+watershed)"
        adapter = opts.zeus_adapter if method == "zeus-lora" else None
        seg = build_segmenter("zeus", prompts, model=opts.zeus_model, adapter=adapter)
        origin = f"model: {opts.zeus_model or 'default'}" + (f"; adapter: {adapter}"
                                                              if adapter else "; zero-shot")
        return seg, prompts, origin
    except (WeightsNotFoundError, ImportError, ValueError) as err:
        raise MethodUnavailable(method, str(err)) from err


def _cache_complete(pred_dir: Path, stems: Sequence[str]) -> bool:
    labels = pred_dir / "labels"
    return labels.is_dir() and all((labels / f"{s}.tif").is_file() for s in stems)


def read_cached(method: str, pred_dir: Path) -> MethodRun:
    """The cached run of ``method`` (timing and provenance from ``run.json`` if present)."""
    meta = {}
    if (pred_dir / RUN_FILE).is_file():
        try:
            meta = json.loads((pred_dir / RUN_FILE).read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            _logger.warning("%s: unreadable, timing unknown", pred_dir / RUN_FILE)
    return MethodRun(method, pred_dir / "labels", {k: float(v) for k, v in
                                                   meta.get("seconds", {}).items()},
                     str(meta.get("origin", "cached predictions")), cached=True,
                     class_names=[str(c) for c in meta.get("class_names", [])])


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

    Raises:
        MethodUnavailable: predictions are missing and the method's model is too.
    """
    from zeusseg.segment import segment_paths

    pred_dir = cache / method
    stems = [p.stem for p in paths]
    if not rerun and _cache_complete(pred_dir, stems):
        _logger.info("%s: using cached predictions in %s", method, pred_dir)
        return read_cached(method, pred_dir)
    segmenter, prompts, origin = build(method, opts, default_prompt)
    seconds: dict[str, float] = {}
    segment_paths(list(paths), _timed(segmenter, seconds), pred_dir, prompts, overlays=False,
                  progress=progress)
    write_text_atomic(pred_dir / RUN_FILE, json.dumps(
        {"method": method, "origin": origin, "class_names": prompts, "seconds": seconds},
        indent=1))
    return MethodRun(method, pred_dir / "labels", seconds, origin, cached=False,
                     class_names=list(prompts))
