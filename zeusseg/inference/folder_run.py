"""Segment images or folders and write label TIFFs, overlays and one COCO predictions JSON
(and, on request, ImageJ ROI sets and QuPath GeoJSON; ``OUTPUT_FORMATS``).

Also the module behind ``python -m zeusseg.segment`` (same options as ``zeusseg segment``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from zeusseg.errors import InputError
from zeusseg.io import list_images, write_label_tiff, write_overlay
from zeusseg.io.atomic import remove_stale_temp_files
from zeusseg.io.coco import CocoAccumulator
from zeusseg.structures import InstanceMasks, MicroscopyImage

_logger = logging.getLogger(__name__)

METHODS = ("zeus", "classical")
DEFAULT_METHOD = "zeus"

OUTPUT_FORMATS = {
    "tif": "labels/<name>.tif (label TIFF with classes and scores; napari, Fiji)",
    "coco": "predictions.json (COCO, RLE masks with scores)",
    "roi": "rois/<name>.zip (ImageJ/Fiji ROI set, one polygon per instance)",
    "geojson": "geojson/<name>.geojson (QuPath detections, polygons with class and score)",
}
"""Output format -> what ``zeusseg segment --format`` writes for it."""
DEFAULT_FORMATS = ("tif", "coco")

Segmenter = Callable[[MicroscopyImage], InstanceMasks]


@dataclass
class SegmentReport:
    """What a folder run did."""

    out: Path
    done: list[str] = field(default_factory=list)
    skipped_existing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    instances: int = 0
    formats: tuple[str, ...] = DEFAULT_FORMATS

    @property
    def predictions(self) -> Path:
        return self.out / "predictions.json"


def parse_formats(formats: str | Sequence[str] | None) -> tuple[str, ...]:
    """Output formats from ``"tif,coco,roi"`` (or a sequence), in ``OUTPUT_FORMATS`` order.

    None gives ``DEFAULT_FORMATS``.

    Raises:
        InputError: an unknown or no format.
    """
    if formats is None:
        return DEFAULT_FORMATS
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    items = [f.strip().lower() for f in items if f.strip()]
    unknown = [f for f in items if f not in OUTPUT_FORMATS]
    if unknown or not items:
        what = f"unknown format(s) {', '.join(unknown)}" if unknown else "no format given"
        raise InputError(None, f"--format: {what}; choose a comma-separated list of "
                         f"{', '.join(OUTPUT_FORMATS)} (default: {','.join(DEFAULT_FORMATS)})")
    return tuple(f for f in OUTPUT_FORMATS if f in items)


def output_path(out: Path, fmt: str, stem: str) -> Path:
    """Where ``fmt`` writes the result of image ``stem`` (not for ``coco``: one file per run)."""
    return {"tif": out / "labels" / f"{stem}.tif", "roi": out / "rois" / f"{stem}.zip",
            "geojson": out / "geojson" / f"{stem}.geojson"}[fmt]


def write_image_outputs(out: Path, name: str, masks: InstanceMasks, formats: Sequence[str],
                        image: MicroscopyImage | None = None, missing_only: bool = False) -> None:
    """Write the per-image files of ``formats`` (and the overlay when ``image`` is given).

    Args:
        name: the image's file name (outputs are named after its stem).
        missing_only: write only files that do not exist yet (resumed runs).
    """
    from zeusseg.io.geojson import write_geojson
    from zeusseg.io.imagej_rois import write_imagej_rois

    stem = Path(name).stem
    writers = {"tif": lambda p: write_label_tiff(p, masks),
               "roi": lambda p: write_imagej_rois(p, masks),
               "geojson": lambda p: write_geojson(p, masks, name)}
    for fmt, write in writers.items():
        path = output_path(out, fmt, stem)
        if fmt in formats and not (missing_only and path.exists()):
            write(path)
    if image is not None:
        write_overlay(out / "overlays" / f"{stem}.png", image, masks)


def class_table(prompts: Sequence[str]) -> dict[int, str]:
    """Category id (1-based, in prompt order) -> prompt."""
    return {i: p for i, p in enumerate(prompts, start=1)}


def build_segmenter(
    method: str,
    prompts: Sequence[str],
    model: str | None = None,
    adapter: str | None = None,
    instruction_mode: str = "name",
    instruction_cache: str | os.PathLike | None = None,
    device: str | None = None,
    segment_kwargs: dict | None = None,
) -> Segmenter:
    """A function image -> InstanceMasks for ``method``.

    Args:
        instruction_mode: what the zeus text encoder reads for each prompt: ``name`` (the
            prompt itself), ``template`` or ``llm`` (an instruction written per image by
            ``zeusseg.instructions.make_instruction``, cached in ``instruction_cache``).
        device: where the zeus model runs (default: the CPU).
        segment_kwargs: keyword arguments of ``segment_image`` for zeus (e.g. ``tile_size``,
            ``tile_overlap``); ignored by classical.

    Raises:
        ValueError: unknown method or an option the method does not take.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}")
    if method == "classical":
        from zeusseg.classical import segment_classical

        if len(prompts) > 1:
            _logger.warning("the classical method ignores the text; all instances get class 1")
        if adapter:
            raise ValueError("--adapter needs --method zeus")
        name = prompts[0] if prompts else "object"
        return lambda image: segment_classical(image, class_name=name)
    from zeusseg.inference.zeus_segmenter import build_zeus_segmenter

    text_of = None
    if instruction_mode != "name":
        text_of = instruction_text_of(instruction_mode, instruction_cache)
    return build_zeus_segmenter(list(prompts), model=model, adapter=adapter, text_of=text_of,
                                device=device, **(segment_kwargs or {}))


