"""Peak memory and time of the tiled Zeus path on large synthetic images.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_tiling.py --sizes 2048 8192 16384

Each size runs in its own process (peak RSS is a per-process high-water mark): a synthetic
square image of bright disks on a noisy background (disks 54 px wide, i.e. the model's 27 px
target at the default scale 0.5, so auto-scale keeps the first pass) is segmented with
``segment_image`` and the bundled ``zeus-default`` model ("cell nuclei"). Printed per size:
windows, instances, seconds, the peak RSS before the image exists (model + a warm-up window),
the peak RSS of the whole run, and the size of the input image (float32) and of the output
labels (int32), which any caller holds anyway; "working" = peak - input - output.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import numpy as np


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_image(size: int, seed: int = 0) -> np.ndarray:
    """(size, size) float32 in [0, 1]: a 1024 px pattern of disks (radius 27) on noise, tiled."""
    from skimage.draw import disk

    rng = np.random.default_rng(seed)
    tile = rng.normal(40, 10, (1024, 1024))
    for _ in range(120):
        r, c = rng.integers(0, 1024, 2)
        for dr in (-1024, 0, 1024):  # wrap around so the tiled pattern has no cut disks
            for dc in (-1024, 0, 1024):
                rr, cc = disk((r + dr, c + dc), 27, shape=tile.shape)
                tile[rr, cc] = 190 + rng.normal(0, 10)
    tile = np.clip(tile, 0, 255).astype(np.uint8)
    reps = -(-size // 1024)
    out = np.empty((size, size), np.float32)
    for i in range(reps):  # row by row of tiles: no full-size temporaries
        rows = np.tile(tile, (1, reps))[:, :size]
        n = min(1024, size - i * 1024)
        np.multiply(rows[:n], 1 / 255, out=out[i * 1024 : i * 1024 + n], dtype=np.float32)
    return out


def run_one(size: int, tile_size: int, prompt: str) -> dict:
    import torch

    from zeusseg.factory import build_zeus
    from zeusseg.inference.zeus_segmenter import segment_image
    from zeusseg.predictor import ZeusPredictor
    from zeusseg.structures import MicroscopyImage
    from zeusseg.tiling import TileGrid
    from zeusseg.transforms import scaled_shape

    torch.set_num_threads(1)
    pred = ZeusPredictor(build_zeus("zeus-default"))
    pred.set_image(np.zeros((min(tile_size, size // 2), min(tile_size, size // 2)), np.float32))
    pred.predict([prompt])  # warm-up: one window, the prompt embedded once
    pred.reset_image()
    rss_model = peak_rss_mb()
    image = MicroscopyImage(synthetic_image(size), name=f"synthetic-{size}")
    scaled = scaled_shape(image.shape, pred.model.zeus_cfg.input_cfg.scale)
    t0 = time.perf_counter()
    masks = segment_image(pred, image, [prompt], tile_size=tile_size)
    seconds = time.perf_counter() - t0
    tiled = max(scaled) > tile_size
    return {
        "size": size,
        "scaled": scaled[0],
        "windows": len(TileGrid(scaled, tile_size, 128)) if tiled else 1,
        "instances": len(masks),
        "seconds": round(seconds, 1),
        "peak_rss_before_image_mb": round(rss_model),
        "peak_rss_mb": round(peak_rss_mb()),
        "input_mb": round(image.data.nbytes / 2**20),
        "output_mb": round(masks.labels.nbytes / 2**20),
        "working_mb": round(peak_rss_mb() - (image.data.nbytes + masks.labels.nbytes) / 2**20),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="peak RSS of tiled segmentation vs image size")
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192, 16384])
    ap.add_argument("--tile-size", type=int, default=1024)
    ap.add_argument("--prompt", default="cell nuclei")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.sizes[0], args.tile_size, args.prompt)), flush=True)
        return
    import torch

    print(f"# {platform.processor() or platform.machine()}, python {platform.python_version()}, "
          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}")
    print("| image | model-scale | windows | instances | seconds | peak RSS before image | "
          "peak RSS | input (float32) | output (int32) | peak - input - output |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--one", "--sizes", str(size),
               "--tile-size", str(args.tile_size), "--prompt", args.prompt]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            print(f"| {size}² | failed: {res.stderr.strip().splitlines()[-1:]} |")
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"| {size}² | {r['scaled']}² | {r['windows']} | {r['instances']} | "
              f"{r['seconds']} | {r['peak_rss_before_image_mb']} MB | {r['peak_rss_mb']} MB | "
              f"{r['input_mb']} MB | {r['output_mb']} MB | {r['working_mb']} MB |", flush=True)


if __name__ == "__main__":
    main()
