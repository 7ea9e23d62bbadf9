"""zeusseg: text-prompted, zero-shot instance segmentation of microscopy images."""

__version__ = "0.1.0"

__all__ = ["__version__"]
