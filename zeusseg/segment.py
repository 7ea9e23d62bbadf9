"""Segment images or folders and write label TIFFs, overlays and one COCO predictions JSON.

Also the module behind ``python -m zeusseg.segment`` (same options as ``zeusseg segment``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from zeusseg.errors import InputError
from zeusseg.io import list_images, read_image, read_label_image, write_label_tiff, write_overlay
from zeusseg.io.atomic import remove_stale_temp_files
from zeusseg.io.coco import CocoAccumulator
from zeusseg.structures import InstanceMasks, MicroscopyImage

_logger = logging.getLogger(__name__)

METHODS = ("zeus", "classical")
DEFAULT_METHOD = "zeus"

Segmenter = Callable[[MicroscopyImage], InstanceMasks]


@dataclass
class SegmentReport:
    """What a folder run did."""

    out: Path
    done: list[str] = field(default_factory=list)
    skipped_existing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    instances: int = 0

    @property
    def predictions(self) -> Path:
        return self.out / "predictions.json"


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
) -> Segmenter:
    """A function image -> InstanceMasks for ``method``.

    Args:
        instruction_mode: what the zeus text encoder reads for each prompt: ``name`` (the
            prompt itself), ``template`` or ``llm`` (an instruction written per image by
            ``zeusseg.instructions.make_instruction``, cached in ``instruction_cache``).

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
    from zeusseg.zeus_segmenter import build_zeus_segmenter

    texts_for = None
    if instruction_mode != "name":
        texts_for = _instruction_texts(prompts, instruction_mode, instruction_cache)
    return build_zeus_segmenter(list(prompts), model=model, adapter=adapter, texts_for=texts_for)


def _instruction_texts(
    prompts: Sequence[str], mode: str, cache_path: str | os.PathLike | None
) -> Callable[[MicroscopyImage], list[str]]:
    """image -> the instruction of each prompt (``template`` or ``llm`` mode), cached."""
    from zeusseg.instructions import MODES, InstructionCache, make_instruction

    if mode not in MODES:
        raise ValueError(f"unknown instruction mode '{mode}'; choose one of {', '.join(MODES)}")
    cache = InstructionCache(cache_path) if cache_path else None

    def texts(image: MicroscopyImage) -> list[str]:
        out = [make_instruction(image, p, mode=mode, cache=cache).text for p in prompts]
        _logger.debug("%s: instructions %s", image.name, out)
        return out

    return texts


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
) -> SegmentReport:
    """Run ``segmenter`` over image files and write every output atomically.

    Outputs: ``out/labels/<stem>.tif`` (label TIFF with classes and scores),
    ``out/overlays/<stem>.png`` and ``out/predictions.json`` (COCO, RLE, scores), the last
    written once at the end from every label TIFF of this run.

    Args:
        on_error: ``stop`` re-raises the first InputError; ``skip`` records it and goes on.

    Raises:
        InputError: a bad input file when ``on_error="stop"``, or an unwritable ``out``.
    """
    from tqdm.auto import tqdm

    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be stop or skip, got {on_error!r}")
    out = Path(out)
    report = SegmentReport(out=out)
    for sub in (out, out / "labels", out / "overlays"):
        if remove_stale_temp_files(sub):
            _logger.info("%s: removed temporary files of an interrupted run", sub)
    classes = class_table(prompts)
    results = CocoAccumulator(classes or {1: "object"})  # RLE only: memory stays flat
    stems = [p.stem for p in paths]
    dupes = {s for s in stems if stems.count(s) > 1}
    if dupes:
        raise InputError(paths[0].parent, f"several files share the name(s) {sorted(dupes)[:3]}")
    for path in tqdm(paths, desc="segment", unit="img", disable=not progress or len(paths) < 2):
        label_path = out / "labels" / f"{path.stem}.tif"
        if skip_existing and label_path.exists():
            try:
                results.add(path.name, read_label_image(label_path))
                report.skipped_existing.append(path.name)
                continue
            except InputError:
                _logger.warning("%s: unreadable earlier output, segmenting again", label_path)
        try:
            image = read_image(path)
            masks = segmenter(image)
        except InputError as err:
            if on_error == "stop":
                raise
            _logger.error("%s (skipped)", err)
            report.failed[path.name] = err.problem
            continue
        masks.class_names = dict(classes) or masks.class_names
        write_label_tiff(label_path, masks)
        if overlays:
            write_overlay(out / "overlays" / f"{path.stem}.png", image, masks)
        results.add(path.name, masks)
        report.done.append(path.name)
        report.instances += len(masks)
    if results.images:
        results.write(report.predictions)
    return report


def run_segment(
    input_path: str | os.PathLike | Sequence[Path],
    prompts: Sequence[str],
    out: str | os.PathLike,
    method: str = DEFAULT_METHOD,
    **kwargs,
) -> SegmentReport:
    """Segment a file, a folder or a list of files (``build_segmenter`` + ``segment_paths``)."""
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
    segmenter = build_segmenter(
        method, prompts, model=model, adapter=adapter, instruction_mode=mode,
        instruction_cache=Path(out) / "instructions.jsonl",
    )
    return segment_paths(paths, segmenter, out, prompts, **kwargs)


def main(argv: list[str] | None = None) -> int:
    """``python -m zeusseg.segment ...`` = ``zeusseg segment ...``."""
    from zeusseg.__main__ import main as cli_main

    return cli_main(["segment", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
