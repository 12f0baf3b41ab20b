"""EPUB: the chapters in spine order, as text, chunked per chapter.

Read with zipfile and the standard library's XML and HTML parsers. Line locators count lines of the
extracted text across the whole book (the title line is line 1), so they keep increasing from one
chapter to the next; a chunk never spans two chapters.
"""

from __future__ import annotations

import posixpath
import zipfile
from collections.abc import Iterator
from urllib.parse import unquote
from xml.etree import ElementTree

from launcher.core.records import FileRecord, Piece
from launcher.ingest.extract.base import ExtractError, ExtractSettings, numbered, text_pieces
from launcher.ingest.extract.html import html_to_text, meta_charset
from launcher.ingest.extract.office import check_archive
from launcher.ingest.extract.text import decode

_HTML_TYPES = ("application/xhtml+xml", "text/html", "application/x-dtbook+xml")


def extract_ebook(record: FileRecord, settings: ExtractSettings) -> Iterator[Piece]:
    """Text pieces of an EPUB, chapter by chapter in reading order."""
    check_archive(record.path, settings, what="epub")
    with zipfile.ZipFile(record.path) as book:
        names = set(book.namelist())
        opf_path = _package_path(book, names)
        package = _parse_xml(book.read(opf_path), "package document")
        base = posixpath.dirname(opf_path)
        manifest: dict[str, tuple[str, str]] = {}
        for item in _children(package, "manifest", "item"):
            href = item.get("href")
            if item.get("id") and href:
                path = posixpath.normpath(posixpath.join(base, unquote(href)))
                manifest[item.get("id", "")] = (path, item.get("media-type", ""))
        spine = [
            manifest[ref.get("idref", "")]
            for ref in _children(package, "spine", "itemref")
            if ref.get("idref") in manifest
        ]
        chapters = [path for path, media in spine if media in _HTML_TYPES and path in names]
        if not chapters:
            raise ExtractError("corrupt epub, its spine lists no readable chapters")
        if _encrypted(book, names) & set(chapters):
            raise ExtractError("drm-protected epub, its chapters are encrypted")
        line = 1
        heading = _heading(package)
        if heading:
            yield from text_pieces(record, [(1, heading)], settings)
            line = 2
        budget = settings.max_text_bytes
        for chapter in chapters:
            raw = book.read(chapter)
            # A chapter's <title> is usually the book's title again: the heading line already has it.
            text = html_to_text(decode(raw, declared=meta_charset(raw)), title=False)
            lines = numbered(text, first=line)
            yield from text_pieces(record, lines, settings)
            line += len(lines)
            budget -= len(text)
            if budget <= 0:
                break  # a book past max_text_bytes of text: the rest is not indexed, like a long text file


def _package_path(book: zipfile.ZipFile, names: set[str]) -> str:
    """The OPF path named by META-INF/container.xml, or the first .opf in the archive."""
    if "META-INF/container.xml" in names:
        container = _parse_xml(book.read("META-INF/container.xml"), "container.xml")
        for element in container.iter():
            if _local(element.tag) == "rootfile" and element.get("full-path") in names:
                return element.get("full-path", "")
    fallback = sorted(n for n in names if n.lower().endswith(".opf"))
    if not fallback:
        raise ExtractError("corrupt epub, no package document (.opf) found")
    return fallback[0]


def _parse_xml(data: bytes, what: str) -> ElementTree.Element:
    # The standard library's expat refuses entity-expansion bombs (billion laughs) on its own.
    try:
        return ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise ExtractError(f"corrupt epub, its {what} is not valid xml") from exc


def _local(tag: str) -> str:
    """A tag without its namespace."""
    return tag.rsplit("}", 1)[-1]


def _children(root: ElementTree.Element, section: str, tag: str) -> list[ElementTree.Element]:
    """The `tag` elements inside the first `section` element, namespace-blind (EPUB 2 and 3 differ)."""
    for element in root.iter():
        if _local(element.tag) == section:
            return [child for child in element if _local(child.tag) == tag]
    return []


def _heading(package: ElementTree.Element) -> str:
    """'Title - Author' from the package metadata, or ''."""
    found: dict[str, str] = {}
    for element in package.iter():
        name = _local(element.tag)
        if name in ("title", "creator") and name not in found and (element.text or "").strip():
            found[name] = " ".join((element.text or "").split())
    return " - ".join(v for v in (found.get("title"), found.get("creator")) if v)


def _encrypted(book: zipfile.ZipFile, names: set[str]) -> set[str]:
    """Paths that META-INF/encryption.xml lists (fonts are often obfuscated; chapters mean DRM)."""
    if "META-INF/encryption.xml" not in names:
        return set()
    try:
        root = ElementTree.fromstring(book.read("META-INF/encryption.xml"))
    except ElementTree.ParseError:
        return set()
    return {
        posixpath.normpath(unquote(e.get("URI", "")))
        for e in root.iter()
        if _local(e.tag) == "CipherReference" and e.get("URI")
    }
