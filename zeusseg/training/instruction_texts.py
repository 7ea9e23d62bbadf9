"""Training texts from the instruction side: the Zeus instruction of (image, class).

``data.instruction_mode`` of a training config picks what the text encoder reads per item:

* ``phrasings`` (default): a random phrasing of the class from the prompts table;
* ``name``: the canonical class name only;
* ``template`` / ``llm``: with probability ``data.instruction_prob``, the instruction that
  ``zeusseg.instructions.make_instruction`` writes for the *whole original image* and the
  canonical class name (measured description + template, or + the SmolLM2 writer), else a
  phrasing as above, so the model also keeps answering plain names.

Instructions are made once per (image, class) and kept in memory and, when
``data.instruction_cache`` names a JSONL file (``zeusseg instruct`` writes the same format), on
disk: an ``llm`` run can be prepared ahead with ``zeusseg instruct DIR -p NAME --mode llm
--cache FILE`` and never calls the LLM during training.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from zeusseg.instructions import InstructionCache, make_instruction
from zeusseg.io.images import read_image
from zeusseg.training.prompts import PromptTable

MODES = ("phrasings", "name", "template", "llm")


class InstructionTexts:
    """A ``TextProvider``: ``(class name, image name, rng) -> text`` (see the module docstring).

    Args:
        image_paths: image name -> path of its original file (all training sources).
        table: the prompts table (phrasings for the non-instruction draws).
        mode: ``template`` or ``llm``.
        prob: share of draws that get the instruction.
        cache: path of an instruction-cache JSONL, or None (memory only).
        writer: instruction writer (object or registry name) for ``llm``; default SmolLM2.
    """

    def __init__(self, image_paths: Mapping[str, str | os.PathLike], table: PromptTable,
                 mode: str, prob: float, cache: str | os.PathLike | None = None,
                 writer=None) -> None:
        if mode not in ("template", "llm"):
            raise ValueError(f"instruction texts need mode template or llm, got '{mode}'")
        self.paths = {k: Path(v) for k, v in image_paths.items()}
        self.table, self.mode, self.prob = table, mode, float(prob)
        self.cache_path = Path(cache) if cache else None
        self.writer = writer
        self._cache = None
        self._memo: dict[tuple[str, str], str] = {}

    def instruction(self, name: str, image_name: str) -> str:
        """The instruction for class ``name`` on image ``image_name`` (made once)."""
        key = (name, image_name)
        if key not in self._memo:
            if self._cache is None and self.cache_path is not None:
                self._cache = InstructionCache(self.cache_path)
            if image_name not in self.paths:
                raise KeyError(f"no image file known for training image '{image_name}'")
            image = read_image(self.paths[image_name])
            self._memo[key] = make_instruction(
                image, self.table.canonical(name), self.mode, cache=self._cache,
                writer=self.writer).text
        return self._memo[key]

    def __call__(self, name: str, image_name: str, rng: np.random.Generator) -> str:
        if rng.random() < self.prob:
            return self.instruction(name, image_name)
        return self.table.sample(name, rng)


def check_mode(mode: str, prob: float) -> None:
    """Raise ValueError for an unknown ``instruction_mode`` or a ``prob`` outside [0, 1]."""
    if mode not in MODES:
        raise ValueError(f"unknown data.instruction_mode '{mode}'; valid: {', '.join(MODES)}")
    if not 0.0 <= float(prob) <= 1.0:
        raise ValueError(f"data.instruction_prob must be in [0, 1], got {prob}")
