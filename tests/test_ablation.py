"""Ablation grid (``zeusseg.evaluation.ablation``, run by scripts/run_ablation.py) and the model
parts it needs: no-text fusion, a depth-0 (plain CNN) encoder, and the negative_prob guard of
training."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from zeusseg.errors import InputError
from zeusseg.evaluation import ablation
from zeusseg.factory import build_zeus, get_model_config
from zeusseg.modeling.fusion import TwoWayFusion
from zeusseg.modeling.image_encoder import ImageEncoderHybrid
from zeusseg.training.train import load_config, train

from .zeus_fakes import fake_embedder, write_folder

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


def _no_text_tiny() -> dict:
    cfg = get_model_config("zeus-tiny")
    cfg["fusion_cfg"].update(mode="none", depth=0)
    return cfg


def test_fusion_none_ignores_the_text():
    fus = TwoWayFusion(embed_dim=32, mode="none", depth=3, num_output_tokens=4)
    assert len(fus.layers) == 0 and not hasattr(fus, "text_proj")
    img = torch.randn(2, 12, 32)
    out, keys = fus(img, torch.randn(2, 5, 384), torch.ones(2, 5))
    assert out.shape == (2, 4, 32) and keys is img
    assert torch.equal(out[0], fus.output_tokens.weight) and torch.equal(out[0], out[1])

    torch.manual_seed(0)
    model = build_zeus(_no_text_tiny()).eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        a = model(x, torch.randn(1, 3, 384), torch.ones(1, 3))
        b = model(x, torch.randn(1, 7, 384) * 5, torch.ones(1, 7))
    assert a.shape == (1, 3, 64, 64) and torch.equal(a, b)


def test_depth_zero_encoder_is_a_plain_cnn():
    enc = ImageEncoderHybrid(stem_channels=(8, 16, 32), embed_dim=24, depth=0, pos_grid=0)
    assert len(enc.blocks) == 0
    feats = enc(torch.rand(2, 1, 64, 96))
    assert feats.tokens.shape == (2, 4 * 6, 24) and feats.grid == (4, 6)
    assert [s.shape[1] for s in feats.skips] == [8, 16, 32]

    plain, text = build_zeus("unet-plain"), build_zeus("zeus-cnn-text")
    n_plain = sum(p.numel() for p in plain.parameters())
    assert 1.8e6 < n_plain < 2.3e6  # the brief's reference U-Net is about 2 M parameters
    assert len(plain.image_encoder.blocks) == 0 and plain.fusion.mode == "none"
    assert len(text.image_encoder.blocks) == 0 and text.fusion.mode == "late"
    assert sum(p.numel() for p in text.image_encoder.parameters()) == sum(
        p.numel() for p in plain.image_encoder.parameters())


def _synthetic(tmp_path: Path) -> tuple[dict, dict]:
    nuclei = write_folder(tmp_path / "nuclei", "bright", seed=1)
    viruses = write_folder(tmp_path / "viruses", "dark", seed=2)
    train_sets = {
        "syn-nuclei": {"folder": str(nuclei), "prompt": "cell nuclei", "scale": 1.0},
        "syn-viruses": {"folder": str(viruses), "prompt": "virus particles", "scale": 1.0},
    }
    evaluation = {
        "syn-viruses": {"folder": str(viruses), "prompt": "virus particles",
                        "metrics": ["f1_50", "ap50", "dice", "miou"], "label": "viruses"},
        "syn-nuclei": {"folder": str(nuclei), "prompt": "cell nuclei", "max_images": 2,
                       "target_diameter": 24},  # oracle scale: the 12 px disks x 2
    }
    return train_sets, evaluation


def test_no_text_model_trains_without_negatives(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(REPO)
    train_sets, _ = _synthetic(tmp_path)
    cfg = load_config("configs/zeroshot/smoke.yaml", {
        "output_dir": str(tmp_path / "run"), "model": _no_text_tiny(),
        "data.datasets": train_sets, "data.validation": {}, "data.max_images": None,
        "data.negative_prob": 0.5, "train.max_steps": 1, "train.num_threads": 1,
    })
    with caplog.at_level(logging.WARNING, logger="zeusseg.training.train"):
        train(cfg, embedder=fake_embedder())
    assert cfg["data"]["negative_prob"] == 0.0
    assert "negative_prob forced to 0" in caplog.text


def test_variant_axes(monkeypatch):
    monkeypatch.chdir(REPO)
    early = ablation.variant_overrides("e", {"model": "zeus-hybrid-s", "fusion": "early"})
    assert early["model"]["fusion_cfg"]["insert_after"] == [1, 3]
    none = ablation.variant_overrides("n", {"model": "zeus-tiny", "fusion": "none"})
    assert build_zeus(none["model"]).fusion.mode == "none"
    for mode in ("name", "phrasings", "template", "llm"):
        got = ablation.variant_overrides("m", {"instruction_mode": mode})
        assert got == {"data.instruction_mode": mode}
    assert ablation.variant_overrides("l", {"lora": True}) == {"lora": {}}
    assert ablation.variant_overrides("l", {"lora": {"r": 4}})["lora"] == {"r": 4}
    with pytest.raises(ValueError, match="unknown instruction_mode 'vlm'"):
        ablation.variant_overrides("l", {"instruction_mode": "vlm"})
    from zeusseg.structures import MicroscopyImage

    image = MicroscopyImage(np.random.default_rng(0).random((64, 64), dtype=np.float32))
    assert ablation._text_of("name", None) is None
    instruction = ablation._text_of("template", None)(image)("RSV")
    assert "RSV" in instruction and len(instruction.split()) > 5


def test_bad_spec_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("output_dir: x\nbase_config: y\nvariants: {a: {modle: z}}\n"
                   "evaluation: {v: {prompt: p}}\n")
    with pytest.raises(InputError, match=r"bad.yaml: variant 'a': unknown key\(s\) \['modle'\]"):
        ablation.load_spec(bad)


def test_smoke_grid_writes_one_row_per_variant_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    spec = ablation.load_spec("configs/ablation/smoke.yaml")
    train_sets, evaluation = _synthetic(tmp_path)
    spec["output_dir"] = str(tmp_path / "grid")
    spec["overrides"].update({"data.datasets": train_sets, "data.max_images": None})
    spec["evaluation"] = evaluation
    summary = ablation.run_ablation(spec, embedder=fake_embedder())

    out = tmp_path / "grid"
    table = pd.read_csv(out / "table.csv")
    assert list(table.variant) == list(spec["variants"]) == ["tiny-late", "tiny-no-text"]
    score_cols = [c for c in table.columns if c.startswith("syn-") and c.endswith(" mean")]
    assert len(score_cols) == 5  # 4 metrics on viruses + AP on nuclei
    assert all(math.isfinite(v) and 0 <= v <= 1 for v in table[score_cols].to_numpy().ravel())
    assert (table["steps mean"] == 3).all() and (table["trainable_params mean"] > 1e5).all()
    assert table["trainable_params mean"].iloc[0] > table["trainable_params mean"].iloc[1]
    md = (out / "table.md").read_text().strip().splitlines()
    assert len(md) == 4 and md[2].startswith("| tiny-late | 1 |") and "viruses F1@0.5" in md[0]
    assert (out / "plot.png").stat().st_size > 1000 and len(summary) == 2
    rec = json.loads((out / "tiny-no-text" / "seed_0" / "scores.json").read_text())
    assert rec["model_cfg"]["fusion_cfg"]["mode"] == "none"
    assert rec["train_config"]["data"]["negative_prob"] == 0.0
    per = rec["scores"]["syn-viruses/per_image"]
    assert sorted(per) == ["s-0", "s-1", "s-2"] and set(per["s-0"]) == {"f1_50", "ap50", "dice",
                                                                        "miou"}
    assert math.isclose(sum(p["ap50"] for p in per.values()) / 3,
                        rec["scores"]["syn-viruses/ap50"]["image_mean"], abs_tol=1e-4)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished variant was trained again")

    monkeypatch.setattr(ablation, "train", no_training)
    again = ablation.run_ablation(spec, embedder=fake_embedder())
    assert again.equals(summary)


def test_lora_and_template_variants_train_and_score(tmp_path, monkeypatch):
    """The issue's LoRA-vs-full and instruction-mode axes run through the grid end to end."""
    from safetensors.torch import save_file

    monkeypatch.chdir(REPO)
    spec = ablation.load_spec("configs/ablation/smoke.yaml")
    train_sets, evaluation = _synthetic(tmp_path)
    torch.manual_seed(0)
    base = build_zeus("zeus-tiny")
    save_file({k: v.contiguous() for k, v in base.state_dict().items()},
              str(tmp_path / "base.safetensors"))
    spec["output_dir"] = str(tmp_path / "grid")
    spec["overrides"].update({"data.datasets": train_sets, "data.max_images": None,
                              "init_checkpoint": str(tmp_path / "base.safetensors")})
    spec["evaluation"] = {"syn-viruses": evaluation["syn-viruses"]}
    spec["variants"] = {
        "full": {"model": "zeus-tiny"},
        "lora": {"model": "zeus-tiny", "lora": {"r": 2}},
        "template": {"model": "zeus-tiny", "instruction_mode": "template"},
    }
    ablation.run_ablation(spec, embedder=fake_embedder())
    recs = {v: json.loads((tmp_path / "grid" / v / "seed_0" / "scores.json").read_text())
            for v in spec["variants"]}
    full, lora = recs["full"]["trainable_params"], recs["lora"]["trainable_params"]
    assert 0 < lora < full / 5  # adapters only
    assert recs["template"]["train_config"]["data"]["instruction_mode"] == "template"
    cache = tmp_path / "grid" / "template" / "seed_0" / "instructions-eval.jsonl"
    assert cache.is_file()  # scored with the instruction of each evaluation image
    for rec in recs.values():
        assert 0 <= rec["scores"]["syn-viruses/ap50"]["image_mean"] <= 1
