"""Memory over a long folder run: RSS at the start and end of segmenting N images.

Usage::

    .venv/bin/python scripts/bench_memory.py --n 2000 --method classical
    .venv/bin/python scripts/bench_memory.py --n 2000 --method zeus --size 512

Writes N synthetic images (disks on noise, ``--size`` px square) to a temporary folder,
segments them in this process through ``zeusseg.inference.folder_run.segment_paths`` (the code
behind ``zeusseg segment``), and prints the resident set size (RSS) after 10 images, at the middle
and at the end. Memory is flat when the end RSS is within a few MB of the early one.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from zeusseg.inference.folder_run import build_segmenter, segment_paths


def rss_mb() -> float:
    """Current resident set size in MB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_images(folder: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    from skimage.draw import disk

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        img = rng.normal(30, 8, (size, size))
        for _ in range(rng.integers(3, 12)):
            r, c = rng.integers(20, size - 20, 2)
            rr, cc = disk((r, c), rng.integers(6, 16), shape=img.shape)
            img[rr, cc] += 150
        p = folder / f"img{i:05d}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(p)
        paths.append(p)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description="RSS over a long zeusseg folder run")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--method", default="classical", choices=("classical", "zeus"))
    ap.add_argument("--prompt", default="cell nuclei")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        paths = make_images(src, args.n, args.size)
        segmenter = build_segmenter(args.method, [args.prompt])
        marks: dict[str, float] = {}
        t0 = time.perf_counter()
        segment_paths(paths[:10], segmenter, Path(tmp) / "out", [args.prompt], progress=False)
        marks["after 10"] = rss_mb()
        half = args.n // 2
        segment_paths(paths[:half], segmenter, Path(tmp) / "out", [args.prompt],
                      skip_existing=True, progress=False)
        marks[f"after {half}"] = rss_mb()
        report = segment_paths(paths, segmenter, Path(tmp) / "out", [args.prompt],
                               skip_existing=True, progress=False)
        marks[f"after {args.n}"] = rss_mb()
        dt = time.perf_counter() - t0
    print(f"method {args.method}, {args.n} images of {args.size}x{args.size}, "
          f"{report.instances + 0} instances in the last pass, {dt:.0f} s")
    for k, v in marks.items():
        print(f"RSS {k:>12s}: {v:8.1f} MB")
    print(f"growth after 10 -> end: {marks[f'after {args.n}'] - marks['after 10']:+.1f} MB "
          f"({platform.machine()}, {platform.python_version()})")


if __name__ == "__main__":
    main()
