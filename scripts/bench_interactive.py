"""Click and box prompts of the bundled model on the example images: mean IoU and cost.

For every ground-truth object: remove the automatic instance under its most interior pixel and
click there (``add_instance_at``), or give its bounding box after removing the automatic
instances it overlaps. Numbers in docs/decoding.md ("Interactive point/box prompts")::

    OMP_NUM_THREADS=1 python scripts/bench_interactive.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CASES = [
    ("visn-0008", "virus particles"),
    ("dsb-0010", "cell nuclei"),
    ("coelho-u2os-dna-0", "cell nuclei"),
]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _case(predictor, name: str, prompt: str) -> dict:
    from scipy import ndimage

    from zeusseg.inference.interactive import add_instance_at, prepare_predictor, remove_instance_at
    from zeusseg.inference.zeus_segmenter import segment_image
    from zeusseg.io import read_image, read_label_image
    from zeusseg.metrics import _intersection_over_union

    image = read_image(REPO / "examples" / f"{name}.png")
    gt = read_label_image(REPO / "tests" / "data" / f"{name}-labels.png").labels
    auto = segment_image(predictor, image, [prompt]).labels
    scale = prepare_predictor(predictor, image, labels=auto)
    t = time.process_time()
    predictor.prompt_maps(prompt)
    prep = time.process_time() - t
    clicks, boxes, cost = [], [], []
    for k in np.unique(gt[gt > 0]):
        obj = gt == k
        r, c = np.unravel_index(np.argmax(ndimage.distance_transform_edt(obj)), obj.shape)
        labels = remove_instance_at(auto, (c, r))
        t = time.process_time()
        added = add_instance_at(labels, predictor, prompt, point=(c, r))
        cost.append(time.process_time() - t)
        clicks.append(_iou(added == added.max(), obj) if added.max() > labels.max() else 0.0)
        rows, cols = ndimage.find_objects(obj.astype(np.int32))[0]
        cleared = np.where(np.isin(auto, np.unique(auto[obj])), 0, auto)
        box = (cols.start, rows.start, cols.stop - 1, rows.stop - 1)
        added = add_instance_at(cleared, predictor, prompt, box=box)
        boxes.append(_iou(added == added.max(), obj) if added.max() > cleared.max() else 0.0)
    clicks_a, boxes_a = np.array(clicks), np.array(boxes)
    best = _intersection_over_union(gt, auto)[1:, 1:].max(axis=1)
    return {
        "image": name, "prompt": prompt, "objects": int(gt.max()), "scale": round(scale, 3),
        "automatic_best_iou": round(float(best.mean()), 3),
        "click_iou": round(float(clicks_a.mean()), 3),
        "click_share_over_0.5": round(float((clicks_a > 0.5).mean()), 2),
        "box_iou": round(float(boxes_a.mean()), 3),
        "box_share_over_0.5": round(float((boxes_a > 0.5).mean()), 2),
        "prompt_maps_cpu_s": round(prep, 3),
        "add_instance_cpu_ms_median": round(1000 * float(np.median(cost)), 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="zeus-default")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-o", "--out", default=None, help="write the result JSON here too")
    args = p.parse_args(argv)

    import torch

    from zeusseg.inference.zeus_segmenter import load_zeus
    from zeusseg.predictor import ZeusPredictor

    torch.set_num_threads(args.threads)
    predictor = ZeusPredictor(load_zeus(args.model))
    rows = [_case(predictor, name, prompt) for name, prompt in CASES]
    text = json.dumps(rows, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
