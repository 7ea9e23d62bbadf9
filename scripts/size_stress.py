"""Auto-scale on objects far larger than the model's target: training images enlarged.

A lab imaging nuclei at a higher magnification than DSB2018 gives objects of 100+ px. This
script enlarges every ``--every``-th training image (dsb-train or visn-train; validation and
Coelho are never read) so that its labelled median diameter becomes 60, 80, 100, 120 or 140 px
(in turn; at most 4 M pixels), runs ``segment_image`` as ``zeusseg segment`` does, and logs
the pooled AP@0.5 / F1@0.5 (counts summed over images). ``--no-fragment-check`` scores the
size logic before 2026-12-06 (instances' median diameter only, one 1.6x band), for the
comparison in docs/decoding.md#scale.

    ZEUSSEG_DATA_ROOT=../shared/data .venv/bin/python scripts/size_stress.py --model zeus-default
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
from tqdm import tqdm

import zeusseg.inference.zeus_segmenter as zs
from zeusseg.datasets.registry import get_dataset
from zeusseg.inference import auto_scale
from zeusseg.io import read_image
from zeusseg.metrics import match_image
from zeusseg.transforms import median_diameter, resize_image, resize_labels, scaled_shape

_logger = logging.getLogger("size_stress")
SIZES = (60, 80, 100, 120, 140)
PROMPTS = {"dsb-train": "cell nuclei", "visn-train": "virus particles"}
MAX_PIXELS = 4e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="zeus-default")
    ap.add_argument("--dataset", default="dsb-train", choices=sorted(PROMPTS))
    ap.add_argument("--every", type=int, default=8, help="use every N-th training image")
    ap.add_argument("--no-fragment-check", action="store_true",
                    help="the size logic before 2026-12-06 (for comparison)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.no_fragment_check:
        auto_scale.FRAGMENT_RATIO = float("inf")
        auto_scale.DOWN_TOLERANCE = auto_scale.AUTO_SCALE_TOLERANCE
    segment = zs.build_zeus_segmenter([PROMPTS[args.dataset]], model=args.model)
    ds = get_dataset(args.dataset)
    n_true = n_pred = tp = 0
    for i, name in enumerate(tqdm(ds.names[:: args.every], desc=args.dataset)):
        labels = ds.masks(name).labels
        d = median_diameter(labels)
        if not d > 0:
            continue
        factor = min(SIZES[i % len(SIZES)] / d, float(np.sqrt(MAX_PIXELS / labels.size)))
        shape = scaled_shape(labels.shape, factor)
        image = read_image(ds.image_path(name))
        image.data = resize_image(image.grey(), shape)
        match = match_image(resize_labels(labels, shape), segment(image).labels)
        n_true, n_pred = n_true + match.n_true, n_pred + match.n_pred
        tp += int(match.true_positives([0.5])[0])
    fp, fn = n_pred - tp, n_true - tp
    _logger.info("%s enlarged (%s, every %d, fragment check %s): %d true, %d predicted; pooled "
                 "AP@0.5 %.3f, F1@0.5 %.3f", args.dataset, args.model, args.every,
                 "off" if args.no_fragment_check else "on", n_true, n_pred,
                 tp / max(tp + fp + fn, 1), 2 * tp / max(2 * tp + fp + fn, 1))


if __name__ == "__main__":
    main()
