"""Keep triton's LLVM from clashing with the OpenGL driver's LLVM inside napari.

Mesa's OpenGL drivers (llvmpipe, radeonsi, ...) load ``libLLVM`` with global symbols when
napari creates its canvas. triton's ``libtriton`` exports its own, incompatible LLVM; imported
afterwards (torch imports it lazily, e.g. through ``transformers``), its LLVM calls bind to
the driver's copy and the process dies with a segmentation fault. Either order is fine when
triton comes first. So, on import of ``zeusseg.napari``:

* triton already imported, or not installed: nothing to do;
* no ``libLLVM`` mapped yet: import triton now, before any canvas exists;
* ``libLLVM`` already mapped: make ``import triton`` fail with ImportError (torch then runs
  without triton, which zeusseg never uses: no ``torch.compile``).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

_logger = logging.getLogger(__name__)

MAPS = Path("/proc/self/maps")


def llvm_loaded(maps: Path = MAPS) -> bool:
    """Whether a shared ``libLLVM`` is mapped into this process (False where unknowable)."""
    try:
        return "/libLLVM" in maps.read_text()
    except OSError:
        return False


def guard_triton(modules: dict | None = None, maps: Path = MAPS) -> str:
    """Apply the rule of the module docstring.

    Args:
        modules: the module table to check and block in (default ``sys.modules``).
        maps: the process memory map to look for ``libLLVM`` in.

    Returns:
        What was done: ``"none"``, ``"imported"`` or ``"blocked"``.
    """
    modules = sys.modules if modules is None else modules
    if "triton" in modules or importlib.util.find_spec("triton") is None:
        return "none"
    if llvm_loaded(maps):
        modules["triton"] = None  # import triton -> ImportError
        _logger.warning("triton disabled in this process: the OpenGL driver's LLVM is loaded "
                        "and triton's would crash it (zeusseg does not need triton)")
        return "blocked"
    try:
        importlib.import_module("triton")
    except Exception as err:  # a broken triton install must not break the plugin
        _logger.warning("could not import triton (%s); blocking it", err)
        modules["triton"] = None
        return "blocked"
    return "imported"
