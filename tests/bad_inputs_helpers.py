"""Shared by the two bad-input corpus files, ``test_bad_inputs_images.py`` (images, huge-image
headers, COCO JSON, label sizes, output folder, prompts) and ``test_bad_inputs_configs.py``
(YAML configs, Zeus checkpoints, LoRA adapters, baseline run folders, pickled checkpoints):
the config paths, error-line parsing and the count of handled cases."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ZEROSHOT, FINETUNE = CONFIGS / "zeroshot" / "smoke.yaml", CONFIGS / "finetune" / "smoke.yaml"
BASELINE = CONFIGS / "baseline" / "tiny-maskrcnn.yaml"

PARTS = ("images", "configs")  # one a corpus file: test_bad_inputs_<part>.py
_REPORTED: dict[str, list[str]] = {}  # part -> the cases it handled, once its count passed


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.replace("\r", "\n").splitlines() if "error:" in ln]


def report_count(request: pytest.FixtureRequest, part: str, handled: list[str],
                 expected: int) -> None:
    """Prints one corpus file's count (``pytest -s``) and checks every case it has reported
    in; once every corpus file has reported in this session, prints the corpus total too."""
    if request.config.getoption("keyword") or request.config.getoption("markexpr"):
        pytest.skip("the count needs the whole corpus (run the whole file)")
    print(f"\nbad-input corpus ({part}): {len(handled)} cases handled: {', '.join(handled)}")
    assert len(set(handled)) == len(handled) == expected
    _REPORTED[part] = list(handled)
    if set(_REPORTED) == set(PARTS):
        every = [name for names in _REPORTED.values() for name in names]
        assert len(set(every)) == len(every)
        print(f"bad-input corpus: {len(every)} cases handled in all")
