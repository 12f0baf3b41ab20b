"""Time in a query: "meeting notes from last week" -> the text "meeting notes" and a date range.

A small grammar of our own, not a library. dateparser 1.5 (maintained, offline) was tried on the
retrieval benchmark's 60 documentation questions and 9 traps: its search_dates read "su" (the
command) as Sunday and "y a" as a date in two questions, and "python 3.11 may break" as 11 May,
"port 2023" as a year, "now" and "march of the penguins" as times; and it answers with one
instant ("last week" -> seven days ago), not the range a filter needs. parsedatetime and ctparse
are unmaintained since 2020 and 2022. A grammar that only recognises phrases that cannot be
anything but time keeps every other query exactly as typed.

What is recognised (English; another language is another Lexicon):
- relative days and periods: today, yesterday, the day before yesterday, this/last week, month,
  year, last monday ... sunday: calendar periods on the local clock, weeks starting on Monday;
- rolling windows: past/last N days, weeks, months, years (N a number or a word), the past week;
- approximate: N days/weeks/months/years ago, last/this spring, summer, autumn (fall), winter;
- absolute: 2024-03-05, March 2024, in/from/during 2023, in March, summer 2023;
- bounds: before, until, after, since X, where X is any of the above or a month or year.

Each expression is either a filter (strict: a calendar period or a bound the person stated) or a
preference (weak: an approximate phrase, or a year or month, which names what a document is about
as often as when it was saved: "tax form from 2023" is usually saved in 2024). A year or month
keeps its words in the text that is embedded ("tax form 2023"); every other expression is removed
from it, with its connecting words ("from", "modified", "taken"...).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Any

from launcher.core.errors import InputError

NOW_ENV = "LAUNCHER_NOW"  # a fixed clock (ISO date-time, local time unless it has an offset), for tests


def now() -> datetime:
    """The local time, aware; LAUNCHER_NOW fixes it (tests, demos)."""
    fixed = os.environ.get(NOW_ENV)
    if fixed:
        try:
            moment = datetime.fromisoformat(fixed)
        except ValueError:
            raise InputError(f"{NOW_ENV}={fixed!r} is not a date-time like 2026-03-05T14:30") from None
        return moment.astimezone() if moment.tzinfo is None else moment
    return datetime.now().astimezone()


@dataclass(frozen=True)
class Lexicon:
    """The words of one language's time expressions."""

    numbers: dict[str, int]
    units: dict[str, str]  # word (singular and plural) -> day, week, month, year
    months: dict[str, int]
    weekdays: dict[str, int]  # Monday = 0
    seasons: dict[str, int]  # season -> its first month (meteorological, northern hemisphere)
    today: tuple[str, ...]
    yesterday: str
    day_before_yesterday: str
    this: str
    last: tuple[str, ...]  # "last", "previous"
    rolling: tuple[str, ...]  # "the past week": a rolling window, no number needed
    ago: str
    before: tuple[str, ...]
    after: tuple[str, ...]  # strictly after the period
    since: tuple[str, ...]  # from the start of the period on
    lead: tuple[str, ...]  # words that tie an expression to the query: "from", "modified"...
    prepositions: tuple[str, ...]  # a bare year or month counts only after one: "in 2023", not "port 2023"
    articles: tuple[str, ...]
    ambiguous_months: tuple[str, ...] = ()  # month names that are also common words ("may")


