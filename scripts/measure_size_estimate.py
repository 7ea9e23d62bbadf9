"""How well auto-scale's size estimate matches the labels, on training images.

For every ``--every``-th training image (dsb-train and visn-train; validation and Coelho are
never read) the model predicts at its configured scale; where that pass would rescale
(``auto_scale.next_scale``, as in ``zeusseg segment``), the pass at the rescaled factor
measures the median instance diameter again. The script logs, per dataset, the ratio
(estimated / labelled median diameter) in each pass: the first pass's ratio says how far off
a scale far from the objects' misjudges their size, the rescaled pass's ratio how close a
second measurement comes. It is the evidence for ``auto_scale.REFINE_TOLERANCE``
(docs/decoding.md#scale). It also logs, over every image read, the first pass's foreground
width / instance diameter (``fg_width / diameter``): its spread on whole objects is the
evidence for ``auto_scale.FRAGMENT_RATIO`` and ``WHOLE_RATIO``.

    ZEUSSEG_DATA_ROOT=../shared/data .venv/bin/python scripts/measure_size_estimate.py
"""

from __future__ import annotations

import argparse
import logging
import math

import numpy as np

import zeusseg.inference.zeus_segmenter as zs
from zeusseg.datasets.registry import get_dataset
from zeusseg.inference import auto_scale
from zeusseg.io import read_image
from zeusseg.predictor import ZeusPredictor
from zeusseg.transforms import median_diameter

_logger = logging.getLogger("measure_size_estimate")
SETS = (("dsb-train", "cell nuclei"), ("visn-train", "virus particles"))


def size_ratios(predictor: ZeusPredictor, dataset: str, prompt: str, every: int):
    """(first-pass, rescaled-pass) ratios estimated / labelled diameter of rescaled images, and
    the first pass's foreground width / instance diameter of every image with instances."""
    cfg = zs.get_zeus_cfg(predictor.model)
    kw = zs.decode_settings(cfg, {})
    ds, first, second, width = get_dataset(dataset), [], [], []
    target, scale = cfg.input_cfg.target_diameter, cfg.input_cfg.scale
    for name in ds.names[::every]:
        grey = read_image(ds.image_path(name)).grey()
        true = median_diameter(ds.masks(name).labels)
        run = zs._run(predictor, grey, scale, [prompt], None, False, **kw)
        if run.diameter > 0 and run.fg_width > 0:
            width.append(run.fg_width / run.diameter)
        new = auto_scale.next_scale(run, target, math.inf, *auto_scale.rescale_bands()[0])
        if new is None or not true > 0:
            continue  # no rescale: the refinement never runs on this image
        again = zs._run(predictor, grey, new, [prompt], None, False, **kw)
        if again.n_found < 1:
            continue
        first.append(run.diameter / scale / true)
        second.append(again.diameter / new / true)
    return np.array(first), np.array(second), np.array(width)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="zeus-default")
    ap.add_argument("--every", type=int, default=4, help="use every N-th training image")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    predictor = ZeusPredictor(zs.load_zeus(args.model))
    for dataset, prompt in SETS:
        first, second, width = size_ratios(predictor, dataset, prompt, args.every)
        if width.size:
            _logger.info("%s: %d images; first-pass foreground width / instance diameter, "
                         "5th / 50th / 95th / 99th percentile: %.2f / %.2f / %.2f / %.2f",
                         dataset, width.size, *np.percentile(width, [5, 50, 95, 99]))
        if not first.size:
            _logger.info("%s: no image rescaled", dataset)
            continue
        _logger.info("%s: %d rescaled images; estimated / labelled diameter, median [q25, q75]:"
                     " first pass %.3f [%.3f, %.3f], rescaled pass %.3f [%.3f, %.3f]",
                     dataset, first.size, *np.quantile(first, [0.5, 0.25, 0.75]),
                     *np.quantile(second, [0.5, 0.25, 0.75]))


if __name__ == "__main__":
    main()
