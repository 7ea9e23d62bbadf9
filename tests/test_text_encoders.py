"""Tests of the text encoders (tiny random models; the real MiniLM under ``weights``)."""

from __future__ import annotations

import json

import pytest
import torch

from zeusseg.errors import WeightsNotFoundError
from zeusseg.text import EmbeddingCache, TextEmbedding, get_text_encoder, mean_pool
from zeusseg.text.hf_clip import HFCLIPTextEncoder
from zeusseg.text.hf_text import HFTextEncoder

from .tiny_models import TINY_OPEN_CLIP, save_tiny_hf_clip

TEXTS = ["Segment every RSV particle.", "cell nuclei", "Segment each bright round nucleus."]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    return save_tiny_hf_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    import open_clip

    folder = tmp_path_factory.mktemp("oc_cfg")
    (folder / "zeus-tiny-clip.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(folder / "zeus-tiny-clip.json")
    torch.manual_seed(0)
    return get_text_encoder("open_clip:zeus-tiny-clip", random_init=True)


def _check_layout(emb: TextEmbedding, n: int, dim: int, pooled_dim: int) -> None:
    assert emb.tokens.shape[0] == n and emb.tokens.shape[2] == dim
    assert emb.mask.shape == emb.tokens.shape[:2] and emb.mask.dtype == torch.bool
    assert emb.pooled.shape == (n, pooled_dim)
    assert emb.mask.any(dim=0)[-1], "trailing all-padding columns must be trimmed"
    assert torch.isfinite(emb.tokens).all() and torch.isfinite(emb.pooled).all()


def test_text_embedding_trim_and_concat():
    a = TextEmbedding(torch.ones(1, 5, 4), torch.tensor([[1, 1, 0, 0, 0]]), torch.ones(1, 3))
    b = TextEmbedding(torch.ones(2, 3, 4), torch.tensor([[1, 1, 1], [1, 0, 0]]), torch.ones(2, 3))
    assert a.trimmed().tokens.shape == (1, 2, 4)
    cat = TextEmbedding.concat([a.trimmed(), b])
    assert cat.tokens.shape == (3, 3, 4)
    assert cat.mask.tolist() == [[True, True, False], [True, True, True], [True, False, False]]
    assert cat.tokens[0, 2].abs().sum() == 0  # padding is zero
    pooled = mean_pool(torch.tensor([[[1.0], [3.0], [100.0]]]), torch.tensor([[1, 1, 0]]).bool())
    assert pooled.item() == pytest.approx(2.0)


def test_hf_clip_tiny(tiny_clip_dir):
    enc = get_text_encoder(f"hf-clip:{tiny_clip_dir}")
    assert isinstance(enc, HFCLIPTextEncoder) and enc.id == f"hf-clip:{tiny_clip_dir}"
    emb = enc.encode(TEXTS)
    _check_layout(emb, 3, 32, 16)
    assert emb.mask.sum(1).tolist() == [len(enc.tokenizer(t)["input_ids"]) for t in TEXTS]
    # batching must not change a text's embedding
    alone = enc.encode(TEXTS[1])
    n = int(alone.mask.sum())
    assert torch.allclose(alone.tokens[0, :n], emb.tokens[1, :n], atol=1e-5)
    assert torch.allclose(alone.pooled[0], emb.pooled[1], atol=1e-5)
    rand = get_text_encoder(f"hf-clip:{tiny_clip_dir}", random_init=True)
    assert rand.id.endswith("+random")


def test_open_clip_tiny(tiny_open_clip):
    enc = tiny_open_clip
    assert enc.id == "open_clip:zeus-tiny-clip:random"
    emb = enc.encode(TEXTS)
    _check_layout(emb, 3, 32, 16)
    ids = enc.tokenizer(TEXTS)
    assert emb.mask.sum(1).tolist() == (ids != 0).sum(1).tolist()  # SOT + BPE + EOT
    # pooled is open_clip's own encode_text
    with torch.no_grad():
        assert torch.allclose(emb.pooled, enc.model.encode_text(ids), atol=1e-5)


def test_open_clip_requires_weights_or_explicit_random():
    with pytest.raises(ValueError, match="random_init=True"):
        get_text_encoder("open_clip:ViT-B-32")
    with pytest.raises(ValueError, match="known:"):
        get_text_encoder("open_clip:ViT-B-32:no-such-tag")
    with pytest.raises(WeightsNotFoundError, match="/nope/ckpt.pt"):
        get_text_encoder("open_clip:ViT-B-32:/nope/ckpt.pt")


def test_missing_weights_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(WeightsNotFoundError) as err:
        get_text_encoder("hf-clip:someone/not-cached-clip")
    assert "hf download someone/not-cached-clip" in str(err.value)
    assert err.value.model == "hf-clip:someone/not-cached-clip"
    with pytest.raises(WeightsNotFoundError, match="config.json"):
        get_text_encoder(f"hf:{tmp_path / 'empty'}")
    with pytest.raises(ValueError, match="unknown text_encoder 'bert'"):
        get_text_encoder("bert")


def test_embedding_cache_memory_and_disk(tiny_clip_dir, tmp_path):
    enc = HFCLIPTextEncoder.from_pretrained(tiny_clip_dir)
    cache = EmbeddingCache(enc, tmp_path / "emb")
    first = cache.encode([TEXTS[0], TEXTS[1], TEXTS[0]])
    assert cache.n_encoded == 2  # duplicates are encoded once
    direct = enc.encode([TEXTS[0], TEXTS[1], TEXTS[0]])
    assert torch.allclose(first.tokens, direct.tokens, atol=1e-5)  # padding is zero in both
    assert torch.equal(first.mask, direct.mask)
    assert torch.allclose(first.pooled, direct.pooled, atol=1e-5)
    cache.encode(TEXTS[:2])
    assert cache.n_encoded == 2
    files = list((tmp_path / "emb").rglob("*.safetensors"))
    assert len(files) == 2
    fresh = EmbeddingCache(enc, tmp_path / "emb")  # a new process reads the files
    again = fresh.encode(TEXTS)
    assert fresh.n_encoded == 1  # only the third text is new
    assert torch.allclose(again.pooled[:2], direct.pooled[:2], atol=1e-6)
    files[0].write_bytes(b"garbage")  # a corrupt file is re-encoded, not fatal
    assert EmbeddingCache(enc, tmp_path / "emb").encode(TEXTS).tokens.shape[0] == 3


@pytest.mark.weights
def test_minilm_real():
    enc = get_text_encoder()  # the offline default
    assert isinstance(enc, HFTextEncoder) and enc.id == "minilm-l6-v2"
    emb = enc.encode(["cell nuclei", "round bright cell nuclei in a fluorescence image",
                      "RSV virus particles in an electron micrograph"])
    _check_layout(emb, 3, 384, 384)
    assert torch.allclose(emb.pooled.norm(dim=1), torch.ones(3), atol=1e-5)
    sim = emb.pooled @ emb.pooled.T
    assert sim[0, 1] > sim[0, 2] + 0.1  # nuclei texts are closer to each other than to viruses
    # pooled = normalised mean of the real tokens (sentence-transformers' definition)
    manual = torch.nn.functional.normalize(mean_pool(emb.tokens, emb.mask), dim=-1)
    assert torch.allclose(manual, emb.pooled, atol=1e-5)
