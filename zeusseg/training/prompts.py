"""The prompts table: canonical class name -> phrasings used as training texts.

Keys are the canonical names a dataset uses for its classes (COCO category names such as
``RSV``) and for its class-agnostic prompt (``virus particles``, ``cell nuclei``). A class with
no entry is prompted by its own name. The data config's ``prompts`` entry replaces or extends
the table; a ``text_provider`` callable (e.g. instruction-cache texts) can replace it entirely.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

TextProvider = Callable[[str, str, np.random.Generator], str]
"""``(canonical class name, image name, rng) -> text`` for one training sample."""

DEFAULT_PROMPTS: dict[str, list[str]] = {
    "virus particles": [
        "virus particles", "viruses", "virions", "viral particles",
        "virus particles in an electron micrograph",
    ],
    "RSV": [
        "RSV", "respiratory syncytial virus", "RSV particles",
        "respiratory syncytial virus particles",
    ],
    "SARS-CoV-2": [
        "SARS-CoV-2", "SARS-CoV-2 particles", "SARS-CoV-2 virions", "coronavirus particles",
    ],
    "FLUAV": [
        "FLUAV", "influenza A virus", "influenza A virus particles", "FLUAV particles",
    ],
    "cell nuclei": [
        "cell nuclei", "nuclei", "fluorescent nuclei", "stained nuclei", "nuclei of cells",
        "cell nuclei in a fluorescence image",
    ],
}


class PromptTable:
    """Phrasings per canonical class name, with random choice for training.

    Args:
        table: canonical name -> list of phrasings; merged over ``DEFAULT_PROMPTS`` unless
            ``replace`` is True.
        replace: use ``table`` alone.
    """

    def __init__(
        self, table: Mapping[str, Sequence[str]] | None = None, *, replace: bool = False
    ) -> None:
        base = {} if replace else {k: list(v) for k, v in DEFAULT_PROMPTS.items()}
        for name, texts in (table or {}).items():
            if isinstance(texts, str) or not texts:
                raise ValueError(f"prompts for '{name}' must be a non-empty list of strings")
            base[str(name)] = [str(t) for t in texts]
        self.table = base

    def phrasings(self, name: str) -> list[str]:
        """All phrasings of ``name`` (the name itself when it has no entry)."""
        return self.table.get(name, [name])

    def canonical(self, name: str) -> str:
        """The first phrasing of ``name``: the text used for validation."""
        return self.phrasings(name)[0]

    def sample(self, name: str, rng: np.random.Generator) -> str:
        """A random phrasing of ``name``."""
        texts = self.phrasings(name)
        return texts[int(rng.integers(len(texts)))]
