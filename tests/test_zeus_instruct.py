"""The bundled instruction-trained model (zeus-instruct): name mode still works, and in template
mode it follows the class words (a wrong-domain instruction returns nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.weights, pytest.mark.usefixtures("one_torch_thread")]
REPO = Path(__file__).resolve().parents[1]

# (example, prompt, wrong-domain prompt, name-mode AP@0.5 floor): measured 0.811, 0.577, 0.913
# with zeus-instruct on 2026-12-01 (docs/model_card.md), floors ~0.1 lower.
CASES = [
    ("dsb-0010", "cell nuclei", "virus particles", 0.71),
    ("visn-0008", "virus particles", "cell nuclei", 0.47),
    ("coelho-u2os-dna-0", "cell nuclei", "virus particles", 0.81),
]


@pytest.fixture(scope="module")
def predictor():
    from zeusseg.inference.zeus_segmenter import load_zeus
    from zeusseg.predictor import ZeusPredictor
    from zeusseg.pretrained import weights_present

    if not weights_present("zeus-instruct"):
        pytest.skip("bundled zeus-instruct model not present")
    return ZeusPredictor(load_zeus("zeus-instruct"))


@pytest.mark.parametrize(("stem", "prompt", "swapped", "floor"), CASES)
def test_zeus_instruct_reads_names_and_instructions(predictor, stem, prompt, swapped, floor):
    from zeusseg.inference.zeus_segmenter import segment_image
    from zeusseg.instructions import make_instruction
    from zeusseg.io import read_image, read_label_image
    from zeusseg.metrics import average_precision

    image = read_image(REPO / "examples" / f"{stem}.png")
    gt = read_label_image(REPO / "tests" / "data" / f"{stem}-labels.png")
    masks = segment_image(predictor, image, [prompt])
    ap, *_ = average_precision(gt.labels, masks.labels, thresholds=(0.5,))
    assert ap[0] >= floor, f"name-mode AP@0.5 {ap[0]:.3f} below the measured floor {floor}"

    def template(p: str) -> str:
        return make_instruction(image, p, "template").text

    right = segment_image(predictor, image, [prompt], text_of=template)
    wrong = segment_image(predictor, image, [swapped], text_of=template)
    assert len(right) >= 0.8 * len(gt)
    assert len(wrong) <= 0.05 * len(right), f"{len(wrong)} instances for '{swapped}'"


def test_zeus_instruct_has_its_own_class_head(predictor):
    from zeusseg.inference.zeus_segmenter import find_class_head, segment_image
    from zeusseg.io import read_image

    head = find_class_head("zeus-instruct", predictor.model)
    assert head is not None and set(head[1].classes) == {"RSV", "SARS-CoV-2", "FLUAV"}
    image = read_image(REPO / "examples" / "visn-0168.png")
    masks = segment_image(predictor, image, ["RSV", "SARS-CoV-2", "FLUAV"], class_head=head)
    assert len(masks) > 0 and {masks.class_names[int(c)] for c in masks.class_ids} == {"FLUAV"}
