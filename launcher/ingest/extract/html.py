"""HTML: the visible text (title, headings, paragraphs, lists, tables), without markup, scripts or styles.

Line locators of HTML pieces count lines of the extracted text, not of the HTML source: the source's
lines are mostly markup, and a person opening the file in a browser sees the text anyway.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser

from launcher.core.records import FileRecord, Piece
from launcher.ingest.extract.base import ExtractSettings, numbered, text_pieces
from launcher.ingest.extract.text import decode, read_limited

# Elements whose content is never shown as text.
_HIDDEN = frozenset({"script", "style", "noscript", "template", "svg", "math", "canvas", "iframe", "object"})
# Elements that start a new line.
_BLOCK_NAMES = """
    address article aside blockquote body br caption dd details dialog div dl dt fieldset figcaption
    figure footer form h1 h2 h3 h4 h5 h6 header hgroup hr html li main nav ol p pre section summary
    table tbody thead tfoot tr ul legend option
"""
_BLOCK = frozenset(_BLOCK_NAMES.split())
_CELL = frozenset({"td", "th"})
# Navigation (<nav>, or an element whose ARIA role is navigation or a menu): the table of contents that
# mdBook, Sphinx, MkDocs and Javadoc repeat on every page. Left in, it made every page of a book
# match every query a little (the Rust book's 130-line sidebar was the first piece of each page).
# A page with less than this much text outside its navigation (a contents page) keeps it.
NAV_FALLBACK_CHARS = 400
_NAV_ROLES = frozenset({"navigation", "menu", "menubar"})
_SPACES = re.compile(r"[ \t\r\n\f\v]+")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)


def extract_html(record: FileRecord, settings: ExtractSettings) -> Iterator[Piece]:
    """Chunks of an HTML page's visible text."""
    data = read_limited(record.path, settings.max_text_bytes)
    parser = _parse(decode(data, declared=meta_charset(data)))
    yield from text_pieces(record, numbered(parser.text()), settings, title=parser.title_text())


def meta_charset(data: bytes) -> str | None:
    """The charset a page declares in a <meta> tag near its start, if any."""
    match = _META_CHARSET.search(data[:4096])
    return match.group(1).decode("ascii") if match else None


def html_to_text(markup: str, *, title: bool = True) -> str:
    """The visible text of an HTML document, one block per line, the <title> first unless `title` is False."""
    return _parse(markup).text(title=title)


def _parse(markup: str) -> _TextParser:
    parser = _TextParser()
    parser.feed(markup)
    parser.close()
    return parser


class _TextParser(HTMLParser):
    """Collects visible text; blocks become lines, whitespace collapses except inside <pre>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.nav_lines: set[int] = set()  # positions in self.lines of navigation text
        self.nav: list[str | int] = []  # [tag that opened the navigation, its open count]
        self.current: list[str] = []
        self.title: list[str] = []
        self.in_title = False
        self.hidden_depth = 0
        self.pre_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.nav and tag == self.nav[0]:
            self.nav[1] = int(self.nav[1]) + 1
        elif not self.nav and (tag == "nav" or dict(attrs).get("role") in _NAV_ROLES):
            self._break()
            self.nav = [tag, 1]
        if tag in _HIDDEN:
            self.hidden_depth += 1
        elif tag == "title":
            self.in_title = True
        elif tag in _BLOCK:
            self._break()
            if tag == "pre":
                self.pre_depth += 1
        elif tag in _CELL and self.current:
            self.current.append("\t")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <br/>, <hr/>, <img/>: self-closing tags never open a hidden or <pre> region.
        if tag in _BLOCK:
            self._break()

    def handle_endtag(self, tag: str) -> None:
        if self.nav and tag == self.nav[0]:
            self.nav[1] = int(self.nav[1]) - 1
            if self.nav[1] == 0:
                self._break()
                self.nav = []
        if tag in _HIDDEN:
            self.hidden_depth = max(0, self.hidden_depth - 1)
        elif tag == "title":
            self.in_title = False
        elif tag in _BLOCK:
            self._break()
            if tag == "pre":
                self.pre_depth = max(0, self.pre_depth - 1)

    def handle_data(self, data: str) -> None:
        if self.hidden_depth:
            return
        if self.in_title:
            self.title.append(data)
        elif self.pre_depth:
            # Preformatted text keeps its own line breaks.
            first, *rest = data.split("\n")
            self.current.append(first)
            for line in rest:
                self._break()
                self.current.append(line)
        else:
            self.current.append(_SPACES.sub(" ", data))

    def _break(self) -> None:
        line = "".join(self.current)
        self.current = []
        line = line.rstrip() if self.pre_depth else line.strip()
        if line.strip():
            if self.nav:
                self.nav_lines.add(len(self.lines))
            self.lines.append(line)

    def title_text(self) -> str:
        """The <title>, whitespace collapsed."""
        return _SPACES.sub(" ", "".join(self.title)).strip()

    def text(self, title: bool = True) -> str:
        """The collected text, title first; navigation left out unless the page is mostly that."""
        self._break()
        heading = self.title_text() if title else ""
        lines = self.lines
        if self.nav_lines:
            content = [line for i, line in enumerate(lines) if i not in self.nav_lines]
            if sum(len(line) for line in content) >= NAV_FALLBACK_CHARS:
                lines = content
        return "\n".join(([heading] if heading else []) + lines)
