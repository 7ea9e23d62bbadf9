"""Loading and validating the prompt YAML files (system prompt, few-shot examples, knowledge).

A prompts folder holds ``system.yaml`` (see its comments for the fields) and any number of
knowledge files (``viruses.yaml``, ``nuclei.yaml``, ...), each::

    domain: viruses
    modality: transmission electron microscopy (negative stain)
    entries:
      - {name, aliases: [...], shape, size, envelope, surface}
      - {..., fallback: true}   # generic entry, used only when no specific entry matches

The package copy (``zeusseg/prompts``, also reachable as ``prompts/`` at the repository root)
is the default; ``load_prompts(folder)`` reads a user copy instead. A bad file raises
``InputError`` naming the file and the problem.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from zeusseg.errors import InputError

_logger = logging.getLogger(__name__)

PACKAGE_PROMPTS = Path(__file__).resolve().parents[1] / "prompts"
_ENTRY_FIELDS = ("name", "aliases", "shape", "size", "envelope", "surface")
_EXAMPLE_FIELDS = ("prompt", "knowledge", "description", "instruction")
_SYSTEM_FIELDS = ("version", "system", "user", "answer_prefix", "template", "examples")


@dataclass(frozen=True)
class KnowledgeEntry:
    """What is known about one kind of object (from a knowledge YAML file)."""

    name: str
    aliases: tuple[str, ...]
    shape: str
    size: str
    envelope: str
    surface: str
    domain: str
    modality: str
    fallback: bool = False

    def summary(self) -> str:
        """One sentence: ``"<name>: <shape>, <size>, <envelope>, <surface>."``"""
        return f"{self.name}: {self.shape}, {self.size}, {self.envelope}, {self.surface}."

    def matches(self, prompt: str) -> int:
        """Length of the longest name/alias found as whole words in ``prompt`` (0 = none)."""
        text = " ".join(re.findall(r"[a-z0-9]+", prompt.lower()))
        best = 0
        for alias in (self.name, *self.aliases):
            words = " ".join(re.findall(r"[a-z0-9]+", alias.lower()))
            if words and re.search(rf"(?<![a-z0-9]){re.escape(words)}(?![a-z0-9])", text):
                best = max(best, len(words))
        return best


@dataclass(frozen=True)
class FewShotExample:
    """One worked example shown to the writer LLM."""

    prompt: str
    knowledge: str
    description: str
    instruction: str


@dataclass(frozen=True)
class PromptLibrary:
    """Everything the instruction writer needs from the prompts folder.

    Attributes:
        system: the system prompt.
        user: the user-turn template with ``{prompt}``, ``{knowledge}``, ``{description}``.
        answer_prefix: forced start of the assistant's answer.
        template: the ``template``-mode sentence (placeholders: name, modality, knowledge,
            polarity, diameter, background, crowding).
        examples: few-shot examples.
        entries: knowledge entries of every domain.
        version: ``"<system version>-<hash of all files>"``; it keys the instruction cache.
        folder: where the files were read from.
    """

    system: str
    user: str
    answer_prefix: str
    template: str
    examples: tuple[FewShotExample, ...]
    entries: tuple[KnowledgeEntry, ...]
    version: str
    folder: Path

    def find(self, prompt: str) -> KnowledgeEntry | None:
        """The entry whose name or alias best matches ``prompt`` (longest match), or None.

        Fallback (generic) entries count only when no specific entry matches.
        """
        scored = [
            (not e.fallback and e.matches(prompt) > 0, e.matches(prompt), i)
            for i, e in enumerate(self.entries)
        ]
        _, score, index = max(scored, default=(False, 0, -1))
        return self.entries[index] if score > 0 else None


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise InputError(path, f"invalid YAML ({' '.join(str(err).split())})") from err
    if not isinstance(data, dict):
        raise InputError(path, "expected a mapping at the top level")
    return data


def _require_str(path: Path, data: dict, key: str, where: str = "") -> str:
    value = data.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise InputError(path, f"{where}'{key}' must be a non-empty string")
    return " ".join(value.split()) if key not in ("user",) else value.strip()


def _check_keys(path: Path, data: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise InputError(path, f"{where}unknown key(s) {unknown}; allowed: {list(allowed)}")


def _load_system(path: Path) -> tuple[dict, tuple[FewShotExample, ...]]:
    data = _read_yaml(path)
    _check_keys(path, data, _SYSTEM_FIELDS, "")
    out = {k: _require_str(path, data, k) for k in _SYSTEM_FIELDS if k != "examples"}
    user = out["user"]
    for placeholder in ("{prompt}", "{knowledge}", "{description}"):
        if placeholder not in user:
            raise InputError(path, f"'user' must contain the placeholder {placeholder}")
    examples_raw = data.get("examples", [])
    if not isinstance(examples_raw, list):
        raise InputError(path, "'examples' must be a list")
    examples = []
    for i, ex in enumerate(examples_raw):
        where = f"examples[{i}]: "
        if not isinstance(ex, dict):
            raise InputError(path, f"{where}must be a mapping")
        _check_keys(path, ex, _EXAMPLE_FIELDS, where)
        values = (_require_str(path, ex, k, where) for k in _EXAMPLE_FIELDS)
        examples.append(FewShotExample(*values))
    return out, tuple(examples)


def _load_knowledge(path: Path) -> list[KnowledgeEntry]:
    data = _read_yaml(path)
    _check_keys(path, data, ("domain", "modality", "entries"), "")
    domain = _require_str(path, data, "domain")
    modality = _require_str(path, data, "modality")
    raw = data.get("entries")
    if not isinstance(raw, list) or not raw:
        raise InputError(path, "'entries' must be a non-empty list")
    entries = []
    for i, e in enumerate(raw):
        where = f"entries[{i}]: "
        if not isinstance(e, dict):
            raise InputError(path, f"{where}must be a mapping")
        _check_keys(path, e, (*_ENTRY_FIELDS, "fallback"), where)
        fallback = e.get("fallback", False)
        if not isinstance(fallback, bool):
            raise InputError(path, f"{where}'fallback' must be true or false")
        aliases = e.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise InputError(path, f"{where}'aliases' must be a list of strings")
        fields = {k: _require_str(path, e, k, where) for k in _ENTRY_FIELDS if k != "aliases"}
        entries.append(
            KnowledgeEntry(
                aliases=tuple(aliases), domain=domain, modality=modality, fallback=fallback,
                **fields,
            )
        )
    return entries


def load_prompts(folder: str | os.PathLike | None = None) -> PromptLibrary:
    """Read and validate a prompts folder (default: the package's ``zeusseg/prompts``).

    Raises:
        InputError: the folder or ``system.yaml`` is missing, or a file is invalid.
    """
    folder = Path(folder).resolve() if folder is not None else PACKAGE_PROMPTS
    if not folder.is_dir():
        raise InputError(folder, "prompts folder not found")
    signature = tuple(
        (p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.glob("*.yaml"))
    )
    return _load_cached(folder, signature)


@functools.lru_cache(maxsize=8)
def _load_cached(folder: Path, signature: tuple) -> PromptLibrary:
    """``load_prompts`` for one folder state (``signature`` changes when a file changes)."""
    system_path = folder / "system.yaml"
    if not system_path.is_file():
        raise InputError(folder, "prompts folder has no system.yaml")
    system, examples = _load_system(system_path)
    digest = hashlib.sha256()
    entries: list[KnowledgeEntry] = []
    for path in sorted(folder.glob("*.yaml")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
        if path.name != "system.yaml":
            entries.extend(_load_knowledge(path))
    names = [e.name.lower() for e in entries]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(folder, f"knowledge entries defined twice: {dupes}")
    return PromptLibrary(
        system=system["system"],
        user=system["user"],
        answer_prefix=system["answer_prefix"],
        template=system["template"],
        examples=examples,
        entries=tuple(entries),
        version=f"{system['version']}-{digest.hexdigest()[:8]}",
        folder=folder,
    )
