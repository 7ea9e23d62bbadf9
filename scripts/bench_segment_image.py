"""Seconds per image of ``segment_image`` (the whole per-image path of ``zeusseg segment``
without file I/O) for one or more models on the bundled example images.

    .venv/bin/python scripts/bench_segment_image.py --models zeus-default RUN/best \\
        --threads 2 --repeats 7 --out bench-segment.json [--quality-head]

Per model and image: one warm-up call, then the median of ``--repeats`` calls of
``segment_image(model, image, [prompt])`` (rescale, encoder, fusion + decoder, auto-scale second
pass when it triggers, seeded watershed, restore size). With ``--quality-head`` each model with
a quality head is timed twice, without and with it (``zeusseg segment``'s default). Run it on
an otherwise idle machine; the Markdown table goes to stdout and everything to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import platform
import statistics
import time
from pathlib import Path

import torch

from zeusseg.inference.quality_filter import QualityFilter
from zeusseg.inference.zeus_segmenter import find_quality_head, load_zeus, segment_image
from zeusseg.io import read_image
from zeusseg.predictor import ZeusPredictor

ROOT = Path(__file__).resolve().parents[1]
IMAGES = {  # example image -> prompt
    "visn-0008.png": "virus particles",
    "coelho-u2os-dna-0.png": "cell nuclei",
}
_logger = logging.getLogger("bench_segment_image")


def time_model(model_name: str, repeats: int, quality=None) -> list[dict]:
    """Median seconds per call of ``segment_image`` for each example image.

    ``quality``: a ``QualityFilter`` to apply (the row's model name then says so).
    """
    model = ZeusPredictor(load_zeus(model_name))  # as `zeusseg segment`: one per run, so
    # each prompt's text embedding is computed once, not per image
    label = f"{model_name} + quality head" if quality is not None else model_name
    rows = []
    for stem, prompt in IMAGES.items():
        image = read_image(ROOT / "examples" / stem)
        with torch.inference_mode():
            segment_image(model, image, [prompt], quality_head=quality)  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                found = segment_image(model, image, [prompt], quality_head=quality)
                times.append(time.perf_counter() - t0)
        rows.append({"model": label, "image": stem, "size": list(image.shape[:2]),
                     "prompt": prompt, "instances": len(found), "median_s": statistics.median(
                         times), "min_s": min(times), "repeats": repeats})
        _logger.info("%s %s: %.3f s", label, stem, rows[-1]["median_s"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["zeus-default"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quality-head", action="store_true",
                        help="also time each model with its quality head, when it has one")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        rows += time_model(name, args.repeats)
        found = find_quality_head(name) if args.quality_head else None
        if found is not None:
            rows += time_model(name, args.repeats, QualityFilter(*found))
    header = "| model | image | size | instances | median s | min s |\n|---|---|---|---|---|---|"
    lines = [f"| {r['model']} | {r['image']} | {r['size'][1]}x{r['size'][0]} | "
             f"{r['instances']} | {r['median_s']:.3f} | {r['min_s']:.3f} |" for r in rows]
    print("\n".join([header, *lines]))  # noqa: T201 - the table is the script's output
    if args.out:
        meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "machine": platform.processor() or platform.machine(), "threads": args.threads,
                "torch": torch.__version__}
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
