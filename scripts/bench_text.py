"""Per-image timing of the text side: describe, LLM instruction, embedding (one process).

Usage: ``OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_text.py [--data-root DIR]``.
Prints one line per image and the means (results are copied into docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from zeusseg.datasets import resolve_data_root
from zeusseg.instructions import MeasuredDescriber, load_smollm2, make_instruction
from zeusseg.io import read_image
from zeusseg.text import get_text_encoder

JOBS = [
    ("visn/train/images/0008.png", "RSV"),
    ("visn/train/images/0100.png", "SARS-CoV-2"),
    ("visn/train/images/0200.png", "FLUAV"),
    ("coelho2009/u2os/images/dna-0.png", "cell nuclei"),
    ("coelho2009/nih3t3/images/dna-0.png", "cell nuclei"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    root = resolve_data_root(ap.parse_args().data_root)
    t = time.perf_counter()
    writer = load_smollm2()
    t_wload = time.perf_counter() - t
    t = time.perf_counter()
    enc = get_text_encoder()
    t_eload = time.perf_counter() - t
    desc = MeasuredDescriber()
    print(f"load: writer {t_wload:.2f}s, MiniLM {t_eload:.2f}s, "
          f"torch threads {torch.get_num_threads()}, loadavg {os.getloadavg()[0]:.2f}")
    rows = []
    for rel, prompt in JOBS:
        im = read_image(root / rel)
        t = time.perf_counter()
        desc.describe(im)
        td = time.perf_counter() - t
        t = time.perf_counter()
        ins = make_instruction(im, prompt, "llm", describer=desc, writer=writer)
        tw = time.perf_counter() - t - td  # make_instruction describes again; subtract it
        t = time.perf_counter()
        enc.encode(ins.text)
        te = time.perf_counter() - t
        rows.append((td, tw, te))
        print(f"{rel:40s} describe {td:.3f}s  llm {tw:.2f}s  embed {te:.3f}s")
    n = len(rows)
    print(f"mean: describe {sum(r[0] for r in rows) / n:.3f}s  "
          f"llm {sum(r[1] for r in rows) / n:.2f}s  embed {sum(r[2] for r in rows) / n:.3f}s")
    print(platform.machine(), os.cpu_count(), "cores", f"torch {torch.__version__}")


if __name__ == "__main__":
    main()
