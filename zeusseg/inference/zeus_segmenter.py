"""Zeus instance segmentation of whole images: rescale, pad, predict, decode, restore size.

Scale: objects should look about ``input_cfg.target_diameter`` px wide to the model (27 px: VISN
particles at ``scale`` 0.5). The first pass runs at the configured ``scale``; with
``auto_scale`` the median diameter of the instances found sets the factor of a second pass when
it differs by more than ``AUTO_SCALE_TOLERANCE`` (rules and constants:
``zeusseg.inference.auto_scale``; cellpose-style size estimation, no labels;
objects read larger than the target are brought down already past ``DOWN_TOLERANCE``),
and the size measured in that pass may refine the scale once more (``REFINE_TOLERANCE``).
Objects much larger than the target come out of a pass cut into fragments whose median
diameter can look right; when the foreground's own width (``inscribed_diameter``) reads more
than ``FRAGMENT_RATIO`` times the instances' diameter, the size is taken from the foreground
(``pass_diameter``);
when the first pass finds no instance but at least ``MIN_FG_SHARE`` foreground pixels, a pass
at twice the scale probes for objects too small to separate.

Size: a scaled image larger than ``tile_size`` (default 1024 px) is predicted in overlapping
windows whose maps are blended and decoded without seams (``zeusseg.tiling``,
docs/tiling.md); every pass of the auto-scale logic above then runs tiled.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from zeusseg.adapters import load_adapter
from zeusseg.factory import _build_zeus, build_zeus
from zeusseg.inference.auto_scale import MAX_SCALE, MIN_FOR_SIZE, _Pass, next_scale, rescale_bands
from zeusseg.inference.class_assignment import apply_class_head, plan_prompts
from zeusseg.inference.heads import find_class_head, find_quality_head
from zeusseg.inference.instance_segmentation import assign_classes, decode_instances
from zeusseg.inference.quality_filter import QualityFilter
from zeusseg.modeling.config import get_zeus_cfg
from zeusseg.predictor import ZeusPredictor
from zeusseg.structures import InstanceMasks, MicroscopyImage
from zeusseg.tiling import (
    DEFAULT_DECODE_BLOCK,
    DEFAULT_TILE_OVERLAP,
    DEFAULT_TILE_SIZE,
    TilingConfig,
    scaled_window,
    segment_tiled,
)
from zeusseg.transforms import (
    inscribed_diameter,
    median_diameter,
    resize_image,
    resize_labels,
    scaled_shape,
)

_logger = logging.getLogger(__name__)

MIN_FG_SHARE = 0.002
MAX_PIXELS = 6_000_000


def _decode(probs: np.ndarray, prompts: Sequence[str], **decode_kwargs) -> InstanceMasks:
    names = {i: p for i, p in enumerate(prompts, start=1)}
    if len(prompts) == 1:
        labels, scores = decode_instances(probs[0], **decode_kwargs)
        ids = np.unique(labels[labels > 0])
        return InstanceMasks(labels=labels, ids=ids, class_ids=np.ones(ids.size, np.int64),
                             scores=np.asarray(scores, np.float32)[: ids.size],
                             class_names=names)
    return assign_classes(probs, class_ids=list(names), class_names=names, **decode_kwargs)


def decode_settings(cfg, overrides: dict) -> dict:
    """The model's ``decode_cfg`` with the non-None entries of ``overrides`` on top."""
    base = asdict(cfg.decode_cfg) if cfg is not None and hasattr(cfg, "decode_cfg") else {}
    return {**base, **{k: v for k, v in overrides.items() if v is not None}}


def _restore(masks: InstanceMasks, shape: tuple[int, int]) -> InstanceMasks:
    """Nearest-resize the labels to ``shape``, dropping instances that vanish."""
    labels = resize_labels(masks.labels, shape) if masks.shape != tuple(shape) else masks.labels
    keep = np.isin(masks.ids, np.unique(labels[labels > 0]))
    return InstanceMasks(labels=labels, ids=masks.ids[keep], class_ids=masks.class_ids[keep],
                         scores=masks.scores[keep], class_names=masks.class_names).relabelled()


FLIPS = ((True, True), (True, False), (False, True), (False, False))
"""Test-time augmentation: (flip rows, flip columns); identity last, so the predictor ends up
holding the features of the image itself (the class head reuses them)."""


