"""Train an instance quality head on a Zeus model's own predictions on training images.

``zeusseg train-quality-head --config configs/quality_head/default.yaml``: every training image
(and a few views of it: dihedral transforms at a jittered first-pass scale) is segmented by the
frozen base model exactly as ``zeusseg segment`` does (auto-scale, decode settings of the
model); each decoded instance becomes one feature vector
(``zeusseg.modeling.quality_head.quality_features``, encoder features of the final pass) with
target 1 when it matches a ground-truth object at IoU >= 0.5, else 0. The head (a small MLP)
is fitted by full-batch L-BFGS to the binary cross-entropy.

The threshold is chosen on training images too: the head is first fitted without every
``holdout_every``-th image of each dataset, the threshold that maximises the mean over datasets
of the held-out pooled F1@0.5 is kept, and the head is then refitted on all images. Validation
and test images are never read.

Outputs in ``output_dir``: ``quality_head.safetensors`` + ``quality_head.json`` (copy both next
to the model's ``model.safetensors`` to use it), ``metrics.json`` and ``samples.pt`` (the
collected features and targets, ``QualitySamples`` fields, to refit variants in seconds).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from zeusseg.config_file import apply_overrides, merge_defaults, read_config
from zeusseg.datasets import get_dataset
from zeusseg.errors import InputError
from zeusseg.inference.zeus_segmenter import load_zeus, segment_image
from zeusseg.io.atomic import atomic_path
from zeusseg.io.images import read_image
from zeusseg.metrics import match_image
from zeusseg.modeling.quality_head import (
    N_EXTRA,
    InstanceQualityHead,
    QualityHeadSpec,
    quality_features,
    save_quality_head,
    without_context,
)
from zeusseg.predictor import ZeusPredictor
from zeusseg.structures import InstanceMasks, MicroscopyImage
from zeusseg.training.class_head import _views

_logger = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "base": "zeus-default",
    "output_dir": "runs/quality-head",
    "data": {
        "datasets": {"visn-train": "virus particles", "dsb-train": "cell nuclei"},
        "views": 4,
        "scale_jitter": 0.2,
        "holdout_every": 5,
        "limit": None,
        "samples": None,  # a samples.pt of an earlier run on the same base: refit, no segmenting
    },
    "train": {"steps": 300, "hidden": 64, "weight_decay": 1e-3, "context": False,
              "num_threads": 2},
}
SAMPLES_FILE = "samples.pt"
"""The collected ``QualitySamples`` (features, targets, split), written next to the head."""
THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)
"""Candidate thresholds for the held-out selection."""


def load_quality_head_config(path: str | os.PathLike,
                             overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read and validate a quality-head YAML; dotted ``overrides`` win.

    Raises:
        InputError: missing/unreadable file, an unknown key (named with its section) or a
            bad value.
    """
    path = Path(path)
    out = merge_defaults(path, apply_overrides(read_config(path, "quality-head config"),
                                               overrides), DEFAULTS)
    data, train = out["data"], out["train"]
    if not isinstance(data["datasets"], dict) or not data["datasets"] or not all(
            isinstance(v, str) and v.strip() for v in data["datasets"].values()):
        raise InputError(path, "data.datasets must map dataset names to prompts")
    if int(data["views"]) < 1 or int(train["steps"]) < 1 or int(train["hidden"]) < 1:
        raise InputError(path, "data.views, train.steps and train.hidden must be >= 1")
    if int(data["holdout_every"]) < 2:
        raise InputError(path, "data.holdout_every must be >= 2 (every n-th image held out)")
    return out


@dataclass
class QualitySamples:
    """Decoded instances of a set of images, as the quality head sees them.

    Attributes:
        x: (N, D) float32 features of every instance.
        y: (N,) float32 1.0 where the instance matches a true object at IoU >= 0.5.
        score: (N,) float32 the decoder's score of each instance.
        dataset: (N,) int index of the dataset each instance comes from.
        holdout: (N,) bool the instance comes from a held-out image.
        image: (N,) int index of its image in its dataset's ``names`` (e.g. to group the
            instances by the virus of their image).
        n_true: (n_datasets, 2) ground-truth objects of the [fitted, held-out] images (all views).
    """

    x: torch.Tensor
    y: torch.Tensor
    score: np.ndarray
    dataset: np.ndarray
    holdout: np.ndarray
    n_true: np.ndarray
    image: np.ndarray


def _recorder(sink: list, truth: np.ndarray):
    """A ``segment_image`` quality hook that stores (features, IoU >= 0.5) and keeps all."""
    def hook(masks: InstanceMasks, feats, model_shape):
        iou = match_image(truth, masks).iou
        matched = (iou >= 0.5).any(0) if iou.shape[0] else np.zeros(len(masks), bool)
        sink.append((quality_features(feats, masks, model_shape), matched, masks.scores.copy()))
        return masks
    return hook


