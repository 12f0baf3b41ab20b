"""Time in a query through the real `launcher` CLI: real files with set modification times, real
JPEGs with EXIF dates, the bundled MiniLM model, and a fixed clock (LAUNCHER_NOW) in UTC."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MINILM
from tests.test_index_cli import ok
from tests.test_when import jpeg

NOW = "2026-12-02T12:00:00"  # a Wednesday: last week is 23-29 November
CLOCK = {"LAUNCHER_NOW": NOW, "TZ": "UTC", "LAUNCHER_THREADS": "2"}

MEETINGS = {
    # name: (text, modified)
    "meeting notes roadmap.md": (
        "Meeting notes. Attendees: Ana, Bo. We reviewed the product roadmap and agreed on the next "
        "release. Action items: Bo drafts the release plan.",
        "2026-11-25T10:00:00",
    ),
    "meeting notes budget.md": (
        "Meeting notes. Attendees: Ana, Chen. We went through the budget and the hiring plan for "
        "next year. Action items: Chen sends the spreadsheet.",
        "2026-06-10T15:00:00",
    ),
    "meeting notes offsite.md": (
        "Meeting notes from the offsite. Attendees: everyone. Action items and decisions about the "
        "office move.",
        "2025-03-02T09:00:00",
    ),
    # The form for 2023 was filled in in 2024; the one for 2022 in 2023.
    "tax form 2023.md": ("Tax form: income, deductions and the signature page.", "2024-04-10T10:00:00"),
    "tax form 2022.md": ("Tax form: income, deductions and the signature page.", "2023-04-12T10:00:00"),
    "tomato garden.md": ("Tomatoes need sun, water and stakes.", "2026-12-01T09:00:00"),
    "pancake recipe.md": ("Pancakes: flour, milk, eggs, a pinch of salt.", "2026-12-01T18:00:00"),
    "journalctl cheatsheet.md": (
        "journalctl -b shows the messages of the current boot; -b -1 the previous one.",
        "2024-05-05T08:00:00",
    ),
}


def stamp(path: Path, when: str) -> None:
    t = datetime.fromisoformat(when).replace(tzinfo=timezone.utc).timestamp()
    os.utime(path, (t, t))


def cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real `launcher` command on the fixed clock."""
    return subprocess.run(
        [sys.executable, "-m", "launcher.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "LAUNCHER_HOME": str(home), **CLOCK, **env},
    )


def answer(home: Path, query: str, *args: str, **env: str) -> dict[str, Any]:
    return json.loads(ok(cli(home, "search", query, *args, "--json", **env)).stdout)  # type: ignore[no-any-return]


def names(result: dict[str, Any]) -> list[str]:
    return [Path(h["path"]).name for h in result["hits"]]


def dated_tree(root: Path) -> Path:
    """Notes with set modification times, and pictures whose EXIF date and mtime disagree."""
    docs = root / "Documents"
    (docs / "notes").mkdir(parents=True)
    for name, (text, modified) in MEETINGS.items():
        path = docs / "notes" / name
        path.write_text(text + "\n", encoding="utf-8")
        stamp(path, modified)
    # Taken last summer, copied onto this machine yesterday.
    stamp(jpeg(docs / "photos" / "beach holiday.jpg", "2026:07:15 18:30:00"), "2026-12-01T20:00:00")
    # No EXIF date: its mtime (last summer) stands in.
    stamp(jpeg(docs / "photos" / "lake holiday.jpg"), "2026-07-20T10:00:00")
    # Taken two years ago, touched yesterday.
    stamp(jpeg(docs / "photos" / "city holiday.jpg", "2024:01:10 09:00:00"), "2026-12-01T21:00:00")
    return docs


@pytest.fixture(scope="module")
def dated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("dated")
    docs = dated_tree(root)
    home = root / "home"
    ok(cli(home, "index", str(docs), "--model", str(MINILM), "--json"))
    yield home, docs


def test_meeting_notes_from_last_week(dated: tuple[Path, Path]) -> None:
    home, _ = dated
    got = answer(home, "meeting notes from last week")
    assert got["parsed"] == {
        "text": "meeting notes",
        "after": "2026-11-23T00:00:00+00:00",
        "before": "2026-11-30T00:00:00+00:00",
        "expression": "from last week",
        "label": "last week",
        "mode": "filter",
    }
    assert names(got) == ["meeting notes roadmap.md"]
    assert got["hits"][0]["date"] == "2026-11-25T10:00:00+00:00"
    # Without the date the older meeting notes are found too: the filter is what put last week's alone.
    plain = answer(home, "meeting notes from last week", "--no-dates")
    assert plain["parsed"]["text"] == "meeting notes from last week" and plain["parsed"]["after"] is None
    assert {"meeting notes budget.md", "meeting notes offsite.md"} <= set(names(plain))
    text = ok(cli(home, "search", "meeting notes from last week")).stdout
    assert text.splitlines()[0] == 'modified last week: 2026-11-23 to 2026-11-29; searching "meeting notes"'
    assert "meeting notes roadmap.md" in text.splitlines()[1]


def test_a_query_that_is_only_a_date_lists_that_days_files_newest_first(dated: tuple[Path, Path]) -> None:
    home, _ = dated
    got = answer(home, "yesterday")
    assert got["parsed"]["text"] == "" and got["parsed"]["after"] == "2026-12-01T00:00:00+00:00"
    # The city picture was touched yesterday but taken in 2024; the beach picture was taken in July.
    assert names(got) == ["pancake recipe.md", "tomato garden.md"]
    lines = ok(cli(home, "search", "yesterday")).stdout.splitlines()
    assert lines[0] == "modified yesterday: 2026-12-01"
    assert lines[1].split()[1:3] == ["2026-12-01", "18:00"] and "pancake recipe.md" in lines[1]


def test_pictures_are_dated_by_when_they_were_taken(dated: tuple[Path, Path]) -> None:
    home, _ = dated
    taken = answer(home, "pictures 2026-07-15", "--kind", "image", "--min-score", "-1")
    assert taken["parsed"]["mode"] == "filter" and names(taken) == ["beach holiday.jpg"]
    summer = answer(home, "holiday photos taken last summer", "--min-score", "-1", "--kind", "image")
    assert summer["parsed"]["text"] == "holiday photos" and summer["parsed"]["mode"] == "prefer"
    lifted = {Path(h["path"]).name for h in summer["hits"] if h["scores"].get("date") == 1.0}
    assert lifted == {"beach holiday.jpg", "lake holiday.jpg"}
    # A preference, not a wall: the picture from 2024 is still listed, after the summer ones.
    assert names(summer)[-1] == "city holiday.jpg" and len(summer["hits"]) == 3


def test_a_weak_expression_prefers_and_keeps_its_year(dated: tuple[Path, Path]) -> None:
    home, _ = dated
    got = answer(home, "meeting notes from 2025", "--min-score", "-1")
    assert got["parsed"]["text"] == "meeting notes 2025" and got["parsed"]["mode"] == "prefer"
    assert names(got)[0] == "meeting notes offsite.md"  # the one modified in 2025 comes first
    assert {"meeting notes roadmap.md", "meeting notes budget.md"} <= set(names(got))  # still shown
    first = got["hits"][0]
    assert first["scores"]["date"] == 1.0


def test_the_guides_example_tax_form_from_2023(dated: tuple[Path, Path]) -> None:
    """ "tax form from 2023": the 2022 form, saved in 2023, is lifted; the file named "tax form 2023",
    saved in 2024, still comes first (the year kept in the text matches its name)."""
    home, _ = dated
    got = answer(home, "tax form from 2023")
    assert got["parsed"]["text"] == "tax form 2023" and got["parsed"]["mode"] == "prefer"
    assert names(got)[:2] == ["tax form 2023.md", "tax form 2022.md"]
    assert "date" not in got["hits"][0]["scores"] and got["hits"][1]["scores"]["date"] == 1.0


def test_queries_without_a_time_are_searched_exactly_as_before(dated: tuple[Path, Path]) -> None:
    home, _ = dated
    for query in ("journalctl -b", "python 3.11 may break", "port 2023 tomato", "2024-03-05-notes.md"):
        on = answer(home, query, "--min-score", "-1")
        off = answer(home, query, "--min-score", "-1", "--no-dates")
        assert on["parsed"] == {**off["parsed"]} and on["parsed"]["text"] == query
        assert on["parsed"]["after"] is None and on["parsed"]["before"] is None
        assert on["hits"] == off["hits"]
    assert names(answer(home, "journalctl -b"))[0] == "journalctl cheatsheet.md"


def test_the_setting_turns_parsing_off(dated: tuple[Path, Path]) -> None:
    home, _ = dated
    off = answer(home, "yesterday", "--min-score", "-1", LAUNCHER_DATES="0")
    assert off["parsed"]["text"] == "yesterday" and off["parsed"]["after"] is None
    (home / "config.toml").write_text("dates = false\n", encoding="utf-8")
    try:
        assert answer(home, "yesterday", "--min-score", "-1")["parsed"]["after"] is None
        assert answer(home, "yesterday", "--dates")["parsed"]["after"] is not None  # the flag wins
    finally:
        (home / "config.toml").unlink()


def test_explicit_bounds_narrow_the_parsed_range(dated: tuple[Path, Path]) -> None:
    home, _ = dated
    got = answer(home, "yesterday", "--after", "2026-12-01T12:00")
    assert names(got) == ["pancake recipe.md"]


def test_a_bad_clock_is_one_line(dated: tuple[Path, Path]) -> None:
    home, _ = dated
    proc = cli(home, "search", "notes from yesterday", LAUNCHER_NOW="soon")
    assert proc.returncode != 0
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .endswith("LAUNCHER_NOW='soon' is not a date-time like 2026-03-05T14:30")
    )


