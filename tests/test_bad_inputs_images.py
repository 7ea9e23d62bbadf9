"""The bad-input corpus, part 1: images, label images, COCO JSON, the output folder and prompts.

Every case is generated here, run through the CLI, and checked: it either fails with one line
naming the file and the problem (exit 2, no output) or is handled correctly where a correct
answer exists (exit 0). The count is printed (``pytest -s``) and recorded in
docs/reliability.md, together with ``test_bad_inputs_configs.py`` (part 2). Cases: images,
huge-image headers, COCO JSON, label sizes (evaluation and training), output folder, prompts.
"""

from __future__ import annotations

import json
import os
import tracemalloc
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from zeusseg.__main__ import main

from .bad_inputs_helpers import FINETUNE, error_lines, report_count


@dataclass
class Case:
    name: str
    make: Callable[[Path, np.ndarray], Path]  # writes the bad input, returns the path
    expect: str  # "error:<text>" or "ok:<n instances>" or "ok"


def _png(arr: np.ndarray, name: str) -> Callable[[Path, np.ndarray], Path]:
    def make(d: Path, _img: np.ndarray) -> Path:
        p = d / name
        Image.fromarray(arr).save(p)
        return p

    return make


def _bytes(data: bytes, name: str) -> Callable[[Path, np.ndarray], Path]:
    def make(d: Path, _img: np.ndarray) -> Path:
        p = d / name
        p.write_bytes(data)
        return p

    return make


def _truncated_png(d: Path, img: np.ndarray) -> Path:
    p = d / "truncated.png"
    Image.fromarray(img).save(p)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return p


def _truncated_tiff(d: Path, img: np.ndarray) -> Path:
    p = d / "truncated.tif"
    tifffile.imwrite(p, img.astype(np.uint16))
    p.write_bytes(p.read_bytes()[:300])
    return p


def _nan_tiff(d: Path, img: np.ndarray) -> Path:
    p = d / "nan.tif"
    x = img.astype(np.float32)
    x[:5] = np.nan
    x[-5:] = np.inf
    tifffile.imwrite(p, x)
    return p


def _hot_pixel(d: Path, img: np.ndarray) -> Path:
    p = d / "hot16.tif"
    x = img.astype(np.uint16) * 10
    x[0, 0] = 65535
    tifffile.imwrite(p, x)
    return p


def _rgba(d: Path, img: np.ndarray) -> Path:
    p = d / "rgba.png"
    Image.fromarray(np.dstack([img, img, img, np.full_like(img, 255)])).save(p)
    return p


def _four_channel_tiff(d: Path, img: np.ndarray) -> Path:
    p = d / "four.tif"
    tifffile.imwrite(p, np.dstack([img, img, img, img]), photometric="rgb", extrasamples=[2])
    return p


def _five_d(d: Path, img: np.ndarray) -> Path:
    p = d / "fived.tif"
    tifffile.imwrite(p, np.zeros((2, 2, 2, 16, 16), np.uint8), imagej=True)
    return p


def _multipage(d: Path, img: np.ndarray) -> Path:
    p = d / "stack.tif"
    tifffile.imwrite(p, np.stack([img, img]), photometric="minisblack")
    return p


IMAGE_CASES = [
    Case("zero-byte file", _bytes(b"", "empty.png"), "error:file is empty"),
    Case("truncated PNG", _truncated_png, "error:truncated or corrupt"),
    Case("truncated TIFF", _truncated_tiff, "error:corrupt TIFF"),
    Case("text file named .png", _bytes(b"just some text\n", "text.png"),
         "error:not a readable image"),
    Case("1x1 image", _png(np.array([[7]], np.uint8), "one.png"), "ok:0"),
    Case("all-black image", _png(np.zeros((64, 64), np.uint8), "black.png"), "ok:0"),
    Case("all-white image", _png(np.full((64, 64), 255, np.uint8), "white.png"), "ok:0"),
    Case("NaN/inf float TIFF", _nan_tiff, "ok"),
    Case("16-bit with one hot pixel", _hot_pixel, "ok:5"),
    Case("RGBA PNG", _rgba, "ok:5"),
    Case("4-channel TIFF", _four_channel_tiff, "ok:5"),
    Case("5-D TIFF", _five_d, "error:TIFF"),
    Case("multi-page TIFF", _multipage, "error:multi-page TIFF"),
]


def _run_segment(path: Path, out: Path, capsys) -> tuple[int, str, str]:
    rc = main(["segment", str(path), "--method", "classical", "-o", str(out), "--no-overlay"])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err



HANDLED: list[str] = []


