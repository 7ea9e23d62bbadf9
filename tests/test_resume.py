"""Crashes and long runs: a killed folder run resumes to the uninterrupted result, the caches
(instructions JSONL, text embeddings) survive a crash mid-write and are validated on load,
and memory stays flat over a 2,000-image zeus run (slow).

Bit-identical reruns are in ``test_determinism.py``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from zeusseg.instructions import CacheKey, InstructionCache
from zeusseg.io import read_coco, read_label_image
from zeusseg.text import EmbeddingCache, TextEmbedding
from zeusseg.text.base import TextEncoder

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


# --- instruction cache (append-only JSONL, fsync per line) ---------------------------------


@pytest.fixture
def warnings_seen(caplog, monkeypatch):
    """caplog for zeusseg's WARNING records (the CLI's logging set-up stops propagation)."""
    monkeypatch.setattr(logging.getLogger("zeusseg"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="zeusseg"):
        yield caplog


def _key(i: int) -> CacheKey:
    return CacheKey(f"h{i}", "RSV", "template", "measured-v1", "", "1-abc")


def test_instruction_cache_survives_a_cut_at_every_byte_of_the_last_line(tmp_path):
    path = tmp_path / "instructions.jsonl"
    cache = InstructionCache(path)
    for i in range(3):
        cache.put(_key(i), f"Segment every RSV particle {i}.", description="d")
    full = path.read_bytes()
    start = full.rindex(b"\n", 0, len(full) - 1) + 1  # where the last line begins
    for cut in range(start, len(full)):
        path.write_bytes(full[:cut])
        reread = InstructionCache(path)  # never raises
        n = 3 if cut == len(full) - 1 else 2  # only the newline missing: the line is whole
        assert len(reread) == n, cut
        assert reread.get(_key(1)).text == "Segment every RSV particle 1."
        reread.put(_key(7), "after the crash")  # appending repairs the cut line first
        again = InstructionCache(path)
        assert len(again) == n + 1 and again.get(_key(7)).text == "after the crash", cut


def test_instruction_cache_skips_garbage_and_wrong_types(tmp_path, warnings_seen):
    path = tmp_path / "instructions.jsonl"
    InstructionCache(path).put(_key(0), "first")
    good = json.loads(path.read_text())
    bad_lines = [
        b"\x00\xff\xfe binary garbage",
        b"[1, 2, 3]",
        json.dumps({**good, "image_hash": "h1", "text": None}).encode(),  # text not a string
        json.dumps({**good, "image_hash": 2}).encode(),  # key field not a string
        json.dumps({k: v for k, v in good.items() if k != "writer"}).encode(),  # key missing
    ]
    with open(path, "ab") as f:
        f.write(b"\n".join(bad_lines) + b"\n")
    InstructionCache(path).put(_key(3), "last")
    warnings_seen.clear()
    cache = InstructionCache(path)
    assert len(cache) == 2 and cache.get(_key(0)).text == "first"
    assert cache.get(_key(3)).text == "last" and cache.get(_key(1)) is None
    skipped = [r.getMessage() for r in warnings_seen.records]
    assert [m.rsplit(" ", 1)[-1] for m in skipped] == ["2", "3", "4", "5", "6"], skipped


def test_instruction_cache_survives_sigkill_mid_run(tmp_path):
    """A real crash: a process appending instructions is killed; every whole line is kept."""
    path = tmp_path / "instructions.jsonl"
    code = ("import sys; from zeusseg.instructions import CacheKey, InstructionCache\n"
            "c = InstructionCache(sys.argv[1])\n"
            "for i in range(10**6):\n"
            "    c.put(CacheKey(f'h{i}', 'RSV', 'template', 'm', '', 'v'), 'x' * 5000)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=REPO)
    deadline = time.time() + 60
    while time.time() < deadline and (not path.exists() or path.stat().st_size < 100_000):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    whole = path.read_bytes().count(b"\n")
    assert whole >= 20
    cache = InstructionCache(path)
    assert len(cache) == whole  # the line being written (if any) is the only loss
    assert all(cache.get(CacheKey(f"h{i}", "RSV", "template", "m", "", "v")).text == "x" * 5000
               for i in range(whole))


# --- text embedding cache (one safetensors file per text, written atomically) -------------


class _CountingEncoder(TextEncoder):
    """Deterministic stand-in text encoder: tokens (B, L, 8), pooled (B, 4)."""

    id, dim, pooled_dim = "counting-encoder", 8, 4

    def __init__(self) -> None:
        self.model = torch.nn.Linear(1, 1)

    def _encode(self, texts: list[str]) -> TextEmbedding:
        length = max(len(t.split()) for t in texts)
        tokens = torch.zeros(len(texts), length, self.dim)
        mask = torch.zeros(len(texts), length, dtype=torch.bool)
        for i, t in enumerate(texts):
            n = len(t.split())
            mask[i, :n] = True
            tokens[i, :n] = torch.arange(n * self.dim, dtype=torch.float32).view(n, -1) + len(t)
        return TextEmbedding(tokens, mask, tokens.sum(1)[:, : self.pooled_dim])


TEXTS = ["virus particles", "cell nuclei", "Segment every bright round nucleus."]


def _damage(path, how: str) -> None:
    from safetensors.torch import save_file

    if how == "truncated":
        path.write_bytes(path.read_bytes()[:40])
    elif how == "empty":
        path.write_bytes(b"")
    else:
        tensors = {"wrong token dims": {"tokens": torch.ones(2, 16), "pooled": torch.ones(4)},
                   "wrong pooled dims": {"tokens": torch.ones(2, 8), "pooled": torch.ones(3)},
                   "3-D tokens": {"tokens": torch.ones(1, 2, 8), "pooled": torch.ones(4)},
                   "no pooled": {"tokens": torch.ones(2, 8)},
                   "NaN values": {"tokens": torch.full((2, 8), float("nan")),
                                  "pooled": torch.ones(4)},
                   "integer values": {"tokens": torch.ones(2, 8, dtype=torch.int64),
                                      "pooled": torch.ones(4, dtype=torch.int64)}}[how]
        save_file(tensors, str(path))


@pytest.mark.parametrize("how", ["truncated", "empty", "wrong token dims", "wrong pooled dims",
                                 "3-D tokens", "no pooled", "NaN values", "integer values"])
def test_embedding_cache_validates_entries_on_load(tmp_path, how, warnings_seen):
    enc = _CountingEncoder()
    ref = EmbeddingCache(enc, tmp_path).encode(TEXTS)
    files = sorted((tmp_path / enc.id).glob("*.safetensors"))
    assert len(files) == 3
    _damage(files[0], how)
    fresh = EmbeddingCache(enc, tmp_path)
    got = fresh.encode(TEXTS)
    assert fresh.n_encoded == 1  # only the damaged entry is encoded again
    assert str(files[0]) in warnings_seen.text
    for a, b in ((got.tokens, ref.tokens), (got.mask, ref.mask), (got.pooled, ref.pooled)):
        assert torch.equal(a, b)
    repaired = EmbeddingCache(enc, tmp_path)
    repaired.encode(TEXTS)
    assert repaired.n_encoded == 0  # the bad file was replaced by a good one
    assert not [p for p in (tmp_path / enc.id).iterdir() if p.name.startswith(".")]


# --- long runs: memory ---------------------------------------------------------------------


def _bench_memory():
    spec = importlib.util.spec_from_file_location("bench_memory", REPO / "scripts" /
                                                  "bench_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def memory_over_run(tmp_path, n: int, method: str = "zeus") -> dict[int, float]:
    """RSS (MB) after 10, 100, n/2 and n images of ONE folder run (``segment_paths``)."""
    from zeusseg.inference.folder_run import build_segmenter, segment_paths

    bench = _bench_memory()
    src = tmp_path / "in"
    src.mkdir()
    paths = bench.make_images(src, n, 256)
    segmenter = build_segmenter(method, ["cell nuclei"])
    marks = {k for k in (10, 100, n // 2, n) if k <= n}
    rss: dict[int, float] = {}
    done = 0

    def measured(image):
        nonlocal done
        masks = segmenter(image)
        done += 1
        if done in marks:
            rss[done] = bench.rss_mb()
        return masks

    report = segment_paths(paths, measured, tmp_path / "out", ["cell nuclei"], progress=False)
    assert len(report.done) == n and report.instances > n
    return rss


@pytest.mark.slow
def test_memory_flat_over_2000_images_zeus(tmp_path):
    """2,000 images through the bundled zeus model in one folder run (about 10 min on 1 core)."""
    torch.set_num_threads(1)
    rss = memory_over_run(tmp_path, 2000)
    print("\nzeus folder run, 2,000 images of 256x256: RSS MB " +
          ", ".join(f"after {k}: {v:.1f}" for k, v in sorted(rss.items())))
    assert rss[2000] - rss[100] < 60, rss  # flat: no per-image leak (30 KB/image at most)
    assert rss[2000] - rss[1000] < 30, rss
