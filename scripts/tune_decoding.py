"""Choose a Zeus model's decode settings on training images and store them with the model.

Usage::

    .venv/bin/python scripts/tune_decoding.py --model zeus-default \\
        --data "dsb-train=cell nuclei@1,2.5" --data "visn-train=virus particles@1" --every 5 \\
        --out runs/tune-decoding [--adapter ADAPTER] [--write]

Stage 1 computes each image's maps once and decodes every setting of the grid from them
(AP@0.5, image mean). Stage 2 runs a shortlist (the best 3 of each seed mode and the model's
current setting) through the whole ``segment_image`` pipeline at each magnification after
``@`` (2.5 = the training images enlarged 2.5 x: objects larger than in training, as in
another lab's images); the best mean over every (dataset, magnification) wins
(``zeusseg.evaluation.tune_decoding``). Writes ``OUT/grid.csv`` (stage 1), ``OUT/pipeline.csv``
and ``OUT/pipeline.md`` (stage 2) and ``OUT/decode_cfg.json``; ``--write`` puts the winning
values into the adapter's ``zeusseg_base.json`` (with ``--adapter``) or into
``model_cfg.decode_cfg`` of the model folder's ``config.json`` (atomic rewrite), so
``zeusseg segment --model ... [--adapter ...]`` uses them from then on.

Only registered ``*-train`` splits or a folder of your own training images (``images/`` +
``labels/``) are accepted: settings tuned on validation or test images would flatter the scores
reported on them. The bundled models keep their default settings: docs/decoding.md has the run
that tuned them on VISN + DSB training images and why it was not adopted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from pathlib import Path

_logger = logging.getLogger("tune_decoding")


def _parse_data(items: list[str]) -> dict[str, tuple[str, list[float]]]:
    """``NAME=PROMPT[@M1,M2,...]`` -> {name: (prompt, magnifications)}."""
    out = {}
    for item in items:
        name, sep, rest = item.partition("=")
        prompt, _, mags = rest.partition("@")
        if not sep or not prompt.strip():
            raise SystemExit(f"error: --data {item!r}: expected NAME=PROMPT[@M1,M2]")
        if not (name.endswith("-train") or Path(name).is_dir()):
            raise SystemExit(f"error: --data {name}: only training splits (*-train) or a folder "
                             "of your own training images may be used to choose decode settings")
        try:
            factors = [float(m) for m in mags.split(",")] if mags else [1.0]
        except ValueError:
            raise SystemExit(f"error: --data {item!r}: magnifications must be numbers") from None
        if any(m <= 0 for m in factors):
            raise SystemExit(f"error: --data {item!r}: magnifications must be > 0")
        out[name] = (prompt.strip(), factors)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="zeus-default", help="model name or folder")
    p.add_argument("--data", action="append", metavar="NAME=PROMPT",
                   help="training dataset (a registered *-train split or a folder with "
                   "images/ and labels/), its prompt and the magnifications stage 2 checks "
                   "(NAME=PROMPT[@M1,M2]); repeat (default: 'dsb-train=cell nuclei@1,2.5' and "
                   "'visn-train=virus particles@1')")
    p.add_argument("--every", type=int, default=5, help="use every N-th image (default 5)")
    p.add_argument("--grid", default=None,
                   help="JSON: an object key -> list of values (every combination) or a list "
                   "of setting objects (default: zeusseg.evaluation.tune_decoding."
                   "default_settings(), 57 settings)")
    p.add_argument("--data-root", default=None, help="data root (default: ZEUSSEG_DATA_ROOT)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--adapter", default=None, metavar="FOLDER",
                   help="a LoRA adapter (zeusseg finetune) applied to --model")
    p.add_argument("--write", action="store_true",
                   help="store the best values with the model: in the --adapter folder's "
                   "zeusseg_base.json, else in the config.json of --model (a folder)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("zeusseg").setLevel(logging.WARNING)  # not one line per tiled image
    data = _parse_data(args.data or ["dsb-train=cell nuclei@1,2.5",
                                     "visn-train=virus particles@1"])
    grid = json.loads(args.grid) if args.grid else None
    if args.every < 1:
        raise SystemExit("error: --every must be >= 1")
    if args.write and not args.adapter and not (Path(args.model) / "config.json").is_file():
        raise SystemExit(f"error: --write needs --adapter or a trained-model folder as --model "
                         f"(one with config.json), not {args.model!r}")

    from dataclasses import asdict

    from zeusseg.evaluation.tune_decoding import (
        best_setting,
        collect_maps,
        default_settings,
        pipeline_scores,
        shortlist,
        sweep,
    )
    from zeusseg.inference.zeus_segmenter import load_zeus
    from zeusseg.io.atomic import write_text_atomic
    from zeusseg.predictor import ZeusPredictor

    net = load_zeus(args.model)
    if args.adapter:
        from zeusseg.adapters import load_adapter

        net = load_adapter(net, args.adapter, model_id=args.model)
    predictor = ZeusPredictor(net)
    t0 = time.time()
    cached, samples = {}, {}
    for name, (prompt, _) in data.items():
        samples[name] = _samples(name, args.data_root)[:: args.every]
        cached[name] = collect_maps(predictor, samples[name], prompt, progress=True)
    base = asdict(net.zeus_cfg.decode_cfg)
    table = sweep(cached, grid or default_settings(), base=base, progress=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "grid.csv", table.to_csv(index=False))
    write_text_atomic(out / "grid.md", _markdown(table.head(10)))
    candidates = shortlist(table, base)
    del cached
    checks = {n: (p, samples[n], mags) for n, (p, mags) in data.items()}
    final = pipeline_scores(predictor, checks, candidates, progress=True)
    write_text_atomic(out / "pipeline.csv", final.to_csv(index=False))
    write_text_atomic(out / "pipeline.md", _markdown(final))
    best = best_setting(final, base)
    record = {"model": args.model, "adapter": args.adapter, "date": dt.date.today().isoformat(),
              "data": {n: {"prompt": p, "magnifications": m} for n, (p, m) in data.items()},
              "every": args.every, "images": {k: len(v) for k, v in samples.items()},
              "grid": grid or "default_settings()", "before": base, "decode_cfg": best,
              "seconds": round(time.time() - t0, 1)}
    write_text_atomic(out / "decode_cfg.json", json.dumps(record, indent=2) + "\n")
    _logger.info("best %s (score %.4f); model's current setting scores %.4f", best,
                 final["score"].iloc[0], _current_score(final, base))
    if args.write:
        tuning = {k: record[k] for k in ("date", "data", "every", "images", "grid")}
        if args.adapter:
            from zeusseg.adapters import BASE_FILE

            path = Path(args.adapter) / BASE_FILE
            meta = json.loads(path.read_text())
            meta.update({"decode_cfg": best, "decode_tuning": tuning})
        else:
            path = Path(args.model) / "config.json"
            meta = json.loads(path.read_text())
            meta["model_cfg"]["decode_cfg"] = best
            meta["decode_tuning"] = tuning
        write_text_atomic(path, json.dumps(meta, indent=2) + "\n")
        _logger.info("wrote decode_cfg to %s", path)
    print(_markdown(final))
    return 0


def _samples(name: str, data_root: str | None) -> list:
    """(image, truth labels) pairs of a registered training split, or of a folder holding
    ``images/`` and ``labels/`` (label images named like the images)."""
    from zeusseg.io import list_images, read_image, read_label_folder

    if Path(name).is_dir():
        root = Path(name)
        if not (root / "images").is_dir() or not (root / "labels").is_dir():
            raise SystemExit(f"error: {root}: expected sub-folders images/ and labels/")
        images = {p.stem: p for p in list_images(root / "images")}
        stems = sorted(p.stem for p in (root / "labels").iterdir() if p.stem in images)
        if not stems:
            raise SystemExit(f"error: {root}: no label image matches an image")
        masks = read_label_folder(root / "labels", stems)
        return [(read_image(images[s]), masks[s].labels) for s in stems]
    from zeusseg.datasets import get_dataset

    ds = get_dataset(name, data_root)
    return [(read_image(ds.image_path(n)), ds.masks(n).labels) for n in ds.names]


def _markdown(table) -> str:
    """A pandas table as a Markdown table (floats to 4 decimals)."""
    def cell(v) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |",
             "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _current_score(table, base: dict) -> float:
    """Score of the model's own setting in a stage-2 table."""
    hit = table[[all(row[k] == v for k, v in base.items()) for _, row in table.iterrows()]]
    return float(hit["score"].iloc[0]) if len(hit) else float("nan")


if __name__ == "__main__":
    sys.exit(main())