@pytest.mark.parametrize("case", IMAGE_CASES, ids=[c.name for c in IMAGE_CASES])
def test_image_corpus(case, tmp_path, capsys, disks_image):
    src = tmp_path / "in"
    src.mkdir()
    path = case.make(src, disks_image)
    out = tmp_path / "out"
    rc, stdout, err = _run_segment(path, out, capsys)
    kind, _, detail = case.expect.partition(":")
    if kind == "error":
        lines = error_lines(err)
        assert rc == 2 and len(lines) == 1, err
        assert str(path) in lines[0] and detail in lines[0]
        assert not out.exists()  # no partial output
    else:
        assert rc == 0, err
        tifs = list((out / "labels").glob("*.tif"))
        assert len(tifs) == 1 and not list(out.rglob(".*"))
        if detail:
            from zeusseg.io import read_label_image

            assert len(read_label_image(tifs[0])) == int(detail)
    HANDLED.append(case.name)


def _coco_file(d: Path, mutate: Callable[[dict], None]) -> Path:
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 64, "width": 64}],
        "categories": [{"id": 1, "name": "virus"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                         "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]}],
    }
    mutate(data)
    p = d / "gt.json"
    p.write_text(json.dumps(data))
    return p


def _ann(**kw) -> Callable[[dict], None]:
    return lambda d: d["annotations"][0].update(**kw)


COCO_CASES = [
    ("missing key", lambda d: d.pop("annotations"), "error:missing key 'annotations'"),
    ("wrong type", lambda d: d.update(images={"a": 1}), "error:'images' must be a list"),
    ("wrong type: height is a string", lambda d: d["images"][0].update(height="64"),
     "error:images[0] has a bad height/width"),
    ("wrong type: segmentation is a number", _ann(segmentation=5),
     "error:segmentation of type int"),
    ("wrong type: polygon of strings", _ann(segmentation=[["a", "b", "c", "d", "e", "f"]]),
     "error:annotation id 1 of image id 1: unreadable segmentation"),
    ("corrupt RLE", _ann(segmentation={"size": [64, 64], "counts": "zz!!"}),
     "error:unreadable segmentation"),
    ("RLE of another size", _ann(segmentation={"size": [32, 32], "counts": [0, 1024]}),
     "error:RLE size [32, 32] differs from the image size [64, 64]"),
    ("annotation lacks segmentation", lambda d: d["annotations"][0].pop("segmentation"),
     "error:lacks 'segmentation'"),
    ("unknown category id", _ann(category_id=7), "error:unknown category id 7"),
    ("unknown image id", _ann(image_id=9), "error:unknown image id 9"),
    ("polygon partly outside the image", _ann(segmentation=[[50, 50, 90, 50, 90, 90, 50, 90]]),
     "ok:tp50=1"),  # clipped to the image: matches the prediction in the corner
    ("polygon fully outside the image",
     _ann(segmentation=[[100, 100, 140, 100, 140, 140, 100, 140]]), "ok:n_true=0"),
]


@pytest.mark.parametrize("name,mutate,expect", COCO_CASES, ids=[c[0] for c in COCO_CASES])
def test_coco_corpus(name, mutate, expect, tmp_path, capsys):
    gt = _coco_file(tmp_path, mutate)
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    labels = np.zeros((64, 64), np.uint16)
    labels[50:64, 50:64] = 1  # the clipped part of the outside polygon
    tifffile.imwrite(pred_dir / "a.tif", labels)
    out = tmp_path / "eval"
    rc = main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt), "-o", str(out)])
    err = capsys.readouterr().err
    kind, _, detail = expect.partition(":")
    if kind == "error":
        lines = error_lines(err)
        assert rc == 2 and len(lines) == 1 and str(gt) in lines[0] and detail in lines[0], err
        assert not out.exists()
    else:
        assert rc == 0, err
        key, _, value = detail.partition("=")
        summary = json.loads((out / "metrics.json").read_text())["summary"]["agnostic"]
        assert summary[key]["pooled"] == float(value)
    HANDLED.append(f"COCO: {name}")


def test_label_size_mismatch(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    tifffile.imwrite(gt / "a.tif", np.ones((32, 32), np.uint16))
    tifffile.imwrite(pred / "a.tif", np.ones((30, 32), np.uint16))
    rc = main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(tmp_path / "e")])
    lines = error_lines(capsys.readouterr().err)
    assert rc == 2 and len(lines) == 1 and str(pred / "a.tif") in lines[0]
    assert "label size 32x30 differs" in lines[0] and "32x32" in lines[0], lines[0]
    assert not (tmp_path / "e").exists()
    HANDLED.append("label size mismatch")


