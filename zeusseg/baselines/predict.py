"""Inference with a trained baseline: a ``Segmenter`` (image -> InstanceMasks) and folder runs.

The segmenter plugs into ``zeusseg.inference.folder_run.segment_paths``, so
``zeusseg baseline predict`` writes exactly what ``zeusseg segment`` writes (label TIFFs with
classes and scores, overlays, one COCO predictions JSON). Detections are not capped at 100: the
cap is the model's ``detections_per_img`` (1000 by default). Masks are pasted at the input
size in chunks and painted lowest score first, so where two instances overlap the
higher-scored one keeps the pixels (as in ``InstanceMasks.from_masks``) without holding an
(N, H, W) stack in memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.roi_heads import expand_boxes, expand_masks
from torchvision.models.detection.transform import resize_boxes

from zeusseg.baselines.build import load_run_model
from zeusseg.baselines.config import ModelCfg
from zeusseg.inference.folder_run import segment_paths
from zeusseg.structures import InstanceMasks, MicroscopyImage

_logger = logging.getLogger(__name__)

DEFAULT_SCORE_THRESH = 0.5
"""Detections below this score are left out of the label image (COCO mAP is computed from the
written instances, so a lower threshold trades segmentation accuracy for AP)."""


@dataclass
class BaselineSegmenter:
    """Callable image -> InstanceMasks for a trained baseline.

    Attributes:
        model: the detector in eval mode.
        cfg: its model config (class names, scale).
        score_thresh: minimum detection score kept in the output.
        mask_thresh: mask probability threshold.
        device: where the model runs.
        meta: the run's ``config.yaml`` (provenance).
    """

    model: nn.Module
    cfg: ModelCfg
    score_thresh: float = DEFAULT_SCORE_THRESH
    mask_thresh: float = 0.5
    device: str = "cpu"
    meta: dict = field(default_factory=dict)

    @property
    def class_names(self) -> dict[int, str]:
        """Output class id -> name."""
        return {k: n for k, n in enumerate(self.cfg.class_names, start=1)}

    @torch.no_grad()
    def detect(self, image: MicroscopyImage) -> dict[str, torch.Tensor]:
        """Raw detections of one image at its own size.

        Returns:
            ``boxes`` (D, 4) XYXY pixels, ``scores`` (D,), ``labels`` (D,) int64 (1-based),
            ``masks`` (D, 1, 28, 28) mask probabilities in box coordinates; sorted by score,
            descending, at most ``cfg.detections_per_img``.
        """
        data = image.data if image.data.ndim == 3 else image.data[..., None]
        x = torch.from_numpy(np.ascontiguousarray(data[..., :3], np.float32)).permute(2, 0, 1)
        x = x.expand(3, -1, -1) if x.shape[0] == 1 else x
        m = self.model
        images, _ = m.transform([x.to(self.device)])
        features = m.backbone(images.tensors)
        proposals, _ = m.rpn(images, features)
        dets, _ = m.roi_heads(features, proposals, images.image_sizes)
        det = dets[0]
        det["boxes"] = resize_boxes(det["boxes"], images.image_sizes[0], image.shape)
        return {k: v.cpu() for k, v in det.items()}

    def __call__(self, image: MicroscopyImage) -> InstanceMasks:
        """Instance masks of ``image`` (detections with score >= ``score_thresh``)."""
        det = self.detect(image)
        keep = det["scores"] >= self.score_thresh
        return paint_detections(
            det["masks"][keep], det["boxes"][keep], det["scores"][keep].numpy(),
            det["labels"][keep].numpy(), image.shape, self.class_names, self.mask_thresh)


def paint_detections(masks: torch.Tensor, boxes: torch.Tensor, scores: np.ndarray,
                     labels: np.ndarray, shape: tuple[int, int], class_names: dict[int, str],
                     mask_thresh: float = 0.5) -> InstanceMasks:
    """Paste (D, 1, M, M) box-relative mask probabilities into one (H, W) label image.

    Each mask is resized to its (padded) box only, as torchvision's ``paste_masks_in_image``
    does, and painted lowest score first, so the highest score wins shared pixels; instances
    left with no pixel are dropped and the rest renumbered 1..N.
    """
    h, w = shape
    out = np.zeros((h, w), np.int32)
    if len(scores):
        padded, scale = expand_masks(masks, padding=1)  # (D, 1, M + 2, M + 2)
        boxes = expand_boxes(boxes, scale).to(torch.int64)
        for k in np.argsort(scores, kind="stable"):
            x0, y0, x1, y1 = (int(v) for v in boxes[k])
            bw, bh = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
            prob = F.interpolate(padded[k:k + 1], size=(bh, bw), mode="bilinear",
                                 align_corners=False)[0, 0]
            ya, yb, xa, xb = max(y0, 0), min(y1 + 1, h), max(x0, 0), min(x1 + 1, w)
            if ya >= yb or xa >= xb:
                continue
            local = (prob[ya - y0:yb - y0, xa - x0:xb - x0] > mask_thresh).numpy()
            out[ya:yb, xa:xb][local] = k + 1
    kept = np.unique(out[out > 0]) - 1
    lut = np.zeros(scores.size + 1, np.int32)
    lut[kept + 1] = np.arange(1, kept.size + 1)
    return InstanceMasks(labels=lut[out], ids=np.arange(1, kept.size + 1),
                         class_ids=labels[kept].astype(np.int64),
                         scores=scores[kept].astype(np.float32), class_names=dict(class_names))


def build_baseline_segmenter(run_dir: str | os.PathLike, *, name: str | None = None,
                             score_thresh: float = DEFAULT_SCORE_THRESH,
                             device: str | None = None) -> BaselineSegmenter:
    """Load a trained run folder as a segmenter.

    Raises:
        WeightsNotFoundError: the run has no ``model.safetensors`` (the message says which
            ``zeusseg baseline train`` command makes it).
    """
    model, cfg, meta = load_run_model(run_dir, name=name)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    return BaselineSegmenter(model=model, cfg=cfg, score_thresh=score_thresh, device=device,
                             meta=meta)


def predict_paths(run_dir: str | os.PathLike, paths: Sequence[Path], out: str | os.PathLike,
                  *, score_thresh: float = DEFAULT_SCORE_THRESH, **kwargs):
    """Segment image files with a trained baseline; same outputs as ``zeusseg segment``.

    Args:
        run_dir: trained run folder.
        paths: image files.
        out: output folder (labels/, overlays/, predictions.json).
        score_thresh: minimum detection score.
        **kwargs: passed to ``zeusseg.inference.folder_run.segment_paths`` (overlays,
            skip_existing, ...).

    Returns:
        The ``SegmentReport``.
    """
    segmenter = build_baseline_segmenter(run_dir, score_thresh=score_thresh)
    _logger.info("baseline %s (%s, %s steps)", segmenter.meta.get("name", Path(run_dir).name),
                 segmenter.meta.get("backbone_origin", "?"), segmenter.meta.get("steps_done", "?"))
    return segment_paths(list(paths), segmenter, out, list(segmenter.cfg.class_names), **kwargs)
