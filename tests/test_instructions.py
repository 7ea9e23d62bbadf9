"""Tests of describers, prompt files, the instruction cache and the three modes (no models)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from zeusseg.errors import InputError
from zeusseg.instructions import (
    CacheKey,
    InstructionCache,
    MeasuredDescriber,
    clean_instruction,
    image_content_hash,
    load_prompts,
    make_instruction,
)
from zeusseg.instructions.prompts import PACKAGE_PROMPTS
from zeusseg.structures import MicroscopyImage


def _disks(shape=(820, 900), radius=20, step=110, light=True, noise=0.03, seed=0):
    """Grid of disks of ``radius`` px: light on dark (fluorescence-like) or dark on grey."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    obj = np.zeros(shape, bool)
    centres = [(r, c) for r in range(step, shape[0] - step // 2, step)
               for c in range(step, shape[1] - step // 2, step)]
    for r, c in centres:
        obj |= (yy - r) ** 2 + (xx - c) ** 2 <= radius**2
    img = np.where(obj, 0.8, 0.05) if light else np.where(obj, 0.25, 0.65)
    img = np.clip(img + rng.normal(0, noise, shape), 0, 1).astype(np.float32)
    return MicroscopyImage(img, name="disks"), len(centres)


def test_measured_describer_light_disks():
    image, n = _disks(light=True)
    desc = MeasuredDescriber().describe(image)
    f = desc.facts
    assert f["modality"] == "fluorescence" and f["polarity"] == "light"
    assert abs(f["count"] - n) <= 0.1 * n
    assert 28 <= f["diameter_px"] <= 56  # true diameter 40; LoG scales are ~1.4x apart
    assert f["crowding"] == "sparse" and f["touching"] == 0
    assert f"about {f['count']} light roundish objects" in desc.text
    assert desc.describer == "measured-v1"


def test_measured_describer_dark_objects():
    # speed is measured in scripts/bench_text.py (docs/BENCHMARKS.md), not asserted here
    image, n = _disks(light=False, radius=12, step=60)
    f = MeasuredDescriber().describe(image).facts
    assert f["modality"] == "electron microscopy" and f["polarity"] == "dark"
    assert abs(f["count"] - n) <= 0.15 * n
    assert 16 <= f["diameter_px"] <= 34


def test_measured_describer_blank_image():
    f = MeasuredDescriber().describe(MicroscopyImage(np.full((64, 64), 0.5, np.float32))).facts
    assert f["count"] == 0


def test_prompts_load_and_match():
    lib = load_prompts()
    assert {e.name for e in lib.entries} >= {
        "RSV", "SARS-CoV-2", "FLUAV", "HSV1", "HAdV5", "VACV", "cell nucleus"}
    assert lib.find("RSV virus particles").name == "RSV"  # specific beats the generic entry
    assert lib.find("virus particles").name == "virus particle"
    assert lib.find("Influenza A virus").name == "FLUAV"
    assert lib.find("cell nuclei").name == "cell nucleus"
    assert lib.find("mitochondria") is None
    assert "nm" in lib.find("HAdV5").size and lib.find("HAdV5").envelope == "non-enveloped"
    assert len(lib.examples) >= 2 and "{name}" in lib.answer_prefix
    assert (PACKAGE_PROMPTS.parents[1] / "prompts" / "viruses.yaml").exists()  # repo symlink


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.replace("shape: icosahedral", "colour: icosahedral"), "unknown key"),
        (lambda s: s.replace("size: 70-90 nm across", "size: ''"), "'size' must be"),
        (lambda s: s + "\n  - [broken", "invalid YAML"),
        (lambda s: s.replace("entries:", "items:"), "unknown key"),
    ],
)
def test_bad_knowledge_file_is_a_clear_error(tmp_path, edit, message):
    folder = tmp_path / "prompts"
    shutil.copytree(PACKAGE_PROMPTS, folder)
    path = folder / "viruses.yaml"
    path.write_text(edit(path.read_text()))
    with pytest.raises(InputError, match=message) as err:
        load_prompts(folder)
    assert "viruses.yaml" in str(err.value)


