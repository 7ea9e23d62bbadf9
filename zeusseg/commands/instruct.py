"""``zeusseg instruct``: make (or reuse) the text instruction of each image and prompt."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from zeusseg.errors import InputError

_logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "instruct",
        help="write the text instruction for each image and prompt (cached)",
        description=(
            "Describe every image of IMG_OR_DIR, turn each --prompt into an instruction "
            "(mode name, template or llm) and print it. Instructions are appended to the "
            "cache file; a second run over the same images makes nothing new."
        ),
    )
    inp = p.add_argument_group("Input")
    inp.add_argument("input", metavar="IMG_OR_DIR", help="an image file or a folder of images")
    inp.add_argument(
        "-p", "--prompt", action="append", required=True,
        help="the target, e.g. 'RSV' or 'cell nuclei'; repeat for several",
    )
    mod = p.add_argument_group("Model")
    mod.add_argument(
        "--mode", choices=("name", "template", "llm"), default="llm",
        help="name: the prompt alone; template: knowledge + measured facts in a fixed "
        "sentence; llm: written by the LLM (default: %(default)s)",
    )
    mod.add_argument(
        "--describer", default=None,
        help="describer registry name (see `zeusseg models`) or vlm:<folder or hub id> "
        "(default: measured)",
    )
    mod.add_argument(
        "--writer", default=None,
        help="writer registry name, or a folder / hub id / .gguf file of a causal LM "
        "(default: smollm2-135m-instruct)",
    )
    mod.add_argument(
        "--threads", type=int, default=None,
        help="CPU threads for torch (default: torch's choice; use 1 on a busy shared machine)",
    )
    mod.add_argument("--prompts", default=None, help="prompts folder (default: the package's)")
    mod.add_argument(
        "--random-init", action="store_true",
        help="random weights for the describer/writer models (testing only)",
    )
    out = p.add_argument_group("Output")
    out.add_argument(
        "--cache", default="zeusseg_output/instructions.jsonl",
        help="instruction cache file (default: %(default)s)",
    )
    p.set_defaults(run=run)


def _describer(name: str | None, random_init: bool):
    from zeusseg.components import build_component

    if name is None:
        return None
    if name.startswith("vlm:"):
        from zeusseg.instructions.vlm_describer import VLMDescriber

        return VLMDescriber.from_pretrained(name[4:], random_init=random_init)
    if name == "measured":
        return build_component("describer", name)
    return build_component("describer", name, random_init=random_init)


def _writer(name: str | None, random_init: bool):
    from zeusseg.components import list_components

    if name is None or (name in {e.name for e in list_components("writer")} and not random_init):
        return name  # a registry writer is loaded only if the cache misses
    if name in {e.name for e in list_components("writer")}:
        from zeusseg.components import build_component

        return build_component("writer", name, random_init=True)
    from zeusseg.instructions.writer import InstructionWriter

    return InstructionWriter.from_pretrained(name, random_init=random_init)


def run(args: argparse.Namespace) -> int:
    from zeusseg.instructions import InstructionCache, image_content_hash, make_instruction
    from zeusseg.instructions.prompts import load_prompts
    from zeusseg.io import list_images, read_image

    if args.threads is not None:
        if args.threads < 1:
            raise InputError(None, "--threads must be >= 1")
        import torch

        torch.set_num_threads(args.threads)
    files = list_images(args.input)
    prompts = [" ".join(p.split()) for p in args.prompt]
    if not all(prompts):
        raise InputError(None, "--prompt must not be empty")
    library = load_prompts(args.prompts)
    describer = _describer(args.describer, args.random_init) if args.mode != "name" else None
    writer = _writer(args.writer, args.random_init) if args.mode == "llm" else None
    cache = InstructionCache(Path(args.cache))
    before = len(cache)
    for path in files:
        image = read_image(path)
        digest = image_content_hash(image)
        for prompt in prompts:
            ins = make_instruction(
                image, prompt, args.mode, describer=describer, writer=writer, cache=cache,
                prompts=library, image_hash=digest,
            )
            sys.stdout.write(f"{path.name}\t{prompt}\t{ins.text}\n")
            sys.stdout.flush()
    _logger.info(
        "%d instruction(s) for %d image(s): %d new, cache %s",
        len(files) * len(prompts), len(files), len(cache) - before, cache.path,
    )
    return 0
