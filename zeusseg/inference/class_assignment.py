"""Route class prompts through a model's class head (``zeusseg.modeling.class_head``).

A prompt that names one of the head's classes (``RSV``, ``influenza A virus``, ...) is not given
its own dense maps: the instances come from the head's class-agnostic parent prompt (``virus
particles``), and the head decides which of them belong to the prompt. Each instance competes
among the requested class prompts and the canonical names of the head's other classes, so
``-p SARS-CoV-2`` alone returns the particles the head calls SARS-CoV-2 and nothing else.
Prompts the head does not know keep the dense-map path (``assign_classes``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from zeusseg.modeling.class_head import ClassHeadSpec, InstanceClassHead, instance_features
from zeusseg.modeling.image_encoder import ImageFeatures
from zeusseg.structures import InstanceMasks

_logger = logging.getLogger(__name__)

MATCH_COSINE = 0.9
"""A prompt names a head class when it equals one of the class's phrasings (ignoring case) or
its sentence embedding has cosine >= this with one of them."""


@dataclass(frozen=True)
class ClassPlan:
    """How the prompts of one run are answered.

    Attributes:
        prompts: the user's prompts (class ids 1..P in this order).
        dense: the texts whose dense maps are predicted (the user's non-class prompts, then the
            parent prompt when no user prompt is it).
        head_class: per user prompt, the head class it names, or None.
        parent: index of the parent prompt in ``dense``.
        competitors: texts the head scores each parent instance against (one per head class:
            the first user prompt naming it, else its canonical name).
        competitor_prompt: per competitor, the user prompt index (0-based) it stands for, or -1.
    """

    prompts: tuple[str, ...]
    dense: tuple[str, ...]
    head_class: tuple[str | None, ...]
    parent: int
    competitors: tuple[str, ...]
    competitor_prompt: tuple[int, ...]


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def plan_prompts(prompts: Sequence[str], spec: ClassHeadSpec, embedder) -> ClassPlan | None:
    """The routing of ``prompts`` through a class head, or None when no prompt names a class.

    Args:
        prompts: the user's prompts.
        spec: the head's classes and parent prompt.
        embedder: a ``PromptEmbedder`` (sentence embeddings for the near-synonym match).
    """
    prompts = tuple(prompts)
    phrasings = [(c, t) for c, texts in spec.classes.items() for t in texts]
    exact = {_norm(t): c for c, t in phrasings}
    head_class: list[str | None] = [exact.get(_norm(p)) for p in prompts]
    unknown = [i for i, c in enumerate(head_class) if c is None]
    if unknown:
        sims = embedder.sentences([prompts[i] for i in unknown]) @ embedder.sentences(
            [t for _, t in phrasings]).T
        for row, i in enumerate(unknown):
            j = int(sims[row].argmax())
            if float(sims[row, j]) >= MATCH_COSINE:
                head_class[i] = phrasings[j][0]
    if all(c is None for c in head_class):
        return None
    parent_norm = {_norm(spec.parent_prompt)}
    dense = [p for p, c in zip(prompts, head_class, strict=True) if c is None]
    parent = next((i for i, p in enumerate(dense) if _norm(p) in parent_norm), None)
    if parent is None:
        dense.append(spec.parent_prompt)
        parent = len(dense) - 1
    competitors, competitor_prompt = [], []
    for name, texts in spec.classes.items():
        idx = next((i for i, c in enumerate(head_class) if c == name), -1)
        competitors.append(prompts[idx] if idx >= 0 else texts[0])
        competitor_prompt.append(idx)
    _logger.debug("class head: %s -> %s via '%s'", prompts, head_class, dense[parent])
    return ClassPlan(prompts, tuple(dense), tuple(head_class), parent, tuple(competitors),
                     tuple(competitor_prompt))


@torch.no_grad()
def apply_class_head(
    masks: InstanceMasks,
    plan: ClassPlan,
    head: InstanceClassHead,
    embedder,
    feats: ImageFeatures,
    model_shape: tuple[int, int],
) -> InstanceMasks:
    """Turn instances decoded for ``plan.dense`` into instances of the user's prompts.

    Args:
        masks: instances with class ids 1..len(plan.dense) (``assign_classes`` over the dense
            prompts), at any resolution.
        plan: from ``plan_prompts``.
        head: the class head.
        embedder: ``PromptEmbedder`` of the head's text encoder.
        feats: encoder features of the image at ``model_shape`` (batch 1).
        model_shape: (h, w) of the image the encoder saw.

    Returns:
        InstanceMasks whose class ids index ``plan.prompts`` (1-based) and ``class_names`` =
        the prompts; parent instances the head gives to a class nobody asked for are dropped
        (unless the user asked for the parent prompt itself), scores are multiplied by the
        head's probability of the class kept.
    """
    user_of_dense = {}
    for k, text in enumerate(plan.dense):
        user_of_dense[k + 1] = plan.prompts.index(text) + 1 if text in plan.prompts else 0
    class_ids = np.array([user_of_dense[int(c)] for c in masks.class_ids], np.int64)
    scores = masks.scores.astype(np.float32).copy()
    sel = np.flatnonzero(masks.class_ids == plan.parent + 1)
    if sel.size:
        x = instance_features(feats, masks.labels, masks.ids[sel], model_shape)
        probs = torch.softmax(head(x, embedder.sentences(list(plan.competitors))), -1).numpy()
        best = probs.argmax(1)
        owner = np.asarray(plan.competitor_prompt)[best]
        won = owner >= 0
        class_ids[sel[won]] = owner[won] + 1
        scores[sel[won]] *= probs[np.flatnonzero(won), best[won]]
    names = {i: p for i, p in enumerate(plan.prompts, start=1)}
    return InstanceMasks(labels=masks.labels, ids=masks.ids, class_ids=class_ids, scores=scores,
                         class_names=names).select(class_ids > 0)
