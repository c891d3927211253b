"""The raw reply log: the prompt and every reply of one request, kept for a person to read."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from localdispatch.split.llm.base import ChatMessage

log = logging.getLogger(__name__)


@dataclass
class ReplyLog:
    """Writes the prompt and every raw reply of one request to ``folder/<stem>.*.txt``.

    A failure to write is logged and ignored: losing a log must never lose a split.
    """

    folder: Path
    stem: str
    files: list[Path] = field(default_factory=list)

    @classmethod
    def new(cls, folder: Path, purpose: str) -> ReplyLog:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
        return cls(folder=Path(folder), stem=f"{purpose}-{stamp}-{os.getpid()}")

    @property
    def pattern(self) -> str:
        return f"{self.stem}.reply-*.txt"

    def save_prompt(self, messages: Sequence[ChatMessage]) -> Path | None:
        text = "\n\n".join(f"--- {m['role']} ---\n{m['content']}" for m in messages)
        return self._write(f"{self.stem}.prompt.txt", text + "\n")

    def save_reply(self, attempt: int, text: str) -> Path | None:
        return self._write(f"{self.stem}.reply-{attempt}.txt", text)

    def _write(self, name: str, text: str) -> Path | None:
        path = self.folder / name
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8", newline="\n")
        except OSError as exc:
            log.warning("could not save the model's text to %s: %s", path, exc)
            return None
        self.files.append(path)
        return path
