"""The records that flow through the pipeline: scan -> extract -> embed -> index -> search."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
"""One unit-length embedding, float32, shape (dims,)."""
Matrix = npt.NDArray[np.float32]
"""Row-stacked embeddings, float32, shape (n, dims)."""

Kind = Literal["text", "code", "html", "markdown", "pdf", "image", "video", "office", "ebook", "other"]
KINDS: tuple[str, ...] = (
    "text",
    "code",
    "html",
    "markdown",
    "pdf",
    "image",
    "video",
    "office",
    "ebook",
    "other",
)


@dataclass(frozen=True)
class FileRecord:
    """A file found by the scan: where it is and what it looks like on disk."""

    path: str  # absolute, as the OS gives it (not normalised)
    size: int
    mtime_ns: int
    kind: str  # one of KINDS


@dataclass(frozen=True)
class Skip:
    """A file or folder the scan or extraction left out, and why (one lowercase line)."""

    path: str
    reason: str


@dataclass(frozen=True)
class Locator:
    """Where inside a file a piece comes from; every field optional."""

    page: int | None = None  # 1-based PDF page or slide
    line_start: int | None = None  # 1-based, inclusive
    line_end: int | None = None  # 1-based, inclusive
    timestamp: float | None = None  # seconds into a video
    sheet: str | None = None  # spreadsheet sheet name
    # Where a long line was split: the piece starts at this character of line_start (0-based) and
    # ends before this character of line_end; unset means the start and the end of those lines.
    char_start: int | None = None
    char_end: int | None = None

    def to_dict(self) -> dict[str, int | float | str]:
        """Only the fields that are set, for JSON."""
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @staticmethod
    def from_dict(data: dict[str, int | float | str] | None) -> Locator:
        """Inverse of to_dict."""
        return Locator(**(data or {}))  # type: ignore[arg-type]

    def describe(self) -> str:
        """Short human text: 'p. 3', 'lines 10-42', '01:23'."""
        parts: list[str] = []
        if self.sheet is not None:
            parts.append(f"sheet {self.sheet}")
        if self.page is not None:
            parts.append(f"p. {self.page}")
        if self.line_start is not None:
            end = self.line_end if self.line_end is not None else self.line_start
            if self.char_start is None and self.char_end is None:
                parts.append(f"lines {self.line_start}-{end}")
            else:  # 1-based columns, as editors show them
                first = f"{self.line_start}:{(self.char_start or 0) + 1}"
                last = f"{end}:{self.char_end}" if self.char_end is not None else f"{end}:end"
                parts.append(f"line {first} to {last}")
        if self.timestamp is not None:
            t = int(self.timestamp)
            parts.append(
                f"{t // 3600:d}:{t // 60 % 60:02d}:{t % 60:02d}"
                if t >= 3600
                else f"{t // 60:02d}:{t % 60:02d}"
            )
        return ", ".join(parts)


@dataclass
class Piece:
    """One embeddable unit of a file: text, an image, or both, with its locator.

    `text` is what the keyword index and snippets see; `context` (file name and path) is
    prepended when the piece is embedded so every vector knows where it came from.
    `image` is a path to an image file or an in-memory PIL image (PDF page, video frame).
    """

    text: str = ""
    image: object | None = None  # PIL.Image.Image | str | None
    locator: Locator = field(default_factory=Locator)
    context: str = ""
    modality: Literal["text", "image"] = "text"


@dataclass(frozen=True)
class Hit:
    """A file in the search results, with its best piece."""

    path: str
    score: float
    kind: str
    locator: Locator
    snippet: str
    file_id: str
    piece_id: str
    scores: dict[str, float] = field(default_factory=dict)  # vector, keyword, name, rerank, date
    date: float | None = None  # epoch seconds: when a picture was taken, else when the file was modified