def instruction_text_of(
    mode: str, cache_path: str | os.PathLike | None
) -> Callable[[MicroscopyImage], Callable[[str], str]]:
    """image -> (prompt -> its instruction on that image) in ``template`` or ``llm`` mode, cached
    (also for prompts the class head adds, such as its parent prompt)."""
    from zeusseg.instructions import MODES, InstructionCache, make_instruction

    if mode not in MODES:
        raise ValueError(f"unknown instruction mode '{mode}'; choose one of {', '.join(MODES)}")
    cache = InstructionCache(cache_path) if cache_path else None

    def text_of(image: MicroscopyImage) -> Callable[[str], str]:
        def text(prompt: str) -> str:
            out = make_instruction(image, prompt, mode=mode, cache=cache).text
            _logger.debug("%s: instruction for '%s': %s", image.name, prompt, out)
            return out

        return text

    return text_of


def segment_paths(
    paths: Sequence[Path],
    segmenter: Segmenter,
    out: str | os.PathLike,
    prompts: Sequence[str],
    *,
    overlays: bool = True,
    skip_existing: bool = False,
    on_error: str = "stop",
    progress: bool = True,
    workers: int = 0,
    formats: str | Sequence[str] | None = None,
) -> SegmentReport:
    """Run ``segmenter`` over image files and write every output atomically.

    Outputs (``formats``, default ``tif`` and ``coco``; see ``OUTPUT_FORMATS``):
    ``out/labels/<stem>.tif`` (label TIFF with classes and scores), ``out/predictions.json``
    (COCO, RLE, scores; written once at the end from every image of this run),
    ``out/rois/<stem>.zip`` (ImageJ ROI set), ``out/geojson/<stem>.geojson`` (QuPath), and
    ``out/overlays/<stem>.png`` unless ``overlays`` is False.

    Under ``accelerate launch`` (or ``torchrun``) with several processes, each process
    segments its share of ``paths`` and the main process writes the merged predictions
    (``zeusseg.inference.parallel_run``); the outputs are the same as those of one process.

    Args:
        on_error: ``stop`` re-raises the first InputError; ``skip`` records it and goes on.
        workers: decode images in this many worker processes ahead of the model
            (``zeusseg.inference.image_loader``; 0 = read each image when it is needed).
        formats: output formats, a comma-separated string or a sequence (``parse_formats``).

    Raises:
        InputError: a bad input file when ``on_error="stop"``, an unwritable ``out``, an
            unknown format, or ``skip_existing`` without the ``tif`` format it resumes from.
    """
    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be stop or skip, got {on_error!r}")
    from zeusseg.inference.parallel_run import world_size

    formats = parse_formats(formats)
    if skip_existing and "tif" not in formats:
        raise InputError(None, "--skip-existing resumes from the label TIFFs in OUT/labels: "
                         "add tif to --format")
    kwargs = dict(overlays=overlays, skip_existing=skip_existing, on_error=on_error,
                  progress=progress, workers=workers, formats=formats)
    if world_size() > 1:
        from zeusseg.inference.parallel_run import segment_paths_parallel

        return segment_paths_parallel(paths, segmenter, out, prompts, **kwargs)
    out = prepare_output(out, paths)
    report = SegmentReport(out=out, formats=formats)
    results = segment_loop(paths, segmenter, report, prompts, **kwargs)
    if results.images and "coco" in formats:
        results.write(report.predictions)
    return report


def prepare_output(out: str | os.PathLike, paths: Sequence[Path]) -> Path:
    """Remove temp files of an interrupted run from ``out``; check the output names are unique.

    Raises:
        InputError: two inputs share a file stem (their outputs would collide).
    """
    out = Path(out)
    for sub in (out, out / "labels", out / "overlays", out / "rois", out / "geojson"):
        if remove_stale_temp_files(sub):
            _logger.info("%s: removed temporary files of an interrupted run", sub)
    check_unique_stems(paths)
    return out


