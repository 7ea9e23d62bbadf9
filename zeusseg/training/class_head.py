"""Train an instance class head on the frozen encoder features of a Zeus model.

``zeusseg train-class-head --config configs/class_head/visn.yaml``: for every training image and
several views of it (the 8 flips/90-degree rotations, each at a jittered model scale), the
frozen image encoder runs once and each ground-truth instance becomes one feature vector
(``zeusseg.modeling.class_head.instance_features``). The head (a linear projection into the text
encoder's sentence space + scaled cosine to each class's phrasings) is fitted to those vectors
with full-batch L-BFGS and a class-balanced cross-entropy averaged over all phrasings of the
class names. Nothing in the base model changes. A validation dataset, when given, is only
reported (accuracy on its ground-truth instances), never used to choose anything.

Outputs in ``output_dir``: ``class_head.safetensors`` + ``class_head.json`` (copy both next to the
model's ``model.safetensors`` to use it) and ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from zeusseg.config_file import apply_overrides, merge_defaults, read_config
from zeusseg.datasets import get_dataset
from zeusseg.errors import InputError
from zeusseg.inference.zeus_segmenter import load_zeus
from zeusseg.io.atomic import atomic_path
from zeusseg.io.images import read_image
from zeusseg.modeling.class_head import (
    ClassHeadSpec,
    InstanceClassHead,
    instance_features,
    save_class_head,
)
from zeusseg.modeling.text_embedder import PromptEmbedder
from zeusseg.predictor import ZeusPredictor
from zeusseg.training.prompts import PromptTable
from zeusseg.transforms import resize_image, scaled_shape

_logger = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "base": "zeus-default",
    "output_dir": "runs/class-head",
    "data": {
        "dataset": "visn-train",
        "val_dataset": None,
        "parent_prompt": "virus particles",
        "classes": None,  # canonical name -> phrasings; default: the dataset's categories
        "views": 8,
        "scale": None,  # default: the base model's input scale
        "scale_jitter": 0.2,
        "limit": None,
    },
    "train": {"steps": 200, "weight_decay": 0.01, "num_threads": 2},
}


def load_class_head_config(path: str | os.PathLike,
                           overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read and validate a class-head YAML; dotted ``overrides`` win.

    Raises:
        InputError: missing/unreadable file or an unknown key (named with its section).
    """
    path = Path(path)
    cfg = apply_overrides(read_config(path, "class-head config"), overrides)
    out = merge_defaults(path, cfg, DEFAULTS)
    classes = out["data"]["classes"]
    if classes is not None and (not isinstance(classes, dict) or len(classes) < 2 or any(
            not isinstance(v, list) or not v for v in classes.values())):
        raise InputError(path, "data.classes must map >= 2 class names to lists of phrasings")
    if int(out["data"]["views"]) < 1 or int(out["train"]["steps"]) < 1:
        raise InputError(path, "data.views and train.steps must be >= 1")
    return out


def _views(image: np.ndarray, labels: np.ndarray, k: int):
    """View ``k`` (0..7) of the dihedral group: k % 4 quarter turns, flipped when k >= 4."""
    a, b = np.rot90(image, k % 4), np.rot90(labels, k % 4)
    if k % 8 >= 4:
        a, b = a[:, ::-1], b[:, ::-1]
    return np.ascontiguousarray(a), np.ascontiguousarray(b)


def extract_features(predictor, dataset, class_of: Mapping[int, int], *, views: int,
                     scale: float, scale_jitter: float, rng: np.random.Generator,
                     limit: int | None = None, desc: str = "features"):
    """Feature vectors (N, D) and class indices (N,) of every ground-truth instance.

    Args:
        predictor: ``ZeusPredictor`` of the base model.
        dataset: a registry ``Dataset`` with class ids on its masks.
        class_of: dataset class id -> head class index; other classes are skipped.
        views: views per image (dihedral transforms, each at a scale drawn from
            ``scale * [1 / (1 + jitter), 1 + jitter]``; view 0 is the identity at ``scale``).
    """
    xs, ys = [], []
    names = dataset.names[:limit] if limit else dataset.names
    for name in tqdm(names, desc=desc, unit="img"):
        grey = read_image(dataset.image_path(name)).grey()
        masks = dataset.masks(name)
        keep = np.array([int(c) in class_of for c in masks.class_ids], bool)
        if not keep.any():
            continue
        ids = masks.ids[keep]
        y = np.array([class_of[int(c)] for c in masks.class_ids[keep]], np.int64)
        for k in range(views):
            img, lab = _views(grey, masks.labels, k)
            f = scale if k == 0 else scale * float(
                np.exp(rng.uniform(-np.log1p(scale_jitter), np.log1p(scale_jitter))))
            shape = scaled_shape(img.shape, f)
            predictor.set_image(resize_image(img, shape))
            xs.append(instance_features(predictor.features, lab, ids, shape))
            ys.append(torch.from_numpy(y))
    predictor.reset_image()
    if not xs:
        raise InputError(None, "no training instance of the configured classes")
    return torch.cat(xs), torch.cat(ys)


