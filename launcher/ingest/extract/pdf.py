"""PDF with pypdfium2: per page, text pieces when the page has text and the page rendered as an image.

Memory: a 500-page PDF must not hold 500 decoded page bitmaps. Each rendered page is bounded to
`render_max_side` pixels, compressed to PNG in memory and handed out as a lazily-decoded PIL image
(`Image.open` on the PNG bytes: size and mode are known at once, pixels are decoded on first use).
Until the engine touches it a page costs its PNG size (tens of KB for text pages), and
`iter_extract` renders pages only as the caller asks for them.

PDFium is not thread-safe, not even across documents, so every call into it holds one lock.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image

from launcher.core.records import FileRecord, Locator, Piece
from launcher.ingest.extract.base import ExtractError, ExtractSettings, numbered, picture_context, text_pieces

log = logging.getLogger(__name__)

_PDFIUM_LOCK = threading.Lock()
_SNIPPET_CHARS = 300  # page text kept on a page's image piece, for snippets and keyword search
_LOAD_ERRORS = {
    pdfium_c.FPDF_ERR_FILE: "cannot open the file",
    pdfium_c.FPDF_ERR_FORMAT: "not a pdf or damaged beyond repair",
    pdfium_c.FPDF_ERR_PAGE: "page tree damaged",
}


def extract_pdf(record: FileRecord, settings: ExtractSettings) -> Iterator[Piece]:
    """Per page: its text chunks (page locator) and, with `pdf_render`, the page as an image piece."""
    with _PDFIUM_LOCK:
        doc = _open(record.path)
    try:
        with _PDFIUM_LOCK:
            n_pages = len(doc)
        if n_pages > settings.pdf_max_pages:
            log.info(
                "%s: only the first %d of %d pages are indexed", record.path, settings.pdf_max_pages, n_pages
            )
        context = picture_context(record, settings)
        for number in range(1, min(n_pages, settings.pdf_max_pages) + 1):
            with _PDFIUM_LOCK:
                text, rendered = _read_page(doc, number, settings)
            if text.strip():
                yield from text_pieces(record, numbered(text), settings, page=number)
            if rendered is not None:
                # Outside the lock: other threads may use PDFium meanwhile.
                image = _lazy_png(rendered) if isinstance(rendered, Image.Image) else None
                snippet = " ".join(text.split())[:_SNIPPET_CHARS]
                yield Piece(
                    text=snippet, image=image, locator=Locator(page=number), context=context, modality="image"
                )
    finally:
        with _PDFIUM_LOCK:
            doc.close()


def _open(path: str) -> pdfium.PdfDocument:
    """The document, or ExtractError naming why PDFium refused it."""
    try:
        return pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        # pypdfium2 5 puts PDFium's load error on the exception; with 4.x, ask PDFium for it.
        code = getattr(exc, "err_code", None)
        if code is None:
            code = pdfium_c.FPDF_GetLastError()
        if code == pdfium_c.FPDF_ERR_PASSWORD:
            raise ExtractError("encrypted pdf, cannot read it without the password") from exc
        if code == pdfium_c.FPDF_ERR_SECURITY:
            raise ExtractError("encrypted pdf with an unsupported security handler") from exc
        reason = _LOAD_ERRORS.get(code, "unknown error")
        raise ExtractError(f"corrupt pdf, pdfium cannot parse it ({reason})") from exc


def _read_page(
    doc: pdfium.PdfDocument, number: int, settings: ExtractSettings
) -> tuple[str, Image.Image | bool | None]:
    """One page's text and, when rendering, its bitmap (True instead when pixels are not wanted now,
    `decode_media` off, and the page would render); every PDFium handle closed before return."""
    try:
        page = doc[number - 1]
    except pdfium.PdfiumError as exc:
        raise ExtractError(f"corrupt pdf, page {number} cannot be loaded") from exc
    try:
        textpage = page.get_textpage()
        try:
            # The whole page's text; pypdfium2 4.x steers get_text_range() here too (a PDFium counting bug).
            text = textpage.get_text_bounded()
        finally:
            textpage.close()
        # PDFium ends lines with \r\n and marks soft hyphens and unknown glyphs with control characters.
        text = text.replace("\r\n", "\n").replace("\x02", "").replace("\ufffe", "").replace("\x00", "")
        image: Image.Image | bool | None = None
        if settings.pdf_render:
            image = _render(page, settings) if settings.decode_media else _renders(page)
    finally:
        page.close()
    return text, image


def _renders(page: pdfium.PdfPage) -> bool | None:
    """True when _render would draw the page (its box is not degenerate), else None."""
    return True if max(page.get_size()) > 0 else None


def _render(page: pdfium.PdfPage, settings: ExtractSettings) -> Image.Image | None:
    """The page at `render_max_side` pixels on its longest side, as RGB."""
    if not _renders(page):
        return None  # a degenerate page box: nothing to draw
    longest = max(page.get_size())
    bitmap = page.render(scale=settings.render_max_side / longest, may_draw_forms=False)
    try:
        # to_pil() may share the bitmap's memory; convert() copies it before the bitmap is freed.
        return bitmap.to_pil().convert("RGB")
    finally:
        bitmap.close()


def _lazy_png(image: Image.Image) -> Image.Image:
    """The image compressed to PNG in memory and reopened: pixels are decoded again on first use."""
    buffer = io.BytesIO()
    # Level 1: pages are mostly flat colour, so fast compression already shrinks them ~20x.
    image.save(buffer, format="PNG", compress_level=1)
    buffer.seek(0)
    return Image.open(buffer)
