"""Determinism: the same input and model give bit-identical label images on the CPU.

Each method runs twice in this process and once in a fresh interpreter (another hash seed);
the label TIFFs and ``predictions.json`` must be byte-identical. All runs use one torch
thread: with another thread count float sums are reordered, so a score may differ in its
6th decimal (the labels did not change when this was checked; see docs/reliability.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from zeusseg.__main__ import main
from zeusseg.io import read_label_image

from .conftest import REPO

EXAMPLE = REPO / "examples" / "visn-0008.png"
RUNS = {  # method -> extra CLI arguments
    "zeus": ["--prompt", "virus particles"],
    "classical": ["--method", "classical", "--prompt", "virus particles"],
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _argv(method: str, out: Path) -> list[str]:
    return ["-q", "segment", str(EXAMPLE), *RUNS[method], "-o", str(out), "--no-overlay"]


def _outputs(out: Path) -> dict[str, bytes]:
    files = sorted((out / "labels").glob("*.tif")) + [out / "predictions.json"]
    return {p.name: p.read_bytes() for p in files}


@pytest.mark.weights  # the bundled zeus-default and its MiniLM text encoder
def test_same_input_same_model_bit_identical(tmp_path, capsys):
    """zeus (bundled model) and classical: 2 in-process runs + 1 fresh process, same bytes."""
    argvs = [_argv(m, tmp_path / f"sub-{m}") for m in RUNS]
    script = f"import sys; from zeusseg.__main__ import main; sys.exit(max(map(main, {argvs!r})))"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "123"}
    sub = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for method in RUNS:  # the fresh process runs alongside
        for run in ("a", "b"):
            assert main(_argv(method, tmp_path / f"{run}-{method}")) == 0
    capsys.readouterr()
    _, err = sub.communicate(timeout=300)
    assert sub.returncode == 0, err[-2000:]
    for method in RUNS:
        ref = _outputs(tmp_path / f"a-{method}")
        assert set(ref) == {"visn-0008.tif", "predictions.json"}
        assert _outputs(tmp_path / f"b-{method}") == ref, f"{method}: in-process reruns differ"
        assert _outputs(tmp_path / f"sub-{method}") == ref, f"{method}: fresh process differs"
        masks = read_label_image(tmp_path / f"a-{method}" / "labels" / "visn-0008.tif")
        assert len(masks) >= 5 and np.all(masks.scores > 0), method  # a real result


@pytest.mark.weights
def test_bundled_fp16_weights_load_to_identical_fp32():
    """The bundled fp16 file loads into fp32 exactly (lossless upcast), the same every time."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from zeusseg.inference.zeus_segmenter import load_zeus
    from zeusseg.pretrained import BUNDLED_DIR

    path = BUNDLED_DIR / "zeus-default" / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["dtype"] == "float16"
    stored = load_file(str(path))
    first, second = load_zeus("zeus-default").state_dict(), load_zeus("zeus-default").state_dict()
    assert set(stored) <= set(first) and first.keys() == second.keys()
    n_float = 0
    for name, value in first.items():
        other = second[name]
        assert value.dtype == other.dtype and value.shape == other.shape, name
        if value.is_floating_point():
            assert value.dtype == torch.float32, name
            assert torch.equal(value.view(torch.int32), other.view(torch.int32)), name  # bits
        else:
            assert torch.equal(value, other), name
        if name in stored and stored[name].is_floating_point():
            assert stored[name].dtype == torch.float16, name
            assert torch.equal(value, stored[name].float()), name  # exact upcast
            assert torch.equal(value.half().view(torch.int16), stored[name].view(torch.int16))
            n_float += 1
    assert n_float > 50  # every weight tensor was checked