ENGLISH = Lexicon(
    numbers={
        "a": 1,
        "an": 1,
        "one": 1,
        "two": 2,
        "three": 3,
        "four": 4,
        "five": 5,
        "six": 6,
        "seven": 7,
        "eight": 8,
        "nine": 9,
        "ten": 10,
        "eleven": 11,
        "twelve": 12,
        "a couple of": 2,
        "a few": 3,
        "few": 3,
        "several": 3,
    },
    units={
        "day": "day",
        "days": "day",
        "week": "week",
        "weeks": "week",
        "month": "month",
        "months": "month",
        "year": "year",
        "years": "year",
    },
    months={
        "january": 1,
        "february": 2,
        "march": 3,
        "april": 4,
        "may": 5,
        "june": 6,
        "july": 7,
        "august": 8,
        "september": 9,
        "october": 10,
        "november": 11,
        "december": 12,
    },
    weekdays={
        "monday": 0,
        "tuesday": 1,
        "wednesday": 2,
        "thursday": 3,
        "friday": 4,
        "saturday": 5,
        "sunday": 6,
    },
    seasons={"spring": 3, "summer": 6, "autumn": 9, "fall": 9, "winter": 12},
    today=("today", "this morning", "this afternoon", "this evening", "tonight"),
    yesterday="yesterday",
    day_before_yesterday="the day before yesterday",
    this="this",
    last=("last", "previous"),
    rolling=("past",),
    ago="ago",
    before=("before", "until", "till", "prior to"),
    after=("after",),
    since=("since",),
    lead=(
        "from",
        "in",
        "during",
        "of",
        "on",
        "over",
        "within",
        "modified",
        "edited",
        "changed",
        "saved",
        "created",
        "updated",
        "written",
        "made",
        "taken",
        "shot",
    ),
    prepositions=("in", "from", "during"),
    articles=("the",),
    ambiguous_months=("may",),
)


@dataclass(frozen=True)
class Period:
    """A span of local time: [start, end), either end open."""

    start: datetime | None
    end: datetime | None


@dataclass(frozen=True)
class Parsed:
    """A query with its time expression taken out: the text to embed and the date range."""

    text: str  # the query without the expression (the whole query when there is none)
    after: datetime | None = None  # inclusive, local and aware
    before: datetime | None = None  # exclusive
    expression: str | None = None  # the words recognised, lowercased: "from last week"
    label: str | None = None  # what the window's chip says after "modified": "last week"
    strict: bool = True  # a filter; False: files in the range are preferred, others still shown

    @property
    def found(self) -> bool:
        """Whether the query said when."""
        return self.expression is not None

    def chip(self) -> str:
        """What the window's chip and the CLI say: "modified last week"."""
        return f"modified {self.label}" + ("" if self.strict else " (preferred)")

    def span(self) -> str:
        """The range in days: "2026-11-23 to 2026-11-29", "since 2024-03-01", "before 2026-05-01"."""
        first = self.after.date().isoformat() if self.after else None
        last = (self.before - timedelta(microseconds=1)).date().isoformat() if self.before else None
        if first and last:
            return first if first == last else f"{first} to {last}"
        return (
            f"since {first}" if first else f"before {self.before.date().isoformat()}" if self.before else ""
        )

    def to_json(self) -> dict[str, Any]:
        """The `parsed` object of `launcher search --json` and POST /api/search."""
        return {
            "text": self.text,
            "after": self.after.isoformat() if self.after else None,
            "before": self.before.isoformat() if self.before else None,
            "expression": self.expression,
            "label": self.label,
            "mode": None if not self.found else "filter" if self.strict else "prefer",
        }


# --- calendar arithmetic --------------------------------------------------------------------------


def _midnight(d: date) -> datetime:
    """Local midnight of a day, aware, with the zone's offset on that day (DST included)."""
    return datetime.combine(d, time()).astimezone()


def _add_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    return date(d.year + y, m + 1, 1)


def _period(start: date, end: date) -> Period:
    return Period(_midnight(start), _midnight(end))


def _unit_period(day: date, unit: str) -> Period:
    """The calendar day, week (from Monday), month or year holding a day."""
    if unit == "day":
        return _period(day, day + timedelta(days=1))
    if unit == "week":
        monday = day - timedelta(days=day.weekday())
        return _period(monday, monday + timedelta(days=7))
    if unit == "month":
        first = day.replace(day=1)
        return _period(first, _add_months(first, 1))
    first = date(day.year, 1, 1)
    return _period(first, date(day.year + 1, 1, 1))