def test_unwritable_output_and_prompts(tmp_path, capsys, disks_image):
    img = tmp_path / "a.png"
    Image.fromarray(disks_image).save(img)
    blocker = tmp_path / "file"
    blocker.write_text("")
    rc, _, err = _run_segment(img, blocker / "out", capsys)
    assert rc == 2 and "cannot write output folder" in err
    for prompt, text in (("", "empty --prompt"), ("x" * 10_000, "10000 characters")):
        rc = main(["segment", str(img), "-p", prompt, "-o", str(tmp_path / "o")])
        assert rc == 2 and text in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    HANDLED.extend(["unwritable output folder", "empty prompt", "10,000-character prompt"])


@pytest.mark.slow
def test_huge_image(tmp_path, capsys):
    """A 20k x 20k image is read and segmented (downscaled internally), not rejected."""
    p = tmp_path / "huge.png"
    big = np.zeros((20_000, 20_000), np.uint8)
    big[5000:9000, 5000:9000] = 200
    Image.fromarray(big).save(p, compress_level=1)
    rc, _, err = _run_segment(p, tmp_path / "out", capsys)
    assert rc == 0, err
    HANDLED.append("20k x 20k image")


def test_training_label_size_mismatch(tmp_path, capsys):
    """A training label image of another size than its image: exit 2, no run folder."""
    from .zeus_fakes import write_folder

    folder = write_folder(tmp_path / "nuclei", "bright", n=1, seed=1)
    labels = np.asarray(Image.open(folder / "labels" / "s-0.png"))
    Image.fromarray(labels[:60]).save(folder / "labels" / "s-0.png")
    out = tmp_path / "run"
    rc = main(["finetune", "--config", str(FINETUNE), "--output-dir", str(out), "--set",
               "data.dataset=null", f"data.folder={folder}", "data.names=[s-0]", "data.scale=1.0"])
    lines = error_lines(capsys.readouterr().err)
    assert rc == 2 and len(lines) == 1, lines
    assert str(folder / "images" / "s-0.png") in lines[0] and "(60, 64)" in lines[0]
    assert not out.exists()
    HANDLED.append("training label of another size")


def _png_header(path: Path, width: int, height: int) -> Path:
    """A 1x1 PNG whose IHDR claims ``width`` x ``height`` (valid CRC, no pixel data for it)."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path


def _tiff_header(path: Path, width: int, height: int) -> Path:
    """A TIFF header claiming ``width`` x ``height`` uint8, cut to 4 KB (the pixels are absent)."""
    tifffile.imwrite(path, shape=(height, width), dtype="uint8")  # sparse file
    os.truncate(path, 4096)
    return path


HUGE_CASES = [
    ("20k x 20k TIFF header", lambda d: _tiff_header(d / "h20k.tif", 20_000, 20_000),
     "truncated or corrupt TIFF"),  # under the 1-gigapixel limit: decoded (and found cut)
    ("40k x 40k TIFF header", lambda d: _tiff_header(d / "h40k.tif", 40_000, 40_000),
     "image of 40000x40000 exceeds 1073741824 pixels; tile it"),
    ("40k x 40k PNG header", lambda d: _png_header(d / "h40k.png", 40_000, 40_000),
     "image of 40000x40000 exceeds 1073741824 pixels; tile it"),
]


@pytest.mark.parametrize("name,make,message", HUGE_CASES, ids=[c[0] for c in HUGE_CASES])
def test_huge_image_headers(name, make, message, tmp_path, capsys):
    """The size guard reads the header only: a 1.6-gigapixel claim is refused before anything
    is decoded or allocated; a 20k x 20k one is under the limit, so it is read (here its cut
    data is reported; ``test_huge_image`` segments a real one)."""
    path = make(tmp_path)
    out = tmp_path / "out"
    tracemalloc.start()
    try:
        rc, _, err = _run_segment(path, out, capsys)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    lines = error_lines(err)
    assert rc == 2 and len(lines) == 1 and str(path) in lines[0] and message in lines[0], err
    if "exceeds" in message:
        assert peak < 20e6, f"{peak / 1e6:.0f} MB traced while refusing a header"
    assert not out.exists()
    HANDLED.append(name)



def test_zz_report_count(request):
    """Runs last: prints the count (``pytest -s``) and checks every case above reported in."""
    tables = (IMAGE_CASES, COCO_CASES, HUGE_CASES)
    # label size 1 + training label 1 + output/prompts 3, + the 20k x 20k image with --runslow
    expected = sum(len(t) for t in tables) + 5 + int(request.config.getoption("--runslow"))
    report_count(request, "images", HANDLED, expected)