def test_an_index_from_before_taken_times_is_read_then_filled_in(tmp_path: Path) -> None:
    """An index written by a launcher that stored no taken time: pictures are dated by their mtime
    until the next `launcher index`, which reads each picture's EXIF header once (no re-embedding)."""
    docs = tmp_path / "Documents"
    stamp(jpeg(docs / "beach holiday.jpg", "2026:07:15 18:30:00"), "2026-12-01T20:00:00")
    home = tmp_path / "home"
    ok(cli(home, "index", str(docs), "--model", str(MINILM), "--json"))
    for f in (home / "index").glob("f-*.json"):
        doc = json.loads(f.read_text(encoding="utf-8"))
        doc["upsert"] = [row[:10] for row in doc.get("upsert", [])]  # as the old launcher wrote them
        f.write_text(json.dumps(doc), encoding="utf-8")
    (home / "index" / "scan-state.npz").unlink()  # which kept no scan state either
    assert names(answer(home, "yesterday")) == ["beach holiday.jpg"]  # its mtime, as before
    again = json.loads(ok(cli(home, "index", str(docs), "--model", str(MINILM), "--json")).stdout)
    assert again["unchanged"] == 1 and again["pieces_embedded"] == 0
    assert names(answer(home, "yesterday")) == []
    assert names(answer(home, "2026-07-15")) == ["beach holiday.jpg"]
