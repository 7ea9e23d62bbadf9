"""LoRA on Zeus: targeting per tower, parameter counts, adapter save/load, merge, wrong base."""

from __future__ import annotations

import pytest
import torch

from zeusseg.adapters import (
    base_fingerprint,
    count_parameters,
    load_adapter,
    merge_adapter,
    remove_adapter,
    trainable_summary,
)
from zeusseg.errors import InputError
from zeusseg.factory import build_zeus, get_model_config
from zeusseg.modeling.fusion import TwoWayFusion
from zeusseg.modeling.mask_decoder import MaskDecoder
from zeusseg.modeling.zeus import Zeus
from zeusseg.training.lora import (
    apply_lora,
    expected_trainable_parameters,
    matching_modules,
    save_adapter,
    target_regex,
)

from .zeus_fakes import fake_embedder

torch.set_num_threads(1)


def _tiny(mode: str = "late", seed: int = 0) -> Zeus:
    cfg = get_model_config("zeus-tiny")
    if mode == "early":
        cfg["fusion_cfg"].update(mode="early", depth=2, insert_after=[0, 1])
    torch.manual_seed(seed)
    return build_zeus(cfg).eval()


def _tiny_with_encoder(kind: str) -> Zeus:
    """Zeus with a tiny randomly initialised SAM or timm ViT encoder (late fusion)."""
    torch.manual_seed(0)
    if kind == "sam":
        from zeusseg.modeling.sam_encoder import SamImageEncoder

        enc = SamImageEncoder(model_type="custom", random_init=True, embed_dim=32,
                              stem_channels=(8, 16, 32), encoder_kwargs=dict(
                                  img_size=64, patch_size=16, embed_dim=32, depth=1,
                                  num_heads=2, out_chans=16))
    else:
        from zeusseg.modeling.timm_encoder import TimmImageEncoder

        enc = TimmImageEncoder(model_name="vit_small_patch16_224", random_init=True, img_size=64,
                               embed_dim=32, stem_channels=(8, 16, 32),
                               timm_kwargs=dict(depth=1, embed_dim=32, num_heads=2))
    return Zeus(
        image_encoder=enc,
        fusion=TwoWayFusion(embed_dim=32, text_dim=384, depth=1, num_heads=2, mlp_dim=32),
        mask_decoder=MaskDecoder(embed_dim=32, skip_channels=(8, 16, 32),
                                 decoder_channels=(16, 8, 8), hyper_dim=16),
    ).eval()


def _inputs():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 1, 64, 64, generator=g)
    tokens = torch.randn(2, 3, 384, generator=g)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    return x, tokens, mask


