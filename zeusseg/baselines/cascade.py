"""Cascade R-CNN RoI heads (Cai & Vasconcelos, 2018) with a Mask R-CNN mask branch.

Built on torchvision's ``RoIHeads`` (same ``forward(features, proposals, image_shapes,
targets)`` contract, so it drops into ``GeneralizedRCNN``). Three box stages are trained with
rising IoU thresholds (0.5, 0.6, 0.7): stage 1 samples RoIs from the RPN proposals (plus the
ground-truth boxes), each later stage re-labels the boxes regressed by the previous stage at its
own threshold. Box regression is class-agnostic with tighter target weights per stage, as in
the paper and detectron2's ``CascadeROIHeads``. At inference the class score is the mean of the
stages' softmax scores and the box is the last stage's; the mask head runs on the final boxes.
The mask head is trained on the foreground RoIs of stage 1 (detectron2 does the same).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.roi_heads import (
    RoIHeads,
    maskrcnn_inference,
    maskrcnn_loss,
)
from torchvision.ops import boxes as box_ops

DEFAULT_STAGE_REG_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0),
                             (30.0, 30.0, 15.0, 15.0))


class CascadeBoxPredictor(nn.Module):
    """Class scores and one class-agnostic box delta per RoI.

    Args:
        in_channels: width of the box-head features.
        num_classes: classes including background.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C[, 1, 1]) features -> (N, num_classes) logits, (N, 4) box deltas."""
        x = x.flatten(start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)


class CascadeRoIHeads(RoIHeads):
    """Cascade box stages + mask branch on top of torchvision's ``RoIHeads``.

    Args:
        box_roi_pool: ``MultiScaleRoIAlign`` for the box heads (shared by all stages).
        box_heads: one feature head per stage (e.g. ``TwoMLPHead``).
        box_predictors: one ``CascadeBoxPredictor`` per stage.
        stage_ious: foreground IoU threshold of each stage.
        stage_loss_weights: weight of each stage's losses.
        stage_reg_weights: ``BoxCoder`` weights of each stage.
        batch_size_per_image: RoIs sampled per image for stage 1.
        positive_fraction: fraction of foreground RoIs in that sample.
        score_thresh: minimum class score of a detection.
        nms_thresh: class-wise NMS IoU.
        detections_per_img: cap on the detections of one image.
        mask_roi_pool: ``MultiScaleRoIAlign`` of the mask branch.
        mask_head: mask feature head.
        mask_predictor: per-class mask logits.
    """

    def __init__(
        self,
        *,
        box_roi_pool: nn.Module,
        box_heads: Sequence[nn.Module],
        box_predictors: Sequence[nn.Module],
        stage_ious: Sequence[float] = (0.5, 0.6, 0.7),
        stage_loss_weights: Sequence[float] = (1.0, 0.5, 0.25),
        stage_reg_weights: Sequence[tuple[float, float, float, float]] = DEFAULT_STAGE_REG_WEIGHTS,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 1000,
        mask_roi_pool: nn.Module | None = None,
        mask_head: nn.Module | None = None,
        mask_predictor: nn.Module | None = None,
    ) -> None:
        n = len(stage_ious)
        if not (len(box_heads) == len(box_predictors) == len(stage_loss_weights) == n):
            raise ValueError("box_heads, box_predictors, stage_ious and stage_loss_weights "
                             "need one entry per stage")
        if len(stage_reg_weights) < n:
            raise ValueError(f"stage_reg_weights has {len(stage_reg_weights)} entries for "
                             f"{n} stages")
        super().__init__(
            box_roi_pool, box_heads[0], box_predictors[0],
            stage_ious[0], stage_ious[0], batch_size_per_image, positive_fraction,
            stage_reg_weights[0], score_thresh, nms_thresh, detections_per_img,
            mask_roi_pool=mask_roi_pool, mask_head=mask_head, mask_predictor=mask_predictor,
        )
        self.box_heads = nn.ModuleList(box_heads)
        self.box_predictors = nn.ModuleList(box_predictors)
        del self.box_head, self.box_predictor  # registered in the ModuleLists instead
        self.stage_ious = tuple(float(t) for t in stage_ious)
        self.stage_loss_weights = tuple(float(w) for w in stage_loss_weights)
        self.stage_matchers = [det_utils.Matcher(t, t, allow_low_quality_matches=False)
                               for t in self.stage_ious]
        self.stage_coders = [det_utils.BoxCoder(w) for w in stage_reg_weights[:n]]

    @property
    def num_stages(self) -> int:
        """Number of cascade box stages."""
        return len(self.stage_ious)

    def _stage(self, k: int, features: dict[str, torch.Tensor], boxes: list[torch.Tensor],
               image_shapes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Run stage ``k`` on per-image boxes. Returns (sum N, K+1) logits, (sum N, 4) deltas."""
        x = self.box_roi_pool(features, boxes, image_shapes)  # (sum N, C, 7, 7)
        x = self.box_heads[k](x)
        return self.box_predictors[k](x)

    def _decode(self, k: int, deltas: torch.Tensor, boxes: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Stage ``k``'s regressed boxes, clipped to each image, detached (next stage input)."""
        pred = self.stage_coders[k].decode(deltas.detach(), boxes)[:, 0]  # (sum N, 4)
        out = pred.split([len(b) for b in boxes])
        return [box_ops.clip_boxes_to_image(b, s) for b, s in zip(out, image_shapes, strict=True)]

    def _label(self, k: int, boxes: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
               ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Match boxes to ground truth at stage ``k``'s IoU: (matched idx, labels, reg targets)."""
        self.proposal_matcher = self.stage_matchers[k]
        gt_boxes = [t["boxes"].to(boxes[0].dtype) for t in targets]
        matched, labels = self.assign_targets_to_proposals(
            boxes, gt_boxes, [t["labels"] for t in targets])
        matched_gt = [g[m] if g.numel() else torch.zeros_like(b)
                      for g, m, b in zip(gt_boxes, matched, boxes, strict=True)]
        return matched, labels, list(self.stage_coders[k].encode(matched_gt, boxes))

    def _stage_loss(self, logits: torch.Tensor, deltas: torch.Tensor, labels: list[torch.Tensor],
                    reg_targets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy over sampled RoIs and smooth-L1 on foreground ones (torchvision's
        ``fastrcnn_loss`` for class-agnostic deltas; ignored RoIs, label -1, are excluded)."""
        labels_all = torch.cat(labels)
        targets_all = torch.cat(reg_targets)
        valid = labels_all >= 0
        cls_loss = F.cross_entropy(logits[valid], labels_all[valid])
        pos = torch.where(labels_all > 0)[0]
        box_loss = F.smooth_l1_loss(deltas[pos], targets_all[pos], beta=1 / 9, reduction="sum")
        return cls_loss, box_loss / max(int(valid.sum()), 1)

    def forward(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """Args: features (name -> (B, C, h, w)), proposals (per image (N_i, 4) XYXY at the
        network input size), image_shapes (per image (H, W)), targets (training: per image
        ``boxes`` (M, 4) float XYXY, ``labels`` (M,) int64, ``masks`` (M, H, W) uint8).

        Returns:
            (detections, losses): in eval, per image ``boxes`` (D, 4), ``scores`` (D,),
            ``labels`` (D,), ``masks`` (D, 1, 28, 28) probabilities; in training, losses
            ``loss_classifier_s{k}``, ``loss_box_reg_s{k}`` (weighted) and ``loss_mask``.
        """
        if self.training:
            return [], self._forward_train(features, proposals, image_shapes, targets)
        return self._forward_eval(features, proposals, image_shapes), {}

    def _forward_train(self, features, proposals, image_shapes, targets) -> dict[str, torch.Tensor]:
        self.check_targets(targets)
        self.proposal_matcher = self.stage_matchers[0]
        boxes, matched0, labels0, _ = self.select_training_samples(proposals, targets)
        losses: dict[str, torch.Tensor] = {}
        stage_boxes = boxes
        for k in range(self.num_stages):
            _, labels, reg_targets = self._label(k, stage_boxes, targets)
            logits, deltas = self._stage(k, features, stage_boxes, image_shapes)
            cls_loss, box_loss = self._stage_loss(logits, deltas, labels, reg_targets)
            w = self.stage_loss_weights[k]
            losses[f"loss_classifier_s{k}"] = w * cls_loss
            losses[f"loss_box_reg_s{k}"] = w * box_loss
            if k + 1 < self.num_stages:
                stage_boxes = self._decode(k, deltas, stage_boxes, image_shapes)
        if self.has_mask():
            pos = [torch.where(lab > 0)[0] for lab in labels0]
            mask_boxes = [b[p] for b, p in zip(boxes, pos, strict=True)]
            x = self.mask_roi_pool(features, mask_boxes, image_shapes)
            mask_logits = self.mask_predictor(self.mask_head(x))
            losses["loss_mask"] = maskrcnn_loss(
                mask_logits, mask_boxes, [t["masks"] for t in targets],
                [t["labels"] for t in targets],
                [m[p] for m, p in zip(matched0, pos, strict=True)])
        return losses

    def _forward_eval(self, features, proposals, image_shapes) -> list[dict[str, torch.Tensor]]:
        boxes = proposals
        scores = []
        for k in range(self.num_stages):
            logits, deltas = self._stage(k, features, boxes, image_shapes)
            scores.append(F.softmax(logits, -1))
            boxes = self._decode(k, deltas, boxes, image_shapes)
        mean_scores = torch.stack(scores).mean(0)  # (sum N, K + 1)
        result = []
        for b, s, shape in zip(boxes, mean_scores.split([len(b) for b in boxes]), image_shapes,
                               strict=True):
            result.append(self._postprocess(b, s, shape))
        if self.has_mask():
            x = self.mask_roi_pool(features, [r["boxes"] for r in result], image_shapes)
            mask_logits = self.mask_predictor(self.mask_head(x))
            probs = maskrcnn_inference(mask_logits, [r["labels"] for r in result])
            for r, p in zip(result, probs, strict=True):
                r["masks"] = p
        return result

    def _postprocess(self, boxes: torch.Tensor, scores: torch.Tensor, shape: tuple[int, int]
                     ) -> dict[str, torch.Tensor]:
        """Per-class score threshold + class-wise NMS + top-k of one image's final boxes."""
        n, k1 = scores.shape
        labels = torch.arange(1, k1, device=scores.device).expand(n, k1 - 1).reshape(-1)
        all_boxes = boxes[:, None].expand(n, k1 - 1, 4).reshape(-1, 4)
        all_scores = scores[:, 1:].reshape(-1)
        keep = torch.where(all_scores > self.score_thresh)[0]
        all_boxes, all_scores, labels = all_boxes[keep], all_scores[keep], labels[keep]
        keep = box_ops.remove_small_boxes(all_boxes, min_size=1e-2)
        all_boxes, all_scores, labels = all_boxes[keep], all_scores[keep], labels[keep]
        keep = box_ops.batched_nms(all_boxes, all_scores, labels, self.nms_thresh)
        keep = keep[: self.detections_per_img]
        return {"boxes": all_boxes[keep], "scores": all_scores[keep], "labels": labels[keep]}
