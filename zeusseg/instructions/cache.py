"""The instruction cache (``instructions.jsonl``) and the image content hash that keys it.

One JSON object per line, appended and fsync'ed as each instruction is made, so a crash loses
at most the line being written; a truncated or corrupt line is skipped with a warning when
the file is read. The key is (image content hash, prompt, mode, describer id, writer id,
template version): change any of them and the instruction is made again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zeusseg.errors import InputError
from zeusseg.structures import Instruction, MicroscopyImage

_logger = logging.getLogger(__name__)


def image_content_hash(image: MicroscopyImage | np.ndarray) -> str:
    """sha256 (first 32 hex digits) of the normalised pixels.

    Hashing the normalised array (not the file bytes) gives the same key for the same pixels
    whatever the file format, name or metadata.

    Args:
        image: a MicroscopyImage or its (H, W) / (H, W, 3) data array.
    """
    data = image.data if isinstance(image, MicroscopyImage) else np.asarray(image)
    data = np.ascontiguousarray(data, dtype=np.float32)
    digest = hashlib.sha256(str(data.shape).encode())
    digest.update(data.tobytes())
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class CacheKey:
    """What identifies one cached instruction."""

    image_hash: str
    prompt: str
    mode: str
    describer: str
    writer: str
    template_version: str


class InstructionCache:
    """Append-only JSONL store of instructions.

    Args:
        path: the ``instructions.jsonl`` file (created on the first ``put``).

    Attributes:
        records: the full record of each key (instruction text plus extras such as the
            description and the image path).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.records: dict[CacheKey, dict[str, Any]] = {}
        if self.path.is_dir():
            raise InputError(self.path, "is a folder; the cache must be a .jsonl file")
        if self.path.is_file():
            self._read()

    def _read(self) -> None:
        lines = self.path.read_text(encoding="utf-8", errors="replace").split("\n")
        fields = CacheKey.__dataclass_fields__
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not all(isinstance(rec[k], str) for k in (*fields, "text")):
                    raise TypeError("a key field or the text is not a string")
                key = CacheKey(**{k: rec[k] for k in fields})
            except (json.JSONDecodeError, KeyError, TypeError):
                last = n == len(lines) or (n == len(lines) - 1 and not lines[-1])
                what = "truncated last line" if last else f"corrupt line {n}"
                _logger.warning("%s: skipping %s", self.path, what)
                continue
            self.records[key] = rec

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, key: CacheKey) -> bool:
        return key in self.records

    def get(self, key: CacheKey) -> Instruction | None:
        """The cached instruction for ``key``, or None."""
        rec = self.records.get(key)
        if rec is None:
            return None
        return Instruction(
            prompt=key.prompt, text=rec["text"], mode=key.mode, describer=key.describer,
            writer=key.writer, image_hash=key.image_hash,
        )

    def put(self, key: CacheKey, text: str, **extra: Any) -> None:
        """Append one record (flushed and fsync'ed before returning).

        Args:
            key: the cache key.
            text: the instruction.
            **extra: JSON-serialisable extras stored with it (description, image path, ...).
        """
        rec = {**asdict(key), "text": text, **extra}
        line = json.dumps(rec, ensure_ascii=False, sort_keys=False)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() > 0:  # repair a truncated last line before appending
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
            f.write(line.encode("utf-8") + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[key] = rec
