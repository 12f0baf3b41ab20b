"""Stage 3, extract: real files of every kind, and broken ones, made by the tests and read for real."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image, ImageDraw

from launcher.core.errors import LauncherError
from launcher.core.records import FileRecord, Locator, Piece
from launcher.ingest.extract import ExtractError, ExtractSettings, extract, iter_extract
from launcher.ingest.extract.chunk import TokenBudget, approximate_budget, chunk_text
from launcher.ingest.extract.video import sample_times
from launcher.ingest.scan import kind_of

SENTENCE = "The quarterly invoice for the lighthouse keeper was paid on time."


def record(path: Path | str) -> FileRecord:
    """A FileRecord for a file on disk, as the scan would make it."""
    st = os.stat(path)
    return FileRecord(path=str(path), size=st.st_size, mtime_ns=st.st_mtime_ns, kind=kind_of(path))


def run(path: Path | str, **settings: object) -> list[Piece]:
    """extract() on a file with the given settings."""
    return extract(record(path), settings=ExtractSettings(**settings))  # type: ignore[arg-type]


def all_text(pieces: list[Piece]) -> str:
    return "\n".join(p.text for p in pieces)


def image_of(piece: Piece) -> Image.Image:
    """The piece's image, which must be an in-memory PIL image."""
    assert isinstance(piece.image, Image.Image)
    return piece.image


