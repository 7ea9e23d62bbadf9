"""scripts/bench_inference.py on tiny images with tiny random models (fake text encoder)."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

from .conftest import REPO
from .zeus_fakes import fake_embedder

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(REPO / "scripts"))
    spec = importlib.util.spec_from_file_location("bench_inference",
                                                  REPO / "scripts" / "bench_inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_sam():
    """A 1-block SAM for 64 px inputs (random weights)."""
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    torch.manual_seed(0)
    dim = 32
    return Sam(
        image_encoder=ImageEncoderViT(img_size=64, patch_size=16, embed_dim=dim, depth=1,
                                      num_heads=2, out_chans=dim),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(4, 4),
                                     input_image_size=(64, 64), mask_in_chans=4),
        mask_decoder=MaskDecoder(transformer_dim=dim, transformer=TwoWayTransformer(
            depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2), iou_head_hidden_dim=16),
    )


def test_main_writes_every_field(bench, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "make_embedder", lambda model: fake_embedder())
    monkeypatch.setattr(bench, "build_sam_vit_b", tiny_sam)
    out = tmp_path / "bench.json"
    report = bench.main([
        "--model", "zeus-tiny", "--sizes", "64,96", "--ref-size", "64", "--batches", "1,2",
        "--prompt-counts", "1,3", "--repeats", "1", "--warmup", "0", "--n-images", "2",
        "--sam-points", "2", "--skip-maskrcnn", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    meta = report["meta"]
    assert meta["device"] == "cpu" and meta["torch"] == torch.__version__
    assert meta["command"].startswith("scripts/bench_inference.py --model zeus-tiny")
    rows = {(r["method"], r["size"], r["batch"], r["prompts"]): r for r in report["results"]}
    want = {("zeusseg engine", 64, 1, 1), ("zeusseg engine", 64, 1, 3),
            ("zeusseg engine", 64, 2, 1), ("zeusseg engine", 96, 1, 1),
            ("zeusseg cli", 64, 1, 1), ("zeusseg cli", 64, 1, 3), ("zeusseg cli", 96, 1, 1),
            ("SAM AMG ViT-B", 64, 1, 0), ("zeusseg text", 0, 0, 6)}
    assert set(rows) == want
    for key, r in rows.items():
        if key[0] == "zeusseg text":
            assert r["ms_once_per_run"] > 0
            continue
        assert r["ms_per_image"] > 0 and r["cpu_ms_per_image"] > 0
        assert r["images_per_s"] == pytest.approx(1000 / r["ms_per_image"])
        assert r["peak_mem_mb"] > 100 and r["peak_mem_above_start_mb"] >= 0
    engine = rows[("zeusseg engine", 64, 1, 1)]["breakdown_ms_per_image"]
    parts = {"preprocess", "encoder", "decoder", "watershed"}
    assert set(engine) == parts | {f"{k}_cpu" for k in parts}
    io = {"read", "write_tiff", "write_overlay", "coco_rle", "io", "cli_total"}
    assert set(report["breakdown_ms_per_image"]) == set(engine) | io | {f"{k}_cpu" for k in io}
    brk = report["breakdown_ms_per_image"]
    assert all(v >= 0 for v in brk.values())
    assert brk["io"] == pytest.approx(brk["read"] + brk["write_tiff"] + brk["write_overlay"]
                                      + brk["coco_rle"])
    statuses = {t["target"].split(" (")[0]: t["status"] for t in report["targets"]}
    assert statuses[">= 2x the images/s of Mask R-CNN"] == "not measured"
    assert statuses["CPU: <= 2 s per 64^2 image"] in ("met", "missed")
    assert statuses[">= 50x the images/s of SAM AMG"] in ("met", "missed")
    printed = capsys.readouterr().out
    assert "| zeusseg engine | 64 | 2 | 1 |" in printed and "| encoder |" in printed


def test_engine_batch_matches_single_images(bench, monkeypatch):
    """Batching images through the encoder/decoder gives the maps of one image at a time."""
    runners = sys.modules["bench_inference_runners"]
    torch.manual_seed(0)
    runner = runners.ZeusRunner("zeus-tiny", torch.device("cpu"), embedder=fake_embedder())
    images = [img.astype(np.float32) / 255 for img in bench.make_images(64, 3)]
    assert len({img.tobytes() for img in images}) == 3  # three different crops
    seen, decode = [], runners.decode_probs
    monkeypatch.setattr(runners, "decode_probs",
                        lambda probs, prompts, shape: seen.append(probs.copy()) or decode(
                            probs, prompts, shape))
    parts = runner.engine(images, ["nuclei", "virus"])
    assert set(parts) >= {"preprocess", "encoder", "decoder", "watershed", "encoder_cpu"}
    for img in images:
        runner.engine([img], ["nuclei", "virus"])
    assert seen[0].shape == (2, 3, 64, 64)
    for i in range(3):
        np.testing.assert_allclose(seen[i], seen[3 + i], atol=1e-4)
