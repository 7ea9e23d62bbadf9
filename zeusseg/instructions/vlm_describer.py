"""``VLMDescriber``: a Hugging Face image-text-to-text model describes the image in words.

Any model that ``AutoProcessor`` + ``AutoModelForImageTextToText`` load works (SmolVLM,
Idefics3, Qwen2-VL, LLaVA, ...), by local folder or by a hub id that is in the local HF cache.
No VLM weights ship with zeusseg: ``zeusseg models`` shows which are present.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from zeusseg.instructions.describer import Describer, Description
from zeusseg.pretrained import resolve_hf_source
from zeusseg.structures import MicroscopyImage

_logger = logging.getLogger(__name__)

DEFAULT_QUESTION = (
    "Describe this microscopy image in two sentences: the imaging modality, and the shape, "
    "size, brightness and crowding of the objects in it."
)


class VLMDescriber(Describer):
    """Describes images with a vision-language model (greedy decoding, fixed length).

    Args:
        model: an ``AutoModelForImageTextToText`` model.
        processor: its ``AutoProcessor`` (tokenizer + image processor + chat template).
        describer_id: stable id (it keys the instruction cache).
        question: the user turn sent with the image.
        max_new_tokens: generation budget.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor,
        *,
        describer_id: str,
        question: str = DEFAULT_QUESTION,
        max_new_tokens: int = 80,
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.processor = processor
        self.id = describer_id
        self.question = question
        self.max_new_tokens = max_new_tokens

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike,
        *,
        random_init: bool = False,
        describer_id: str | None = None,
        **kwargs,
    ) -> VLMDescriber:
        """Load processor and model from a folder or a locally cached hub id.

        Args:
            source: folder written by ``save_pretrained`` or a hub id in the HF cache.
            random_init: random weights from the config (processor still loaded; explicit only).
            describer_id: id to report (default ``vlm:<source>``; ``+random`` appended for
                random weights).
            **kwargs: ``question``, ``max_new_tokens``.

        Raises:
            WeightsNotFoundError: ``source`` is not available locally.
        """
        resolved = resolve_hf_source(source, model=describer_id or f"vlm:{source}")
        processor = AutoProcessor.from_pretrained(resolved)
        if random_init:
            model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(resolved))
        else:
            model = AutoModelForImageTextToText.from_pretrained(resolved)
        describer_id = (describer_id or f"vlm:{source}") + ("+random" if random_init else "")
        return cls(model, processor, describer_id=describer_id, **kwargs)

    @torch.no_grad()
    def describe(self, image: MicroscopyImage) -> Description:
        """Ask the model about ``image``; the answer (whitespace collapsed) is the text."""
        data = image.data if image.data.ndim == 3 else np.repeat(image.data[..., None], 3, -1)
        pil = Image.fromarray((np.clip(data, 0, 1) * 255).round().astype(np.uint8), "RGB")
        chat = [{"role": "user", "content": [
            {"type": "image"}, {"type": "text", "text": self.question},
        ]}]
        text = self.processor.apply_chat_template(chat, add_generation_prompt=True)
        batch = self.processor(text=text, images=[pil], return_tensors="pt").to(self.model.device)
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id
        out = self.model.generate(
            **batch, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1,
            pad_token_id=pad, temperature=None, top_p=None, top_k=None,
        )
        new = out[0, batch["input_ids"].shape[1]:]
        answer = " ".join(tokenizer.decode(new, skip_special_tokens=True).split())
        return Description(text=answer, facts={}, describer=self.id)
