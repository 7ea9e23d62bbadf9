"""Typed dataclasses for the data that flows through zeusseg: image, instruction, instances."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zeusseg.transforms import rgb_to_grey


@dataclass
class MicroscopyImage:
    """One image, normalised for the models, with where it came from.

    Attributes:
        data: (H, W) or (H, W, 3) float32 in [0, 1] (see ``zeusseg.io.images`` for how raw
            intensities are scaled).
        path: the file it was read from, or None for in-memory images.
        source_dtype: dtype of the raw pixels (``uint8``, ``uint16``, ``float32``, ...).
        source_shape: shape of the raw pixel array before channel handling.
        name: a short identifier (file stem by default), used for output file names.
    """

    data: np.ndarray
    path: Path | None = None
    source_dtype: str = "float32"
    source_shape: tuple[int, ...] = ()
    name: str = "image"

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the image."""
        return int(self.data.shape[0]), int(self.data.shape[1])

    def grey(self) -> np.ndarray:
        """(H, W) float32 in [0, 1]: the luminance of an RGB image, the image itself if grey."""
        if self.data.ndim == 2:
            return self.data
        return rgb_to_grey(self.data)


@dataclass(frozen=True)
class Instruction:
    """A text instruction for one (image, prompt) pair.

    Attributes:
        prompt: what the user typed, e.g. ``"virus particles"``.
        text: the instruction given to the text encoder.
        mode: ``name`` (prompt alone), ``template`` (fixed sentence) or ``llm`` (generated).
        describer: id of the describer that produced the visual facts ("" when unused).
        writer: id of the writer (LLM) that produced the text ("" when unused).
        image_hash: content hash of the image the instruction was written for ("" if generic).
    """

    prompt: str
    text: str
    mode: str = "name"
    describer: str = ""
    writer: str = ""
    image_hash: str = ""


@dataclass
class InstanceMasks:
    """Instance segmentation of one image.

    Attributes:
        labels: (H, W) int32 label image, 0 = background, 1..N = instances.
        ids: (N,) int the label value of each instance (sorted ascending).
        class_ids: (N,) int category id of each instance (1-based; see ``class_names``).
        scores: (N,) float32 confidence of each instance in [0, 1] (1.0 for ground truth).
        class_names: category id -> name.
    """

    labels: np.ndarray
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    class_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    class_names: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels)
        if self.labels.ndim != 2:
            raise ValueError(f"labels must be (H, W), got shape {self.labels.shape}")
        self.labels = self.labels.astype(np.int32, copy=False)
        present = np.unique(self.labels[self.labels > 0])
        if self.ids.size == 0 and present.size > 0:
            self.ids = present.astype(np.int64)
        self.ids = np.asarray(self.ids, dtype=np.int64)
        n = self.ids.size
        if self.class_ids.size == 0:
            self.class_ids = np.ones(n, np.int64)
        if self.scores.size == 0:
            self.scores = np.ones(n, np.float32)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64)
        self.scores = np.asarray(self.scores, dtype=np.float32)
        if not (self.class_ids.size == self.scores.size == n):
            raise ValueError(
                f"{n} instances but {self.class_ids.size} class ids and {self.scores.size} scores"
            )
        if not np.all(np.isin(present, self.ids)):
            raise ValueError("labels holds values that are not listed in ids")

    def __len__(self) -> int:
        return int(self.ids.size)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the label image."""
        return int(self.labels.shape[0]), int(self.labels.shape[1])

    @classmethod
    def from_masks(
        cls,
        masks: np.ndarray,
        class_ids: np.ndarray | None = None,
        scores: np.ndarray | None = None,
        class_names: dict[int, str] | None = None,
    ) -> InstanceMasks:
        """Build from a (N, H, W) bool stack. Where masks overlap, the higher-scored one wins.

        Instances left with no pixel after overlap resolution are dropped.
        """
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 3:
            raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
        n = masks.shape[0]
        class_ids = np.ones(n, np.int64) if class_ids is None else np.asarray(class_ids, np.int64)
        scores = np.ones(n, np.float32) if scores is None else np.asarray(scores, np.float32)
        labels = np.zeros(masks.shape[1:], np.int32)
        # paint lowest score first so the highest score ends on top
        for i in np.argsort(scores, kind="stable"):
            labels[masks[i]] = i + 1
        kept = np.unique(labels[labels > 0]) - 1
        relabel = np.zeros(n + 1, np.int32)
        relabel[kept + 1] = np.arange(1, kept.size + 1)
        return cls(
            labels=relabel[labels],
            ids=np.arange(1, kept.size + 1),
            class_ids=class_ids[kept],
            scores=scores[kept],
            class_names=dict(class_names or {}),
        )

    def masks(self) -> np.ndarray:
        """(N, H, W) bool stack, one mask per entry of ``ids``."""
        return self.labels[None] == self.ids[:, None, None]

    def boxes(self) -> np.ndarray:
        """(N, 4) float32 boxes in XYWH pixel format (COCO convention), derived from the masks."""
        from scipy import ndimage  # ~0.4 s: `zeusseg --help` imports this module

        out = np.zeros((len(self), 4), np.float32)
        if len(self) == 0:
            return out
        slices = ndimage.find_objects(self.labels, max_label=int(self.ids.max()))
        for k, i in enumerate(self.ids):
            sl = slices[i - 1]
            if sl is None:
                continue
            y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
            out[k] = (x0, y0, x1 - x0, y1 - y0)
        return out

    def areas(self) -> np.ndarray:
        """(N,) int64 pixel count of each instance."""
        counts = np.bincount(self.labels.ravel(), minlength=int(self.ids.max(initial=0)) + 1)
        return counts[self.ids].astype(np.int64)

    def select(self, keep: np.ndarray, scores: np.ndarray | None = None) -> InstanceMasks:
        """The instances where ``keep`` (N,) bool is true, relabelled 1..M in order.

        Args:
            keep: (N,) which instances to keep.
            scores: (N,) new scores for every instance (default: the current ones).
        """
        keep = np.asarray(keep, bool)
        n = int(keep.sum())
        lut = np.zeros(int(self.ids.max(initial=0)) + 1, np.int32)
        lut[self.ids[keep]] = np.arange(1, n + 1)
        scores = self.scores if scores is None else np.asarray(scores, np.float32)
        return InstanceMasks(labels=lut[self.labels], ids=np.arange(1, n + 1),
                             class_ids=self.class_ids[keep].copy(), scores=scores[keep].copy(),
                             class_names=dict(self.class_names))

    def relabelled(self) -> InstanceMasks:
        """A copy whose ids are 1..N in order."""
        lut = np.zeros(int(self.ids.max(initial=0)) + 1, np.int32)
        lut[self.ids] = np.arange(1, len(self) + 1)
        return InstanceMasks(
            labels=lut[self.labels],
            ids=np.arange(1, len(self) + 1),
            class_ids=self.class_ids.copy(),
            scores=self.scores.copy(),
            class_names=dict(self.class_names),
        )
