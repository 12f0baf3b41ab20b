"""What every extractor shares: the settings, the error, the context header and the line chunker."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from launcher.errors import LauncherError
from launcher.records import FileRecord, Locator, Piece


class ExtractError(LauncherError):
    """A file that cannot be turned into pieces; the message is one lowercase line saying why."""


@dataclass(frozen=True)
class ExtractSettings:
    """Limits and sampling choices for extraction; the defaults suit a laptop."""

    chunk_lines: int = 40  # lines per text chunk
    chunk_overlap_lines: int = 8  # lines repeated at the start of the next chunk, for context
    max_chunk_chars: int = 2000  # a chunk ends early at this size; longer lines are split
    max_text_bytes: int = 8 * 1024 * 1024  # text beyond this is not read (logged)
    max_image_pixels: int = 64_000_000  # decompression-bomb cap; --max-image-mp
    render_max_side: int = 1024  # longest side in pixels of rendered PDF pages and video frames
    pdf_render: bool = True  # also embed each PDF page as an image
    pdf_max_pages: int = 500  # pages beyond this are not read (logged)
    video_interval_s: float = 10.0  # one frame every this many seconds
    video_max_frames: int = 64  # longer videos get a wider interval instead of a cut-off tail
    max_archive_bytes: int = 512 * 1024 * 1024  # office/epub XML may not expand past this (zip bombs)


def context_of(record: FileRecord) -> str:
    """The header every piece carries: the file name, then its full path."""
    return f"{os.path.basename(record.path)}\n{record.path}"


def split_long(line: str, max_chars: int) -> list[str]:
    """A line cut into parts of at most `max_chars`, preferring to cut at a space."""
    parts: list[str] = []
    max_chars = max(1, max_chars)  # a zero limit would never finish
    while len(line) > max_chars:
        cut = line.rfind(" ", max_chars // 2, max_chars)
        cut = cut + 1 if cut > 0 else max_chars
        parts.append(line[:cut])
        line = line[cut:]
    parts.append(line)
    return parts


def chunk_lines(
    lines: Iterable[tuple[int, str]],
    *,
    max_lines: int,
    overlap: int,
    max_chars: int,
) -> Iterator[tuple[int, int, str]]:
    """Group numbered lines into (first line, last line, text) chunks with `overlap` lines repeated.

    A chunk ends at `max_lines` lines or `max_chars` characters, whichever comes first. A line longer
    than `max_chars` is split into parts that keep its line number. Chunks with no visible text are
    dropped. Line numbers may have gaps (blank spreadsheet rows), so they are carried, not counted.
    """
    max_lines, max_chars = max(1, max_lines), max(1, max_chars)  # zero limits would never finish
    units: list[tuple[int, str]] = []
    for number, line in lines:
        units.extend((number, part) for part in split_long(line, max_chars))
    overlap = max(0, min(overlap, max_lines - 1))
    start = 0
    while start < len(units):
        end, size = start, 0
        while end < len(units) and end - start < max_lines:
            # +1 for the newline that joins lines; always take at least one unit.
            if end > start and size + len(units[end][1]) + 1 > max_chars:
                break
            size += len(units[end][1]) + 1
            end += 1
        text = "\n".join(part for _, part in units[start:end])
        if text.strip():
            yield units[start][0], units[end - 1][0], text
        if end >= len(units):
            break
        # Step back by the overlap, but by at most a quarter of a short chunk (cut early by max_chars)
        # so that chunks never become near-copies of each other.
        start = end - min(overlap, (end - start) // 4)


def text_pieces(
    record: FileRecord,
    lines: Iterable[tuple[int, str]],
    settings: ExtractSettings,
    *,
    page: int | None = None,
    sheet: str | None = None,
    max_lines: int | None = None,
) -> Iterator[Piece]:
    """Chunked text pieces of numbered lines, each with its line range (and page or sheet if given).

    A page (PDF page, slide) whose text fits one chunk gets the page alone as its locator.
    `max_lines` overrides settings.chunk_lines (PDF pages chunk by size only: their lines are short).
    """
    context = context_of(record)
    chunks = list(
        chunk_lines(
            lines,
            max_lines=max_lines or settings.chunk_lines,
            overlap=settings.chunk_overlap_lines,
            max_chars=settings.max_chunk_chars,
        )
    )
    whole_page = page is not None and len(chunks) == 1
    for first, last, text in chunks:
        locator = (
            Locator(page=page)
            if whole_page
            else Locator(page=page, sheet=sheet, line_start=first, line_end=last)
        )
        yield Piece(text=text, locator=locator, context=context, modality="text")


# Only the newlines editors count, so that line numbers match what an editor shows (str.splitlines
# would also split at form feeds and other separators).
_NEWLINE = re.compile(r"\r\n|\r|\n")


def numbered(text: str, first: int = 1) -> list[tuple[int, str]]:
    """The lines of `text` with 1-based numbers."""
    lines = _NEWLINE.split(text)
    if lines and lines[-1] == "":
        lines.pop()  # a final newline ends the last line; it does not start a new one
    return list(enumerate(lines, start=first))
