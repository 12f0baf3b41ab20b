"""Time expressions read from a query (launcher.query.dates) on a fixed clock, and the pictures' taken
time (EXIF) that the date filters use, read from real JPEGs written by Pillow."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from launcher.core.errors import InputError
from launcher.core.records import FileRecord
from launcher.index.segments import COL_TAKEN, date_of
from launcher.index.store import Store
from launcher.ingest.extract.image import taken_ns
from launcher.query import dates as when
from launcher.query.retrieve import newest, search

ROOT = Path(__file__).resolve().parent.parent
NOW = "2026-12-02T12:00:00"  # a Wednesday
IDENTITY = {"model": "synthetic"}


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC unless a test says otherwise (ranges are local days)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone()


def read(query: str, at: str = NOW) -> when.Parsed:
    return when.parse(query, local(at))


def day(parsed: when.Parsed) -> tuple[str | None, str | None]:
    """The range as local dates, the end exclusive."""
    return (
        parsed.after.date().isoformat() if parsed.after else None,
        parsed.before.date().isoformat() if parsed.before else None,
    )


@pytest.mark.parametrize(
    ("query", "text", "after", "before", "strict"),
    [
        ("meeting notes from last week", "meeting notes", "2026-11-23", "2026-11-30", True),
        ("yesterday", "", "2026-12-01", "2026-12-02", True),
        ("today", "", "2026-12-02", "2026-12-03", True),
        ("notes from the day before yesterday", "notes", "2026-11-30", "2026-12-01", True),
        ("yesterday's screenshots", "screenshots", "2026-12-01", "2026-12-02", True),
        ("invoices this week", "invoices", "2026-11-30", "2026-12-07", True),
        ("slides this month", "slides", "2026-12-01", "2027-01-01", True),
        ("budget from last month", "budget", "2026-11-01", "2026-12-01", True),
        ("taxes last year", "taxes", "2025-01-01", "2026-01-01", True),
        ("report last friday", "report", "2026-11-27", "2026-11-28", True),
        ("report last wednesday", "report", "2026-11-25", "2026-11-26", True),  # not today
        ("logs from the past 3 days", "logs", "2026-11-30", None, True),
        ("drafts in the past two weeks", "drafts", "2026-11-18", None, True),
        ("the past week", "", "2026-11-25", None, True),
        ("commits last 2 months", "commits", "2026-10-02", None, True),
        ("files modified since last month", "files", "2026-11-01", None, True),
        ("notes 2024-03-05", "notes", "2024-03-05", "2024-03-06", True),
        ("invoices before May", "invoices", None, "2026-05-01", True),
        ("files modified before may", "files", None, "2026-05-01", True),
        ("contracts after 2023", "contracts", "2024-01-01", None, True),
        ("letters since March 2024", "letters", "2024-03-01", None, True),
        ("slides until 2025-01-15", "slides", None, "2025-01-15", True),
        # weak: a preference, and a year or month keeps its words in the embedded text
        ("tax form from 2023", "tax form 2023", "2023-01-01", "2024-01-01", False),
        ("report March 2024", "report March 2024", "2024-03-01", "2024-04-01", False),
        ("budget in March", "budget March", "2026-03-01", "2026-04-01", False),
        ("party in December", "party December", "2026-12-01", "2027-01-01", False),
        ("photos taken last summer", "photos", "2026-06-01", "2026-09-01", False),
        ("photos from this winter", "photos", "2026-12-01", "2027-03-01", False),
        ("photos from last winter", "photos", "2025-12-01", "2026-03-01", False),
        ("photos summer 2023", "photos", "2023-06-01", "2023-09-01", False),
        ("essay two weeks ago", "essay", "2026-11-16", "2026-11-23", False),
        ("notes a couple of days ago", "notes", "2026-11-30", "2026-12-01", False),
        ("minutes 3 months ago", "minutes", "2026-09-01", "2026-10-01", False),
    ],
)
def test_expressions(query: str, text: str, after: str | None, before: str | None, strict: bool) -> None:
    parsed = read(query)
    assert parsed.found, query
    assert parsed.text == text
    assert day(parsed) == (after, before)
    assert parsed.strict is strict
    # Every bound is a local midnight.
    assert all(t.time().isoformat() == "00:00:00" for t in (parsed.after, parsed.before) if t)


@pytest.mark.parametrize(
    "query",
    [
        # words that are also dates elsewhere, numbers, versions, ports, file names, API names
        "python 3.11 may break",
        "in may cases the cache is stale",
        "port 2023",
        "error 2024 in the log",
        "2024-report.pdf",
        "2024-03-05-notes.md",
        "notes/2024-03-05.md",
        "march of the penguins",
        "second monitor setup",
        "what can I do now",
        "date command format",
        "what is today's date in bash",
        "last 10 commits",
        "git log last commit",
        "last day of the month in cron",
        "sunday school",
        "the year 2038 problem",
        "journalctl -b",
        "datetime.now() timezone",
        "in 2099",  # a year that has not happened is not a filter
        'the "last week" report',  # quoted: a phrase to find
        "",
    ],
)
def test_left_as_typed(query: str) -> None:
    parsed = read(query)
    assert not parsed.found and parsed.text == query and parsed.after is None and parsed.before is None


def test_the_retrieval_benchmark_questions_are_left_as_typed() -> None:
    """The plain documentation questions of bench/retrieval are searched exactly as before."""
    lines = (ROOT / "bench" / "retrieval" / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    queries = [json.loads(line)["query"] for line in lines if line.strip()]
    assert len(queries) == 60
    touched = {q: read(q).text for q in queries if read(q).found or read(q).text != q}
    assert touched == {}
    for q in (
        "how do I cap how fast apt downloads packages",
        "get back commits from a git branch I deleted",
    ):
        assert read(q) == when.Parsed(q)


def test_several_expressions_intersect_and_a_contradiction_is_ignored() -> None:
    both = read("invoices since March 2024 before 2025-01-01")
    assert both.text == "invoices" and day(both) == ("2024-03-01", "2025-01-01") and both.strict
    assert not read("letters since 2025 before 2024").found


def test_relative_to_the_clock_and_across_a_year() -> None:
    assert day(read("last month", "2026-01-15T09:00")) == ("2025-12-01", "2026-01-01")
    assert day(read("last week", "2026-01-01T09:00")) == ("2025-12-22", "2025-12-29")
    assert day(read("before may", "2026-03-10T09:00")) == (None, "2025-05-01")  # May has not come yet
    assert day(read("last summer", "2026-07-10T09:00")) == ("2025-06-01", "2025-09-01")  # not over yet
    assert day(read("this winter", "2026-02-10T09:00")) == ("2025-12-01", "2026-03-01")
    assert day(read("a month ago", "2026-03-31T09:00")) == ("2026-02-01", "2026-03-01")


def test_the_local_time_zone_decides_where_a_day_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    # 23:30 UTC on 1 December is already 2 December in Tokyo: "yesterday" is 1 December there.
    parsed = when.parse("yesterday", datetime.fromisoformat("2026-12-01T23:30:00+00:00"))
    assert parsed.after == datetime.fromisoformat("2026-12-01T00:00:00+09:00")
    assert parsed.before == datetime.fromisoformat("2026-12-02T00:00:00+09:00")


def test_the_fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(when.NOW_ENV, "2026-03-05T14:30")
    assert when.now() == local("2026-03-05T14:30")
    assert day(when.parse("yesterday")) == ("2026-03-04", "2026-03-05")
    monkeypatch.setenv(when.NOW_ENV, "soon")
    with pytest.raises(InputError, match="LAUNCHER_NOW='soon' is not a date-time"):
        when.now()


def test_json_shape_and_chip() -> None:
    parsed = read("meeting notes from last week")
    assert parsed.to_json() == {
        "text": "meeting notes",
        "after": "2026-11-23T00:00:00+00:00",
        "before": "2026-11-30T00:00:00+00:00",
        "expression": "from last week",
        "label": "last week",
        "mode": "filter",
    }
    assert parsed.chip() == "modified last week" and parsed.span() == "2026-11-23 to 2026-11-29"
    assert when.parsed_from_json(parsed.to_json()) == parsed
    weak = read("tax form from 2023")
    assert weak.chip() == "modified in 2023 (preferred)" and weak.to_json()["mode"] == "prefer"
    assert when.Parsed("journalctl -b").to_json() == {
        "text": "journalctl -b",
        "after": None,
        "before": None,
        "expression": None,
        "label": None,
        "mode": None,
    }


# --- the taken time of pictures ------------------------------------------------------------------


def jpeg(path: Path, taken: str | None = None, offset: str | None = None, mtime: str | None = None) -> Path:
    """A real JPEG; with `taken`, EXIF DateTimeOriginal (and OffsetTimeOriginal) as a camera writes."""
    exif = Image.Exif()
    if taken is not None:
        sub = exif.get_ifd(0x8769)
        sub[0x9003] = taken
        if offset is not None:
            sub[0x9011] = offset
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 12), (200, 120, 40)).save(path, exif=exif)
    if mtime is not None:
        stamp = local(mtime).timestamp()
        os.utime(path, (stamp, stamp))
    return path


def test_exif_taken_time(tmp_path: Path) -> None:
    plain = jpeg(tmp_path / "camera.jpg", "2026:07:15 18:30:00")
    assert taken_ns(str(plain)) == int(local("2026-07-15T18:30:00").timestamp()) * 10**9
    zoned = jpeg(tmp_path / "zoned.jpg", "2026:07:15 18:30:00", "+09:00")
    assert (
        taken_ns(str(zoned)) == int(datetime.fromisoformat("2026-07-15T18:30:00+09:00").timestamp()) * 10**9
    )
    assert taken_ns(str(jpeg(tmp_path / "none.jpg"))) is None
    assert taken_ns(str(jpeg(tmp_path / "blank.jpg", "0000:00:00 00:00:00"))) is None
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe1 not really")
    assert taken_ns(str(tmp_path / "broken.jpg")) is None


def _add(writer: object, path: Path, kind: str, taken: int | None = None) -> str:
    st = path.stat()
    rec = FileRecord(str(path), st.st_size, st.st_mtime_ns, kind)
    return writer.add_file(rec, "h" + path.name, [], taken_ns=taken)[0]  # type: ignore[attr-defined,no-any-return]


def test_date_filters_use_the_taken_time_and_old_rows_read_as_before(tmp_path: Path) -> None:
    """A picture is dated by its EXIF time, else its mtime; a row written before the column existed
    reads with its mtime, and `set_taken` fills it in later."""
    taken = jpeg(tmp_path / "taken.jpg", "2026:07:15 18:30:00", mtime="2026-12-01T10:00")
    untaken = jpeg(tmp_path / "untaken.jpg", mtime="2026-07-20T10:00")
    note = tmp_path / "note.txt"
    note.write_text("hello\n", encoding="utf-8")
    stamp = local("2026-12-01T08:00").timestamp()
    os.utime(note, (stamp, stamp))
    with Store.open_writer(tmp_path / "index", IDENTITY, dims=4) as w:
        ids = {
            "taken": _add(w, taken, "image", taken_ns(str(taken))),
            "untaken": _add(w, untaken, "image", taken_ns(str(untaken))),
            "note": _add(w, note, "text"),
        }
    store = Store.open(tmp_path / "index")
    summer = (local("2026-06-01T00:00"), local("2026-09-01T00:00"))
    december = (local("2026-12-01T00:00"), local("2026-12-02T00:00"))

    def listed(rng: tuple[datetime, datetime]) -> list[str]:
        return [Path(h.path).name for h in newest(store, after=rng[0], before=rng[1])]

    assert listed(summer) == ["untaken.jpg", "taken.jpg"]  # newest first: 20 July, then 15 July
    assert listed(december) == ["note.txt"]  # taken.jpg was copied in December, taken in July
    # An index written before pictures had the column: their rows end at first_piece.
    for f in (tmp_path / "index").glob("f-*.json"):
        doc = json.loads(f.read_text(encoding="utf-8"))
        doc["upsert"] = [row[: COL_TAKEN - 1] for row in doc.get("upsert", [])]
        f.write_text(json.dumps(doc), encoding="utf-8")
    old = Store.open(tmp_path / "index")
    assert listed_in(old, december) == ["taken.jpg", "note.txt"]  # read as before: the mtime
    assert all(date_of(row) == row[3] for row in old._table.rows.values())
    with Store.open_writer(tmp_path / "index", IDENTITY, dims=4) as w:
        assert sorted(p for _, p in w.pictures_without_taken()) == [str(taken), str(untaken)]
        for file_id, path in w.pictures_without_taken():
            w.set_taken(file_id, taken_ns(path))
        assert w.pictures_without_taken() == []
    filled = Store.open(tmp_path / "index")
    assert listed_in(filled, december) == ["note.txt"]
    assert [h.file_id for h in newest(filled, after=december[0])] == [ids["note"]]


def listed_in(store: Store, rng: tuple[datetime, datetime]) -> list[str]:
    return [Path(h.path).name for h in newest(store, after=rng[0], before=rng[1])]


def test_search_filters_by_the_taken_time(tmp_path: Path) -> None:
    """The same mask serves ranked search: words found in a picture's name, filtered by its EXIF date."""
    taken = jpeg(tmp_path / "beach party.jpg", "2026:07:15 18:30:00", mtime="2026-12-01T10:00")
    with Store.open_writer(tmp_path / "index", IDENTITY, dims=4) as w:
        _add(w, taken, "image", taken_ns(str(taken)))
    store = Store.open(tmp_path / "index")
    july = search(store, None, "beach party", modified_after=local("2026-07-01T00:00"), min_score=0.0)
    december = search(store, None, "beach party", modified_after=local("2026-12-01T00:00"), min_score=0.0)
    assert [Path(h.path).name for h in july] == ["beach party.jpg"] and december == []
    assert july[0].date == local("2026-07-15T18:30").timestamp()
