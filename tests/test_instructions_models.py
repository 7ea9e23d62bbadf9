"""Tests of the model-backed parts: VLM describer, LLM writer, llm mode, ``zeusseg instruct``.

Tiny random models (built in the test) cover every loader path on CPU; the real offline
SmolLM2 runs under the ``weights`` marker.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from zeusseg.errors import WeightsNotFoundError
from zeusseg.instructions import (
    InstructionCache,
    InstructionWriter,
    VLMDescriber,
    load_prompts,
    make_instruction,
)
from zeusseg.structures import MicroscopyImage

from .tiny_models import save_tiny_causal_lm, save_tiny_llava

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory):
    return save_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="module")
def tiny_vlm_dir(tmp_path_factory):
    return save_tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


def _image(seed=0, shape=(96, 128)):
    rng = np.random.default_rng(seed)
    return MicroscopyImage(rng.random(shape, dtype=np.float32), name=f"img{seed}")


def test_vlm_describer_tiny_llava(tiny_vlm_dir):
    vlm = VLMDescriber.from_pretrained(tiny_vlm_dir, max_new_tokens=6)
    assert vlm.id == f"vlm:{tiny_vlm_dir}"
    first = vlm.describe(_image())
    assert isinstance(first.text, str) and first.facts == {} and first.describer == vlm.id
    assert vlm.describe(_image()).text == first.text  # greedy: deterministic
    rgb = MicroscopyImage(np.random.default_rng(1).random((40, 30, 3), dtype=np.float32))
    assert isinstance(vlm.describe(rgb).text, str)
    # template mode with a free-text describer appends its description
    ins = make_instruction(_image(), "RSV", "template", describer=vlm)
    assert ins.describer == vlm.id and ins.text.startswith("Segment every RSV. They are")


def test_writer_tiny_llama_render_and_write(tiny_lm_dir):
    writer = InstructionWriter.from_pretrained(tiny_lm_dir, max_new_tokens=8, writer_id="tiny")
    text = writer.render("RSV", "RSV: round.", "Dark disks.", name="RSV")
    lib = load_prompts()
    assert text.endswith("<|im_start|>assistant\nSegment every RSV:")
    assert lib.system[:40] in text and lib.examples[0].instruction in text
    assert text.count("<|im_start|>user") == len(lib.examples) + 1
    out = writer.write("RSV", "RSV: round.", "Dark disks.")
    assert out.startswith("Segment every RSV:") and out.endswith(".")
    assert writer.write("RSV", "RSV: round.", "Dark disks.") == out  # greedy
    assert writer.n_calls == 2


def test_writer_missing_weights(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="config.json"):
        InstructionWriter.from_pretrained(tmp_path / "nothing-here")
    with pytest.raises(WeightsNotFoundError, match="model.gguf"):
        InstructionWriter.from_pretrained(tmp_path / "model.gguf")
    with pytest.raises(WeightsNotFoundError, match="hf download nobody/no-such-llm"):
        InstructionWriter.from_pretrained("nobody/no-such-llm")


def test_llm_mode_generates_once_per_key(tiny_lm_dir, tmp_path):
    writer = InstructionWriter.from_pretrained(tiny_lm_dir, max_new_tokens=6, writer_id="tiny")
    cache = InstructionCache(tmp_path / "instructions.jsonl")
    images = [_image(0), _image(1)]
    first = [make_instruction(im, p, "llm", writer=writer, cache=cache)
             for im in images for p in ("RSV", "cell nuclei")]
    assert writer.n_calls == 4 and len(cache) == 4
    assert all(i.mode == "llm" and i.writer == "tiny" for i in first)
    # a new cache object over the same file (a second run): nothing is generated
    cache2 = InstructionCache(tmp_path / "instructions.jsonl")
    second = [make_instruction(im, p, "llm", writer=writer, cache=cache2)
              for im in images for p in ("RSV", "cell nuclei")]
    assert writer.n_calls == 4 and second == first
    # a different writer id or template version is a different key
    other = InstructionWriter(writer.model, writer.tokenizer, writer_id="tiny-2",
                              max_new_tokens=4)
    make_instruction(images[0], "RSV", "llm", writer=other, cache=cache2)
    assert other.n_calls == 1 and len(cache2) == 5


def test_instruct_command_twice(tiny_lm_dir, tmp_path, capsys):
    from zeusseg.__main__ import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        arr = (np.random.default_rng(i).random((64, 80)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"im{i}.png")
    cache = tmp_path / "out" / "instructions.jsonl"
    argv = ["-q", "instruct", str(folder), "-p", "RSV", "-p", "virus particles", "--writer",
            str(tiny_lm_dir), "--cache", str(cache)]
    assert main(argv) == 0
    out1 = capsys.readouterr().out.splitlines()
    assert len(out1) == 4 and out1[0].startswith("im0.png\tRSV\tSegment every RSV:")
    n_lines = len(cache.read_text().splitlines())
    assert n_lines == 4
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines() == out1
    assert len(cache.read_text().splitlines()) == n_lines  # nothing new was made
    assert main(["-q", "instruct", str(folder), "-p", "RSV", "--mode", "name",
                 "--cache", str(cache)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "im0.png\tRSV\tRSV"
    assert main(["instruct", str(tmp_path / "missing"), "-p", "RSV"]) == 2


@pytest.mark.weights
def test_smollm2_real_writer(tmp_path):
    from zeusseg.instructions import load_smollm2

    writer = load_smollm2(max_new_tokens=48)  # converts the GGUF once into the cache dir
    assert writer.id == "smollm2-135m-instruct"
    lib = load_prompts()
    rsv = lib.find("RSV")
    desc = ("The image looks like an electron microscopy image. It shows about 12 dark "
            "roundish objects on a lighter background, about 45 pixels across. The objects "
            "are sparse. Contrast is high and noise is moderate.")
    text = writer.write("RSV", rsv.summary(), desc, name=rsv.name)
    assert text.startswith("Segment every RSV:") and text.endswith(".")
    assert 8 <= len(text.split()) <= 60
    assert "\n" not in text