def collect_samples(predictor: ZeusPredictor, datasets: Mapping[str, str], *, views: int,
                    scale: float, scale_jitter: float, holdout_every: int,
                    rng: np.random.Generator, limit: int | None = None) -> QualitySamples:
    """Segment every image (and ``views`` views of it) and describe each decoded instance.

    Args:
        predictor: ``ZeusPredictor`` of the frozen base model.
        datasets: registry dataset name -> the prompt its objects answer.
        views: dihedral views per image; view 0 is the image itself at ``scale``, the others
            start at ``scale`` times a factor in [1 / (1 + jitter), 1 + jitter].
        holdout_every: images at index 0, n, 2n, ... of each dataset are held out.
    """
    xs, ys, scores, dsi, hold, img_i = [], [], [], [], [], []
    n_true = np.zeros((len(datasets), 2), np.int64)
    for d, (name, prompt) in enumerate(datasets.items()):
        ds = get_dataset(name)
        names = ds.names[:limit] if limit else ds.names
        for i, stem in enumerate(tqdm(names, desc=name, unit="img")):
            grey = read_image(ds.image_path(stem)).grey()
            truth = ds.masks(stem).labels
            held = i % holdout_every == 0
            for k in range(views):
                img, lab = _views(grey, truth, k)
                f = scale if k == 0 else scale * float(
                    np.exp(rng.uniform(-np.log1p(scale_jitter), np.log1p(scale_jitter))))
                sink: list = []
                segment_image(predictor, MicroscopyImage(img, name=stem), [prompt], scale=f,
                              quality_head=_recorder(sink, lab))
                n_true[d, int(held)] += int(np.unique(lab[lab > 0]).size)
                for x, m, s in sink:
                    xs.append(x)
                    ys.append(torch.from_numpy(m.astype(np.float32)))
                    scores.append(s)
                    dsi.append(np.full(len(m), d))
                    hold.append(np.full(len(m), held))
                    img_i.append(np.full(len(m), i))
    if not xs:
        raise InputError(None, "the base model found no instance on the training images")
    return QualitySamples(torch.cat(xs), torch.cat(ys), np.concatenate(scores),
                          np.concatenate(dsi), np.concatenate(hold), n_true,
                          np.concatenate(img_i))


