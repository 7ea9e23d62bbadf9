"""The three methods timed by ``scripts/bench_inference.py``: zeusseg, SAM AMG, Mask R-CNN.

Each runner takes grey (H, W) images and does the whole job of its method for them, on
``device``, with optional bf16 autocast. GPU work is synchronised inside the zeusseg runner so
its time breakdown is right; the caller synchronises around every timed call.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn


def _amp(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def _sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


class _Clock:
    """Marks of wall time and process CPU time; ``parts`` names the intervals between them.

    CPU time is kept because on a shared CPU the wall time of a single-threaded run includes
    the time spent waiting for a core (on a GPU, CPU time says how busy the host thread was).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.marks = [(time.perf_counter(), time.process_time())]

    def mark(self) -> None:
        wall = _sync(self.device)
        self.marks.append((wall, time.process_time()))

    def parts(self, *names: str) -> dict[str, float]:
        """Seconds per interval: ``name`` (wall) and ``name_cpu`` (process CPU)."""
        assert len(names) == len(self.marks) - 1, "one name per interval"
        out = {}
        for name, a, b in zip(names, self.marks, self.marks[1:], strict=False):
            out[name] = b[0] - a[0]
            out[f"{name}_cpu"] = b[1] - a[1]
        return out


def make_embedder(model: str):
    """The prompt embedder of ``model`` (None = the text encoder its config names)."""
    return None


class ZeusRunner:
    """zeusseg inference: batched single-pass engine and the per-file ``zeusseg segment`` path.

    Args:
        model: a zeus model name or folder (``zeusseg.inference.zeus_segmenter.load_zeus``).
        device: where the model runs.
        bf16: bf16 autocast around the encoder and the decoder.
        channels_last: channels-last weights and inputs for the convolutions.
        compile: ``torch.compile`` the image encoder (first calls are slow: use ``--warmup``).
        embedder: a ``PromptEmbedder``; by default the one of the model's config.
    """

    def __init__(self, model: str, device: torch.device, *, bf16: bool = False,
                 channels_last: bool = False, compile: bool = False, embedder=None) -> None:
        from zeusseg.inference.zeus_segmenter import load_zeus
        from zeusseg.modeling.config import get_zeus_cfg
        from zeusseg.predictor import ZeusPredictor

        net = load_zeus(model).to(device).eval()
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        if compile:
            net.image_encoder = torch.compile(net.image_encoder, dynamic=False)
        self.net, self.device, self.bf16 = net, device, bf16
        self.channels_last = channels_last
        self.predictor = ZeusPredictor(net, embedder=embedder)
        self.embedder = self.predictor.embedder  # built now, not inside a timed call
        cfg = get_zeus_cfg(net)
        self.scale = cfg.input_cfg.scale if cfg is not None else 1.0

    def embed(self, prompts: list[str]) -> None:
        """Embed the prompts once (the per-run text cost); later calls read the cache."""
        self.embedder.warm(prompts)

    @staticmethod
    def load(paths: list[Path]) -> list[np.ndarray]:
        """(H, W) float32 grey images in [0, 1], as ``zeusseg segment`` reads them."""
        from zeusseg.io import read_image

        return [read_image(p).grey() for p in paths]

    @torch.no_grad()
    def engine(self, images: list[np.ndarray], prompts: list[str]) -> dict[str, float]:
        """One pass at the model's scale for B same-size images and P prompts.

        Returns:
            Seconds spent in ``preprocess`` (resize, pad, copy to device), ``encoder``,
            ``decoder`` (fusion + mask decoder + sigmoid + copy to CPU) and ``watershed``
            (instance decoding, labels back to full size) for the whole batch: wall time, and
            process CPU time under ``<part>_cpu``.
        """
        from zeusseg.modeling.image_encoder import ImageFeatures
        from zeusseg.transforms import resize_image, scaled_shape

        clock = _Clock(self.device)
        full = images[0].shape
        shape = scaled_shape(full, self.scale)
        small = np.stack([resize_image(g, shape) if shape != full else g for g in images])
        h, w = shape
        m = self.net.pad_multiple
        x = torch.from_numpy(small)[:, None].to(self.device)  # (B, 1, H, W)
        if -h % m or -w % m:
            x = torch.nn.functional.pad(x, (0, -w % m, 0, -h % m), mode="reflect")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        clock.mark()
        with _amp(self.device, self.bf16):
            feats = self.net.encode_image(x)
        clock.mark()
        b, p = len(images), len(prompts)
        tokens, mask = self.embedder(prompts)  # cached: no text-encoder call
        feats = ImageFeatures(
            tokens=feats.tokens.repeat_interleave(p, 0), grid=feats.grid,
            skips=[s.repeat_interleave(p, 0) for s in feats.skips],
            skip_strides=feats.skip_strides, stride=feats.stride)  # (B * P, ...)
        with _amp(self.device, self.bf16):
            logits = self.net.decode(feats, tokens.repeat(b, 1, 1).to(self.device),
                                     mask.repeat(b, 1).to(self.device))
        probs = torch.sigmoid(logits[..., :h, :w].float()).cpu().numpy()
        probs = probs.reshape(b, p, *probs.shape[1:])  # (B, P, 3, H, W)
        clock.mark()
        for i in range(b):
            decode_probs(probs[i], prompts, full)
        clock.mark()
        return clock.parts("preprocess", "encoder", "decoder", "watershed")

    def cli(self, path: Path, prompts: list[str], tmp: Path) -> dict[str, float]:
        """``zeusseg segment`` for one file: read, ``segment_image``, write TIFF/overlay/RLE.

        Returns:
            Seconds (wall; ``<part>_cpu`` = process CPU) of ``read``, ``segment``,
            ``write_tiff``, ``write_overlay`` and ``coco_rle``.
        """
        from zeusseg.inference.zeus_segmenter import segment_image
        from zeusseg.io import read_image, write_label_tiff, write_overlay
        from zeusseg.io.coco import CocoAccumulator

        clock = _Clock(self.device)
        image = read_image(path)
        clock.mark()
        with _amp(self.device, self.bf16):
            masks = segment_image(self.predictor, image, prompts)
        clock.mark()
        write_label_tiff(tmp / "out" / "labels" / f"{path.stem}.tif", masks)
        clock.mark()
        write_overlay(tmp / "out" / "overlays" / f"{path.stem}.png", image, masks)
        clock.mark()
        CocoAccumulator({i + 1: p for i, p in enumerate(prompts)}).add(path.name, masks)
        clock.mark()
        return clock.parts("read", "segment", "write_tiff", "write_overlay", "coco_rle")