def _perturb(peft_model, seed: int = 5) -> None:
    """Give the adapter non-zero weights (LoRA B starts at zero: a no-op)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in peft_model.parameters():
            if p.requires_grad:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize(
    ("mode", "lora_kwargs"),
    [
        ("late", {}),
        ("early", {}),
        ("late", {"r": 2, "targets": {"fusion": False, "mask_decoder": False}}),
        ("early", {"r": 4, "modules_to_save": ["fusion.text_proj"]}),
    ],
)
def test_trainable_count_and_frozen_base(mode, lora_kwargs):
    model = _tiny(mode)
    base_params = sum(p.numel() for p in model.parameters())
    names = matching_modules(model, target_regex(lora_kwargs))
    expected = expected_trainable_parameters(model, names, lora_kwargs.get("r", 8),
                                             lora_kwargs.get("modules_to_save", []))
    pm = apply_lora(model, lora_kwargs)
    trainable, total = count_parameters(pm)
    assert trainable == expected > 0
    assert total > base_params
    assert sorted(pm.targeted_module_names) == sorted(names)
    for name, p in pm.named_parameters():
        assert p.requires_grad == ("lora_" in name or "modules_to_save" in name), name
    assert trainable_summary(pm).startswith(f"trainable params: {trainable:,} || all params:")
    if "targets" in lora_kwargs:
        assert all(n.startswith("image_encoder.blocks.") for n in names)
        assert {n.rsplit(".", 1)[1] for n in names} == {"q_proj", "k_proj", "v_proj", "out_proj"}
    else:
        towers = {n.split(".")[0] for n in names}
        assert towers == {"image_encoder", "fusion", "mask_decoder"}
        assert "fusion.layers.0.cross_attn_token_to_image.q_proj" in names
        assert not any(".mlp." in n and n.startswith("image_encoder") for n in names)


def test_tiny_default_count_is_pinned():
    pm = apply_lora(_tiny(), {"r": 8})
    # Worked out by hand: 24 attention projections 64->64 (q/k/v/out of 2 encoder blocks and
    # of 4 fusion attentions), 8 * (64 + 64) each = 24,576; decoder: neck 1x1 conv 768, stage
    # convs 4,864 + 2,560 + 3,584 + 1,280 + 1,792 + 640, FiLM linears 1,024 + 768 + 640,
    # 3 hypernetwork MLPs 3 * (768 + 768 + 576) = 6,336; decoder total 24,256.
    assert count_parameters(pm)[0] == 24_576 + 24_256


def test_nothing_targeted_fails():
    with pytest.raises(ValueError, match="match no Linear/Conv2d"):
        apply_lora(_tiny(), {"targets": {"image_encoder": r"nothing\.here", "fusion": False,
                                         "mask_decoder": False}})
    with pytest.raises(ValueError, match="enables no tower"):
        apply_lora(_tiny(), {"targets": {"image_encoder": False, "fusion": False,
                                         "mask_decoder": False}})
    with pytest.raises(ValueError, match="unknown lora keys"):
        apply_lora(_tiny(), {"rank": 4})


@pytest.mark.parametrize("kind", ["sam", "timm"])
def test_sam_and_timm_encoders(kind):
    model = _tiny_with_encoder(kind)
    pm = apply_lora(model, {"r": 2})
    names = pm.targeted_module_names
    assert "image_encoder.vit.blocks.0.attn.qkv" in names
    assert "image_encoder.vit.blocks.0.attn.proj" in names
    assert any(n.startswith("fusion.") for n in names)
    pm.train()
    x, tokens, mask = _inputs()
    pm(x, tokens, mask).square().mean().backward()
    grads = {n: p.grad for n, p in pm.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values())
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "vit.blocks.0.attn.qkv" in n)


def test_save_load_roundtrip_bit_exact_and_merge(tmp_path):
    x, tokens, mask = _inputs()
    base = _tiny()
    ref = base(x, tokens, mask)
    digest = base_fingerprint(base)
    pm = apply_lora(base, {"r": 4, "modules_to_save": ["fusion.text_proj"]})
    _perturb(pm)
    pm.eval()
    out = pm(x, tokens, mask)
    assert not torch.allclose(out, ref, atol=1e-4)  # the adapter does something
    folder = save_adapter(pm, tmp_path / "adapter", {"model": "zeus-tiny", "sha256": digest})
    files = {p.name for p in folder.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "zeusseg_base.json"} <= files
    assert "model.safetensors" not in files
    saved = {k: v.clone() for k, v in pm.state_dict().items() if "lora_" in k or "modules_to" in k}

    fresh = _tiny()
    loaded = load_adapter(fresh, folder)
    again = {k: v for k, v in loaded.state_dict().items() if "lora_" in k or "modules_to" in k}
    assert saved.keys() == again.keys()
    assert all(torch.equal(saved[k], again[k]) for k in saved)
    assert torch.equal(loaded(x, tokens, mask), out)

    merged = merge_adapter(loaded)
    assert isinstance(merged, Zeus)
    assert not any("lora_" in k for k in merged.state_dict())
    assert torch.allclose(merged(x, tokens, mask), out, atol=1e-5)


def test_remove_adapter_restores_base_exactly(tmp_path):
    x, tokens, mask = _inputs()
    base = _tiny("early")
    ref, digest = base(x, tokens, mask), base_fingerprint(base)
    pm = apply_lora(base, {"modules_to_save": ["mask_decoder.static_head"]})
    _perturb(pm)
    restored = remove_adapter(pm)
    assert isinstance(restored, Zeus)
    assert base_fingerprint(restored) == digest
    assert torch.equal(restored(x, tokens, mask), ref)


def test_wrong_base_is_a_clear_error(tmp_path):
    base = _tiny(seed=0)
    pm = apply_lora(base, {"r": 2})
    folder = save_adapter(pm, tmp_path / "a", {"model": "zeus-tiny", "sha256":
                                               base_fingerprint(_tiny(seed=0))})
    other = _tiny(seed=1)
    other.zeus_model_id = "other-model"
    with pytest.raises(InputError, match=r"adapter .* was trained on base zeus-tiny/\w{12}, "
                                         r"not other-model/\w{12}"):
        load_adapter(other, folder)
    with pytest.raises(InputError, match="not a zeusseg LoRA adapter"):
        load_adapter(_tiny(), tmp_path)


def test_predictor_runs_a_peft_model():
    from zeusseg.predictor import ZeusPredictor

    pm = apply_lora(_tiny(), {"r": 2})
    _perturb(pm)
    pred = ZeusPredictor(pm, embedder=fake_embedder())
    pred.set_image(torch.rand(40, 50).numpy())
    probs = pred.predict(["cell nuclei", "virus particles"])
    assert probs.shape == (2, 3, 40, 50)
    assert ((probs >= 0) & (probs <= 1)).all()


def test_training_config_lora_section_values():
    from zeusseg.training.train import lora_section

    assert lora_section({}) is None and lora_section({"lora": None}) is None
    assert lora_section({"lora": False}) is None  # false means full training, not LoRA
    assert lora_section({"lora": True}) == {}
    assert lora_section({"lora": {"r": 4}}) == {"r": 4}


def test_adapter_carries_its_decode_settings(tmp_path):
    from zeusseg.modeling.config import ZeusDecodeCfg

    base = _tiny()
    digest = base_fingerprint(base)
    pm = apply_lora(base, {"r": 2})
    decode = {"seeds": "hmax", "seed_h": 0.1, "fg_threshold": 0.6}
    folder = save_adapter(pm, tmp_path / "a", {"model": "zeus-tiny", "sha256": digest},
                          {"decode_cfg": decode, "input_scale": 0.7})
    fresh = _tiny()
    before = fresh.zeus_cfg
    loaded = load_adapter(fresh, folder)
    assert loaded.zeus_cfg.decode_cfg == ZeusDecodeCfg(**decode)
    assert loaded.zeus_cfg.input_cfg.scale == 0.7
    assert remove_adapter(loaded).zeus_cfg == before  # the base's settings come back

    bad = save_adapter(apply_lora(_tiny(), {"r": 2}), tmp_path / "b",
                       {"model": "zeus-tiny", "sha256": digest}, {"decode_cfg": {"seed_h": 2}})
    with pytest.raises(InputError, match=r"zeusseg_base.json.*bad decode_cfg"):
        load_adapter(_tiny(), bad)
