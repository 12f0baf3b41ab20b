"""Text cut into pieces measured in the model's own tokens.

The budget is counted on the whole input the model sees: the instruction and chat template, the
file-name context every piece carries, and the piece's text. Lines are grouped until the chunk
reaches the model's target size; a line too long for one chunk (minified code, a CSV row, a
paragraph without newlines, a 12 MB single line) is split at a word boundary, or between characters
where there is none. Nothing is truncated and nothing is refused for length: every character lands
in some chunk, and each chunk knows its line range and, where a line was split, its character span.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

CountFn = Callable[[str], int]


@dataclass(frozen=True)
class TokenBudget:
    """How a model counts, and how much one input may hold.

    `count` gives the tokens a text costs inside an input's body; `overhead` the tokens of an input
    whose body is only the given context header (instruction, template and special tokens included).
    """

    count: CountFn
    overhead: CountFn
    limit: int  # tokens of the whole input the model accepts
    target: int  # tokens a chunk's text aims at: the size that retrieves best (measured, see the guide)
    overlap: int  # tokens of the previous chunk's last lines repeated at the start of the next
    image_tokens: int = 0  # visual tokens of the largest picture (0: the model takes none)

    def body_limit(self, context: str) -> int:
        """Tokens left for a piece's text once the context header and the template are paid for."""
        # 1 for the newline between context and text, 3 for merges at the seams: counts of parts do
        # not add up exactly; the embed pass still refuses (per piece) anything over the limit.
        return self.limit - self.overhead(context) - 4


def approximate_budget(target: int = 200, limit: int = 512) -> TokenBudget:
    """A model-free budget (4 characters a token) for extraction outside an indexing run."""

    def count(text: str) -> int:
        return (len(text) + 3) // 4

    return TokenBudget(
        count=count, overhead=lambda ctx: count(ctx) + 8, limit=limit, target=target, overlap=target // 8
    )


@dataclass(frozen=True)
class Chunk:
    """Consecutive text of one file: lines first..last, cut at characters where a line was split."""

    first_line: int
    last_line: int
    text: str
    char_start: int | None = None  # offset into the first line where the chunk starts, when not 0
    char_end: int | None = None  # offset into the last line where the chunk ends, when not its end


@dataclass(frozen=True)
class _Unit:
    line: int
    text: str
    start: int  # offset of this part in its line
    whole_end: bool  # the part runs to the end of its line
    tokens: int


def split_line(
    line: str, max_tokens: int, count: CountFn, tokens: int | None = None
) -> list[tuple[int, int]]:
    """(start, end) character spans covering `line`, each at most `max_tokens` tokens.

    Cuts after the last whitespace in the second half of a window, else between characters. The
    window is sized from the line's own characters-per-token and shrunk until the part fits.
    """
    max_tokens = max(1, max_tokens)
    n = count(line) if tokens is None else tokens
    if n <= max_tokens:
        return [(0, len(line))]
    per_token = max(len(line) / max(n, 1), 0.25)
    spans: list[tuple[int, int]] = []
    pos = 0
    while pos < len(line):
        width = max(1, int(per_token * max_tokens * 0.95))
        while True:
            end = min(len(line), pos + width)
            cut = end
            if end < len(line):
                space = max(line.rfind(" ", pos + width // 2, end), line.rfind("\t", pos + width // 2, end))
                if space >= 0:
                    cut = space + 1
            got = count(line[pos:cut])
            if got <= max_tokens or cut - pos <= 1:
                break
            # Too many tokens for this many characters: shrink in proportion, with a margin.
            width = max(1, min(cut - pos - 1, int((cut - pos) * max_tokens / got * 0.9)))
        spans.append((pos, cut))
        if got:
            per_token = max((cut - pos) / got, 0.25)
        pos = cut
    return spans


def _units(lines: Iterable[tuple[int, str]], max_tokens: int, count: CountFn) -> Iterator[_Unit]:
    for number, line in lines:
        n = count(line)
        if n <= max_tokens:
            yield _Unit(number, line, 0, True, n)
            continue
        for start, end in split_line(line, max_tokens, count, n):
            part = line[start:end]
            yield _Unit(number, part, start, end == len(line), count(part))


def _join(units: list[_Unit]) -> str:
    out: list[str] = []
    for i, unit in enumerate(units):
        # Parts of one split line are consecutive characters: no newline between them.
        if i and not (unit.line == units[i - 1].line and unit.start > 0):
            out.append("\n")
        out.append(unit.text)
    return "".join(out)


def _chunk_of(units: list[_Unit]) -> Chunk:
    first, last = units[0], units[-1]
    return Chunk(
        first.line,
        last.line,
        _join(units),
        char_start=first.start or None,
        char_end=None if last.whole_end else last.start + len(last.text),
    )


def chunk_text(lines: Iterable[tuple[int, str]], budget: TokenBudget, context: str) -> Iterator[Chunk]:
    """Numbered lines grouped into chunks of about budget.target tokens, never over the body limit.

    Line numbers may have gaps (blank spreadsheet rows), so they are carried, not counted. Chunks
    with no visible text are dropped; every other character is in at least one chunk.
    """
    hard = max(1, budget.body_limit(context))
    target = max(1, min(budget.target, hard))
    newline = max(0, budget.count("\n"))
    units = list(_units(lines, target, budget.count))
    start = 0
    while start < len(units):
        end, size = start, 0
        while end < len(units):
            cost = units[end].tokens + (newline if end > start else 0)
            if end > start and size + cost > target:
                break
            size += cost
            end += 1
        yield from _checked(units[start:end], budget, hard)
        if end >= len(units):
            break
        # Repeat the last lines (up to `overlap` tokens, and at most a quarter of the chunk) so a
        # passage cut at a chunk boundary is whole in one of them.
        back, carried = 0, 0
        while back < (end - start) // 4 and carried + units[end - back - 1].tokens <= budget.overlap:
            back += 1
            carried += units[end - back].tokens
        start = end - back


def _checked(units: list[_Unit], budget: TokenBudget, hard: int) -> Iterator[Chunk]:
    """The chunk, measured exactly (token counts of lines do not add up exactly); halves if over."""
    chunk = _chunk_of(units)
    if not chunk.text.strip():
        return
    if len(units) == 1 or budget.count(chunk.text) <= hard:
        yield chunk
        return
    middle = len(units) // 2
    yield from _checked(units[:middle], budget, hard)
    yield from _checked(units[middle:], budget, hard)
