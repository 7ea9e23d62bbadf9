"""Assemble a baseline detector from its ``ModelCfg``; save and load trained runs.

Both architectures are torchvision ``MaskRCNN`` models (RPN, ``MultiScaleRoIAlign``, mask head)
with a ``ScaleTransform`` in front, on any backbone of ``zeusseg.baselines.backbones``
(EfficientNet-Lite-FPN, ResNet-FPN, EVA-02 pyramid): ``maskrcnn`` keeps torchvision's single
box head; ``cascade`` swaps in ``CascadeRoIHeads`` with three box stages. A trained run folder holds
``model.safetensors`` and ``config.yaml`` (the model section plus provenance).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from zeusseg.baselines.backbones import backbone_origin, build_backbone
from zeusseg.baselines.cascade import CascadeBoxPredictor, CascadeRoIHeads
from zeusseg.baselines.config import BASELINE_CONFIGS, ModelCfg, model_cfg_from_dict, to_dict
from zeusseg.errors import InputError, WeightsNotFoundError
from zeusseg.io.atomic import atomic_path, write_text_atomic

_logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
_IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_MEAN_STD = {  # grey images are repeated to 3 channels, then normalised with these
    "vit": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "resnet": _IMAGENET_MEAN_STD,
    "effnet": _IMAGENET_MEAN_STD,
}


class ScaleTransform(GeneralizedRCNNTransform):
    """torchvision's R-CNN transform with a fixed rescale factor instead of min/max sizes.

    In eval mode each image is resized by ``scale`` (bilinear, antialiased) and the detections
    are mapped back to the input size by ``postprocess``. In training mode images are taken
    as they come: the data pipeline (``zeusseg.baselines.data``) has already applied
    ``scale`` with jitter to image, boxes and masks together.
    """

    def __init__(self, *, scale: float, image_mean, image_std, size_divisible: int = 32) -> None:
        super().__init__(min_size=1, max_size=1, image_mean=list(image_mean),
                         image_std=list(image_std), size_divisible=size_divisible)
        self.scale = float(scale)

    def resize(self, image: torch.Tensor, target: dict | None = None):
        """(C, H, W) -> (C, round(H * scale), round(W * scale)) in eval; unchanged in training."""
        if self.training or self.scale == 1.0:
            return image, target
        h, w = image.shape[-2:]
        size = (max(1, round(h * self.scale)), max(1, round(w * self.scale)))
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False,
                              antialias=self.scale < 1)[0]
        return image, target


def _mask_heads(cfg: ModelCfg, channels: int, num_classes: int) -> tuple[nn.Module, nn.Module]:
    head = MaskRCNNHeads(channels, [channels] * cfg.mask_head_layers, 1)
    return head, MaskRCNNPredictor(channels, channels, num_classes)


def build_model(cfg: ModelCfg, *, load_weights: bool = True) -> nn.Module:
    """A randomly initialised (or backbone-pretrained) baseline detector.

    Args:
        cfg: the model config; ``cfg.class_names`` must list the classes (background excluded).
        load_weights: read the pretrained backbone weights named by the config (False: the
            same architecture without reading them, before loading a trained run).

    Returns:
        A torchvision ``MaskRCNN`` (``GeneralizedRCNN``): ``model(images, targets)`` gives the
        loss dict in training and per-image detections in eval.

    Raises:
        ValueError: no class names, or the anchor sizes do not match the pyramid levels.
        WeightsNotFoundError: a pretrained backbone file is missing.
    """
    if not cfg.class_names:
        raise ValueError("ModelCfg.class_names is empty; the classes come from the training data")
    num_classes = len(cfg.class_names) + 1
    backbone = build_backbone(cfg.backbone, load_weights)
    levels = cfg.backbone.levels
    if len(cfg.anchor_sizes) != levels:
        raise ValueError(f"model.anchor_sizes has {len(cfg.anchor_sizes)} entries; the backbone "
                         f"has {levels} pyramid levels (one anchor size each)")
    anchors = AnchorGenerator(tuple((s,) for s in cfg.anchor_sizes), ((0.5, 1.0, 2.0),) * levels)
    ch = backbone.out_channels
    mask_head, mask_predictor = _mask_heads(cfg, ch, num_classes)
    mean, std = _MEAN_STD[cfg.backbone.kind]
    model = MaskRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=anchors,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_train,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_test,
        box_head=TwoMLPHead(ch * 7 * 7, cfg.box_head_dim),
        box_predictor=FastRCNNPredictor(cfg.box_head_dim, num_classes),
        box_batch_size_per_image=cfg.roi_batch_size,
        box_score_thresh=cfg.box_score_thresh,
        box_nms_thresh=cfg.box_nms_thresh,
        box_detections_per_img=cfg.detections_per_img,
        mask_head=mask_head,
        mask_predictor=mask_predictor,
    )
    model.transform = ScaleTransform(scale=cfg.scale, image_mean=mean, image_std=std)
    if cfg.arch == "cascade":
        n = len(cfg.stage_ious)
        old = model.roi_heads
        model.roi_heads = CascadeRoIHeads(
            box_roi_pool=old.box_roi_pool,
            box_heads=[TwoMLPHead(ch * 7 * 7, cfg.box_head_dim) for _ in range(n)],
            box_predictors=[CascadeBoxPredictor(cfg.box_head_dim, num_classes) for _ in range(n)],
            stage_ious=cfg.stage_ious,
            stage_loss_weights=cfg.stage_loss_weights,
            batch_size_per_image=cfg.roi_batch_size,
            score_thresh=cfg.box_score_thresh,
            nms_thresh=cfg.box_nms_thresh,
            detections_per_img=cfg.detections_per_img,
            mask_roi_pool=old.mask_roi_pool,
            mask_head=old.mask_head,
            mask_predictor=old.mask_predictor,
        )
    return model


def save_run_model(model: nn.Module, cfg: ModelCfg, out_dir: str | os.PathLike,
                   info: dict | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.yaml`` (model config + ``info``) atomically.

    Returns:
        The weights path.
    """
    out_dir = Path(out_dir)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / MODEL_FILE) as tmp:
        save_file(state, str(tmp))
    meta = {"model": to_dict(cfg), "backbone_origin": backbone_origin(cfg.backbone),
            **(info or {})}
    write_text_atomic(out_dir / CONFIG_FILE, yaml.safe_dump(meta, sort_keys=False))
    return out_dir / MODEL_FILE


