"""Shared pytest set-up: CPU only, offline, opt-in slow tests, data-root detection."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # napari/Qt tests: no window on screen

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")


def _data_root() -> Path | None:
    from zeusseg.datasets.registry import DEFAULT_RELATIVE_ROOT, ENV_VAR

    for cand in (os.environ.get(ENV_VAR), REPO / DEFAULT_RELATIVE_ROOT):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    skip_data = pytest.mark.skip(reason="shared data not found (set ZEUSSEG_DATA_ROOT)")
    have_data = _data_root() is not None
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "data" in item.keywords and not have_data:
            item.add_marker(skip_data)


@pytest.fixture
def data_root() -> Path:
    root = _data_root()
    if root is None:
        pytest.skip("shared data not found")
    return root


@pytest.fixture
def disks_labels() -> np.ndarray:
    """(128, 128) int32 label image: 5 disks, two of them touching."""
    from skimage.draw import disk

    labels = np.zeros((128, 128), np.int32)
    for k, (r, c, rad) in enumerate(
        [(30, 30, 12), (30, 54, 12), (90, 30, 15), (90, 90, 10), (60, 100, 8)], start=1
    ):
        rr, cc = disk((r, c), rad, shape=labels.shape)
        labels[rr, cc] = k
    return labels


@pytest.fixture
def disks_image(disks_labels: np.ndarray) -> np.ndarray:
    """(128, 128) uint8 image with bright disks on a dark noisy background."""
    rng = np.random.default_rng(0)
    img = 30 + 150 * (disks_labels > 0) + rng.normal(0, 8, disks_labels.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (much faster than two on a shared, oversubscribed CPU;
    needed for bit-identical results), restored afterwards. Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def folder(tmp_path: Path, disks_image: np.ndarray) -> Path:
    """A folder of two PNGs: the disks image (a.png) and its inverse (b.png)."""
    from PIL import Image

    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(disks_image).save(d / "a.png")
    Image.fromarray(255 - disks_image).save(d / "b.png")
    return d