def _predict(predictor: ZeusPredictor, image: np.ndarray, prompts, tta: bool) -> np.ndarray:
    """(P, 3, H, W) probabilities of ``image``; with ``tta`` the mean over its 4 flips."""
    if not tta:
        predictor.set_image(image)
        return predictor.predict(list(prompts))
    total = None
    for fy, fx in FLIPS:
        view = image[::-1] if fy else image
        predictor.set_image(np.ascontiguousarray(view[:, ::-1] if fx else view))
        probs = predictor.predict(list(prompts))
        probs = probs[..., ::-1, :] if fy else probs
        probs = probs[..., ::-1] if fx else probs
        total = probs if total is None else total + probs
    return np.ascontiguousarray(total / len(FLIPS), dtype=np.float32)


def _run(predictor: ZeusPredictor, grey: np.ndarray, factor: float, prompts,
         tiling: TilingConfig | None, tta: bool = False, texts=None, **kw) -> _Pass:
    """Instances at scale ``factor``; tiled when the scaled image exceeds the tile size.

    ``texts``: what the model reads for each prompt (default: the prompts); instances are
    named after the prompts.
    """
    shape = scaled_shape(grey.shape, factor)
    if tiling is not None and max(shape) > tiling.tile_size:
        return _run_tiled(predictor, grey, shape, factor, prompts, tiling, tta, texts, **kw)
    small = resize_image(grey, shape) if shape != grey.shape else grey
    probs = _predict(predictor, small, texts or prompts, tta)
    masks = _decode(probs, prompts, **kw)
    fg = (probs[:, 0] > 0.5).any(axis=0)
    return _Pass(_restore(masks, grey.shape), len(masks), median_diameter(masks.labels),
                 float(fg.mean()), factor, True, probs, inscribed_diameter(fg))


def _run_tiled(predictor: ZeusPredictor, grey: np.ndarray, shape: tuple[int, int],
               factor: float, prompts, tiling: TilingConfig, tta: bool = False, texts=None,
               **kw) -> _Pass:
    """``_run`` by overlapping windows of the scaled image (``zeusseg.tiling``)."""
    def predict(window):  # one encoder pass per window (4 with tta), all prompts
        return _predict(predictor, scaled_window(grey, shape, window), texts or prompts, tta)

    res = segment_tiled(predict, shape, len(prompts), lambda p: _decode(p, prompts, **kw),
                        grey.shape, tiling)
    d = float(np.median(2.0 * np.sqrt(res.areas / np.pi))) if res.areas.size else float("nan")
    return _Pass(res.masks, res.n_found, d, res.fg_share, factor, False)


def _encode_final(predictor: ZeusPredictor, grey: np.ndarray, run: _Pass,
                  tiling: TilingConfig | None) -> tuple[int, int]:
    """Make ``predictor`` hold the encoder features of the final pass's whole image, for the
    instance heads (quality, class); returns the (h, w) the encoder saw.

    An untiled pass still holds them; after a tiled pass the image is encoded once more at the
    largest scale one window holds.
    """
    shape = scaled_shape(grey.shape, run.factor)
    if not run.whole and tiling is not None and max(shape) > tiling.tile_size:
        shape = scaled_shape(grey.shape, run.factor * tiling.tile_size / max(shape))
    if not run.whole or predictor.original_size != shape:
        predictor.set_image(resize_image(grey, shape))
    return shape


