"""The smoke training config runs end to end on synthetic folders: steps, save_state, resume."""

from __future__ import annotations

import json

import pytest
import torch

from zeusseg.training.checkpoints import list_checkpoints
from zeusseg.training.train import load_config, train

from .zeus_fakes import fake_embedder, write_folder

torch.set_num_threads(1)


def _config(tmp_path, steps: int):
    nuclei = write_folder(tmp_path / "nuclei", "bright", seed=1)
    viruses = write_folder(tmp_path / "viruses", "dark", seed=2)
    datasets = {
        "syn-nuclei": {"folder": str(nuclei), "prompt": "cell nuclei", "scale": 1.0},
        "syn-viruses": {"folder": str(viruses), "prompt": "virus particles", "scale": 1.0},
    }
    return load_config(
        "configs/zeroshot/smoke.yaml",
        {
            "output_dir": str(tmp_path / "run"),
            "data.datasets": datasets,
            "data.validation": {"syn-nuclei": {"folder": str(nuclei), "prompt": "cell nuclei"}},
            "data.max_images": None,
            "train.max_steps": steps,
            "train.save_every_min": 1000,
        },
    )


def test_smoke_config_trains_saves_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(__import__("pathlib").Path(__file__).resolve().parents[1])
    cfg = _config(tmp_path, steps=3)
    best = train(cfg, embedder=fake_embedder())
    out = tmp_path / "run"
    assert "syn-nuclei/ap" in best and 0.0 <= best["score"] <= 1.0
    assert (out / "best" / "model.safetensors").is_file()
    meta = json.loads((out / "best" / "config.json").read_text())
    assert meta["model_cfg"]["text_cfg"]["encoder"] == "minilm-l6-v2"
    ckpts = list_checkpoints(out)
    assert [p.name for p in ckpts] == ["step_3"]
    assert json.loads((ckpts[-1] / "trainer.json").read_text())["step"] == 3
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3]

    cfg = _config(tmp_path, steps=5)  # same output_dir: resumes at step 3
    train(cfg, embedder=fake_embedder())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3, 4, 5]
    assert [p.name for p in list_checkpoints(out)] == ["step_3", "step_5"]


def test_training_on_template_instructions_caches_them_in_the_run(tmp_path, monkeypatch):
    """data.instruction_mode template: the model reads per-image instructions while training."""
    monkeypatch.chdir(__import__("pathlib").Path(__file__).resolve().parents[1])
    cfg = _config(tmp_path, steps=2)
    cfg["data"] = {**cfg["data"], "instruction_mode": "template", "instruction_prob": 1.0}
    embedder = fake_embedder()
    train(cfg, embedder=embedder)
    cache = tmp_path / "run" / "instructions.jsonl"
    lines = [json.loads(line) for line in cache.read_text().splitlines()]
    assert lines and all(r["mode"] == "template" for r in lines)
    embedded = set(embedder._cache)  # every text the model read was embedded once
    assert {r["text"] for r in lines} & embedded

def test_lora_training_changes_only_adapters_and_saves_merged_weights(tmp_path, monkeypatch):
    from zeusseg.factory import build_zeus, load_checkpoint

    monkeypatch.chdir(__import__("pathlib").Path(__file__).resolve().parents[1])
    torch.manual_seed(0)
    base = build_zeus("zeus-tiny")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in base.state_dict().items()},
              str(tmp_path / "base.safetensors"))
    cfg = _config(tmp_path, steps=3)
    cfg["init_checkpoint"] = str(tmp_path / "base.safetensors")
    cfg["lora"] = {"r": 4, "targets": {"image_encoder": False, "fusion": True,
                                       "mask_decoder": True}}
    cfg["train"] = {**cfg["train"], "lr": 5e-2}
    train(cfg, embedder=fake_embedder())
    merged = build_zeus("zeus-tiny")
    load_checkpoint(merged, tmp_path / "run" / "best" / "model.safetensors")  # plain keys
    before, after = base.state_dict(), merged.state_dict()
    assert set(before) == set(after)
    enc = [k for k in before if k.startswith("image_encoder.")]
    assert all(torch.equal(before[k], after[k]) for k in enc)  # encoder: no adapter
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all(k.startswith(("fusion.", "mask_decoder.")) for k in changed)
    with pytest.raises(ValueError, match="lora"):
        load_config("configs/zeroshot/smoke.yaml", {"lora": {"rank": 4}})


def test_bad_train_key_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"smoke.yaml: unknown train key\(s\) \['bogus'\]"):
        load_config("configs/zeroshot/smoke.yaml", {"train.bogus": 1})
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: zeus-tiny\nbogus_key: 1\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown key\(s\) \['bogus_key'\]"):
        load_config(bad)


def test_contact_weighted_training_changes_the_distance_losses(tmp_path, monkeypatch):
    monkeypatch.chdir(__import__("pathlib").Path(__file__).resolve().parents[1])
    import numpy as np
    from PIL import Image
    from skimage.draw import disk

    touching = tmp_path / "touching"  # pairs of touching disks: seams to weight
    (touching / "images").mkdir(parents=True)
    (touching / "labels").mkdir()
    for i in range(3):
        lab = np.zeros((64, 64), np.uint16)
        lab[disk((32, 20 + i), 10, shape=lab.shape)] = 1
        lab[disk((32, 39 + i), 10, shape=lab.shape)] = 2
        Image.fromarray(np.where(lab > 0, 200, 20).astype(np.uint8)).save(
            touching / "images" / f"t-{i}.png")
        Image.fromarray(lab).save(touching / "labels" / f"t-{i}.png")
    losses = {}
    for w in (0.0, 20.0):
        cfg = _config(tmp_path / f"w{w:g}", steps=2)
        cfg["data"]["datasets"] = {"touching": {"folder": str(touching), "prompt": "cell nuclei"}}
        cfg["data"]["contact_weight"] = w
        cfg["seed"] = 0
        train(cfg, embedder=fake_embedder())
        rows = [json.loads(line) for line in
                (tmp_path / f"w{w:g}" / "run" / "metrics.jsonl").read_text().splitlines()]
        losses[w] = [r for r in rows if r["kind"] == "train"][0]
    # same seed and batches: only the weighted distance terms differ (seams get weight 21)
    assert losses[20.0]["fg_bce"] == pytest.approx(losses[0.0]["fg_bce"], rel=1e-4)
    assert losses[20.0]["boundary"] > losses[0.0]["boundary"]
