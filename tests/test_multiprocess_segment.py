"""Folder runs split over processes: ``accelerate launch -m zeusseg.segment`` on 2 CPU processes.

``accelerate launch --cpu`` starts several CPU processes only through MPI; without it the
torchrun launcher (``--multi_gpu``) is used with CUDA hidden, and zeusseg falls back to gloo on
the CPU (``zeusseg.inference.parallel_run.distributed_state``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zeusseg.__main__ import main
from zeusseg.errors import InputError
from zeusseg.inference.parallel_run import (
    _image_entries,
    _merge_reports,
    _raise_first_problem,
    merge_entries,
    process_rank,
    world_size,
)
from zeusseg.io import read_label_image
from zeusseg.io.coco import CocoAccumulator
from zeusseg.structures import InstanceMasks

from .conftest import REPO
from .zeus_fakes import disks, domain_image


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    """``accelerate launch`` 2 CPU processes of ``-m zeusseg.segment ARGS``."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "zeusseg.segment", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=REPO)


def _folder(root: Path, n: int = 5, size: int = 80) -> Path:
    rng = np.random.default_rng(3)
    root.mkdir(parents=True)
    for i in range(n):
        img = domain_image(disks(rng, size, n=3 + i % 3, radius=7), "bright", rng)
        Image.fromarray(img).save(root / f"im{i}.png")
    return root


def _same_outputs(a: Path, b: Path, stems: list[str]) -> None:
    for stem in stems:
        la, lb = read_label_image(a / "labels" / f"{stem}.tif"), read_label_image(
            b / "labels" / f"{stem}.tif")
        np.testing.assert_array_equal(la.labels, lb.labels)
        np.testing.assert_array_equal(la.scores, lb.scores)
        assert (a / "overlays" / f"{stem}.png").read_bytes() == (
            b / "overlays" / f"{stem}.png").read_bytes()
        if (a / "rois").is_dir() or (b / "rois").is_dir():  # --format roi,geojson
            import roifile

            ra, rb = (roifile.roiread(d / "rois" / f"{stem}.zip") for d in (a, b))
            assert [r.name for r in ra] == [r.name for r in rb] and len(ra) == len(la)
            for x, y in zip(ra, rb, strict=True):
                np.testing.assert_array_equal(x.coordinates(), y.coordinates())
            assert (a / "geojson" / f"{stem}.geojson").read_bytes() == (
                b / "geojson" / f"{stem}.geojson").read_bytes()
    assert (a / "predictions.json").read_bytes() == (b / "predictions.json").read_bytes()


