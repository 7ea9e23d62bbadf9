import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from zeusseg import __version__
from zeusseg.__main__ import main
from zeusseg.io import read_coco, read_label_image

from .conftest import REPO


def test_segment_folder_writes_all_outputs(folder, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["segment", str(folder), "--method", "classical", "-p", "nuclei", "-o", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "segmented 2 image(s)" in printed and str(out / "predictions.json") in printed
    for stem in ("a", "b"):
        m = read_label_image(out / "labels" / f"{stem}.tif")
        assert len(m) == 5 and m.class_names == {1: "nuclei"}
        assert (out / "overlays" / f"{stem}.png").is_file()
    coco = read_coco(out / "predictions.json")
    assert sorted(v["file_name"] for v in coco.images.values()) == ["a.png", "b.png"]
    assert sum(len(a) for a in coco.annotations.values()) == 10
    assert coco.categories == {1: "nuclei"}
    assert not [p for p in out.rglob(".*")]  # no temp files


def test_skip_existing_resumes(folder, tmp_path):
    out = tmp_path / "out"
    assert main(["segment", str(folder / "a.png"), "--method", "classical", "-o", str(out)]) == 0
    first = (out / "labels" / "a.tif").stat().st_mtime_ns
    assert (
        main(["segment", str(folder), "--method", "classical", "-o", str(out), "--skip-existing"])
        == 0
    )
    assert (out / "labels" / "a.tif").stat().st_mtime_ns == first
    assert len(json.loads((out / "predictions.json").read_text())["images"]) == 2


def test_bad_file_stop_and_skip(folder, tmp_path, capsys):
    (folder / "c.png").write_bytes(b"")
    out = tmp_path / "out"
    rc = main(["segment", str(folder), "--method", "classical", "-o", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    errors = [ln for ln in err.replace("\r", "\n").splitlines() if "error" in ln]
    assert len(errors) == 1 and "c.png: file is empty" in errors[0]
    rc = main(
        ["segment", str(folder), "--method", "classical", "-o", str(out), "--on-error", "skip"]
    )
    assert rc == 1
    assert "c.png: file is empty" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["a.tif", "b.tif"]


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p.write_bytes(b"GIF89a not really"), "not a readable image"),
        (lambda p: None, "no such file"),
    ],
)
def test_bad_single_input_leaves_no_output(tmp_path, capsys, make, message):
    p = tmp_path / "x.png"
    make(p)
    out = tmp_path / "out"
    assert main(["segment", str(p), "--method", "classical", "-o", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_empty_and_huge_prompt(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["segment", str(folder), "-p", "  ", "--method", "classical", "-o", str(out)]) == 2
    assert "empty --prompt" in capsys.readouterr().err
    assert main(["segment", str(folder), "-p", "x" * 10000, "-o", str(out)]) == 2
    assert "10000 characters" in capsys.readouterr().err
    assert not out.exists()


def test_unwritable_output(folder, tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert main(["segment", str(folder), "--method", "classical", "-o", str(blocker / "o")]) == 2
    assert "cannot write output folder" in capsys.readouterr().err


def test_version_and_help():
    r = subprocess.run(
        [sys.executable, "-m", "zeusseg", "--version"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    assert r.stdout.strip() == f"zeusseg {__version__}"
    r = subprocess.run(
        [sys.executable, "-m", "zeusseg", "segment", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    assert "--prompt" in r.stdout and "predictions.json" in r.stdout


def test_bundled_examples_are_images():
    for p in (REPO / "examples").glob("*.png"):
        assert np.asarray(Image.open(p)).ndim == 2


@pytest.mark.weights
def test_zeus_template_instructions_are_cached(tmp_path):
    """--instruction-mode template writes one cached instruction per (image, prompt)."""
    out = tmp_path / "out"
    rc = main(["-q", "segment", str(REPO / "examples" / "coelho-u2os-dna-0.png"), "-p",
               "cell nuclei", "--instruction-mode", "template", "-o", str(out), "--no-overlay"])
    assert rc == 0
    lines = (out / "instructions.jsonl").read_text().splitlines()
    assert len(lines) == 1 and "nucle" in json.loads(lines[0])["text"].lower()
    masks = read_label_image(out / "labels" / "coelho-u2os-dna-0.tif")
    assert len(masks) > 10 and masks.class_names == {1: "cell nuclei"}
