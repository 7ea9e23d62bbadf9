"""``make_instruction``: one instruction for (image, prompt) in one of three modes.

Modes (the ablation axis of the method):

* ``name``: the prompt alone, e.g. ``"RSV"``.
* ``template``: knowledge + the describer's facts filled into the fixed sentence of
  ``prompts/system.yaml`` (no LLM).
* ``llm``: full Zeus: the writer LLM combines prompt, knowledge and description.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from zeusseg.components import build_component, default_component
from zeusseg.instructions.cache import CacheKey, InstructionCache, image_content_hash
from zeusseg.instructions.describer import Describer, Description
from zeusseg.instructions.prompts import KnowledgeEntry, PromptLibrary, load_prompts
from zeusseg.instructions.writer import InstructionWriter
from zeusseg.structures import Instruction, MicroscopyImage

_logger = logging.getLogger(__name__)

MODES = ("name", "template", "llm")
_TEMPLATE_FACTS = ("modality", "polarity", "diameter_px", "crowding")
_built_writers: dict[str, InstructionWriter] = {}


def resolve_describer(describer: Describer | str | None) -> Describer:
    """A describer object from an object, a registry name, or None (the default)."""
    if isinstance(describer, Describer):
        return describer
    return build_component("describer", describer or default_component("describer"))


def _writer_id(writer: InstructionWriter | str | None) -> str:
    if isinstance(writer, InstructionWriter):
        return writer.id
    return writer or default_component("writer")


def _resolve_writer(writer: InstructionWriter | str | None) -> InstructionWriter:
    """Build a registry writer on first use (memoised), so cache hits never load an LLM."""
    if isinstance(writer, InstructionWriter):
        return writer
    name = _writer_id(writer)
    if name not in _built_writers:
        built = build_component("writer", name)
        if built.id != name:
            raise ValueError(f"writer '{name}' built a model with id '{built.id}'")
        _built_writers[name] = built
    return _built_writers[name]


def knowledge_sentence(entry: KnowledgeEntry | None) -> str:
    """``"They are <shape>, <size>, <envelope>, with <surface>."`` ("" without an entry)."""
    if entry is None:
        return ""
    return f"They are {entry.shape}, {entry.size}, {entry.envelope}, with {entry.surface}."


def fill_template(
    prompts: PromptLibrary, prompt: str, entry: KnowledgeEntry | None, description: Description
) -> str:
    """The ``template``-mode instruction (falls back to appending the description text when
    the describer gave no measured facts, e.g. a VLM)."""
    name = entry.name if entry else prompt.strip()
    facts = description.facts
    if all(k in facts for k in _TEMPLATE_FACTS) and int(facts.get("count", 1)) > 0:
        polarity = str(facts["polarity"])
        text = prompts.template.format(
            name=name,
            modality=facts["modality"],
            knowledge=knowledge_sentence(entry),
            polarity=polarity,
            diameter=f"{float(facts['diameter_px']):.0f}",
            background="darker" if polarity == "light" else "lighter",
            crowding=facts["crowding"],
        )
    else:
        text = f"Segment every {name}. {knowledge_sentence(entry)} {description.text}"
    return " ".join(text.split())


def make_instruction(
    image: MicroscopyImage,
    prompt: str,
    mode: str = "llm",
    *,
    describer: Describer | str | None = None,
    writer: InstructionWriter | str | None = None,
    cache: InstructionCache | None = None,
    prompts: PromptLibrary | None = None,
    image_hash: str | None = None,
) -> Instruction:
    """Make (or fetch from ``cache``) the instruction for ``prompt`` on ``image``.

    Args:
        image: the image (data (H, W) or (H, W, 3) float32 in [0, 1]).
        prompt: the user's target, e.g. ``"RSV"`` or ``"cell nuclei"``.
        mode: ``name``, ``template`` or ``llm``.
        describer: describer object or registry name (default: ``measured``). Unused in
            ``name`` mode.
        writer: writer object or registry name (default: the SmolLM2 writer). Used in ``llm``
            mode only; a registry writer is loaded only on a cache miss.
        cache: instruction cache to read and update.
        prompts: prompt library (default: the package prompts).
        image_hash: precomputed ``image_content_hash(image)``.

    Returns:
        The Instruction (its ``describer``/``writer`` fields say what produced it).

    Raises:
        ValueError: unknown mode or empty prompt.
    """
    if mode not in MODES:
        raise ValueError(f"unknown instruction mode '{mode}'; expected one of {', '.join(MODES)}")
    prompt = " ".join(prompt.split())
    if not prompt:
        raise ValueError("the prompt is empty")
    prompts = prompts or load_prompts()
    image_hash = image_hash or image_content_hash(image)
    if mode == "name":
        return Instruction(prompt=prompt, text=prompt, mode="name", image_hash=image_hash)
    describer = resolve_describer(describer)
    key = CacheKey(
        image_hash=image_hash, prompt=prompt, mode=mode, describer=describer.id,
        writer=_writer_id(writer) if mode == "llm" else "", template_version=prompts.version,
    )
    if cache is not None and (hit := cache.get(key)) is not None:
        return hit
    extra: dict[str, Any] = {"image": str(image.path) if image.path else image.name}
    t0 = time.perf_counter()
    description = describer.describe(image)
    extra["describe_s"] = round(time.perf_counter() - t0, 4)
    extra["description"] = description.text
    entry = prompts.find(prompt)
    template_text = fill_template(prompts, prompt, entry, description)
    text = template_text
    if mode == "llm":
        llm = _resolve_writer(writer)
        t0 = time.perf_counter()
        knowledge = entry.summary() if entry else "none"
        text = llm.write(prompt, knowledge, description.text, entry.name if entry else prompt)
        extra["write_s"] = round(time.perf_counter() - t0, 4)
        if len(text.split()) <= len(llm.answer_prefix(entry.name if entry else prompt).split()):
            _logger.warning(
                "writer %s gave no usable instruction for '%s' (%r); using the template text",
                llm.id, prompt, text,
            )
            text = template_text
            extra["fallback"] = "template"
    if cache is not None:
        cache.put(key, text, **extra)
    return Instruction(
        prompt=prompt, text=text, mode=mode, describer=key.describer, writer=key.writer,
        image_hash=image_hash,
    )
