"""Supervised baselines: Mask R-CNN and Cascade Mask R-CNN on EfficientNet-Lite0-FPN (ImageNet
weights, the CPU recipe), an EVA-02 simple pyramid or a ResNet-FPN.

Names are imported lazily (PEP 562), so reading configs does not load torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "EfficientNetFPN": "zeusseg.baselines.backbones",
    "backbone_origin": "zeusseg.baselines.backbones",
    "build_backbone": "zeusseg.baselines.backbones",
    "build_model": "zeusseg.baselines.build",
    "load_run_model": "zeusseg.baselines.build",
    "save_run_model": "zeusseg.baselines.build",
    "CascadeBoxPredictor": "zeusseg.baselines.cascade",
    "CascadeRoIHeads": "zeusseg.baselines.cascade",
    "BASELINE_CONFIGS": "zeusseg.baselines.config",
    "BackboneCfg": "zeusseg.baselines.config",
    "BaselineConfig": "zeusseg.baselines.config",
    "DataCfg": "zeusseg.baselines.config",
    "ModelCfg": "zeusseg.baselines.config",
    "TrainCfg": "zeusseg.baselines.config",
    "load_config": "zeusseg.baselines.config",
    "BaselineSegmenter": "zeusseg.baselines.predict",
    "build_baseline_segmenter": "zeusseg.baselines.predict",
    "predict_paths": "zeusseg.baselines.predict",
    "train": "zeusseg.baselines.train",
    "train_on": "zeusseg.baselines.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'zeusseg.baselines' has no attribute '{name}'")
