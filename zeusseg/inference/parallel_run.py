"""Folder runs over several processes (``accelerate launch -m zeusseg.segment ...``).

Each process takes its contiguous share of the inputs (``PartialState.split_between_processes``)
and writes the per-image outputs of its own images (label TIFFs, overlays, ROI sets, GeoJSON;
atomically, one file per image, so processes never write the same file). The per-image COCO
annotations (RLE strings, a few kB per image; never the label images) are gathered with
``gather_object``; the main process renumbers them in input order and writes
``predictions.json``, which is then identical to the file a single process writes. Every
process returns the same merged ``SegmentReport``.

A failure in one process does not leave the others waiting: each process records what went
wrong, the gather still happens, and then every process raises (the first bad input in input
order when ``on_error="stop"``; a ``RuntimeError`` naming the failed process otherwise).

Nothing here imports ``accelerate`` unless the run really has several processes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from zeusseg.errors import InputError
from zeusseg.inference.folder_loop import segment_loop
from zeusseg.inference.folder_outputs import (
    DEFAULT_FORMATS,
    Segmenter,
    SegmentReport,
    check_unique_stems,
    class_table,
    prepare_output,
)
from zeusseg.io.coco import CocoAccumulator

_logger = logging.getLogger(__name__)

_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_RANK_VARS = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")


def _first_int(names: Sequence[str], default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return default


def world_size() -> int:
    """Number of processes of this run, from the launcher's environment (1 when not launched)."""
    return _first_int(_SIZE_VARS, 1)


def process_rank() -> int:
    """Global rank of this process (0 when not launched by a distributed launcher)."""
    return _first_int(_RANK_VARS, 0)


def distributed_state():
    """The accelerate ``PartialState`` of this run (gloo on CPU when CUDA is absent or hidden).

    Raises:
        ImportError: accelerate is not installed.
    """
    try:
        from accelerate import PartialState
        from accelerate.utils import parse_flag_from_env
    except ImportError as err:  # pragma: no cover - accelerate is in the train extra
        raise ImportError(
            "multi-process folder runs need accelerate: pip install 'zeusseg[train]'"
        ) from err
    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    return PartialState(cpu=cpu)


def _image_entries(results: CocoAccumulator) -> list[dict[str, Any]]:
    """Split a ``CocoAccumulator`` into one record per image: its entry and its annotations."""
    by_image: dict[int, list[dict]] = {}
    for ann in results.annotations:
        by_image.setdefault(ann["image_id"], []).append(ann)
    return [{"image": im, "annotations": by_image.get(im["id"], [])} for im in results.images]


def merge_entries(results: CocoAccumulator, entries: list[dict[str, Any]],
                  order: dict[str, int]) -> None:
    """Fill an empty ``CocoAccumulator`` with per-image records, renumbered in input order.

    Args:
        results: the accumulator to fill (its categories are kept).
        entries: records from ``_image_entries`` of every process.
        order: file name -> position in the input list.
    """
    for rec in sorted(entries, key=lambda r: order[r["image"]["file_name"]]):
        image_id = len(results.images) + 1
        results.images.append({**rec["image"], "id": image_id})
        for ann in rec["annotations"]:
            results.annotations.append(
                {**ann, "id": len(results.annotations) + 1, "image_id": image_id}
            )


def segment_paths_parallel(
    paths: Sequence[Path],
    segmenter: Segmenter,
    out: str | os.PathLike,
    prompts: Sequence[str],
    **kwargs,
) -> SegmentReport:
    """``segment_paths`` for one process of a multi-process run (same arguments and result).

    Returns:
        The merged ``SegmentReport`` of all processes (lists in input order), on every process.

    Raises:
        InputError: a bad input when ``on_error="stop"`` (on every process), unwritable ``out``.
        RuntimeError: another process failed with an unexpected error.
    """
    from accelerate.utils import gather_object  # optional (train extra); needed from here on

    state = distributed_state()
    formats = kwargs.get("formats") or DEFAULT_FORMATS
    paths = [Path(p) for p in paths]
    out = Path(out)
    check_unique_stems(paths)  # same answer on every process: all raise or none
    if state.is_main_process:
        prepare_output(out, paths)  # temp-file clean-up must not race the other writers
    state.wait_for_everyone()
    report = SegmentReport(out=out, formats=tuple(formats))
    kwargs["progress"] = kwargs.get("progress", True) and state.is_main_process
    problem: dict[str, Any] = {}
    own: Exception | None = None
    entries: list[dict[str, Any]] = []
    with state.split_between_processes(paths) as shard:
        _logger.info("process %d/%d: %d of %d images", state.process_index,
                     state.num_processes, len(shard), len(paths))
        try:
            entries = _image_entries(segment_loop(shard, segmenter, report, prompts, **kwargs))
        except InputError as err:
            own = err
            problem = {"input_error": (err.path, err.problem), "name": _failed_name(err, shard)}
        except Exception as err:  # re-raised below, after the others are told
            own = err
            problem = {"other": f"{type(err).__name__}: {err}"}
    parts = gather_object([{
        "rank": state.process_index, "done": report.done, "skipped": report.skipped_existing,
        "failed": report.failed, "instances": report.instances, "entries": entries,
        "problem": problem,
    }])
    order = {p.name: i for i, p in enumerate(paths)}
    merged = _merge_reports(out, parts, order, tuple(formats))
    _raise_first_problem(parts, order, own)
    if (merged.done or merged.skipped_existing) and "coco" in formats:
        results = CocoAccumulator(class_table(prompts) or {1: "object"})
        merge_entries(results, [e for part in parts for e in part["entries"]], order)
        if state.is_main_process:
            results.write(merged.predictions)
    state.wait_for_everyone()  # predictions.json exists when any process returns
    return merged


def _failed_name(err: InputError, shard: Sequence[Path]) -> str | None:
    """The input file name an InputError is about (None if it names no input)."""
    for p in shard:
        if err.path is not None and Path(err.path) == p:
            return p.name
    return None


def _merge_reports(out: Path, parts: list[dict], order: dict[str, int],
                   formats: tuple[str, ...] | None = None) -> SegmentReport:
    def ordered(names):
        return sorted(names, key=order.__getitem__)

    failed = {k: v for part in parts for k, v in part["failed"].items()}
    return SegmentReport(
        out=out,
        formats=formats or DEFAULT_FORMATS,
        done=ordered([n for part in parts for n in part["done"]]),
        skipped_existing=ordered([n for part in parts for n in part["skipped"]]),
        failed={k: failed[k] for k in ordered(failed)},
        instances=sum(part["instances"] for part in parts),
    )


def _raise_first_problem(parts: list[dict], order: dict[str, int], own: Exception | None):
    """Raise on every process when any process failed.

    An unexpected error wins over bad inputs: the process that hit it re-raises it, the others
    raise a ``RuntimeError`` naming that process. Otherwise every process raises the bad input
    that comes first in input order (the one a single process would have stopped at).
    """
    failed = [part for part in parts if part["problem"]]
    if not failed:
        return
    crashed = [part for part in failed if "other" in part["problem"]]
    if crashed:
        if own is not None and not isinstance(own, InputError):
            raise own
        part = crashed[0]
        raise RuntimeError(f"segmentation failed in process {part['rank']}: "
                           f"{part['problem']['other']}")
    first = min(failed, key=lambda part: order.get(part["problem"]["name"], len(order)))
    raise InputError(*first["problem"]["input_error"])