def test_prompt_version_follows_content(tmp_path):
    folder = tmp_path / "prompts"
    shutil.copytree(PACKAGE_PROMPTS, folder)
    v1 = load_prompts(folder).version
    (folder / "system.yaml").unlink()
    with pytest.raises(InputError, match="no system.yaml"):
        load_prompts(folder)  # edits are seen: the cache follows file mtimes and sizes
    shutil.copy(PACKAGE_PROMPTS / "system.yaml", folder / "system.yaml")
    other = tmp_path / "prompts2"
    shutil.copytree(folder, other)
    (other / "nuclei.yaml").write_text((other / "nuclei.yaml").read_text() + "\n# edited\n")
    assert load_prompts(other).version != v1
    assert load_prompts(other).version.startswith("1-")


def test_image_content_hash():
    a = MicroscopyImage(np.zeros((4, 5), np.float32))
    assert image_content_hash(a) == image_content_hash(np.zeros((4, 5), np.float64))
    assert image_content_hash(a) != image_content_hash(np.zeros((5, 4), np.float32))
    b = a.data.copy()
    b[0, 0] = 1e-3
    assert image_content_hash(b) != image_content_hash(a)


def _key(i=0):
    return CacheKey(f"h{i}", "RSV", "template", "measured-v1", "", "1-abc")


def test_cache_roundtrip_truncated_line_and_repair(tmp_path):
    path = tmp_path / "instructions.jsonl"
    cache = InstructionCache(path)
    cache.put(_key(0), "Segment every RSV.", description="d")
    cache.put(_key(1), "Segment every RSV particle.")
    with open(path, "a") as f:
        f.write('{"image_hash": "h2", "prompt": "RS')  # a crash mid-write
    reread = InstructionCache(path)
    assert len(reread) == 2
    assert reread.get(_key(1)).text == "Segment every RSV particle."
    assert reread.get(_key(0)).mode == "template" and reread.records[_key(0)]["description"] == "d"
    assert reread.get(_key(2)) is None
    reread.put(_key(2), "third")  # appending repairs the broken line first
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1])["text"] == "third"
    assert len(InstructionCache(path)) == 3


def test_modes_name_and_template_with_cache(tmp_path):
    image, _ = _disks(light=False, radius=20, step=110)
    cache = InstructionCache(tmp_path / "c.jsonl")
    name = make_instruction(image, "  RSV ", "name", cache=cache)
    assert name.text == "RSV" and name.mode == "name" and name.writer == ""
    t = make_instruction(image, "RSV", "template", cache=cache)
    assert t.mode == "template" and t.describer == "measured-v1" and t.writer == ""
    assert t.text.startswith("Segment every RSV in this electron microscopy image.")
    assert "100-350 nm" in t.text and "dark objects about" in t.text
    assert len(cache) == 1
    calls = []

    class CountingDescriber(MeasuredDescriber):
        def describe(self, image):
            calls.append(1)
            return super().describe(image)

    again = make_instruction(image, "RSV", "template", describer=CountingDescriber(),
                             cache=InstructionCache(tmp_path / "c.jsonl"))
    assert again == t and calls == []  # served from the file, nothing described
    unknown = make_instruction(image, "mitochondria", "template")
    assert unknown.text.startswith("Segment every mitochondria in this")
    with pytest.raises(ValueError, match="name, template, llm"):
        make_instruction(image, "RSV", "fancy")
    with pytest.raises(ValueError, match="empty"):
        make_instruction(image, "  ", "name")


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Segment every RSV: round virions.\nMore text", "Segment every RSV: round virions."),
        ('"Segment every RSV: dark rings" about', "Segment every RSV: dark rings\" about."),
        ("Instruction: Segment the nuclei. Then stop.", "Segment the nuclei."),
        ("Segment every RSV: 0.5 um wide rods", "Segment every RSV: 0.5 um wide rods."),
        ("\n\n", ""),
    ],
)
def test_clean_instruction(raw, expected):
    assert clean_instruction(raw) == expected


def test_clean_instruction_caps_words():
    assert len(clean_instruction("Segment " + "word " * 100).split()) == 60
