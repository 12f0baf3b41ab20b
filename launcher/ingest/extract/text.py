"""Plain text, code and Markdown: decode the bytes, then chunk along line boundaries with overlap."""

from __future__ import annotations

import codecs
import logging
import re
from collections.abc import Iterator

from launcher.core.records import FileRecord, Piece
from launcher.ingest.extract.base import ExtractError, ExtractSettings, numbered, text_pieces

log = logging.getLogger(__name__)

# UTF-32 first: its little-endian BOM starts with UTF-16's.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_SAMPLE = 64 * 1024  # bytes looked at to decide "binary or text"
# Control characters other than tab, newlines, form feed and escape (ANSI colours in logs).
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
_MAX_CONTROL_RATIO = 0.02
# Non-letters that Western European text uses; superscript digits and the like are left out, since
# they are what Polish or Czech letters turn into when misread as Windows-1252.
_WESTERN_SYMBOLS = frozenset("\u00a0€‚„…‘’“”•–—™«»°£§©®±·×÷¡¿¢¥µ½¼¾´¨ºª†‡‰‹›")


def extract_text(record: FileRecord, settings: ExtractSettings) -> Iterator[Piece]:
    """Chunks of a text, code or Markdown file, each with its 1-based line range."""
    text = decode(read_limited(record.path, settings.max_text_bytes))
    lines = numbered(text)
    yield from text_pieces(record, lines, settings, title=markdown_title(record.path, lines))


_MARKDOWN = (".md", ".markdown", ".mdown", ".mkd", ".rst")


def markdown_title(path: str, lines: list[tuple[int, str]]) -> str | None:
    """A Markdown document's first `# ` heading (or a reStructuredText title: a line underlined with
    `=`), looked for in its first 40 lines; None for other files."""
    if not path.lower().endswith(_MARKDOWN):
        return None
    head = [line for _, line in lines[:40]]
    for i, line in enumerate(head):
        if line.startswith("# "):
            return line[2:].strip("# ").strip() or None
        if i + 1 < len(head) and line.strip() and set(head[i + 1].strip()) == {"="}:
            return line.strip()
    return None


def looks_like_text(path: str) -> bool:
    """Whether a file of unknown type reads as text: its first 64 KiB decode without nul bytes or
    too many control characters (a multi-byte character cut at the sample's end is allowed)."""
    try:
        with open(path, "rb") as f:
            sample = f.read(_SAMPLE)
    except OSError:
        return False
    if b"\x00" in sample and _utf16_without_bom(sample[: len(sample) // 2 * 2]) is None:
        return False
    try:
        decode(sample)
    except ExtractError:
        return False
    except UnicodeDecodeError:
        return False
    return True


def read_limited(path: str, limit: int) -> bytes:
    """The file's bytes up to `limit`, cut back to the last whole line when the file is longer."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) <= limit:
        return data
    log.info("%s: only the first %d bytes are indexed (max_text_bytes)", path, limit)
    data = data[:limit]
    newline = data.rfind(b"\n")
    # Cutting at a newline keeps multi-byte characters whole in every ASCII-compatible encoding.
    return data[: newline + 1] if newline > 0 else data


def decode(data: bytes, declared: str | None = None) -> str:
    """Bytes to text: BOM, then strict UTF-8, then `declared` (an HTML meta charset), then a guess.

    Raises ExtractError("binary file ...") for data that is not text.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            # A BOM is authoritative; a stray bad sequence after it is not worth losing the file.
            return _check_printable(data[len(bom) :].decode(encoding, errors="replace"))
    sample = data[:_SAMPLE]
    if b"\x00" in sample:
        utf16 = _utf16_without_bom(sample)
        if utf16 is None:
            raise ExtractError("binary file, not text (it contains nul bytes)")
        return _check_printable(data.decode(utf16, errors="replace"))
    try:
        return _check_printable(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    if declared:
        try:
            return _check_printable(data.decode(declared))
        except (LookupError, UnicodeDecodeError):
            pass  # a wrong or unknown declaration: fall through to guessing
    # Two common legacy encodings that charset-normalizer tends to mistake for their neighbours
    # (short French read as Baltic, Japanese read as Korean) get a plausibility check of their own.
    likely = _as_western(data) or _as_japanese(data)
    if likely is not None:
        return _check_printable(likely)
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise ExtractError("binary file, not text (no text encoding fits its bytes)")
    return _check_printable(str(best))


def _as_western(data: bytes) -> str | None:
    """The text as Windows-1252 when it reads like Western European text, else None.

    charset-normalizer often calls short French or German text Baltic or Central European: the
    bytes decode without error in all of them. Windows-1252 (a superset of Latin-1's printable
    characters) is by far the most common legacy encoding, so it wins when its reading is plausible:
    every non-ASCII character a letter or common punctuation, and accented letters a minority (a
    Cyrillic or Greek file read as 1252 is nearly all accented letters).
    """
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        return None  # one of the five bytes 1252 leaves undefined: not 1252
    letters = accented = 0
    for char in text[:_SAMPLE]:
        if char.isascii():
            letters += char.isalpha()
        elif char.isalpha():
            letters += 1
            accented += 1
        elif char not in _WESTERN_SYMBOLS:
            return None
    return text if accented <= 0.3 * letters else None


def _as_japanese(data: bytes) -> str | None:
    """The text as Shift_JIS (Windows' cp932) when it decodes cleanly and reads as Japanese, else None.

    Japanese prose is full of kana; Korean or Chinese bytes forced through cp932 come out as kanji
    and half-width katakana with hardly any full-width kana.
    """
    try:
        text = data.decode("cp932")
    except UnicodeDecodeError:
        return None
    sample = text[:_SAMPLE]
    wide = sum(1 for char in sample if not char.isascii())
    kana = sum(1 for char in sample if "\u3040" <= char <= "\u30ff")
    return text if wide and kana >= 0.2 * wide else None


def _utf16_without_bom(sample: bytes) -> str | None:
    """'utf-16-le' or 'utf-16-be' when the NUL bytes sit in every other position, as in ASCII-heavy UTF-16."""
    even, odd = sample[0::2], sample[1::2]
    if len(sample) < 4 or len(sample) % 2:
        return None
    if odd.count(0) > 0.9 * len(odd) and even.count(0) == 0:
        return "utf-16-le"
    if even.count(0) > 0.9 * len(even) and odd.count(0) == 0:
        return "utf-16-be"
    return None


def _check_printable(text: str) -> str:
    """The text itself, or ExtractError when too much of its start is control characters."""
    sample = text[:_SAMPLE]
    if sample and len(_CONTROL.findall(sample)) > _MAX_CONTROL_RATIO * len(sample):
        raise ExtractError("binary file, not text (too many control characters)")
    return text
