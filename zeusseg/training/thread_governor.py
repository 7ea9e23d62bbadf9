"""``num_threads: auto``: the torch thread count follows the CPU's other load."""

from __future__ import annotations

import logging
import os
import time

import torch

_logger = logging.getLogger(__name__)

class ThreadGovernor:
    """``num_threads: auto``: 2+ torch threads while the CPU is otherwise idle, 1 when shared.

    On a CPU shared with other jobs, more threads than free cores make OpenMP spin and wait
    (measured here: one training step took 3x longer with 2 threads than with 1 while other
    jobs ran, and 1.6x shorter when the machine was idle). Every ``update`` compares the
    machine's busy time (``/proc/stat``) with this process's own CPU time since the last call.
    """

    def __init__(self, max_threads: int) -> None:
        self.max_threads = max(1, max_threads)
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                vals = [int(v) for v in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        busy = (sum(vals) - vals[3] - vals[4]) / self.hz
        t = os.times()
        return busy, t.user + t.system, time.monotonic()

    def update(self) -> int:
        """Set and return the torch thread count for the next steps."""
        now = self._sample()
        if now is None or self._last is None:
            return torch.get_num_threads()
        busy, own, wall = (a - b for a, b in zip(now, self._last, strict=True))
        self._last = now
        if wall <= 0:
            return torch.get_num_threads()
        others = (busy - own) / wall  # cores used by everything else (incl. data workers)
        free = (os.cpu_count() or 1) - others
        n = int(min(self.max_threads, max(1, round(free - 0.2))))
        if n != torch.get_num_threads():
            _logger.info("torch threads %d -> %d (other load %.2f cores)",
                         torch.get_num_threads(), n, others)
            torch.set_num_threads(n)
        return n