def segment_image(
    model_or_predictor,
    image: MicroscopyImage,
    prompts: Sequence[str],
    *,
    scale: float | None = None,
    auto_scale: bool = True,
    tile_size: int | None = DEFAULT_TILE_SIZE,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
    decode_block: int = DEFAULT_DECODE_BLOCK,
    class_head=None,
    quality_head=None,
    tta: bool = False,
    text_of: Callable[[str], str] | None = None,
    **decode_kwargs,
) -> InstanceMasks:
    """Segment one image with text prompts.

    An image whose scaled size exceeds ``tile_size`` is predicted in overlapping windows whose
    maps are blended and decoded without seams (``zeusseg.tiling``, docs/tiling.md); memory
    then stays bounded whatever the image size. Without tiling (``tile_size=None``) the
    scaled image is capped at ``MAX_PIXELS``.

    Args:
        model_or_predictor: a Zeus model or a ``ZeusPredictor``.
        image: the image (grey or RGB, float in [0, 1]).
        prompts: one or more prompts; with several, each instance gets the class (1-based, in
            prompt order) of the prompt it answers best.
        scale: resize factor of the first pass (default: the model's ``input_cfg.scale``).
        auto_scale: rescale once more so the median instance diameter becomes the model's
            ``target_diameter``.
        tile_size: window side in pixels at the model's scale; None or 0 = never tile.
        tile_overlap: minimum overlap of neighbouring windows, pixels at the model's scale.
        decode_block: maps larger than this (model-scale pixels) are decoded in blocks.
        class_head: ``(InstanceClassHead, ClassHeadSpec)`` (``load_class_head``): prompts that
            name one of its classes are answered by classifying the instances of its parent
            prompt (``zeusseg.inference.class_assignment``); None = dense maps decide every class.
        quality_head: a function ``(masks, features, model_shape) -> masks`` applied to the
            decoded instances before the class head, with the encoder features of the final
            pass (e.g. ``zeusseg.inference.quality_filter.QualityFilter``: drops instances the
            model's quality head rejects and rescores the rest); None = keep every instance.
        tta: test-time augmentation: average the maps over the 4 flips of the image (4x the
            encoder and decoder time).
        text_of: prompt -> the text the model reads for it on this image (e.g. its
            instruction, ``zeusseg.instructions``); default: the prompt itself. Instances and
            class-head routing always go by the prompts.
        **decode_kwargs: passed to ``decode_instances`` / ``assign_classes``; unset (or None)
            entries come from the model's ``decode_cfg``.

    Returns:
        InstanceMasks at the original image size, ``class_names`` = {i: prompt}.
    """
    prompts = list(prompts)
    if not prompts:
        raise ValueError("segment_image needs at least one prompt")
    tiling = (TilingConfig(tile_size=int(tile_size), overlap=int(tile_overlap),
                           block=int(decode_block)) if tile_size else None)
    predictor = (model_or_predictor if isinstance(model_or_predictor, ZeusPredictor)
                 else ZeusPredictor(model_or_predictor))
    cfg = get_zeus_cfg(predictor.model)
    decode_kwargs = decode_settings(cfg, decode_kwargs)
    factor = float(scale if scale is not None else (cfg.input_cfg.scale if cfg else 1.0))
    grey = image.grey()
    cap = math.sqrt(MAX_PIXELS / max(grey.size, 1)) if tiling is None else math.inf
    factor = min(factor, cap)
    plan = None
    if class_head is not None:
        plan = plan_prompts(prompts, class_head[1], predictor.embedder)
    if plan is not None:
        prompts = list(plan.dense)
    if text_of is not None:
        decode_kwargs["texts"] = [text_of(p) for p in prompts]
    run = _scaled_pass(predictor, grey, factor, cap, prompts, tiling, tta,
                       cfg if auto_scale else None, image.name, **decode_kwargs)
    masks = run.masks
    if (quality_head is not None and len(masks)) or plan is not None:
        shape = _encode_final(predictor, grey, run, tiling)
        if quality_head is not None and len(masks):  # before the class head: it sees survivors
            masks = quality_head(masks, predictor.features, shape)
        if plan is not None:
            masks = apply_class_head(masks, plan, class_head[0], predictor.embedder,
                                     predictor.features, shape)
    predictor.reset_image()
    return masks


def scaled_maps(model_or_predictor, image: MicroscopyImage, prompts: Sequence[str],
                **decode_kwargs) -> tuple[np.ndarray, float]:
    """The maps ``segment_image`` decodes, for tuning the decoding on cached maps.

    Runs the untiled auto-scale passes (the scale is chosen with ``decode_kwargs`` on top of
    the model's ``decode_cfg``) and returns the last pass's maps.

    Returns:
        probs: (P, 3, h, w) float32 in [0, 1] at the model's scale (h = H * factor).
        factor: the scale of those maps relative to the image.
    """
    predictor = (model_or_predictor if isinstance(model_or_predictor, ZeusPredictor)
                 else ZeusPredictor(model_or_predictor))
    cfg = get_zeus_cfg(predictor.model)
    grey = image.grey()
    cap = math.sqrt(MAX_PIXELS / max(grey.size, 1))
    factor = min(float(cfg.input_cfg.scale if cfg else 1.0), cap)
    run = _scaled_pass(predictor, grey, factor, cap, list(prompts), None, False, cfg,
                       image.name, **decode_settings(cfg, decode_kwargs))
    predictor.reset_image()
    return run.probs, run.factor