def pixel(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    """The colour at xy as a tuple of channels."""
    value = image.getpixel(xy)
    assert isinstance(value, tuple)
    return value


# ---------------------------------------------------------------------------------------------------
# Text, code, Markdown


def words_budget(target: int, overlap: int = 0, limit: int = 10_000) -> TokenBudget:
    """A model-free budget that counts whitespace-separated words (the real models' own budgets are
    tested with their tokenizers in test_chunk.py)."""
    return TokenBudget(
        count=lambda t: len(t.split()), overhead=lambda ctx: 0, limit=limit, target=target, overlap=overlap
    )


def test_text_chunks_along_lines_with_overlap(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("".join(f"line {i}\n" for i in range(1, 101)), encoding="utf-8")
    pieces = run(path, budget=words_budget(80, overlap=16))  # 2 words a line: 40 lines, 8 repeated
    assert [(p.locator.line_start, p.locator.line_end) for p in pieces] == [(1, 40), (33, 72), (65, 100)]
    assert pieces[0].text.splitlines()[0] == "line 1"
    assert pieces[1].text.splitlines()[0] == "line 33"
    assert pieces[2].text.splitlines()[-1] == "line 100"
    assert all(p.modality == "text" and p.image is None for p in pieces)
    assert pieces[0].context == f"notes.txt\n{path}"
    assert pieces[0].locator.describe() == "lines 1-40"


def located(lines: list[str], p: Piece) -> str:
    """The text a piece's locator points at, cut from the file's lines."""
    loc = p.locator
    assert loc.line_start is not None and loc.line_end is not None
    seg = lines[loc.line_start - 1 : loc.line_end]
    if len(seg) == 1:
        return seg[0][loc.char_start or 0 : loc.char_end]
    return "\n".join([seg[0][loc.char_start or 0 :], *seg[1:-1], seg[-1][: loc.char_end]])


def test_long_lines_are_split_at_words_with_exact_character_spans(tmp_path: Path) -> None:
    path = tmp_path / "minified.json"
    long_line = " ".join(f"w{i}" for i in range(1000))
    path.write_text('{"a": 1}\n' + long_line + "\nlast\n", encoding="utf-8")
    pieces = run(path, budget=words_budget(100))
    assert all(len(p.text.split()) <= 100 for p in pieces)
    lines = path.read_text(encoding="utf-8").split("\n")
    for p in pieces:  # every locator points at exactly the piece's text
        assert p.text == located(lines, p)
    words = [w for p in pieces for w in p.text.split()]
    assert set(words) >= set(long_line.split()) | {"last"}
    assert pieces[0].locator.line_start == 1 and pieces[-1].locator.line_end == 3
    split = [p for p in pieces if p.locator.char_end is not None]
    assert split and split[0].locator.describe().startswith("line 1:1 to 2:")


def test_a_word_longer_than_a_piece_is_split_between_characters(tmp_path: Path) -> None:
    path = tmp_path / "blob.txt"
    blob = "".join(chr(0x41 + i % 26) for i in range(10_000))  # no space anywhere
    path.write_text(blob, encoding="utf-8")
    pieces = run(path, budget=approximate_budget(target=100, limit=512))
    assert "".join(p.text for p in pieces) == blob  # every character, once, in order
    assert all(len(p.text) <= 400 for p in pieces)


def test_chunker_covers_every_line_and_always_advances() -> None:
    rng = np.random.default_rng(7)
    lines = [(n, " ".join(["x"] * int(rng.integers(0, 150)))) for n in range(1, 400)]
    chunks = list(chunk_text(lines, words_budget(200, overlap=30), ""))
    covered = {n for c in chunks for n in range(c.first_line, c.last_line + 1)}
    assert {n for n, text in lines if text} <= covered
    starts = [(c.first_line, c.char_start or 0) for c in chunks]
    assert starts == sorted(set(starts))  # strictly increasing: no chunk repeats another
    assert all(len(c.text.split()) <= 200 for c in chunks)
    for previous, chunk in zip(chunks, chunks[1:], strict=False):
        assert chunk.last_line >= previous.last_line


@pytest.mark.parametrize(
    ("encoding", "sentence", "bom"),
    [
        ("utf-8", "Grüße aus Köln, naïve café, 東京 " + SENTENCE, b""),
        ("utf-8", "With a BOM: " + SENTENCE, b"\xef\xbb\xbf"),
        ("utf-16-le", "Ünïcödé in UTF-16 with BOM: " + SENTENCE, b"\xff\xfe"),
        ("utf-16-be", "Big-endian UTF-16: " + SENTENCE, b"\xfe\xff"),
        ("latin-1", "Le garçon a mangé une crêpe à la crème près de la forêt, déjà très tôt.", b""),
        ("cp1252", "“Smart quotes” cost 5 € – and the café’s naïve façade… was ‘great’.", b""),
        (
            "shift_jis",
            "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。何でも薄暗いじめじめした所で泣いていた事だけは記憶している。",
            b"",
        ),
    ],
)
def test_text_encodings(tmp_path: Path, encoding: str, sentence: str, bom: bytes) -> None:
    body = "\n".join([sentence] * 6) + "\n"
    path = tmp_path / f"{encoding}.txt"
    path.write_bytes(bom + body.encode(encoding))
    pieces = run(path)
    assert sentence in pieces[0].text
    assert pieces[0].locator == Locator(line_start=1, line_end=6)
    assert "\ufeff" not in pieces[0].text


def test_utf16_without_bom(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes("name,amount\nlighthouse,42\n".encode("utf-16-le"))
    assert run(path)[0].text == "name,amount\nlighthouse,42"


def test_code_and_markdown_are_text_with_line_numbers(tmp_path: Path) -> None:
    code = tmp_path / "billing.py"
    code.write_text(
        "import os\n\n\ndef pay_invoice(amount: int) -> None:\n    print(amount)\n", encoding="utf-8"
    )
    (piece,) = run(code)
    assert "def pay_invoice(amount: int) -> None:" in piece.text
    assert piece.locator == Locator(line_start=1, line_end=5)
    md = tmp_path / "README.md"
    md.write_text("# Lighthouse\n\nSome *emphasis* and a [link](https://example.org).\n", encoding="utf-8")
    (piece,) = run(md)
    assert piece.text.startswith("# Lighthouse")  # Markdown is text: kept as written
    assert "[link](https://example.org)" in piece.text


def test_line_numbers_count_crlf_and_cr_like_an_editor(tmp_path: Path) -> None:
    path = tmp_path / "dos.txt"
    path.write_bytes(b"one\r\ntwo\rthree\x0cstill three\nfour\n")
    pieces = run(path, budget=words_budget(4))
    assert [(p.locator.line_start, p.locator.line_end, p.text) for p in pieces] == [
        (1, 2, "one\ntwo"),
        (3, 4, "three\x0cstill three\nfour"),
    ]


def test_text_is_read_up_to_max_text_bytes(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    path.write_text("".join(f"entry {i:05d}\n" for i in range(10_000)), encoding="utf-8")
    pieces = run(path, max_text_bytes=1200)
    text = all_text(pieces)
    assert "entry 00000" in text
    assert "entry 00099" in text  # 12 bytes a line: 100 whole lines fit
    assert "entry 00100" not in text


def test_blank_and_empty_files_have_no_pieces(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    blank = tmp_path / "blank.md"
    blank.write_text("\n   \n\t\n", encoding="utf-8")
    assert run(empty) == []
    assert run(blank) == []
    for name in ("empty.png", "empty.pdf", "empty.mp4", "empty.docx"):
        (tmp_path / name).write_bytes(b"")
        assert run(tmp_path / name) == []  # nothing to read is not an error
    other = tmp_path / "archive.zip"
    other.write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    assert run(other) == []  # kind "other": findable by name only


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8,
            "binary file, not text (it contains nul bytes)",
        ),
        (bytes(range(1, 32)) * 50, "binary file, not text (too many control characters)"),
    ],
)
def test_binary_file_named_txt(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "not-really.txt"
    path.write_bytes(content)
    with pytest.raises(ExtractError) as info:
        run(path)
    assert str(info.value) == reason
    assert isinstance(info.value, LauncherError)


# ---------------------------------------------------------------------------------------------------
# HTML and EPUB

PAGE = """<!DOCTYPE html>
<html><head>
<meta charset="utf-8"><title>Lighthouse   Accounts</title>
<style>body { color: red; } .hidden-css-marker {}</style>
<script>var trackingMarker = "do not index"; if (a < b) { run(); }</script>
</head>
<body>
<h1>Annual &amp; quarterly report</h1>
<p>First paragraph, with <b>bold</b> and <a href="/x">a link</a>.</p>
<p>{sentence}</p>
<ul><li>one item</li><li>two item</li></ul>
<table><tr><th>Year</th><th>Total</th></tr><tr><td>2023</td><td>1,200</td></tr></table>
<pre>  keep   spaced
    code</pre>
<noscript>enable javascript</noscript>
<template><p>template text</p></template>
</body></html>
"""


def test_html_visible_text_only(tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    path.write_text(PAGE.replace("{sentence}", SENTENCE), encoding="utf-8")
    pieces = run(path)
    text = all_text(pieces)
    lines = text.splitlines()
    assert lines[0] == "Lighthouse Accounts"  # the title comes first
    assert lines[1] == "Annual & quarterly report"
    assert "First paragraph, with bold and a link." in lines
    assert SENTENCE in lines
    assert "one item" in lines and "two item" in lines
    assert "Year\tTotal" in lines and "2023\t1,200" in lines
    assert "  keep   spaced" in lines and "    code" in lines
    for hidden in (
        "trackingMarker",
        "hidden-css-marker",
        "enable javascript",
        "template text",
        "<p>",
        "&amp;",
    ):
        assert hidden not in text
    # Line locators count lines of the extracted text.
    assert pieces[0].locator.line_start == 1
    assert pieces[-1].locator.line_end == len(lines)


def test_html_navigation_left_out_unless_it_is_the_page(tmp_path: Path) -> None:
    # A real book page (mdBook, as in Debian's rust-doc): the sidebar lists every chapter.
    chapters = "".join(f'<li><a href="ch{i}.html">{i}. Chapter about topic {i}</a></li>' for i in range(80))
    body = " ".join(["Closures capture values from the scope in which they are defined."] * 12)
    page = tmp_path / "closures.html"
    page.write_text(
        f"<html><head><title>Closures</title></head><body>"
        f'<nav id="sidebar" aria-label="Table of contents"><ol>{chapters}</ol></nav>'
        f'<div class="menu-bar"><ul role="menu"><li role="none">Light (default)</li></ul></div>'
        f"<main><h1>Closures</h1><p>{body}</p>"
        f'<div role="navigation"><nav><a href="prev.html">Previous</a></nav><a>Next</a></div></main>'
        f"<p>after the navigation</p></body></html>",
        encoding="utf-8",
    )
    text = all_text(run(page))
    assert "Closures capture values" in text and "after the navigation" in text
    for chrome in ("Chapter about topic", "Light (default)", "Previous", "Next"):
        assert chrome not in text
    # A contents page that is nothing but navigation keeps it: it is what the page says.
    contents = tmp_path / "index.html"
    contents.write_text(f"<html><body><h1>Contents</h1><nav><ol>{chapters}</ol></nav></body></html>")
    assert "79. Chapter about topic 79" in all_text(run(contents))


def test_html_declared_charset(tmp_path: Path) -> None:
    path = tmp_path / "old.htm"
    html = '<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1252"></head>'
    html += "<body><p>Caf\u00e9 \u201cquoted\u201d \u20ac5</p></body></html>"
    path.write_bytes(html.encode("cp1252"))
    assert "Café “quoted” €5" in all_text(run(path))


def make_epub(path: Path, chapters: dict[str, str], spine: list[str], encrypted: Sequence[str] = ()) -> Path:
    """A minimal EPUB 3: container.xml, an OPF with manifest and spine, and XHTML chapters."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        z.writestr(
            "META-INF/container.xml",
            '<?xml version="1.0"?>'
            '<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
            '<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
            "</rootfiles></container>",
        )
        items = "".join(
            f'<item id="{cid}" href="text/{cid}.xhtml" media-type="application/xhtml+xml"/>'
            for cid in chapters
        )
        refs = "".join(f'<itemref idref="{cid}"/>' for cid in spine)
        z.writestr(
            "OEBPS/content.opf",
            '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
            '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>The Keeper</dc:title>'
            "<dc:creator>A. Writer</dc:creator></metadata>"
            f'<manifest>{items}<item id="css" href="style.css" media-type="text/css"/></manifest>'
            f"<spine>{refs}</spine></package>",
        )
        z.writestr("OEBPS/style.css", "p { margin: 0 }")
        for cid, body in chapters.items():
            z.writestr(
                f"OEBPS/text/{cid}.xhtml",
                '<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml">'
                f"<head><title>{cid}</title><script>hiddenScript()</script></head><body>{body}</body></html>",
            )
        if encrypted:
            refs = "".join(
                '<EncryptedData xmlns="http://www.w3.org/2001/04/xmlenc#"><CipherData>'
                f'<CipherReference URI="OEBPS/text/{cid}.xhtml"/></CipherData></EncryptedData>'
                for cid in encrypted
            )
            z.writestr(
                "META-INF/encryption.xml",
                f'<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container">{refs}</encryption>',
            )
    return path


def test_epub_in_spine_order(tmp_path: Path) -> None:
    # The manifest lists the epilogue first; the spine puts it last.
    path = make_epub(
        tmp_path / "book.epub",
        {
            "epilogue": "<h1>Epilogue</h1><p>The lamp went dark at last.</p>",
            "ch1": f"<h1>Chapter One</h1><p>{SENTENCE}</p>",
            "ch2": "<h1>Chapter Two</h1>" + "".join(f"<p>Storm paragraph {i}.</p>" for i in range(60)),
        },
        spine=["ch1", "ch2", "epilogue"],
    )
    pieces = run(path)
    text = all_text(pieces)
    assert text.startswith("The Keeper - A. Writer")
    assert text.index(SENTENCE) < text.index("Storm paragraph 0.") < text.index("The lamp went dark at last.")
    assert "hiddenScript" not in text and "<p>" not in text
    # Line numbers keep counting across chapters; a chunk never spans two chapters.
    starts = [p.locator.line_start or 0 for p in pieces]
    assert starts == sorted(starts)
    ch1 = next(p for p in pieces if SENTENCE in p.text)
    assert ch1.text == f"Chapter One\n{SENTENCE}"  # no chapter <title>, nothing of chapter two
    assert ch1.locator == Locator(line_start=2, line_end=3)  # line 1 is the book's title line


def test_drm_epub_and_broken_epub(tmp_path: Path) -> None:
    drm = make_epub(tmp_path / "drm.epub", {"ch1": "<p>x</p>"}, spine=["ch1"], encrypted=["ch1"])
    with pytest.raises(ExtractError, match="^drm-protected epub, its chapters are encrypted$"):
        run(drm)
    nospine = make_epub(tmp_path / "nospine.epub", {"ch1": "<p>x</p>"}, spine=[])
    with pytest.raises(ExtractError, match="^corrupt epub, its spine lists no readable chapters$"):
        run(nospine)
    notzip = tmp_path / "fake.epub"
    notzip.write_bytes(b"this is not a zip file at all")
    with pytest.raises(ExtractError, match="^corrupt epub, not a zip archive$"):
        run(notzip)


# ---------------------------------------------------------------------------------------------------
# PDF


def make_pdf(pages: list[str | Image.Image]) -> bytes:
    """A small valid PDF: text pages in Helvetica, and image-only ("scanned") pages as JPEG XObjects."""
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog, pages_id = add(b""), add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    kids = []
    for page in pages:
        if isinstance(page, Image.Image):
            jpeg = io.BytesIO()
            page.convert("RGB").save(jpeg, "JPEG", quality=90)
            data = jpeg.getvalue()
            image = add(
                b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB "
                b"/BitsPerComponent 8 /Filter /DCTDecode /Length %d >>\nstream\n"
                % (page.width, page.height, len(data))
                + data
                + b"\nendstream"
            )
            content = b"q 612 0 0 792 0 0 cm /Im1 Do Q"
            resources = b"<< /XObject << /Im1 %d 0 R >> >>" % image
        else:
            ops = [b"BT /F1 11 Tf 13 TL 60 740 Td"]
            for line in page.split("\n"):
                escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
                ops.append(b"(" + escaped.encode("latin-1") + b") Tj T*")
            ops.append(b"ET")
            content = b"\n".join(ops)
            resources = b"<< /Font << /F1 %d 0 R >> >>" % font
        stream = add(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
        kids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Resources %s /Contents %d 0 R >>"
                % (pages_id, resources, stream)
            )
        )
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_id
    objects[pages_id - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids),
        len(kids),
    )
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        catalog,
        xref,
    )
    return bytes(out)


def scanned_page() -> Image.Image:
    """A 'scan': a dark block on white, no text layer."""
    image = Image.new("RGB", (306, 396), "white")
    ImageDraw.Draw(image).rectangle((30, 30, 276, 150), fill=(10, 10, 10))
    return image


@pytest.fixture
def pdf_path(tmp_path: Path) -> Path:
    path = tmp_path / "Rapport annuel (2023).pdf"
    long_page = "\n".join(f"Ledger row {i}: paid the keeper {i * 3} coins for oil" for i in range(55))
    path.write_bytes(make_pdf([f"Cover page\n{SENTENCE}", long_page, scanned_page()]))
    return path


def test_pdf_text_and_rendered_pages(pdf_path: Path) -> None:
    pieces = run(pdf_path)
    text_pieces = [p for p in pieces if p.modality == "text"]
    image_pieces = [p for p in pieces if p.modality == "image"]
    # Page 1 fits one chunk: page locator only. Page 2 is long: chunks carry lines within the page.
    assert text_pieces[0].locator == Locator(page=1)
    assert SENTENCE in text_pieces[0].text
    assert {p.locator.page for p in text_pieces[1:]} == {2}
    assert len(text_pieces) >= 3
    assert all(p.locator.line_start is not None for p in text_pieces[1:])
    assert "Ledger row 54: paid the keeper 162 coins for oil" in all_text(text_pieces[1:])
    assert not any(p.locator.page == 3 for p in text_pieces)  # the scanned page has no text layer
    # One rendered image per page, the longest side bounded, the page text kept for snippets.
    assert [p.locator for p in image_pieces] == [Locator(page=1), Locator(page=2), Locator(page=3)]
    for piece in image_pieces:
        image = image_of(piece)
        assert image.size in ((791, 1024), (792, 1024))  # US Letter, longest side bounded
        assert image.mode == "RGB"
        assert piece.context == f"{pdf_path.name}\n{pdf_path}"
    assert image_pieces[0].text.startswith("Cover page The quarterly invoice")
    assert image_pieces[2].text == ""
    # The scanned page rendered: the dark block is there, the rest is white.
    scan = image_of(image_pieces[2])
    assert isinstance(scan, Image.Image)
    assert max(pixel(scan, (400, 200))) < 60
    assert min(pixel(scan, (400, 900))) > 200


def test_pdf_without_rendering_and_page_cap(pdf_path: Path) -> None:
    pieces = run(pdf_path, pdf_render=False)
    assert all(p.modality == "text" for p in pieces)
    assert {p.locator.page for p in pieces} == {1, 2}
    pieces = run(pdf_path, pdf_max_pages=1, render_max_side=200)
    assert {p.locator.page for p in pieces} == {1}
    assert max(image_of(pieces[-1]).size) == 200


def test_pdf_pages_are_rendered_as_they_are_consumed(pdf_path: Path) -> None:
    stream = iter_extract(record(pdf_path))
    first = next(stream)
    assert first.locator.page == 1
    image = image_of(next(stream))
    # A PNG-backed image: the bitmap stays compressed until it is used.
    assert isinstance(image, Image.Image) and image.format == "PNG"
    assert pixel(image, (0, 0)) == (255, 255, 255)
    stream.close()  # abandoning the stream closes the document


def test_encrypted_pdf(tmp_path: Path, pdf_path: Path) -> None:
    pypdf = pytest.importorskip("pypdf", reason="pypdf (test-only) writes the encrypted fixture")
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(pdf_path))
    writer.encrypt(user_password="secret", owner_password="owner")
    locked = tmp_path / "locked.pdf"
    with open(locked, "wb") as f:
        writer.write(f)
    with pytest.raises(ExtractError) as info:
        run(locked)
    assert str(info.value) == "encrypted pdf, cannot read it without the password"
    # Only an owner password (printing/copying limits): readable, so it is read.
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(pdf_path))
    writer.encrypt(user_password="", owner_password="owner")
    limited = tmp_path / "limited.pdf"
    with open(limited, "wb") as f:
        writer.write(f)
    assert SENTENCE in all_text(run(limited, pdf_render=False))


@pytest.mark.parametrize(
    "content",
    [b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog", b"not a pdf at all, just words" * 20],
)
def test_corrupt_pdf(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.pdf"
    path.write_bytes(content)
    with pytest.raises(ExtractError) as info:
        run(path)
    assert str(info.value) == "corrupt pdf, pdfium cannot parse it (not a pdf or damaged beyond repair)"


# ---------------------------------------------------------------------------------------------------
# Images


def oriented(size: tuple[int, int]) -> Image.Image:
    """Blue, with a white block in the top-left corner (so rotation can be checked)."""
    image = Image.new("RGB", size, (0, 0, 255))
    image.paste((255, 255, 255), (0, 0, size[0] // 4, size[1] // 4))
    return image


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
def test_exif_orientation_is_applied(tmp_path: Path, suffix: str) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    path = tmp_path / f"phone{suffix}"
    oriented((80, 40)).save(path, exif=exif.tobytes())
    (piece,) = run(path)
    assert piece.modality == "image"
    assert piece.text == f"phone{suffix}"
    assert piece.locator == Locator()
    assert piece.context == f"phone{suffix}\n{path}"
    image = image_of(piece)
    assert image.size == (40, 80)
    assert image.mode == "RGB"
    # The white corner moved from top-left to top-right, as a viewer shows it.
    assert min(pixel(image, (37, 2))) > 200
    assert pixel(image, (2, 2))[2] > 200 and pixel(image, (2, 2))[0] < 60


def test_image_modes_become_rgb_or_rgba(tmp_path: Path) -> None:
    Image.new("RGBA", (8, 8), (255, 0, 0, 128)).save(tmp_path / "alpha.png")
    Image.new("L", (8, 8), 100).save(tmp_path / "grey.png")
    palette = Image.new("P", (8, 8), 3)
    palette.save(tmp_path / "transparent.gif", transparency=3)
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "print.tiff")
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")
    modes = {name: image_of(run(tmp_path / name)[0]).mode for name in os.listdir(tmp_path)}
    assert modes == {
        "alpha.png": "RGBA",
        "grey.png": "RGB",
        "transparent.gif": "RGBA",
        "print.tiff": "RGB",
        "deep.png": "RGB",
    }
    assert pixel(image_of(run(tmp_path / "print.tiff")[0]), (0, 0))[0] > 200


def test_heic(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    if not pillow_heif.libheif_info().get("HEIF"):
        pytest.skip("this pillow-heif build has no HEIF encoder to write the fixture")
    pillow_heif.register_heif_opener()
    path = tmp_path / "IMG_0042.HEIC"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path, format="HEIF", quality=95)
    (piece,) = run(path)
    assert image_of(piece).size == (64, 48)
    red, green, blue = pixel(image_of(piece), (32, 24))
    assert red > 150 and green < 80 and blue < 80


def test_heic_without_pillow_heif(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import launcher.ingest.extract.image as image_module

    monkeypatch.setattr(image_module, "_heif_ready", False)  # as if the import had failed
    path = tmp_path / "IMG_0001.heic"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic")
    with pytest.raises(ExtractError, match="^heic support not installed; pip install pillow-heif$"):
        run(path)


def test_truncated_and_corrupt_images(tmp_path: Path) -> None:
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    noisy.save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ExtractError) as info:
        run(tmp_path / "truncated.png")
    assert str(info.value).startswith("corrupt image (")
    assert "truncated" in str(info.value)
    (tmp_path / "garbage.jpg").write_bytes(b"definitely not an image" * 10)
    with pytest.raises(ExtractError, match=r"^not a readable image \(unknown format or corrupt header\)$"):
        run(tmp_path / "garbage.jpg")


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a few bytes of data: a decompression bomb's shape."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


# pytest resets warning filters per test, so the module-level filter in image.py needs repeating here.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(("width", "height"), [(100_000, 100_000), (10_000, 9_000)])
def test_decompression_bomb(tmp_path: Path, width: int, height: int) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(width, height))
    with pytest.raises(ExtractError) as info:
        run(path)
    message = str(info.value)
    assert message.startswith("image too large")
    assert message.endswith("over the 64 mp limit; raise it with --max-image-mp")


def test_pixel_cap_on_a_real_image(tmp_path: Path) -> None:
    path = tmp_path / "poster.png"
    Image.new("RGB", (300, 200), "green").save(path)
    with pytest.raises(ExtractError) as info:
        run(path, max_image_pixels=50_000)
    assert (
        str(info.value)
        == "image too large (300x200, 0 mp), over the 0.05 mp limit; raise it with --max-image-mp"
    )
    assert image_of(run(path, max_image_pixels=60_000)[0]).size == (300, 200)


# ---------------------------------------------------------------------------------------------------
# Video


def make_video(
    path: Path,
    *,
    seconds: int = 25,
    fps: int = 8,
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
    gop: int = 8,
    title: str | None = None,
    rotation: int | None = None,
) -> Path:
    """Encode `seconds` of frames whose colour encodes the second they belong to (red = 10 * second)."""
    with av.open(str(path), "w") as out:
        if title:
            out.metadata["title"] = title
        stream = out.add_stream(codec, rate=fps)
        assert isinstance(stream, av.video.stream.VideoStream)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(seconds * fps):
            second = i // fps
            pixels = np.zeros((size[1], size[0], 3), np.uint8)
            pixels[:, :] = (second * 10 % 256, 128, 128)
            pixels[: size[1] // 4, : size[0] // 4] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def video_codec() -> str:
    """libx264 when this PyAV wheel has it, else the always-present mpeg4."""
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:
        return "mpeg4"


@pytest.mark.parametrize("gop", [8, 1000], ids=["keyframe-every-second", "one-keyframe"])
def test_video_frames_every_interval(tmp_path: Path, gop: int) -> None:
    path = make_video(tmp_path / "beach day.mp4", codec=video_codec(), gop=gop, title="Beach trip")
    pieces = run(path, video_interval_s=5)
    meta, frames = pieces[0], pieces[1:]
    assert meta.modality == "text" and meta.image is None
    assert meta.text.splitlines()[0] == "beach day.mp4"
    assert "0:25 long" in meta.text and "64x48" in meta.text and "8 fps" in meta.text
    assert "title: Beach trip" in meta.text
    # The middle of every 5 s interval: 2.5, 7.5, 12.5, 17.5, 22.5.
    stamps = [p.locator.timestamp or 0.0 for p in frames]
    assert stamps == pytest.approx([2.5, 7.5, 12.5, 17.5, 22.5], abs=0.51)
    assert stamps == sorted(stamps)
    for piece in frames:
        assert piece.modality == "image"
        image = image_of(piece)
        assert image.size == (64, 48)
        # The frame really is from that moment: its colour encodes the second.
        assert round(pixel(image, (40, 40))[0] / 10) == int(piece.locator.timestamp or 0)
        assert piece.locator.describe() == f"00:{int(piece.locator.timestamp or 0):02d}"


def test_video_interval_widens_to_max_frames_and_frames_are_bounded(tmp_path: Path) -> None:
    path = make_video(tmp_path / "wide.mp4", codec=video_codec(), seconds=12, size=(320, 160))
    pieces = run(path, video_interval_s=1, video_max_frames=4, render_max_side=100)
    stamps = [p.locator.timestamp for p in pieces[1:]]
    assert stamps == pytest.approx([1.5, 4.5, 7.5, 10.5], abs=0.51)  # 12 s over 4 frames: every 3 s
    assert all(image_of(p).size == (100, 50) for p in pieces[1:])
    assert sample_times(25, 10, 64) == [5.0, 15.0, 22.5]  # the last interval is cut by the end
    assert sample_times(1000, 10, 4) == [125.0, 375.0, 625.0, 875.0]
    # No frames wanted (a text-only model): the metadata piece alone, nothing decoded.
    (meta,) = run(path, video_max_frames=0)
    assert meta.modality == "text" and "0:12 long" in meta.text


def test_video_rotation_and_webm(tmp_path: Path) -> None:
    path = make_video(tmp_path / "portrait.mp4", codec=video_codec(), seconds=3, rotation=90)
    frame = image_of(run(path)[1])
    assert frame.size == (48, 64)  # displayed upright, as a player would
    assert min(pixel(frame, (2, 61))) > 200  # top-left white corner turned 90 degrees counter-clockwise
    webm = make_video(tmp_path / "clip.webm", codec="libvpx", seconds=4)
    pieces = run(webm, video_interval_s=2)
    assert [p.locator.timestamp for p in pieces[1:]] == pytest.approx([1.0, 3.0], abs=0.51)
    assert "vp8" in pieces[0].text


def test_video_frame_size_cap(tmp_path: Path) -> None:
    path = make_video(tmp_path / "big.mp4", codec=video_codec(), seconds=1, size=(320, 240))
    with pytest.raises(ExtractError) as info:
        run(path, max_image_pixels=50_000)
    assert str(info.value) == (
        "video frames too large (320x240, 0 mp), over the 0.05 mp limit; raise it with --max-image-mp"
    )


def test_broken_video(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00\x00\x00\x20ftypisom" + os.urandom(2000))
    with pytest.raises(ExtractError) as info:
        run(path)
    assert str(info.value).startswith("not a readable video (")
    good = make_video(tmp_path / "good.mp4", codec=video_codec(), seconds=4).read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good[: len(good) // 3])  # the index (moov) is written last: now missing
    with pytest.raises(ExtractError, match=r"^not a readable video \("):
        run(truncated)


# ---------------------------------------------------------------------------------------------------
# Office


def test_docx_paragraphs_and_tables_in_order(tmp_path: Path) -> None:
    docx = pytest.importorskip("docx")
    document = docx.Document()
    document.add_heading("Lighthouse maintenance", level=1)
    document.add_paragraph(SENTENCE)
    table = document.add_table(rows=2, cols=3)
    for r, row in enumerate([("Item", "Cost", "Paid"), ("Lamp oil", "12", "yes")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.add_paragraph("After the table.")
    path = tmp_path / "maintenance.docx"
    document.save(str(path))
    (piece,) = run(path)
    assert piece.text.splitlines() == [
        "Lighthouse maintenance",
        SENTENCE,
        "Item\tCost\tPaid",
        "Lamp oil\t12\tyes",
        "After the table.",
    ]
    assert piece.locator == Locator(line_start=1, line_end=5)


def test_pptx_slides_are_pages(tmp_path: Path) -> None:
    pptx = pytest.importorskip("pptx")
    from pptx.util import Inches

    deck = pptx.Presentation()
    for number, (title, body) in enumerate(
        [("Welcome", "Agenda for the keepers"), ("Budget", SENTENCE), ("Questions", "Any?")], start=1
    ):
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
        if number == 2:
            table = slide.shapes.add_table(2, 2, Inches(1), Inches(4), Inches(4), Inches(1)).table
            table.cell(0, 0).text, table.cell(0, 1).text = "Quarter", "Spend"
            table.cell(1, 0).text, table.cell(1, 1).text = "Q3", "1200"
            slide.notes_slide.notes_text_frame.text = "Speaker note: mention the storm."
    path = tmp_path / "deck.pptx"
    deck.save(str(path))
    pieces = run(path)
    assert [p.locator for p in pieces] == [Locator(page=1), Locator(page=2), Locator(page=3)]
    assert pieces[0].text == "Welcome\nAgenda for the keepers"
    assert SENTENCE in pieces[1].text
    assert "Quarter\tSpend" in pieces[1].text and "Q3\t1200" in pieces[1].text
    assert "Speaker note: mention the storm." in pieces[1].text
    assert pieces[1].locator.describe() == "p. 2"


def test_xlsx_sheets_rows_and_row_numbers(tmp_path: Path) -> None:
    openpyxl = pytest.importorskip("openpyxl")
    import datetime as dt

    book = openpyxl.Workbook()
    sales = book.active
    sales.title = "Sales"
    sales.append(["Region", "Total", "Date"])
    sales.append(["North", 1200.0, dt.date(2023, 4, 1)])
    sales.append([])
    sales.append(["South", 12.5, None])
    book.create_sheet("Empty")
    notes = book.create_sheet("Notes")
    notes["B3"] = SENTENCE
    path = tmp_path / "ledger.xlsx"
    book.save(path)
    pieces = run(path)
    assert [(p.locator.sheet, p.locator.line_start, p.locator.line_end) for p in pieces] == [
        ("Sales", 1, 4),
        ("Notes", 3, 3),
    ]
    assert pieces[0].text == "Region\tTotal\tDate\nNorth\t1200\t2023-04-01T00:00:00\nSouth\t12.5"
    assert pieces[1].text == f"\t{SENTENCE}"
    assert pieces[1].locator.describe() == "sheet Notes, lines 3-3"


@pytest.mark.parametrize("name", ["broken.docx", "broken.pptx", "broken.xlsx"])
def test_corrupt_office_files(tmp_path: Path, name: str) -> None:
    notzip = tmp_path / name
    notzip.write_bytes(b"not a zip, just some bytes pretending")
    with pytest.raises(ExtractError, match="^corrupt office file, not a zip archive$"):
        run(notzip)
    wrongzip = tmp_path / f"wrong-{name}"
    with zipfile.ZipFile(wrongzip, "w") as z:
        z.writestr("hello.txt", "a zip, but not an office document")
    with pytest.raises(ExtractError) as info:
        run(wrongzip)
    assert str(info.value).startswith(f"corrupt {name.rsplit('.', 1)[1]} file (")


def test_zip_bomb_cap(tmp_path: Path) -> None:
    path = tmp_path / "bomb.docx"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", b" " * (3 * 2**20))
    with pytest.raises(ExtractError) as info:
        run(path, max_archive_bytes=2**20)
    assert (
        str(info.value) == "office file expands to 3 mb of xml, over the 1 mb safety cap (possible zip bomb)"
    )


# ---------------------------------------------------------------------------------------------------
# The contract of extract() itself


def test_unexpected_errors_are_wrapped_but_interrupts_are_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import launcher.ingest.extract.text as text_module

    path = tmp_path / "a.txt"
    path.write_text("hello", encoding="utf-8")

    def explode(*args: object) -> Iterator[Piece]:
        raise ZeroDivisionError("division by zero")
        yield  # a generator, like the real extractors

    monkeypatch.setattr(text_module, "extract_text", explode)
    with pytest.raises(ExtractError, match="^unexpected ZeroDivisionError: division by zero$"):
        run(path)

    def interrupt(*args: object) -> Iterator[Piece]:
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(text_module, "extract_text", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(path)

    def out_of_memory(*args: object) -> Iterator[Piece]:
        raise MemoryError
        yield

    monkeypatch.setattr(text_module, "extract_text", out_of_memory)
    with pytest.raises(MemoryError):
        run(path)


def test_vanished_and_unreadable_files(tmp_path: Path) -> None:
    path = tmp_path / "gone.txt"
    path.write_text("soon gone", encoding="utf-8")
    rec = record(path)
    path.unlink()
    with pytest.raises(ExtractError, match="^file vanished before it could be read$"):
        extract(rec)
    with unreadable_file() as locked, pytest.raises(ExtractError, match="^permission denied$"):
        extract(record(locked))


@contextlib.contextmanager
def unreadable_file() -> Iterator[Path]:
    """A file this process cannot read: chmod 000, and as root, read while acting as 'nobody'."""
    folder = Path(tempfile.mkdtemp(prefix="launcher-extract-"))
    folder.chmod(0o755)
    path = folder / "locked.txt"
    path.write_text("secret", encoding="utf-8")
    path.chmod(0o000)
    try:
        if os.access(path, os.R_OK):
            if not hasattr(os, "geteuid") or os.geteuid() != 0:
                pytest.skip("chmod 000 does not deny reading on this file system")
            try:
                os.seteuid(65534)  # root ignores permissions; nobody does not (and root can switch back)
            except PermissionError:
                pytest.skip("running as root without the setuid capability: chmod 000 cannot deny reading")
            try:
                yield path
            finally:
                os.seteuid(0)
        else:
            yield path
    finally:
        path.chmod(0o644)
        shutil.rmtree(folder)


def test_every_piece_names_its_file(tmp_path: Path, pdf_path: Path) -> None:
    image = tmp_path / "pic.png"
    Image.new("RGB", (4, 4)).save(image)
    for path in (pdf_path, image):
        for piece in run(path):
            assert piece.context == f"{path.name}\n{path}"


def test_the_document_title_joins_every_pieces_context(tmp_path: Path) -> None:
    """A piece deep in a long page carries the page's title in its context header (the HTML <title>,
    a Markdown document's first heading); a file without one keeps the plain header."""
    body = "\n".join(f"<p>paragraph {i} about nothing in particular at all</p>" for i in range(60))
    page = tmp_path / "ch14-03.html"
    page.write_text(f"<html><head><title> Cargo\n Workspaces </title></head><body>{body}</body></html>")
    notes = tmp_path / "notes.md"
    notes.write_text(
        "intro line\n\n# Release checklist\n\n" + "\n".join(f"step {i} of many" for i in range(300))
    )
    plain = tmp_path / "plain.txt"
    plain.write_text("# not a title in a .txt\n" + "\n".join(f"line {i} of text" for i in range(300)))
    for path, title in ((page, "Cargo Workspaces"), (notes, "Release checklist"), (plain, None)):
        pieces = run(path, budget=words_budget(40, 5))
        assert len(pieces) > 3
        header = f"{path.name}\n{path}"
        for p in pieces:
            assert p.context == (f"{header}\n{title}" if title else header)
