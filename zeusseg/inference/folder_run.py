"""Segment images or folders and write label TIFFs, overlays and one COCO predictions JSON
(and, on request, ImageJ ROI sets and QuPath GeoJSON; ``folder_outputs.OUTPUT_FORMATS``).

Also the module behind ``python -m zeusseg.segment`` (same options as ``zeusseg segment``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from zeusseg.classical import segment_classical
from zeusseg.errors import InputError
from zeusseg.inference.folder_loop import segment_loop
from zeusseg.inference.folder_outputs import (
    DEFAULT_METHOD,
    METHODS,
    Segmenter,
    SegmentReport,
    parse_formats,
    prepare_output,
)
from zeusseg.inference.parallel_run import (
    distributed_state,
    process_rank,
    segment_paths_parallel,
    world_size,
)
from zeusseg.inference.zeus_segmenter import build_zeus_segmenter
from zeusseg.instructions import MODES, InstructionCache, make_instruction
from zeusseg.io import list_images
from zeusseg.structures import MicroscopyImage

_logger = logging.getLogger(__name__)


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
        if len(prompts) > 1:
            _logger.warning("the classical method ignores the text; all instances get class 1")
        if adapter:
            raise ValueError("--adapter needs --method zeus")
        name = prompts[0] if prompts else "object"
        return lambda image: segment_classical(image, class_name=name)
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
    formats = parse_formats(formats)
    if skip_existing and "tif" not in formats:
        raise InputError(None, "--skip-existing resumes from the label TIFFs in OUT/labels: "
                         "add tif to --format")
    kwargs = dict(overlays=overlays, skip_existing=skip_existing, on_error=on_error,
                  progress=progress, workers=workers, formats=formats)
    if world_size() > 1:
        return segment_paths_parallel(paths, segmenter, out, prompts, **kwargs)
    out = prepare_output(out, paths)
    report = SegmentReport(out=out, formats=formats)
    results = segment_loop(paths, segmenter, report, prompts, **kwargs)
    if results.images and "coco" in formats:
        results.write(report.predictions)
    return report


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
    from zeusseg.__main__ import main as cli_main  # the CLI imports this module: no cycle

    args = ["segment", *(sys.argv[1:] if argv is None else argv)]
    if process_rank() == 0:
        return cli_main(args)
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
