"""What every extractor shares: the settings, the error, the context header and text pieces."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from launcher.core.errors import LauncherError
from launcher.core.records import FileRecord, Locator, Piece
from launcher.ingest.extract.chunk import TokenBudget, approximate_budget, chunk_text, split_line


class ExtractError(LauncherError):
    """A file that cannot be turned into pieces; the message is one lowercase line saying why."""


@dataclass(frozen=True)
class ExtractSettings:
    """Limits and sampling choices for extraction; the defaults suit a laptop."""

    # How the model counts tokens and how many one piece may hold; the indexer sets it from the
    # model in use (None: a model-free estimate, for extraction outside an indexing run).
    budget: TokenBudget | None = field(default=None, compare=False)
    # Text beyond this is not read (logged). 32 MB holds a 12 MB single-line export or log whole (issue
    # 11); it bounds the memory of one file (the decoded text and its pieces, ~4x) in the watcher.
    max_text_bytes: int = 32 * 1024 * 1024
    max_image_pixels: int = 64_000_000  # decompression-bomb cap; --max-image-mp
    render_max_side: int = 1024  # longest side in pixels of rendered PDF pages and video frames
    pdf_render: bool = True  # also embed each PDF page as an image
    pdf_max_pages: int = 500  # pages beyond this are not read (logged)
    video_interval_s: float = 10.0  # one frame every this many seconds
    video_max_frames: int = 64  # longer videos get a wider interval instead of a cut-off tail
    max_archive_bytes: int = 512 * 1024 * 1024  # office/epub XML may not expand past this (zip bombs)
    # False: pieces without pixels (an image piece's `image` is None), for the read pass, which only
    # stores the pieces' text and places; the embed pass decodes each picture, page and frame once.
    decode_media: bool = True


def context_of(record: FileRecord) -> str:
    """The header every piece carries: the file name, then its full path."""
    return f"{os.path.basename(record.path)}\n{record.path}"


def picture_context(record: FileRecord, settings: ExtractSettings) -> str:
    """The header of a picture, page render or video frame (and of the name or description beside
    it): shortened, like a text piece's, when a very deep path would leave the picture too little
    room in the model's context (a text-only model gets a text piece's room for the name)."""
    context = context_of(record)
    budget = settings.budget
    if budget is None:
        return context
    return fit_context(context, budget, room=budget.image_tokens + 4 if budget.image_tokens else None)


def fit_context(context: str, budget: TokenBudget, room: int | None = None) -> str:
    """The context header, shortened when it would leave a piece too little room (a very deep path):
    `room` tokens (default: a text piece's, at least half its target).

    The file name stays; the folder path loses its middle, marked with an ellipsis.
    """
    if room is None:
        room = min(budget.target, budget.limit // 2)
    if budget.body_limit(context) >= room:
        return context
    name, _, path = context.partition("\n")
    folder = os.path.dirname(path)
    for short in [f"{name}\n{folder[: keep // 2]}…{folder[-keep // 2 :]}" for keep in (200, 100, 40)] + [
        name
    ]:
        if budget.body_limit(short) >= room:
            return short
    return split_first(name, budget, room)


TITLE_CHARS = 160


def with_title(context: str, title: str | None, budget: TokenBudget) -> str:
    """The context header with the document's title as its last line, when there is one and room
    for it (a piece keeps at least half its target)."""
    title = " ".join((title or "").split())[:TITLE_CHARS]
    if not title:
        return context
    longer = f"{context}\n{title}"
    return longer if budget.body_limit(longer) >= min(budget.target, budget.limit // 2) else context


def split_first(name: str, budget: TokenBudget, room: int) -> str:
    """A name so long that it alone crowds out the text: its first part that leaves `room` tokens."""
    spans = split_line(name, max(1, budget.limit // 4), budget.count)
    short = name[: spans[0][1]]
    return short if budget.body_limit(short) >= room else ""


def text_pieces(
    record: FileRecord,
    lines: Iterable[tuple[int, str]],
    settings: ExtractSettings,
    *,
    page: int | None = None,
    sheet: str | None = None,
    title: str | None = None,
) -> Iterator[Piece]:
    """Text pieces of numbered lines, measured in the model's tokens, each with its line range (and
    page or sheet if given; a character span where a line was split).

    A page (PDF page, slide) whose text fits one chunk gets the page alone as its locator. The
    document's title (an HTML <title>, a Markdown document's first heading) joins every piece's
    context header, so a piece deep in a page is embedded knowing what the page is about.
    """
    budget = settings.budget or approximate_budget()
    context = fit_context(context_of(record), budget)
    context = with_title(context, title, budget)
    chunks = list(chunk_text(lines, budget, context))
    whole_page = page is not None and len(chunks) == 1 and chunks[0].char_end is None
    for chunk in chunks:
        locator = (
            Locator(page=page)
            if whole_page
            else Locator(
                page=page,
                sheet=sheet,
                line_start=chunk.first_line,
                line_end=chunk.last_line,
                char_start=chunk.char_start,
                char_end=chunk.char_end,
            )
        )
        yield Piece(text=chunk.text, locator=locator, context=context, modality="text")


# Only the newlines editors count, so that line numbers match what an editor shows (str.splitlines
# would also split at form feeds and other separators).
_NEWLINE = re.compile(r"\r\n|\r|\n")


def numbered(text: str, first: int = 1) -> list[tuple[int, str]]:
    """The lines of `text` with 1-based numbers."""
    lines = _NEWLINE.split(text)
    if lines and lines[-1] == "":
        lines.pop()  # a final newline ends the last line; it does not start a new one
    return list(enumerate(lines, start=first))