def test_two_processes_match_one_process(tmp_path):
    imgs = _folder(tmp_path / "imgs")
    (imgs / "im2-bad.png").write_bytes(b"not an image")  # sorted between im2 and im3
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--method", "classical", "-p", "nuclei", "--on-error", "skip",
              "--format", "tif,coco,roi,geojson"]
    assert main(["segment", str(imgs), *common, "-o", str(one)]) == 1
    proc = _launch([str(imgs), *common, "-o", str(two)])
    assert proc.returncode == 1, proc.stderr[-3000:]
    # only the main process prints the merged summary: all 5 good images, the bad one once
    assert proc.stdout.count("segmented 5 image(s)") == 1, proc.stdout
    assert proc.stdout.count("im2-bad.png:") == 1
    assert "process 0/2: 3 of 6 images" in proc.stderr
    assert "process 1/2: 3 of 6 images" in proc.stderr
    stems = [f"im{i}" for i in range(5)]
    assert sorted(p.stem for p in (two / "labels").iterdir()) == stems
    _same_outputs(one, two, stems)
    coco = json.loads((two / "predictions.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == [f"{s}.png" for s in stems]
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
    assert len(coco["annotations"]) == sum(3 + i % 3 for i in range(5))
    assert not list(two.rglob(".*"))  # no temp files left


@pytest.mark.slow  # ~30 s: three MiniLM loads
@pytest.mark.weights
def test_two_processes_zeus_tiny_model(tmp_path):
    """A saved random zeus-tiny model (MiniLM text encoder), --skip-existing on one image."""
    import torch

    from zeusseg.factory import build_zeus
    from zeusseg.training.checkpoints import save_model

    torch.manual_seed(0)
    model_dir = save_model(build_zeus("zeus-tiny"), tmp_path / "model", {})
    imgs = _folder(tmp_path / "imgs", n=3, size=64)
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--model", str(model_dir), "-p", "nuclei", "-p", "virus particles"]
    assert main(["segment", str(imgs), *common, "-o", str(one)]) == 0
    (two / "labels").mkdir(parents=True)
    (two / "labels" / "im1.tif").write_bytes((one / "labels" / "im1.tif").read_bytes())
    proc = _launch([str(imgs), *common, "-o", str(two), "--skip-existing"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (two / "overlays" / "im1.png").exists()  # kept, not segmented again
    _same_outputs(one, two, ["im0", "im2"])


def _masks(n: int, shape=(20, 20)) -> InstanceMasks:
    labels = np.zeros(shape, np.int32)
    for k in range(1, n + 1):
        labels[k * 3 : k * 3 + 2, 2:6] = k
    return InstanceMasks(labels=labels, ids=np.arange(1, n + 1), class_ids=np.ones(n, np.int64),
                         scores=np.linspace(0.5, 0.9, n, dtype=np.float32), class_names={1: "x"})


def test_merged_predictions_equal_single_accumulator():
    names, counts = ["a.png", "b.png", "c.png", "d.png"], [2, 0, 3, 1]
    single = CocoAccumulator({1: "x"})
    for name, n in zip(names, counts, strict=True):
        single.add(name, _masks(n))
    shards = [CocoAccumulator({1: "x"}), CocoAccumulator({1: "x"})]
    for i, (name, n) in enumerate(zip(names, counts, strict=True)):
        shards[i // 2].add(name, _masks(n))
    entries = _image_entries(shards[1]) + _image_entries(shards[0])  # any gather order
    merged = CocoAccumulator({1: "x"})
    merge_entries(merged, entries, {n: i for i, n in enumerate(names)})
    assert json.dumps(merged.to_dict()) == json.dumps(single.to_dict())


def test_merged_report_and_first_bad_input_in_input_order(tmp_path):
    order = {n: i for i, n in enumerate(["a", "b", "c", "d"])}
    parts = [
        {"rank": 0, "done": ["b", "a"], "skipped": [], "failed": {}, "instances": 3,
         "problem": {"input_error": ("/x/b", "bad b"), "name": "b"}},
        {"rank": 1, "done": ["d"], "skipped": ["c"], "failed": {}, "instances": 1,
         "problem": {"input_error": ("/x/d", "bad d"), "name": "d"}},
    ]
    report = _merge_reports(tmp_path, parts, order)
    assert report.done == ["a", "b", "d"] and report.skipped_existing == ["c"]
    assert report.instances == 4
    with pytest.raises(InputError, match="bad b"):
        _raise_first_problem(parts[::-1], order, own=None)
    parts[1]["problem"] = {"other": "MemoryError: boom"}
    with pytest.raises(RuntimeError, match="process 1: MemoryError: boom"):
        _raise_first_problem(parts, order, own=InputError("/x/b", "bad b"))
    _raise_first_problem([{**p, "problem": {}} for p in parts], order, own=None)  # no raise


def test_world_size_and_rank_from_launcher_env(monkeypatch):
    for var in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE",
                "RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert (world_size(), process_rank()) == (1, 0)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    assert (world_size(), process_rank()) == (4, 3)


def test_worker_decoding_gives_the_same_outputs(tmp_path):
    """``workers=2`` (DataLoader worker processes) = reading in the main process."""
    from zeusseg.inference.folder_run import build_segmenter, segment_paths
    from zeusseg.inference.image_loader import iter_images

    imgs = _folder(tmp_path / "imgs", n=4, size=64)
    (imgs / "im1b.png").write_bytes(b"")  # a bad file among them
    paths = sorted(imgs.iterdir())
    items = list(iter_images(paths, workers=2))
    assert [i.index for i in items] == list(range(5)) and [i.path for i in items] == paths
    assert items[2].error == "file is empty (0 bytes)" and items[2].image is None
    with pytest.raises(InputError, match="empty"):
        items[2].raise_error()
    segmenter = build_segmenter("classical", ["nuclei"])
    reports = [segment_paths(paths, segmenter, tmp_path / f"w{w}", ["nuclei"], on_error="skip",
                             workers=w, progress=False) for w in (0, 2)]
    assert reports[0].done == reports[1].done == ["im0.png", "im1.png", "im2.png", "im3.png"]
    assert reports[0].failed == reports[1].failed == {"im1b.png": "file is empty (0 bytes)"}
    _same_outputs(tmp_path / "w0", tmp_path / "w2", ["im0", "im1", "im2", "im3"])
