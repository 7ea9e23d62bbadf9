"""Zero-shot instructions: describe the image, write the instruction, cache it."""

from zeusseg.instructions.cache import CacheKey, InstructionCache, image_content_hash
from zeusseg.instructions.compose import MODES, fill_template, make_instruction
from zeusseg.instructions.describer import Describer, Description
from zeusseg.instructions.measured_describer import MeasuredDescriber, MeasuredFacts
from zeusseg.instructions.prompts import KnowledgeEntry, PromptLibrary, load_prompts
from zeusseg.instructions.vlm_describer import VLMDescriber
from zeusseg.instructions.writer import InstructionWriter, clean_instruction, load_smollm2

__all__ = [
    "MODES",
    "CacheKey",
    "Describer",
    "Description",
    "InstructionCache",
    "InstructionWriter",
    "KnowledgeEntry",
    "MeasuredDescriber",
    "MeasuredFacts",
    "PromptLibrary",
    "VLMDescriber",
    "clean_instruction",
    "fill_template",
    "image_content_hash",
    "load_prompts",
    "load_smollm2",
    "make_instruction",
]
