"""Office Open XML: Word (paragraphs and tables), PowerPoint (per slide) and Excel (per sheet) as text.

Line locators of Word pieces count lines of the extracted text; PowerPoint pieces carry the slide
number as their page; Excel pieces carry the sheet name and real spreadsheet row numbers as lines.
"""

from __future__ import annotations

import datetime as dt
import zipfile
from collections.abc import Iterator
from typing import Any

from launcher.core.records import FileRecord, Piece
from launcher.ingest.extract.base import ExtractError, ExtractSettings, numbered, text_pieces

# Archive members that get parsed; pictures and fonts are stored as they are and never expanded here.
_PARSED_SUFFIXES = (".xml", ".rels", ".xhtml", ".html", ".htm", ".opf", ".ncx")


def extract_office(record: FileRecord, settings: ExtractSettings) -> Iterator[Piece]:
    """Text pieces of a .docx, .pptx or .xlsx file."""
    check_archive(record.path, settings, what="office file")
    suffix = record.path.lower().rsplit(".", 1)[-1]
    readers = {"docx": _docx, "pptx": _pptx, "xlsx": _xlsx}
    if suffix not in readers:
        raise ExtractError(f"unsupported office format .{suffix}; only docx, pptx and xlsx are read")
    try:
        yield from readers[suffix](record, settings)
    except (ExtractError, OSError, MemoryError):
        raise
    except Exception as exc:
        # python-docx, python-pptx and openpyxl raise whatever their XML walk trips on (KeyError,
        # PackageNotFoundError, lxml's XMLSyntaxError...): all of it means a damaged file.
        raise ExtractError(f"corrupt {suffix} file ({type(exc).__name__}: {_first_line(exc)})") from exc


def check_archive(path: str, settings: ExtractSettings, *, what: str) -> None:
    """ExtractError for a file that is not a zip, or whose text parts would expand past the safety cap."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except zipfile.BadZipFile as exc:
        raise ExtractError(f"corrupt {what}, not a zip archive") from exc
    expanded = sum(i.file_size for i in infos if i.filename.lower().endswith(_PARSED_SUFFIXES))
    if expanded > settings.max_archive_bytes:
        raise ExtractError(
            f"{what} expands to {expanded // 2**20} mb of xml, over the "
            f"{settings.max_archive_bytes // 2**20} mb safety cap (possible zip bomb)"
        )


def _docx(record: FileRecord, settings: ExtractSettings) -> Iterator[Piece]:
    import docx
    from docx.table import Table

    document = docx.Document(record.path)
    lines: list[str] = []
    # Body order, so a table sits between the paragraphs around it.
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            lines.extend(_table_lines(block))
        else:
            lines.extend(block.text.splitlines() or [""])
    yield from text_pieces(record, numbered("\n".join(lines)), settings)


def _table_lines(table: Any) -> list[str]:
    """A Word or PowerPoint table as one tab-joined line per row (merged cells once)."""
    lines = []
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            text = " ".join(cell.text.split())
            if not cells or text != cells[-1]:  # python-docx repeats a merged cell per grid column
                cells.append(text)
        lines.append("\t".join(cells).rstrip())
    return lines


def _pptx(record: FileRecord, settings: ExtractSettings) -> Iterator[Piece]:
    import pptx

    presentation = pptx.Presentation(record.path)
    for number, slide in enumerate(presentation.slides, start=1):
        lines: list[str] = []
        for shape in slide.shapes:
            lines.extend(_shape_lines(shape))
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            lines.extend(slide.notes_slide.notes_text_frame.text.splitlines())
        yield from text_pieces(record, numbered("\n".join(lines)), settings, page=number)


def _shape_lines(shape: Any) -> list[str]:
    """The text of a slide shape: its text frame, its table, or the shapes of a group."""
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
        return [line for child in shape.shapes for line in _shape_lines(child)]
    if getattr(shape, "has_table", False) and shape.has_table:
        return _table_lines(shape.table)
    if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        # PowerPoint marks a soft line break inside a paragraph with a vertical tab.
        return shape.text_frame.text.replace("\v", "\n").splitlines()
    return []


def _xlsx(record: FileRecord, settings: ExtractSettings) -> Iterator[Piece]:
    import openpyxl

    workbook = openpyxl.load_workbook(record.path, read_only=True, data_only=True)
    budget = settings.max_text_bytes  # a sheet of a million rows stops here, like a long text file
    try:
        for sheet in workbook.worksheets:
            # The stored dimensions can lie (or claim a million columns); read the cells that exist.
            sheet.reset_dimensions()
            rows: list[tuple[int, str]] = []
            for index, row in enumerate(sheet.iter_rows(), start=1):
                values = [_cell_text(cell.value) for cell in row]
                while values and not values[-1]:
                    values.pop()
                if not values:
                    continue
                number = next((c.row for c in row if getattr(c, "row", None)), index)
                line = "\t".join(values)
                rows.append((number, line))
                budget -= len(line) + 1
                if budget <= 0:
                    break
            yield from text_pieces(record, rows, settings, sheet=sheet.title)
            if budget <= 0:
                break
    finally:
        workbook.close()  # read-only workbooks keep the zip open until closed


def _cell_text(value: object) -> str:
    """A cell value as it would read on screen (dates as ISO, whole floats without '.0')."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return " ".join(str(value).split())


def _first_line(exc: BaseException) -> str:
    """An exception's message as one lowercase line."""
    text = str(exc).strip().splitlines()
    return text[0].lower()[:200] if text else "no details"