def load_run_model(run_dir: str | os.PathLike, name: str | None = None,
                   how_to_get: str | None = None) -> tuple[nn.Module, ModelCfg, dict]:
    """Rebuild a trained baseline from its run folder (eval mode, on the CPU).

    Args:
        run_dir: the folder written by ``zeusseg baseline train`` (``train.output_dir``).
        name: method name for the error message.
        how_to_get: the command that produces the run (for the error message).

    Returns:
        (model, model config, the whole ``config.yaml`` dict).

    Raises:
        WeightsNotFoundError: no ``model.safetensors`` / ``config.yaml`` in ``run_dir``.
        InputError: an unreadable config, corrupt weights or weights of another shape.
    """
    run_dir = Path(run_dir)
    weights, config = run_dir / MODEL_FILE, run_dir / CONFIG_FILE
    if not (weights.is_file() and config.is_file()):
        config_name = BASELINE_CONFIGS.get(name or run_dir.name, "<config>")
        raise WeightsNotFoundError(
            name or run_dir.name, [str(p) for p in (weights, config) if not p.is_file()],
            how_to_get or "train it with: zeusseg baseline train --config "
            f"configs/baseline/{config_name}.yaml --out {run_dir}")
    try:
        meta = yaml.safe_load(config.read_text(encoding="utf-8"))
        cfg = model_cfg_from_dict(meta["model"])
    except (yaml.YAMLError, KeyError, TypeError) as err:
        raise InputError(config, f"not a baseline run config ({err})") from err
    except InputError as err:
        raise InputError(config, err.problem) from err
    # the weights file holds the whole model: never re-read a pretrained backbone file here
    # (but keep the pretrained architecture: frozen BatchNorm instead of GroupNorm)
    model = build_model(cfg, load_weights=False)
    try:
        state = load_file(str(weights))
    except Exception as err:  # safetensors raises several types on corrupt files
        raise InputError(weights, f"corrupt or unreadable weights ({type(err).__name__}: "
                         f"{err})") from err
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes of another architecture or class count
        lines = [ln.strip() for ln in str(err).splitlines() if "mismatch" in ln]
        raise InputError(weights, "weights do not fit the config: "
                         f"{(lines or [str(err)])[0][:300]}") from err
    if missing or unexpected:
        raise InputError(weights, f"weights do not fit the config: {len(missing)} missing, "
                         f"{len(unexpected)} unexpected keys (e.g. {(missing or unexpected)[0]})")
    model.eval()
    return model, cfg, meta
