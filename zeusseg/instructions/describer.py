"""The describer interface: an image in, a short visual description (text + numbers) out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from zeusseg.structures import MicroscopyImage


@dataclass(frozen=True)
class Description:
    """What a describer saw in one image.

    Attributes:
        text: a few short sentences for the instruction writer.
        facts: measured values by name (numbers or short labels; empty for free-text
            describers), e.g. ``{"count": 14, "diameter_px": 38.0, "polarity": "dark"}``.
        describer: id of the describer.
    """

    text: str
    facts: dict[str, float | int | str] = field(default_factory=dict)
    describer: str = ""


class Describer(ABC):
    """Turns an image into a ``Description``. Subclasses set ``id`` (it keys caches)."""

    id: str = ""

    @abstractmethod
    def describe(self, image: MicroscopyImage) -> Description:
        """Describe ``image`` (data (H, W) or (H, W, 3) float32 in [0, 1])."""