def decode_probs(probs: np.ndarray, prompts: list[str], shape: tuple[int, int]) -> np.ndarray:
    """(P, 3, h, w) probabilities -> (H, W) int32 labels at the full size ``shape``."""
    from zeusseg.inference.instance_segmentation import assign_classes, decode_instances
    from zeusseg.transforms import resize_labels

    if len(prompts) == 1:
        labels, _ = decode_instances(probs[0])
    else:
        names = {i: t for i, t in enumerate(prompts, start=1)}
        labels = assign_classes(probs, class_ids=list(names), class_names=names).labels
    return resize_labels(labels, shape) if labels.shape != tuple(shape) else labels


def build_sam_vit_b() -> nn.Module:
    """SAM ViT-B with random weights (``checkpoint=None``): for timing only."""
    from segment_anything import sam_model_registry

    return sam_model_registry["vit_b"](checkpoint=None)


class _AutocastEncoder(nn.Module):
    """Runs SAM's image encoder under bf16 autocast and returns float32 (the mask generator's
    post-processing calls ``.numpy()``, which has no bf16)."""

    def __init__(self, encoder: nn.Module, device_type: str) -> None:
        super().__init__()
        self.encoder, self.device_type = encoder, device_type
        self.img_size = encoder.img_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.encoder(x).float()


class SamRunner:
    """segment-anything automatic mask generation on one grey image (made RGB)."""

    def __init__(self, sam: nn.Module, device: torch.device, *, points: int = 32,
                 bf16: bool = False) -> None:
        from segment_anything import SamAutomaticMaskGenerator

        sam = sam.to(device).eval()
        if bf16:
            sam.image_encoder = _AutocastEncoder(sam.image_encoder, device.type)
        self.amg = SamAutomaticMaskGenerator(sam, points_per_side=points, points_per_batch=64)

    def __call__(self, grey: np.ndarray) -> list[dict]:
        return self.amg.generate(np.repeat(grey[..., None], 3, axis=2))


class MaskRCNNRunner:
    """torchvision Mask R-CNN R50-FPN (random weights) on a batch of grey images (made RGB).

    One object class + background (``num_classes=2``, as zeusseg's supervised baseline) and
    torchvision's default thresholds: with random weights the two-way scores pass the 0.05
    score threshold, so each image keeps up to ``detections_per_img`` (100) boxes and the mask
    head does the work it does on a crowded micrograph. ``detections`` counts them.
    """

    def __init__(self, device: torch.device, *, bf16: bool = False, min_size: int = 800,
                 channels_last: bool = False) -> None:
        from torchvision.models.detection import maskrcnn_resnet50_fpn

        model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2,
                                      min_size=min_size)
        model = model.to(device).eval()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model, self.device, self.bf16 = model, device, bf16
        self.detections: list[int] = []

    @torch.no_grad()
    def __call__(self, batch: list[np.ndarray]) -> list[torch.Tensor]:
        x = [torch.from_numpy(g).to(self.device).float().div(255).expand(3, *g.shape)
             for g in batch]
        with _amp(self.device, self.bf16):
            out = self.model(x)
        masks = [(o["masks"][:, 0] > 0.5).cpu() for o in out]
        self.detections = [len(m) for m in masks]
        return masks