def _scaled_pass(predictor: ZeusPredictor, grey: np.ndarray, factor: float, cap: float,
                 prompts, tiling: TilingConfig | None, tta: bool, cfg, name: str,
                 **decode_kwargs) -> _Pass:
    """The first pass at ``factor`` and, with a model config ``cfg`` (auto-scale on), the pass
    at the scale that gives the instances the model's target diameter."""
    run = _run(predictor, grey, factor, prompts, tiling, tta, **decode_kwargs)
    if cfg is not None:
        target = cfg.input_cfg.target_diameter
        if (run.n_found < MIN_FOR_SIZE and run.fg_share >= MIN_FG_SHARE
                and factor * 2 <= min(cap, MAX_SCALE)):
            # foreground but no instance: objects may be too small to separate; probe x2.
            # (Probing when a few instances were found fragments large objects: images with
            # one or two virus particles then gained false positives at twice the scale.)
            # (No foreground at all means the prompt matches nothing: no probe, so a wrong
            # prompt is not "found" at a scale the model was never meant to see.)
            probe = _run(predictor, grey, factor * 2, prompts, tiling, tta, **decode_kwargs)
            if probe.n_found > run.n_found:
                run = probe
            del probe
        # the rescale, then its refinement(s)
        for tolerance, down in rescale_bands():
            new = next_scale(run, target, cap, tolerance, down)
            if new is None:
                break
            _logger.debug("%s: rescaling %.3f -> %.3f (diameter %.1f px, foreground %.1f px)",
                          name, run.factor, new, run.diameter, run.fg_width)
            run = None  # free the previous pass's labels before the next
            run = _run(predictor, grey, new, prompts, tiling, tta, **decode_kwargs)
    return run


def build_zeus_segmenter(
    prompts: Sequence[str],
    model: str | None = None,
    adapter: str | None = None,
    text_of: Callable[[MicroscopyImage], Callable[[str], str]] | None = None,
    device: str | None = None,
    use_class_head: bool = True,
    use_quality_head: bool = True,
    quality_threshold: float | None = None,
    **kwargs,
) -> Callable[[MicroscopyImage], InstanceMasks]:
    """A function image -> InstanceMasks for ``zeusseg segment --method zeus``.

    Args:
        prompts: the text prompts.
        model: a trained-model name (default ``zeus-default``), an architecture name, a config
            ``.json``, or a folder/``model.safetensors`` with its ``config.json``.
        adapter: a LoRA adapter folder written by ``zeusseg finetune`` (applied to ``model``).
        text_of: image -> (prompt -> the text the model reads), e.g. per-image instructions;
            by default the prompts themselves are the texts.
        device: run the model there (e.g. ``cuda:1``; default: where it was loaded, the CPU).
        use_class_head: use the model's class head when it has one (``class_head.*`` next to
            its weights) for prompts that name its classes.
        use_quality_head: drop the instances the model's quality head rejects when it has one
            (``quality_head.*`` next to its weights; ``zeusseg.inference.quality_filter``).
            Not used with an ``adapter``: the head was fitted to the base model's features.
        quality_threshold: the lowest quality kept (default: the head's own threshold).
        **kwargs: passed to ``segment_image``.

    Raises:
        WeightsNotFoundError: the named trained model is not installed.
        InputError: the adapter was trained on another base model.
    """
    torch.set_num_threads(max(1, torch.get_num_threads()))
    net = load_zeus(model or "zeus-default")
    if adapter:
        net = load_adapter(net, adapter, model_id=model or "zeus-default")
    if device is not None:
        net = net.to(device)
    predictor = ZeusPredictor(net)
    if use_class_head:
        kwargs["class_head"] = find_class_head(model or "zeus-default", net)
    if use_quality_head and not adapter:  # an adapter changes the features the head reads
        found = find_quality_head(model or "zeus-default")
        if found is not None:
            kwargs["quality_head"] = QualityFilter(*found, threshold=quality_threshold)
    if text_of is None:
        return lambda image: segment_image(predictor, image, prompts, **kwargs)
    return lambda image: segment_image(predictor, image, prompts, text_of=text_of(image),
                                       **kwargs)


def load_zeus(model: str = "zeus-default"):
    """A Zeus model in eval mode from a name (``build_zeus``) or a trained-model folder / file.

    A folder holding ``config.json`` + ``model.safetensors`` (what training writes to
    ``output_dir/best``), or the ``.safetensors`` file itself next to its ``config.json``.
    """
    p = Path(model)
    if p.is_dir() and (p / "config.json").is_file():
        p = p / "model.safetensors"
    if p.suffix == ".safetensors" and (p.parent / "config.json").is_file():
        cfg = json.loads((p.parent / "config.json").read_text())
        return _build_zeus(cfg["model_cfg"], p).eval()
    return build_zeus(model).eval()