def fit_quality_head(x: torch.Tensor, y: torch.Tensor, *, hidden: int, steps: int,
                     weight_decay: float, seed: int) -> InstanceQualityHead:
    """Fit a quality head to features ``x`` (N, D) and targets ``y`` (N,) in {0, 1}.

    Full-batch L-BFGS on the binary cross-entropy plus ``weight_decay`` x the squared weights.
    """
    torch.manual_seed(seed)
    head = InstanceQualityHead(x.shape[1], hidden)
    head.feat_mean.copy_(x.mean(0))
    head.feat_std.copy_(x.std(0).clamp_min(1e-6))
    weights = [p for n, p in head.named_parameters() if n.endswith("weight")]
    opt = torch.optim.LBFGS(head.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(head(x), y)
        loss = loss + weight_decay * sum(w.pow(2).sum() for w in weights)
        loss.backward()
        return loss

    opt.step(closure)
    return head.eval()


def holdout_threshold(x: torch.Tensor, y: torch.Tensor, holdout: np.ndarray,
                      dataset: np.ndarray, n_true_held: np.ndarray, fit: Mapping[str, Any]
                      ) -> tuple[float, dict[float, float], np.ndarray]:
    """The recipe's threshold: fit on the instances not held out, choose on the held-out ones.

    Args:
        x, y: (N, D) features and (N,) targets of every instance.
        holdout, dataset: (N,) held-out flag and dataset index of each instance.
        n_true_held: (n_datasets,) ground-truth objects of the held-out images.
        fit: keyword arguments of ``fit_quality_head``.

    Returns:
        The threshold and the table of ``choose_threshold``, and the (M,) qualities of the
        held-out instances.
    """
    head = fit_quality_head(x[~holdout], y[~holdout], **fit)
    with torch.no_grad():
        q = torch.sigmoid(head(x[holdout])).numpy()
    threshold, table = choose_threshold(q, y.numpy()[holdout] > 0.5, dataset[holdout],
                                        n_true_held)
    return threshold, table, q


def pooled_scores(keep: np.ndarray, matched: np.ndarray, n_true: int) -> dict[str, float]:
    """Pooled precision, recall, F1@0.5 and AP@0.5 (TP / (TP + FP + FN)) of kept instances."""
    tp = int((keep & matched).sum())
    fp = int((keep & ~matched).sum())
    fn = int(n_true) - tp
    return {"precision": tp / max(tp + fp, 1), "recall": tp / max(n_true, 1),
            "f1": 2 * tp / max(2 * tp + fp + fn, 1), "ap50": tp / max(tp + fp + fn, 1)}


def choose_threshold(quality: np.ndarray, matched: np.ndarray, dataset: np.ndarray,
                     n_true: np.ndarray) -> tuple[float, dict[float, float]]:
    """The threshold of ``THRESHOLDS`` with the best mean over datasets of the pooled F1@0.5.

    Args:
        quality, matched, dataset: (N,) per instance of the held-out images.
        n_true: (n_datasets,) ground-truth objects of those images.

    Returns:
        The threshold (ties: the lowest) and the mean F1 of every candidate.
    """
    table = {}
    for t in THRESHOLDS:
        f1 = [pooled_scores((quality >= t)[dataset == d], matched[dataset == d],
                            int(n_true[d]))["f1"] for d in range(len(n_true))]
        table[float(t)] = float(np.mean(f1))
    best = max(table, key=lambda t: (table[t], -t))
    return best, table


def _load_or_collect(cfg: Mapping[str, Any], datasets: dict[str, str], embedder
                     ) -> QualitySamples:
    """The samples of ``data.samples`` (an earlier run's ``samples.pt``), else collected now.

    Raises:
        InputError: the file is missing or was collected for another base model or datasets.
    """
    data = cfg["data"]
    if data["samples"]:
        path = Path(data["samples"])
        if not path.is_file():
            raise InputError(path, "no such samples file (data.samples)")
        saved = torch.load(path, weights_only=False)
        if saved.get("base", cfg["base"]) != cfg["base"] or list(
                saved.get("datasets", datasets)) != list(datasets):
            raise InputError(path, f"samples of base '{saved.get('base')}' on "
                             f"{list(saved.get('datasets', []))}, not '{cfg['base']}' on "
                             f"{list(datasets)}")
        return QualitySamples(**{k: saved[k] for k in QualitySamples.__dataclass_fields__})
    net = load_zeus(cfg["base"])
    return collect_samples(ZeusPredictor(net, embedder), datasets, views=int(data["views"]),
                           scale=float(net.zeus_cfg.input_cfg.scale),
                           scale_jitter=float(data["scale_jitter"]),
                           holdout_every=int(data["holdout_every"]),
                           rng=np.random.default_rng(int(cfg["seed"])), limit=data["limit"])


def train_quality_head(cfg: Mapping[str, Any], embedder=None) -> dict[str, Any]:
    """Run one quality-head training as configured (``load_quality_head_config``).

    Args:
        embedder: the ``PromptEmbedder`` of the model's text encoder (default: built from
            the model's config).

    Returns:
        The metrics written to ``output_dir/metrics.json``.
    """
    t0 = time.time()
    data, train = cfg["data"], cfg["train"]
    torch.set_num_threads(int(train["num_threads"]))
    datasets = dict(data["datasets"])
    s = _load_or_collect(cfg, datasets, embedder)
    context = bool(train["context"])
    x_all = s.x if context else without_context(s.x, s.x.shape[1] - N_EXTRA)
    fit = {"hidden": int(train["hidden"]), "steps": int(train["steps"]),
           "weight_decay": float(train["weight_decay"]), "seed": int(cfg["seed"])}
    matched = s.y.numpy() > 0.5
    threshold, table, q_held = holdout_threshold(x_all, s.y, s.holdout, s.dataset,
                                                 s.n_true[:, 1], fit)
    held: dict[str, Any] = {}
    for d, name in enumerate(datasets):
        sel = s.dataset[s.holdout] == d
        m = matched[s.holdout][sel]
        held[name] = {
            "instances": int(sel.sum()),
            "decoder": pooled_scores(np.ones(m.size, bool), m, int(s.n_true[d, 1])),
            "quality_head": pooled_scores(q_held[sel] >= threshold, m, int(s.n_true[d, 1])),
        }
    head = fit_quality_head(x_all, s.y, **fit)
    metrics: dict[str, Any] = {
        "base": cfg["base"], "datasets": datasets, "instances": int(s.x.shape[0]),
        "matched_share": float(matched.mean()), "threshold": threshold,
        "heldout_f1_by_threshold": table, "heldout": held,
        "seconds": round(time.time() - t0, 1),
    }
    spec = QualityHeadSpec(in_dim=int(x_all.shape[1]), hidden=fit["hidden"], threshold=threshold,
                           context=context,
                           provenance={"config": json.loads(json.dumps(cfg)), **metrics})
    out = Path(cfg["output_dir"])
    save_quality_head(head, spec, out)
    with atomic_path(out / SAMPLES_FILE) as tmp:  # for refitting variants without re-segmenting
        torch.save({"base": cfg["base"], "datasets": datasets,
                    **{k: getattr(s, k) for k in QualitySamples.__dataclass_fields__}}, tmp)
    with atomic_path(out / "metrics.json") as tmp:
        Path(tmp).write_text(json.dumps(metrics, indent=2))
    _logger.info("quality head -> %s (threshold %.2f; held-out F1 %s)", out, threshold,
                 ", ".join(f"{n} {v['decoder']['f1']:.3f} -> {v['quality_head']['f1']:.3f}"
                           for n, v in held.items()))
    return metrics
