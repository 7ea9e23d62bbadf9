"""Few-shot LoRA fine-tuning: loss goes down, only the adapter changes, resume, merge, configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from zeusseg.errors import InputError
from zeusseg.factory import build_zeus
from zeusseg.training.checkpoints import list_checkpoints
from zeusseg.training.fewshot import load_finetune_config, select_names, training_source
from zeusseg.training.finetune import finetune

from .zeus_fakes import fake_embedder, write_folder

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "finetune" / "smoke.yaml"


def _config(tmp_path, **overrides):
    folder = write_folder(tmp_path / "nuclei", "bright", n=3, seed=1)
    over = {
        "output_dir": str(tmp_path / "run"),
        "data.dataset": None,
        "data.folder": str(folder),
        "data.prompt": "cell nuclei",
        "data.names": ["s-0", "s-1"],
        "data.scale": 1.0,
        "data.negative_prob": 0.0,
    }
    over.update(overrides)
    return load_finetune_config(SMOKE, over)


def _base(seed: int = 0):
    torch.manual_seed(seed)
    return build_zeus("zeus-tiny")


def test_loss_goes_down_and_only_the_adapter_changes(tmp_path):
    cfg = _config(tmp_path, **{"train.max_steps": 30, "train.log_every": 5, "train.lr": 1e-2,
                               "train.batch_size": 4, "train.warmup_steps": 2,
                               "train.save_every_steps": 1000, "lora.r": 8, "lora.alpha": 16})
    base = _base()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    summary = finetune(cfg, embedder=fake_embedder(), base_model=base)
    assert summary["steps"] == 30
    assert summary["train_images"] == ["s-0", "s-1"]
    assert summary["last_loss"] < 0.8 * summary["first_loss"]
    # the base module was wrapped in place: its non-LoRA weights and buffers are unchanged
    after = {k.replace(".base_layer", ""): v for k, v in base.state_dict().items()
             if "lora_" not in k}
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    lora = {k: v for k, v in base.state_dict().items() if "lora_B" in k}
    assert lora and any(v.abs().sum() > 0 for v in lora.values())  # B started at zero

    adapter = Path(summary["adapter"])
    assert not (adapter / "model.safetensors").exists()
    meta = json.loads((adapter / "zeusseg_base.json").read_text())
    assert meta["model"] == "zeus-tiny" and len(meta["sha256"]) == 64
    assert meta["class_names"] == {"1": "cell nuclei"} and meta["prompt"] == "cell nuclei"
    assert summary["adapter_bytes"] == (adapter / "adapter_model.safetensors").stat().st_size


def test_resume_merge_and_adapter_on_segmenter(tmp_path):
    from zeusseg.adapters import load_adapter, remove_adapter
    from zeusseg.inference.zeus_segmenter import load_zeus

    cfg = _config(tmp_path, **{"train.max_steps": 4, "train.save_every_steps": 2,
                               "data.scale": 0.75})
    finetune(cfg, embedder=fake_embedder(), base_model=_base())
    out = tmp_path / "run"
    assert [p.name for p in list_checkpoints(out)] == ["step_2", "step_4"]
    for ckpt in list_checkpoints(out):
        names = {p.name for p in ckpt.iterdir()}
        assert "adapter_model.safetensors" in names and "model.safetensors" not in names

    cfg = _config(tmp_path, **{"train.max_steps": 6, "train.save_every_steps": 2,
                               "data.scale": 0.75})
    summary = finetune(cfg, merge=True, embedder=fake_embedder(), base_model=_base())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # resumed at step 4
    assert summary["steps"] == 6

    merged = load_zeus(str(out / "merged"))
    base = _base()
    with_adapter = load_adapter(base, out / "adapter").eval()
    x = torch.rand(1, 1, 64, 64)
    tokens, mask = fake_embedder()(["cell nuclei"])
    assert torch.allclose(merged(x, tokens, mask), with_adapter(x, tokens, mask), atol=1e-5)
    # the scale of the training images becomes the first-pass scale, until removal
    assert summary["input_scale"] == 0.75
    assert merged.zeus_cfg.input_cfg.scale == with_adapter.zeus_cfg.input_cfg.scale == 0.75
    assert remove_adapter(with_adapter).zeus_cfg.input_cfg.scale == 1.0
    with pytest.raises(InputError, match="was trained on base zeus-tiny/"):
        load_adapter(_base(seed=7), out / "adapter")


@pytest.mark.parametrize(
    ("override", "key"),
    [({"bogus": 1}, "'bogus'"), ({"data.colour": 1}, "'data.colour'"),
     ({"train.epochs": 3}, "'train.epochs'"), ({"lora.rank": 4}, "'lora.rank'")],
)
def test_unknown_keys_name_file_and_key(tmp_path, override, key):
    with pytest.raises(InputError, match=key) as err:
        _config(tmp_path, **override)
    assert str(err.value).startswith(str(SMOKE))
    assert "\n" not in str(err.value)


def test_config_errors(tmp_path):
    with pytest.raises(InputError, match="exactly one of 'names'"):
        _config(tmp_path, **{"data.shots": 2})
    with pytest.raises(InputError, match="exactly one of 'dataset', 'folder'"):
        _config(tmp_path, **{"data.dataset": "coelho-u2os"})
    with pytest.raises(InputError, match="no annotated image named nope"):
        training_source(_config(tmp_path, **{"data.names": ["s-0", "nope"]}))
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1, 2]\n")
    with pytest.raises(InputError, match="'data' must be a mapping"):
        load_finetune_config(bad)


def test_shot_selection_is_seeded():
    names = [f"img-{i}" for i in range(20)]
    a = select_names(names, None, 5, seed=0, where="x")
    assert a == select_names(names, None, 5, seed=0, where="x")
    assert a != select_names(names, None, 5, seed=1, where="x")
    assert len(set(a)) == 5 and set(a) <= set(names)
    with pytest.raises(InputError, match="shots must be 1..20"):
        select_names(names, None, 21, seed=0, where="x")


def test_coco_source_takes_class_names_from_categories(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    images, anns = [], []
    for i in range(3):
        Image.fromarray(np.full((40, 40), 30, np.uint8)).save(tmp_path / "images" / f"c{i}.png")
        images.append({"id": i + 1, "file_name": f"c{i}.png", "height": 40, "width": 40})
        for k, (y, cat) in enumerate([(5, 1), (25, 2)]):
            poly = [5, y, 15, y, 15, y + 8, 5, y + 8]
            anns.append({"id": 10 * i + k + 1, "image_id": i + 1, "category_id": cat,
                         "segmentation": [poly], "area": 80, "bbox": [5, y, 10, 8],
                         "iscrowd": 0})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "RSV"}, {"id": 2, "name": "FLUAV"}]}
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    cfg = load_finetune_config(SMOKE, {"data.dataset": None, "data.names": None,
                                       "data.coco": str(tmp_path / "annotations.json"),
                                       "data.shots": 2, "data.scale": 1.0})
    src = training_source(cfg)
    assert src.class_names == {1: "RSV", 2: "FLUAV"}
    assert len(src.samples) == 2
    assert sorted(np.unique(src.samples[0].masks.class_ids).tolist()) == [1, 2]


def test_cli_reports_a_bad_config_in_one_line(tmp_path, capsys):
    from zeusseg.__main__ import main

    bad = tmp_path / "x.yaml"
    bad.write_text("base: zeus-tiny\nlearning_rate: 3\n")
    assert main(["finetune", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown key 'learning_rate'" in err and str(bad) in err


def test_segment_with_adapter_end_to_end(tmp_path):
    """``zeusseg segment --adapter`` path: build_zeus_segmenter(prompts, model, adapter)."""
    from zeusseg.inference.zeus_segmenter import build_zeus_segmenter
    from zeusseg.structures import MicroscopyImage
    from zeusseg.training.checkpoints import save_model

    base_dir = save_model(_base(), tmp_path / "base", {})
    cfg = _config(tmp_path, **{"base": str(base_dir), "train.max_steps": 2})
    summary = finetune(cfg, embedder=fake_embedder())
    segment = build_zeus_segmenter(["cell nuclei"], model=str(base_dir),
                                   adapter=summary["adapter"])
    image = MicroscopyImage(data=np.random.default_rng(0).random((64, 64), np.float32))
    masks = segment(image)
    assert masks.labels.shape == (64, 64)
    other = save_model(_base(seed=3), tmp_path / "other", {})
    with pytest.raises(InputError, match="was trained on base"):
        build_zeus_segmenter(["cell nuclei"], model=str(other), adapter=summary["adapter"])


@pytest.mark.slow
def test_accelerate_launch_cpu(tmp_path):
    """``accelerate launch --cpu -m zeusseg.finetune`` (real MiniLM text encoder, ~30 s)."""
    import subprocess
    import sys

    folder = write_folder(tmp_path / "nuclei", "bright", n=2, seed=1)
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "zeusseg.finetune",
           "--config", str(SMOKE), "--output-dir", str(tmp_path / "run"), "--set",
           "data.dataset=null", f"data.folder={folder}", "data.names=[s-0]", "data.scale=1.0"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
