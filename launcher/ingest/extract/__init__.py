"""Stage 3: a file becomes pieces, each with a locator, dispatched on the record's kind.

`extract` returns every piece of a file at once; `iter_extract` hands them out one by one, so a
500-page PDF is rendered page by page as the caller consumes it. Both raise ExtractError, with one
lowercase line saying why, for a broken, hostile or unreadable file; nothing else escapes for a bad
file. An empty file, or a file of kind "other" that is not text, has no pieces (it is still findable by
name); a file of kind "other" whose start reads as text is extracted as text.

The format modules (and their libraries: pypdfium2, PyAV, python-docx...) are imported on first use.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Generator, Iterator

from launcher.core.errors import first_line
from launcher.core.records import FileRecord, Piece
from launcher.ingest.extract.base import ExtractError, ExtractSettings, context_of

__all__ = ["ExtractError", "ExtractSettings", "context_of", "extract", "iter_extract"]

OTHER_TEXT_MAX_BYTES = 4 * 1024 * 1024  # files of unknown type larger than this are not sniffed
Extractor = Callable[[FileRecord, ExtractSettings], Iterator[Piece]]
# kind -> (module in this package, function)
_EXTRACTORS: dict[str, tuple[str, str]] = {
    "text": ("text", "extract_text"),
    "code": ("text", "extract_text"),
    "markdown": ("text", "extract_text"),
    "html": ("html", "extract_html"),
    "pdf": ("pdf", "extract_pdf"),
    "image": ("image", "extract_image"),
    "video": ("video", "extract_video"),
    "office": ("office", "extract_office"),
    "ebook": ("ebook", "extract_ebook"),
}


def _extractor(module_name: str, function_name: str, kind: str) -> Extractor:
    """The extraction function of a format module, imported on first use."""
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ImportError as exc:
        raise ExtractError(f"{kind} support not installed ({exc.name or exc})") from exc
    return getattr(module, function_name)  # type: ignore[no-any-return]


def _other_pieces(record: FileRecord, settings: ExtractSettings) -> Iterator[Piece]:
    """The pieces of a file of no known type, read the way _reader_of_other chooses (as text)."""
    reader = _reader_of_other(record)
    if reader is not None:
        text_record = FileRecord(record.path, record.size, record.mtime_ns, "text")
        yield from _extractor(*reader, "text")(text_record, settings)


def _reader_of_other(record: FileRecord) -> tuple[str, str] | None:
    """How to read a file of no known type: as a manual page (`ls.1`, `open.2.gz`), as gzipped text
    (`changelog.Debian.gz`), as text when its start looks like text (README, a script, LICENSE), or
    not at all (None: findable by name only)."""
    from launcher.ingest.extract import man
    from launcher.ingest.extract.text import looks_like_text
    from launcher.ingest.scan import kind_of

    name = os.path.basename(record.path)
    gzipped = man.is_gzip_name(name)
    if gzipped:
        if kind_of(man.inner_name(name)) not in ("text", "code", "markdown", "other"):
            return None  # a gzipped PDF, picture or archive: by name only
    elif record.size > OTHER_TEXT_MAX_BYTES or not looks_like_text(record.path):
        return None
    if man.is_man_name(man.inner_name(name)) and man.troff_like(
        man.read_maybe_gzipped(record.path, man.SNIFF_BYTES)
    ):
        return ("man", "extract_man")
    return ("man", "extract_gzipped_text") if gzipped else ("text", "extract_text")


def extract(record: FileRecord, *, settings: ExtractSettings | None = None) -> list[Piece]:
    """All pieces of one file; ExtractError when it cannot be read."""
    return list(iter_extract(record, settings=settings))


def iter_extract(
    record: FileRecord, *, settings: ExtractSettings | None = None
) -> Generator[Piece, None, None]:
    """The pieces of one file, produced as they are consumed; may raise ExtractError part-way.

    Close the generator (or let it be collected) to release an open document early.
    """
    if record.size == 0:
        return
    if record.kind == "other":
        pieces = _other_pieces(record, settings or ExtractSettings())
    elif record.kind in _EXTRACTORS:
        pieces = _extractor(*_EXTRACTORS[record.kind], record.kind)(record, settings or ExtractSettings())
    else:
        raise ValueError(f"unknown kind {record.kind!r}")
    try:
        yield from pieces
    except (ExtractError, MemoryError):
        raise
    except FileNotFoundError as exc:
        raise ExtractError("file vanished before it could be read") from exc
    except PermissionError as exc:
        raise ExtractError("permission denied") from exc
    except OSError as exc:
        raise ExtractError(
            f"cannot read: {(exc.strerror or str(exc) or type(exc).__name__).lower()}"
        ) from exc
    except RecursionError as exc:
        raise ExtractError("too deeply nested to read") from exc
    except Exception as exc:
        # A library tripping over a hostile file in a way we did not foresee: still one line, and the
        # class name says where to look.
        detail = first_line(exc)
        raise ExtractError(f"unexpected {type(exc).__name__}" + (f": {detail}" if detail else "")) from exc