def check_unique_stems(paths: Sequence[Path]) -> None:
    """Raise InputError when two inputs share a file stem."""
    counts = Counter(Path(p).stem for p in paths)  # linear: folders hold thousands of images
    dupes = {stem for stem, n in counts.items() if n > 1}
    if dupes:
        raise InputError(paths[0].parent, f"several files share the name(s) {sorted(dupes)[:3]}")


def segment_loop(
    paths: Sequence[Path],
    segmenter: Segmenter,
    report: SegmentReport,
    prompts: Sequence[str],
    *,
    overlays: bool = True,
    skip_existing: bool = False,
    on_error: str = "stop",
    progress: bool = True,
    workers: int = 0,
    formats: Sequence[str] = DEFAULT_FORMATS,
) -> CocoAccumulator:
    """Segment ``paths`` in order, write the per-image outputs of ``formats`` (and overlays) to
    ``report.out``, fill ``report``.

    Returns:
        The COCO annotations of every image done or kept (``skip_existing``), in path order
        (none unless ``coco`` is one of ``formats``).

    Raises:
        InputError: the first bad input when ``on_error="stop"``.
    """
    from tqdm.auto import tqdm

    from zeusseg.inference.image_loader import iter_images

    out = report.out
    classes = class_table(prompts)
    results = CocoAccumulator(classes or {1: "object"})  # RLE only: memory stays flat
    items = iter_images(paths, label_dir=out / "labels", skip_existing=skip_existing,
                        workers=workers)
    for item in tqdm(items, total=len(paths), desc="segment", unit="img",
                     disable=not progress or len(paths) < 2):
        path = item.path
        if item.existing is not None:
            if "coco" in formats:
                results.add(path.name, item.existing)
            write_image_outputs(out, path.name, item.existing, formats, missing_only=True)
            report.skipped_existing.append(path.name)
            continue
        try:
            item.raise_error()
            image = item.image
            masks = segmenter(image)
        except InputError as err:
            if on_error == "stop":
                raise
            _logger.error("%s (skipped)", err)
            report.failed[path.name] = err.problem
            continue
        masks.class_names = dict(classes) or masks.class_names
        write_image_outputs(out, path.name, masks, formats, image if overlays else None)
        if "coco" in formats:
            results.add(path.name, masks)
        report.done.append(path.name)
        report.instances += len(masks)
    return results


def run_segment(
    input_path: str | os.PathLike | Sequence[Path],
    prompts: Sequence[str],
    out: str | os.PathLike,
    method: str = DEFAULT_METHOD,
    **kwargs,
) -> SegmentReport:
    """Segment a file, a folder or a list of files (``build_segmenter`` + ``segment_paths``).

    ``kwargs``: ``model``, ``adapter``, ``instruction_mode``, ``device``, ``segment_kwargs``
    (``build_segmenter``; under a multi-process launch each process uses its own accelerator
    device) and the keyword arguments of ``segment_paths``.
    """
    model = kwargs.pop("model", None)
    adapter = kwargs.pop("adapter", None)
    mode = kwargs.pop("instruction_mode", "name")
    if isinstance(input_path, (list, tuple)):
        paths = [Path(p) for p in input_path]
    else:
        paths = list_images(input_path)
    prompts = [p for p in prompts if p is not None]
    for p in prompts:
        if not p.strip():
            raise InputError(None, "empty --prompt; say what to segment, e.g. 'virus particles'")
        if len(p) > 1000:
            raise InputError(None, f"--prompt is {len(p)} characters; the limit is 1000")
    device = kwargs.pop("device", None)
    segment_kwargs = kwargs.pop("segment_kwargs", None)
    if device is None and method == "zeus":
        from zeusseg.inference.parallel_run import distributed_state, world_size

        if world_size() > 1:  # one GPU per process (the CPU when there is none)
            device = str(distributed_state().device)
    segmenter = build_segmenter(
        method, prompts, model=model, adapter=adapter, instruction_mode=mode,
        instruction_cache=Path(out) / "instructions.jsonl", device=device,
        segment_kwargs=segment_kwargs,
    )
    return segment_paths(paths, segmenter, out, prompts, **kwargs)


def main(argv: list[str] | None = None) -> int:
    """``python -m zeusseg.segment ...`` = ``zeusseg segment ...``.

    Under ``accelerate launch`` with several processes only the main process prints the
    summary (every process gets the same merged report and exit code).
    """
    import contextlib

    from zeusseg.__main__ import main as cli_main
    from zeusseg.inference.parallel_run import process_rank

    args = ["segment", *(sys.argv[1:] if argv is None else argv)]
    if process_rank() == 0:
        return cli_main(args)
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