def _shift(day: date, unit: str, n: int) -> date:
    """A day n units earlier (a month earlier than 31 March is the last day of February)."""
    if unit == "day":
        return day - timedelta(days=n)
    if unit == "week":
        return day - timedelta(weeks=n)
    months = n * (12 if unit == "year" else 1)
    first = _add_months(day.replace(day=1), -months)
    last = (_add_months(first, 1) - timedelta(days=1)).day
    return first.replace(day=min(day.day, last))


def _recent_month(month: int, today: date) -> date:
    """The first day of the latest such month that has begun."""
    year = today.year if month <= today.month else today.year - 1
    return date(year, month, 1)


def _season(first_month: int, year: int) -> tuple[date, date]:
    """A season starting in first_month of year: three months (winter runs into the next year)."""
    start = date(year, first_month, 1)
    return start, _add_months(start, 3)


# --- the grammar ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Match:
    """One recognised expression in the query."""

    start: int
    end: int
    period: Period
    strict: bool
    keep: str = ""  # words that stay in the text (a year, a month name)
    label: str = ""


def _alt(words: tuple[str, ...] | list[str]) -> str:
    return "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in sorted(words, key=len, reverse=True))


def _words(text: str) -> str:
    return " ".join(text.split()).lower()


class Grammar:
    """The time expressions of one language, compiled once."""

    def __init__(self, lex: Lexicon):
        self.lex = lex
        num = _alt(list(lex.numbers))
        unit = _alt(list(lex.units))
        month = _alt(list(lex.months))
        weekday = _alt(list(lex.weekdays))
        season = _alt(list(lex.seasons))
        periods = _alt([w for w, u in lex.units.items() if u != "day"])  # "last week", not "last day"
        the = rf"(?:(?:{_alt(lex.articles)})\s+)?"
        # An ISO date standing alone: not part of a file name (2024-03-05-notes.md) or a version.
        iso = r"(?<![\w./-])(?P<iso>\d{4}-\d{2}-\d{2})(?![\w./-])"
        year = r"(?<![\w./-])(?P<year>(?:19[7-9]|20\d)\d)(?![\w./-])"
        # "may" is a month only before a year or at the end of the query ("before may"), never
        # in "python 3.11 may break" or "in may cases".
        amb = _alt(list(lex.ambiguous_months)) if lex.ambiguous_months else None
        plain_months = _alt([m for m in lex.months if m not in lex.ambiguous_months])
        month_alone = (
            rf"(?P<month>{plain_months}|(?:{amb})(?=\s*(?:$|[,.;!?)])))" if amb else rf"(?P<month>{month})"
        )
        point = (
            rf"(?:{iso}"
            rf"|(?P<mon_y>{month})\s+(?P<mon_year>(?:19[7-9]|20\d)\d)(?![\w./-])"
            rf"|(?P<season_y>{season})\s+(?P<season_year>(?:19[7-9]|20\d)\d)(?![\w./-])"
            rf"|{year}"
            rf"|(?P<rel>{_alt([lex.day_before_yesterday, lex.yesterday])}(?:['’]s)?"
            rf"|(?:{_alt(list(lex.today))})(?!['’]s))"
            rf"|(?P<which>{_alt([lex.this, *lex.last])})\s+(?P<which_unit>{periods})"
            rf"|(?P<last_wd>{_alt(list(lex.last))})\s+(?P<weekday>{weekday})"
            rf"|(?P<season_which>{_alt([lex.this, *lex.last])})\s+(?P<season>{season})"
            rf"|(?P<ago_n>{num}|\d{{1,3}})\s+(?P<ago_unit>{unit})\s+{_alt([lex.ago])}"
            rf"|{month_alone})"
        )
        bound = rf"(?:(?P<bound>{_alt([*lex.before, *lex.after, *lex.since])})\s+{the})?"
        # "past week" and "past 3 weeks" roll back from today; "last 3 weeks" too, but "last week"
        # is the calendar week (a point, below).
        rolling = (
            rf"(?:(?P<past>{_alt(list(lex.rolling))})\s+(?:(?P<past_n>{num}|\d{{1,3}})\s+)?"
            rf"|(?P<last_n_word>{_alt(list(lex.last))})\s+(?P<last_n>{num}|\d{{1,3}})\s+)"
            rf"(?P<past_unit>{unit})(?![\w'’])"
        )
        lead = rf"(?:(?:{_alt(list(lex.lead))})\s+)*{the}"
        self.pattern = re.compile(
            rf"(?<![\w'’-])(?P<lead>{lead}){bound}(?:{rolling}|{point})(?![\w'’-])",
            re.IGNORECASE,
        )

    # one expression

    def _point(self, m: re.Match[str], now: datetime) -> tuple[Period, bool, str] | None:
        """The period a point expression names, whether it is exact, and the words kept."""
        lex, today = self.lex, now.date()
        g = m.groupdict()
        if g["iso"]:
            try:
                day = date.fromisoformat(g["iso"])
            except ValueError:
                return None
            return _unit_period(day, "day"), True, ""
        if g["mon_y"]:
            start = date(int(g["mon_year"]), lex.months[g["mon_y"].lower()], 1)
            return _period(start, _add_months(start, 1)), False, f"{g['mon_y']} {g['mon_year']}"
        if g["season_y"]:
            start, end = _season(lex.seasons[g["season_y"].lower()], int(g["season_year"]))
            return _period(start, end), False, ""
        if g["year"]:
            y = int(g["year"])
            if y > now.year + 1:
                return None
            return _period(date(y, 1, 1), date(y + 1, 1, 1)), False, g["year"]
        if g["rel"]:
            rel = _words(re.sub(r"['’]s$", "", g["rel"]))
            back = 2 if rel == lex.day_before_yesterday else 1 if rel == lex.yesterday else 0
            return _unit_period(today - timedelta(days=back), "day"), True, ""
        if g["which"]:
            unit = lex.units[g["which_unit"].lower()]
            back = 0 if g["which"].lower() == lex.this else 1
            return _unit_period(_shift(today, unit, back), unit), True, ""
        if g["last_wd"]:
            want = lex.weekdays[g["weekday"].lower()]
            back = (today.weekday() - want) % 7 or 7
            return _unit_period(today - timedelta(days=back), "day"), True, ""
        if g["season_which"]:
            first = lex.seasons[g["season"].lower()]
            year = today.year
            start, end = _season(first, year)
            if g["season_which"].lower() == lex.this:
                if start > today:  # this winter, asked in February: the one that began in December
                    start, end = _season(first, year - 1)
            else:
                while end > today:  # last summer: the latest one that is over
                    year -= 1
                    start, end = _season(first, year)
            return _period(start, end), False, ""
        if g["ago_n"]:
            n = self._number(g["ago_n"])
            unit = lex.units[g["ago_unit"].lower()]
            return _unit_period(_shift(today, unit, n), unit), False, ""
        if g["month"]:
            start = _recent_month(lex.months[g["month"].lower()], today)
            return _period(start, _add_months(start, 1)), False, g["month"]
        return None

    def _number(self, word: str) -> int:
        return int(word) if word.isdigit() else self.lex.numbers[_words(word)]

    def match(self, m: re.Match[str], now: datetime) -> _Match | None:
        """What one regex match means, or None when it only looked like time."""
        lex, today = self.lex, now.date()
        g = m.groupdict()
        label = _words(m.group(0)[len(g["lead"]) :])
        if g["past_unit"] and g["bound"]:
            return None  # "since the past week": not a phrase anyone means
        if g["past_unit"]:
            unit = lex.units[g["past_unit"].lower()]
            count = g["past_n"] or g["last_n"]
            n = self._number(count) if count else 1
            if n == 0:
                return None
            # The past 3 days: today and the two before; the past 2 weeks: from that day on.
            start = today - timedelta(days=n - 1) if unit == "day" else _shift(today, unit, n)
            return _Match(m.start(), m.end(), Period(_midnight(start), None), True, label=label)
        # A bare year or month is a date only after "in", "from", "during" (or a bound): not
        # "port 2023", not "march of the penguins".
        bare = (g["year"] or g["month"]) and not g["bound"]
        if bare and not set(_words(g["lead"]).split()) & set(lex.prepositions):
            return None
        point = self._point(m, now)
        if point is None:
            return None
        period, strict, keep = point
        if g["bound"]:
            word = _words(g["bound"])
            if word in lex.before:
                period = Period(None, period.start)
            elif word in lex.after:
                period = Period(period.end, None)
            else:
                period = Period(period.start, None)
            return _Match(m.start(), m.end(), period, True, label=label)
        if g["year"] or g["month"] or g["mon_y"] or g["season_y"]:
            label = f"in {label}"  # the chip reads "modified in 2023"
        elif g["iso"]:
            label = f"on {label}"
        return _Match(m.start(), m.end(), period, strict, keep=keep, label=label)

    def parse(self, text: str, at: datetime) -> Parsed:
        """The query without its time expressions, and the range they name together."""
        found: list[_Match] = []
        for m in self.pattern.finditer(text):
            if _quoted(text, m.start()):
                continue  # "release notes "last week"" in quotes is a phrase to find, not a date
            got = self.match(m, at)
            if got is not None:
                found.append(got)
        if not found:
            return Parsed(text)
        after = max((f.period.start for f in found if f.period.start), default=None)
        before = min((f.period.end for f in found if f.period.end), default=None)
        if after is not None and before is not None and after >= before:
            # "since 2024 in 2023": nothing could match; the words are left as they were typed.
            return Parsed(text)
        pieces, pos = [], 0
        for f in found:
            pieces += [text[pos : f.start], f" {f.keep} " if f.keep else " "]
            pos = f.end
        pieces.append(text[pos:])
        cleaned = " ".join("".join(pieces).split()).strip(" ,;:")
        return Parsed(
            cleaned,
            after,
            before,
            expression=" ".join(_words(text[f.start : f.end]) for f in found),
            label=", ".join(f.label for f in found),
            strict=any(f.strict for f in found),
        )