def fit_head(x: torch.Tensor, y: torch.Tensor, texts: list[torch.Tensor], *, steps: int,
             weight_decay: float, seed: int) -> InstanceClassHead:
    """Fit a class head to features ``x`` (N, D) with labels ``y`` (N,).

    Args:
        texts: per class, the (n_c, T) unit sentence embeddings of its phrasings; the loss
            averages the cross-entropy over phrasing j (class c uses phrasing j mod n_c).
        steps: L-BFGS iterations (full batch).
        weight_decay: L2 penalty on the projection weights.
    """
    torch.manual_seed(seed)
    k = len(texts)
    head = InstanceClassHead(x.shape[1], texts[0].shape[1])
    head.feat_mean.copy_(x.mean(0))
    head.feat_std.copy_(x.std(0).clamp_min(1e-6))
    counts = torch.bincount(y, minlength=k).float()
    weight = (counts.sum() / (k * counts.clamp_min(1))) * (counts > 0)
    tables = [torch.stack([t[j % t.shape[0]] for t in texts])
              for j in range(max(t.shape[0] for t in texts))]
    opt = torch.optim.LBFGS(head.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = sum(F.cross_entropy(head(x, t), y, weight=weight) for t in tables) / len(tables)
        loss = loss + weight_decay * head.proj.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head.eval()


@torch.no_grad()
def accuracy(head: InstanceClassHead, x: torch.Tensor, y: torch.Tensor,
             canonical: torch.Tensor, names: list[str]) -> dict[str, float]:
    """Instance accuracy per class (and the class mean) when scoring the canonical names."""
    pred = head(x, canonical).argmax(1)
    per = {n: float((pred[y == i] == i).float().mean()) for i, n in enumerate(names)
           if (y == i).any()}
    per["mean"] = float(np.mean(list(per.values())))
    return per


def train_class_head(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Run one class-head training as configured (``load_class_head_config``).

    Returns:
        The metrics written to ``output_dir/metrics.json``.
    """
    t0 = time.time()
    data, train = cfg["data"], cfg["train"]
    torch.set_num_threads(int(train["num_threads"]))
    rng = np.random.default_rng(int(cfg["seed"]))
    net = load_zeus(cfg["base"])
    zcfg = net.zeus_cfg
    predictor = ZeusPredictor(net, PromptEmbedder(zcfg.text_cfg.encoder))
    ds = get_dataset(data["dataset"])
    table = PromptTable(data["classes"], replace=data["classes"] is not None)
    names = list(data["classes"] or ds.class_names.values())
    class_of = {cid: names.index(n) for cid, n in ds.class_names.items() if n in names}
    missing = [n for n in names if n not in ds.class_names.values()]
    if missing:
        raise InputError(None, f"dataset '{ds.spec.name}' has no class {', '.join(missing)}; "
                         f"its classes: {', '.join(ds.class_names.values())}")
    scale = float(data["scale"] or zcfg.input_cfg.scale)
    x, y = extract_features(predictor, ds, class_of, views=int(data["views"]), scale=scale,
                            scale_jitter=float(data["scale_jitter"]), rng=rng,
                            limit=data["limit"], desc=ds.spec.name)
    phrasings = {n: table.phrasings(n) for n in names}
    texts = [predictor.embedder.sentences(phrasings[n]) for n in names]
    head = fit_head(x, y, texts, steps=int(train["steps"]),
                    weight_decay=float(train["weight_decay"]), seed=int(cfg["seed"]))
    canonical = predictor.embedder.sentences([phrasings[n][0] for n in names])
    metrics: dict[str, Any] = {
        "base": cfg["base"], "dataset": ds.spec.name, "instances": int(x.shape[0]),
        "images": len(ds.names[: data["limit"]] if data["limit"] else ds.names),
        "train_accuracy": accuracy(head, x, y, canonical, names),
    }
    if data["val_dataset"]:
        val = get_dataset(data["val_dataset"])
        vx, vy = extract_features(predictor, val, class_of, views=1, scale=scale,
                                  scale_jitter=0.0, rng=rng, desc=val.spec.name)
        metrics["val_dataset"] = val.spec.name
        metrics["val_accuracy"] = accuracy(head, vx, vy, canonical, names)
    metrics["seconds"] = round(time.time() - t0, 1)
    spec = ClassHeadSpec(classes=phrasings, parent_prompt=str(data["parent_prompt"]),
                         in_dim=int(x.shape[1]), text_dim=int(texts[0].shape[1]),
                         text_encoder=zcfg.text_cfg.encoder,
                         provenance={"config": json.loads(json.dumps(cfg)), **metrics})
    out = Path(cfg["output_dir"])
    save_class_head(head, spec, out)

    with atomic_path(out / "metrics.json") as tmp:
        Path(tmp).write_text(json.dumps(metrics, indent=2))
    _logger.info("class head -> %s (train acc %.3f%s)", out, metrics["train_accuracy"]["mean"],
                 f", val acc {metrics['val_accuracy']['mean']:.3f}" if "val_accuracy" in metrics
                 else "")
    return metrics
