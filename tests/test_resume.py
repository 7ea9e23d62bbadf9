"""Folder runs survive a kill: rerun with --skip-existing gives the uninterrupted result."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from zeusseg.io import read_coco, read_label_image

from .conftest import REPO


def _folder(tmp_path, disks_image, n=16):
    d = tmp_path / "imgs"
    d.mkdir()
    big = np.kron(disks_image, np.ones((6, 6), np.uint8))  # 768 x 768: ~0.2 s each
    for i in range(n):
        Image.fromarray(np.roll(big, 7 * i, axis=1)).save(d / f"img{i:02d}.png")
    return d


def _cmd(src, out, *extra):
    return [sys.executable, "-m", "zeusseg", "-q", "segment", str(src), "--method", "classical",
            "-o", str(out), "--no-overlay", *extra]


def test_kill_and_resume_matches_uninterrupted(tmp_path, disks_image):
    src = _folder(tmp_path, disks_image)
    ref, out = tmp_path / "ref", tmp_path / "out"
    subprocess.run(_cmd(src, ref), cwd=REPO, check=True, capture_output=True)

    proc = subprocess.Popen(_cmd(src, out), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "labels").glob("*.tif"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.name for p in (out / "labels").glob("*.tif"))
    assert 3 <= len(done_before) < 16, "the kill should land mid-run"
    assert not (out / "predictions.json").exists()

    r = subprocess.run(_cmd(src, out, "--skip-existing"), cwd=REPO, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (ref / "labels").glob("*.tif"))
    assert sorted(p.name for p in (out / "labels").glob("*.tif")) == names
    for n in names:
        a, b = read_label_image(ref / "labels" / n), read_label_image(out / "labels" / n)
        assert np.array_equal(a.labels, b.labels) and np.array_equal(a.scores, b.scores)
    assert not list(out.rglob(".*"))  # no temp file survived the kill
    ra, rb = read_coco(ref / "predictions.json"), read_coco(out / "predictions.json")
    assert len(ra.images) == len(rb.images) == 16


def test_deterministic_bit_identical(tmp_path, disks_image):
    src = _folder(tmp_path, disks_image, n=2)
    for out in ("a", "b"):
        subprocess.run(_cmd(src, tmp_path / out), cwd=REPO, check=True, capture_output=True)
    for n in ("img00.tif", "img01.tif"):
        assert (tmp_path / "a" / "labels" / n).read_bytes() == (
            tmp_path / "b" / "labels" / n
        ).read_bytes()