def _quoted(text: str, at: int) -> bool:
    """Whether a position is inside double quotes."""
    return text.count('"', 0, at) % 2 == 1


_GRAMMARS: dict[str, Grammar] = {}
LEXICONS: dict[str, Lexicon] = {"en": ENGLISH}


def parse(text: str, at: datetime | None = None, language: str = "en") -> Parsed:
    """The time expressions of a query, as a date range relative to `at` (default: now())."""
    if language not in _GRAMMARS:
        _GRAMMARS[language] = Grammar(LEXICONS[language])
    # Ranges are local days in the system's zone (TZ): a clock given with another offset is
    # converted to it first.
    at = (at or now()).astimezone()
    return _GRAMMARS[language].parse(text, at)


def parsed_from_json(data: dict[str, Any] | None) -> Parsed | None:
    """Inverse of Parsed.to_json (the resident process's answer)."""
    if not data:
        return None

    def moment(key: str) -> datetime | None:
        return datetime.fromisoformat(data[key]) if data.get(key) else None

    return Parsed(
        str(data.get("text") or ""),
        moment("after"),
        moment("before"),
        expression=data.get("expression"),
        label=data.get("label"),
        strict=data.get("mode") != "prefer",
    )


def unparsed(text: str) -> Parsed:
    """A query taken as typed (date parsing off)."""
    return Parsed(text)


def narrowed(parsed: Parsed, after: datetime | None, before: datetime | None) -> Parsed:
    """The parsed range intersected with explicit --after/--before bounds."""
    a = max((t for t in (parsed.after, after) if t is not None), default=None, key=_ts)
    b = min((t for t in (parsed.before, before) if t is not None), default=None, key=_ts)
    return replace(parsed, after=a, before=b)


def _ts(t: datetime) -> float:
    return (t if t.tzinfo else t.astimezone()).timestamp()
