"""The bad-input corpus, part 2: YAML configs, checkpoints, adapters and baseline run folders.

Every case is generated here, run through the CLI (or the loader), and checked: one line
naming the file and the problem, exit 2, no output. The count is printed (``pytest -s``) and
recorded in docs/reliability.md, together with ``test_bad_inputs_images.py`` (part 1). Cases:
YAML configs of every command, instruction prompt YAMLs, Zeus checkpoints, LoRA adapters,
baseline run folders and pickled checkpoints.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from zeusseg.__main__ import main

from .bad_inputs_helpers import BASELINE, FINETUNE, ZEROSHOT, error_lines, report_count

HANDLED: list[str] = []


def test_corrupt_and_mismatched_checkpoints(tmp_path, capsys, disks_image):
    """A truncated or foreign checkpoint is one clear line naming the file, exit 2, no output."""
    from safetensors.torch import save_file

    from zeusseg.factory import build_zeus
    from zeusseg.pretrained import BUNDLED_DIR

    src = BUNDLED_DIR / "zeus-default"
    img = tmp_path / "a.png"
    Image.fromarray(disks_image).save(img)
    cases = {}
    bad = tmp_path / "truncated"
    bad.mkdir()
    shutil.copy(src / "config.json", bad)
    (bad / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes()[:5000])
    cases[bad] = "corrupt or unreadable checkpoint"
    other = tmp_path / "foreign"
    other.mkdir()
    shutil.copy(src / "config.json", other)
    save_file({k: v.contiguous() for k, v in build_zeus("zeus-tiny").state_dict().items()},
              str(other / "model.safetensors"))
    cases[other] = "does not fit the model"
    for folder, message in cases.items():
        out = tmp_path / f"out-{folder.name}"
        rc = main(["segment", str(img), "--model", str(folder), "-o", str(out)])
        lines = error_lines(capsys.readouterr().err)
        assert rc == 2 and len(lines) == 1, lines
        assert str(folder / "model.safetensors") in lines[0] and message in lines[0]
        assert not out.exists()
    HANDLED.extend(["corrupt checkpoint", "mismatched checkpoint"])



def _sub(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return edit


YAML_CASES = [  # (name, command, config, edit, the key the message must name)
    ("train: top-level key", "train", ZEROSHOT, lambda t: t + "colour: 1\n", "'colour'"),
    ("train: train.lrr", "train", ZEROSHOT, _sub("  lr: 1.0e-3", "  lrr: 1.0e-3"), "'lrr'"),
    ("train: data.cropsize", "train", ZEROSHOT, _sub("  crop_size:", "  cropsize:"),
     "'cropsize'"),
    ("train: data.augment.flipp", "train", ZEROSHOT,
     _sub("  crop_size: 64", "  crop_size: 64\n  augment: {flipp: true}"), "'flipp'"),
    ("train: data.datasets entry key", "train", ZEROSHOT,
     _sub("{weight: 1.0, scale: 0.5}", "{wieght: 1.0, scale: 0.5}"), "'wieght'"),
    ("finetune: top-level key", "finetune", FINETUNE, lambda t: t + "colour: 1\n", "'colour'"),
    ("finetune: lora.rank", "finetune", FINETUNE, _sub("  r: 4", "  rank: 4"), "'lora.rank'"),
    ("finetune: data.cropsize", "finetune", FINETUNE, _sub("  crop_size:", "  cropsize:"),
     "'data.cropsize'"),
    ("finetune: data.augment.flipp", "finetune", FINETUNE,
     _sub("  crop_size: 64", "  crop_size: 64\n  augment: {flipp: true}"), "'flipp'"),
    ("finetune: train.steps", "finetune", FINETUNE, _sub("  max_steps:", "  steps:"),
     "'train.steps'"),
    ("baseline train: top-level section", "baseline", BASELINE, lambda t: t + "colour: 1\n",
     "'colour'"),
    ("baseline train: model.scal", "baseline", BASELINE, _sub("  scale:", "  scal:"), "'scal'"),
    ("baseline train: model.backbone key", "baseline", BASELINE,
     _sub("    out_channels:", "    outchannels:"), "'outchannels'"),
    ("baseline train: train.step", "baseline", BASELINE, _sub("  steps:", "  step:"), "'step'"),
]


@pytest.mark.parametrize("name,command,config,edit,key", YAML_CASES,
                         ids=[c[0] for c in YAML_CASES])
def test_yaml_config_unknown_key(name, command, config, edit, key, tmp_path, capsys):
    """An unknown key anywhere in a config: exit 2 naming the file and the key, nothing run."""
    bad = tmp_path / f"bad-{config.name}"
    bad.write_text(edit(config.read_text()))
    out = tmp_path / "run"
    argv = {"train": ["train", "--config", str(bad), "--output-dir", str(out)],
            "finetune": ["finetune", "--config", str(bad), "--output-dir", str(out)],
            "baseline": ["baseline", "train", "--config", str(bad), "--out", str(out)]}[command]
    rc = main(argv)
    lines = error_lines(capsys.readouterr().err)
    assert rc == 2 and len(lines) == 1, lines
    assert str(bad) in lines[0] and key in lines[0] and "unknown" in lines[0]
    assert not out.exists()
    HANDLED.append(f"YAML {name}")


PROMPT_CASES = [
    ("system.yaml", _sub("version:", "colour: blue\nversion:"), "'colour'"),
    ("viruses.yaml", _sub("shape: icosahedral", "colour: icosahedral"), "'colour'"),
]


@pytest.mark.parametrize("file,edit,key", PROMPT_CASES, ids=[c[0] for c in PROMPT_CASES])
def test_instruction_prompt_yaml_unknown_key(file, edit, key, tmp_path, capsys, disks_image):
    from zeusseg.instructions.prompts import PACKAGE_PROMPTS

    folder = tmp_path / "prompts"
    shutil.copytree(PACKAGE_PROMPTS, folder)
    (folder / file).write_text(edit((folder / file).read_text()))
    img = tmp_path / "a.png"
    Image.fromarray(disks_image).save(img)
    cache = tmp_path / "out" / "instructions.jsonl"
    rc = main(["instruct", str(img), "-p", "RSV", "--mode", "template", "--prompts", str(folder),
               "--cache", str(cache)])
    lines = error_lines(capsys.readouterr().err)
    assert rc == 2 and len(lines) == 1, lines
    assert str(folder / file) in lines[0] and key in lines[0]
    assert not cache.exists()
    HANDLED.append(f"YAML instruction prompts: {file}")


@pytest.mark.weights  # the bundled zeus-default (its MiniLM is not loaded: every case fails first)
def test_corrupt_and_mismatched_adapters(tmp_path, capsys, disks_image):
    """LoRA adapters: corrupt weights or config, another rank, another base: one line, exit 2."""
    from zeusseg.adapters import base_fingerprint
    from zeusseg.inference.zeus_segmenter import load_zeus
    from zeusseg.training.lora import apply_lora, save_adapter

    base = load_zeus("zeus-default")
    digest = base_fingerprint(base)
    lora = apply_lora(base, {"r": 2, "alpha": 4, "targets": {"fusion": False,
                                                             "mask_decoder": False}})
    good = save_adapter(lora, tmp_path / "good", {"model": "zeus-default", "sha256": digest})

    def variant(name: str, file: str, change: Callable[[bytes], bytes]) -> Path:
        folder = tmp_path / name
        shutil.copytree(good, folder)
        (folder / file).write_bytes(change((folder / file).read_bytes()))
        return folder

    def json_edit(**kw) -> Callable[[bytes], bytes]:
        return lambda b: json.dumps({**json.loads(b), **kw}).encode()

    weights, config, meta = "adapter_model.safetensors", "adapter_config.json", "zeusseg_base.json"
    cases = [  # (folder, file named in the message, message)
        (variant("truncated", weights, lambda b: b[:300]), weights,
         "corrupt or unreadable adapter"),
        (variant("garbage-config", config, lambda b: b"{not json"), config,
         "not a valid adapter config"),
        (variant("other-rank", config, json_edit(r=4)), weights,
         "adapter does not fit the model: size mismatch for"),
        (variant("other-base", meta, json_edit(sha256="0" * 64)), "",
         "was trained on base zeus-default/000000000000, not zeus-default/"),
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    cases.append((empty, "", "not a zeusseg LoRA adapter (missing adapter_model.safetensors"))
    img = tmp_path / "a.png"
    Image.fromarray(disks_image).save(img)
    for folder, file, message in cases:
        out = tmp_path / f"out-{folder.name}"
        rc = main(["segment", str(img), "-p", "cells", "--adapter", str(folder), "-o", str(out)])
        lines = error_lines(capsys.readouterr().err)
        assert rc == 2 and len(lines) == 1, lines
        assert str(folder / file).rstrip("/") in lines[0] and message in lines[0], lines[0]
        assert not out.exists()
    HANDLED.extend(["adapter: truncated weights", "adapter: corrupt config",
                    "adapter: another rank", "adapter: another base", "adapter: missing files"])


def test_corrupt_baseline_run_folder(tmp_path, capsys, disks_image):
    """``zeusseg baseline predict --run`` on a damaged run folder: one line, exit 2."""
    import dataclasses

    from zeusseg.baselines.build import build_model, save_run_model
    from zeusseg.baselines.config import BackboneCfg, ModelCfg

    cfg = ModelCfg(arch="maskrcnn", backbone=BackboneCfg(name="resnet18", out_channels=16),
                   class_names=("a",), anchor_sizes=(8, 16, 32, 64, 128), box_head_dim=16,
                   mask_head_layers=1)
    good = tmp_path / "good"
    save_run_model(build_model(cfg), cfg, good)
    other = dataclasses.replace(cfg, class_names=("a", "b", "c"))
    save_run_model(build_model(other), other, tmp_path / "other")

    def variant(name: str, weights: Path | bytes, config: str | None) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        if isinstance(weights, Path):
            os.link(weights, folder / "model.safetensors")
        else:
            (folder / "model.safetensors").write_bytes(weights)
        if config is not None:
            (folder / "config.yaml").write_text(config)
        return folder

    w, c = good / "model.safetensors", (good / "config.yaml").read_text()
    cases = [  # (folder, file named in the message, message)
        (variant("truncated", w.read_bytes()[:5000], c), "model.safetensors",
         "corrupt or unreadable weights"),
        (variant("other-classes", tmp_path / "other" / "model.safetensors", c),
         "model.safetensors", "weights do not fit the config: size mismatch for"),
        (variant("bad-yaml", w, "model: [1, 2\n"), "config.yaml", "not a baseline run config"),
        (variant("empty-yaml", w, ""), "config.yaml", "not a baseline run config"),
        (variant("unknown-key", w, c.replace("  scale:", "  scal:")), "config.yaml",
         "unknown key(s) ['scal']"),
        (variant("no-config", w, None), "config.yaml", "not found"),
    ]
    img = tmp_path / "a.png"
    Image.fromarray(disks_image).save(img)
    for folder, file, message in cases:
        out = tmp_path / f"out-{folder.name}"
        rc = main(["baseline", "predict", str(img), "--run", str(folder), "-o", str(out)])
        lines = error_lines(capsys.readouterr().err)
        assert rc == 2 and len(lines) == 1, lines
        assert str(folder / file) in lines[0] and message in lines[0], lines[0]
        assert not out.exists()
    HANDLED.extend(f"baseline run: {f.name}" for f, _, _ in cases)


class _Payload:
    """Unpickling this runs ``os.mkdir(marker)``: a stand-in for code hidden in a .pth."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_pickled_checkpoints_never_run_code(tmp_path):
    """Every .pth reader uses ``weights_only``: a pickle with code is refused, never run."""
    import torch

    from zeusseg.baselines.build import build_model
    from zeusseg.baselines.config import BackboneCfg, ModelCfg
    from zeusseg.errors import InputError
    from zeusseg.factory import build_zeus, load_checkpoint
    from zeusseg.modeling.sam_encoder import SamImageEncoder

    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pth"
    torch.save({"w": _Payload(marker)}, evil)
    loaders = {
        "zeus checkpoint": lambda: load_checkpoint(build_zeus("zeus-tiny"), evil),
        "SAM checkpoint": lambda: SamImageEncoder(
            model_type="custom", checkpoint=evil, encoder_kwargs=dict(
                img_size=64, patch_size=16, embed_dim=32, depth=1, num_heads=2, out_chans=16)),
        "baseline backbone": lambda: build_model(ModelCfg(
            arch="maskrcnn", class_names=("a",),
                backbone=BackboneCfg(name="resnet18", pretrained=str(evil)))),
    }
    for name, load in loaders.items():
        with pytest.raises(InputError, match=r"(?i)evil\.pth: corrupt.*(unsafe|unsupported glob)"):
            load()
        assert not marker.exists(), name
    HANDLED.extend(f"pickled {name} with code" for name in loaders)




def test_zz_report_count(request):
    """Runs last: prints the count (``pytest -s``) and checks every case above reported in."""
    tables = (YAML_CASES, PROMPT_CASES)
    # checkpoints 2 + adapters 5 + baseline run folders 6 + pickled checkpoints 3
    expected = sum(len(t) for t in tables) + 16
    report_count(request, "configs", HANDLED, expected)
