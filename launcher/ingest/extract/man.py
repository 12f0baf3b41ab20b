"""Manual pages (troff source, gzipped as distributions ship them) and other gzipped text files.

A man page is rendered to the plain text a reader sees: macros become headings, paragraphs and
inline text, font and spacing escapes go, special characters become their Unicode glyphs. Not a
full troff (no layout, no registers): enough that the words a person would search for are the
words the model and the keyword index see, and that the NAME line becomes the document's title.

A gzipped file is decompressed up to max_text_bytes and no further (a gzip bomb costs at most that
much memory), then read as the kind its inner name says. One that expands past MAX_GZIP_RATIO is
refused as a possible gzip bomb, so it never costs an hour of embedding repeated junk.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from launcher.core.records import FileRecord, Piece
from launcher.ingest.extract.base import ExtractError, ExtractSettings, numbered, text_pieces

# `ls.1`, `open.2.gz`, `c_rehash.1ssl.gz`, `printf.3posix.gz`, `Algorithm::Diff.3pm.gz`, `tclsh.n`:
# a section number (or n, l) and an optional suffix. The content decides (troff_like); this only
# says which files to look at.
_MAN_NAME = re.compile(r"^[^.].*\.(?:[1-9][a-z0-9]{0,8}|n|l)$", re.IGNORECASE)
SNIFF_BYTES = 32 * 1024  # Pod::Man puts ~130 lines of macro definitions before .TH
# Real gzipped text expands 2.5x (median) and at most 28x: measured over the 26,097 .gz files of this
# machine's /usr/share/doc, /usr/share/man and /usr/share/info. A file past 100x after its first
# GZIP_RATIO_FLOOR bytes was made to expand (420 MB of one repeated line fits in 1 MB).
MAX_GZIP_RATIO = 100
GZIP_RATIO_FLOOR = 4 * 1024 * 1024
_GZIP_CHUNK = 1024 * 1024


def is_gzip_name(name: str) -> bool:
    """Whether a file name says gzip (`notes.txt.gz`, `changelog.Debian.gz`, `open.2.gz`)."""
    return name.lower().endswith(".gz") and len(name) > 3


def inner_name(name: str) -> str:
    """The name without a trailing `.gz`."""
    return name[:-3] if is_gzip_name(name) else name


def is_man_name(name: str) -> bool:
    """Whether a (decompressed) file name looks like a manual page's."""
    return _MAN_NAME.match(name) is not None


def read_maybe_gzipped(path: str, limit: int) -> bytes:
    """The file's bytes, decompressed when its name ends in .gz, up to `limit` (+1 to tell a cut)."""
    if not is_gzip_name(os.path.basename(path)):
        with open(path, "rb") as f:
            return f.read(limit + 1)
    out = bytearray()
    try:
        with open(path, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as f:
            while len(out) <= limit and (chunk := f.read(min(_GZIP_CHUNK, limit + 1 - len(out)))):
                out += chunk
                read = max(raw.tell(), 1)  # compressed bytes consumed (buffered ahead a little)
                if len(out) > GZIP_RATIO_FLOOR and len(out) > MAX_GZIP_RATIO * read:
                    raise ExtractError(
                        f"possible gzip bomb: {len(out) // 2**20} mb of data from the first "
                        f"{read // 1024} kb, over {MAX_GZIP_RATIO}:1"
                    )
    except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise ExtractError(f"broken gzip file: {str(exc).lower() or type(exc).__name__}") from exc
    return bytes(out)


def troff_like(data: bytes) -> bool:
    """Whether the start of a file is troff: it opens with a macro or comment line, and a title or
    section macro follows."""
    head = data[:SNIFF_BYTES].decode("latin-1").lstrip("\ufeff")
    lines = [line for line in head.splitlines() if line.strip()]
    return any(_MACRO_LINE.match(line) for line in lines[:5]) and any(
        line.startswith((".TH", ".Dd", ".Dt", ".SH", ".Sh", ".so ")) for line in lines
    )


_MACRO_LINE = re.compile(r"^[.'](?:\\\"|[A-Za-z]{1,3}\b)")


def extract_man(record: FileRecord, settings: ExtractSettings) -> Iterator[Piece]:
    """Text pieces of a manual page, with the NAME line as its title."""
    from launcher.ingest.extract.text import decode

    data = _cut(read_maybe_gzipped(record.path, settings.max_text_bytes), settings.max_text_bytes)
    page = render(decode(data))
    lines = numbered(page.text)
    yield from text_pieces(record, lines, settings, title=page.title)


def extract_gzipped_text(record: FileRecord, settings: ExtractSettings) -> Iterator[Piece]:
    """Text pieces of a gzipped text file (a README.gz, a changelog.gz); nothing for other data."""
    from launcher.ingest.extract.text import decode, markdown_title

    data = _cut(read_maybe_gzipped(record.path, settings.max_text_bytes), settings.max_text_bytes)
    if b"\x00" in data[:SNIFF_BYTES] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return  # an archive (.tar.gz) or other binary data: findable by name only
    lines = numbered(decode(data))
    yield from text_pieces(record, lines, settings, title=markdown_title(inner_name(record.path), lines))


def _cut(data: bytes, limit: int) -> bytes:
    """Bytes up to `limit`, cut back to the last whole line when there were more."""
    if len(data) <= limit:
        return data
    newline = data.rfind(b"\n", 0, limit)
    return data[: newline + 1] if newline > 0 else data[:limit]


# --- troff to text -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """A rendered manual page: its text, and its title (the NAME line, or name(section))."""

    text: str
    title: str | None


# Special characters, \(xx and \[xx]: the ones man pages use; anything else is dropped.
_GLYPHS = {
    "em": "—", "en": "–", "hy": "-", "mi": "-", "aq": "'", "dq": '"', "lq": "“", "rq": "”",
    "oq": "‘", "cq": "’", "bu": "•", "co": "©", "rg": "®", "tm": "™", "mu": "×", "di": "÷",
    "+-": "±", "<=": "≤", ">=": "≥", "!=": "≠", "->": "→", "<-": "←", "ua": "↑", "da": "↓",
    "ga": "`", "aa": "´", "ti": "~", "ha": "^", "sl": "/", "ba": "|", "br": "|", "rs": "\\",
    "fm": "′", "de": "°", "sc": "§", "ps": "¶", "Fo": "«", "Fc": "»", "at": "@", "sh": "#",
    "eq": "=", "pl": "+", "lB": "[", "rB": "]", "lC": "{", "rC": "}", "la": "⟨", "ra": "⟩",
    "dg": "†", "or": "|", "no": "¬", "if": "∞", "ct": "¢", "Po": "£", "Eu": "€", "Ye": "¥",
    "a\"": "ä", "o\"": "ö", "u\"": "ü", ":a": "ä", ":o": "ö", ":u": "ü", "ss": "ß",
    "'e": "é", "`e": "è", "^e": "ê", "'a": "á", "`a": "à", ",c": "ç", "~n": "ñ",
}  # fmt: skip
# Predefined strings, \*(xx and \*[xx] (man and mdoc).
_STRINGS = {
    "lq": "“", "rq": "”", "Lq": "“", "Rq": "”", "q": '"', "Aq": "'", "C`": '"', "C'": '"',
    "R": "®", "Tm": "™", "Ba": "|",
}  # fmt: skip
_ESCAPE = re.compile(
    r"""\\(?:
        f(?:\[[^\]]*\]|\(..|.)          # font
      | s(?:[+-]?\d|\([+-]?\d\d|\[[^\]]*\]|[+-]?'[^']*')  # size
      | \*(?:\[(?P<str1>[^\]]*)\]|\((?P<str2>..)|(?P<str3>.))  # string
      | \((?P<glyph1>..)                # glyph
      | \[(?P<glyph2>[^\]]*)\]          # glyph, long name
      | [hvwoDlLbxXNZRSHmMgkn]'[^']*'   # motions, widths, overstrikes: no text
      | [mMgnkV](?:\[[^\]]*\]|\(..|.)   # colours, registers
      | \$(?:\d|\*|@)                   # macro arguments
      | (?P<plain>.)                    # a single-character escape
    )""",
    re.VERBOSE,
)
_SINGLE = {
    "-": "-", "e": "\\", "\\": "\\", "~": " ", " ": " ", "0": " ", "t": "\t", ".": ".", "'": "´",
    "`": "`", "^": "", "|": "", "&": "", ")": "", "%": "", ":": "", "c": "", "/": "", ",": "",
    "{": "", "}": "", "p": "", "r": "", "u": "", "d": "", "z": "", "a": "", "E": "",
}  # fmt: skip


def _unescape(line: str) -> str:
    def sub(m: re.Match[str]) -> str:
        g = m.groupdict()
        name = g["glyph1"] or g["glyph2"]
        if name is not None:
            if name.startswith("u") and len(name) in (5, 6):  # \[u00E9]
                try:
                    return chr(int(name[1:], 16))
                except ValueError:
                    return ""
            return _GLYPHS.get(name, "")
        s = g["str1"] or g["str2"] or g["str3"]
        if s is not None:
            return _STRINGS.get(s, "")
        plain = g["plain"]
        if plain is not None:
            return _SINGLE.get(plain, plain)
        return ""

    if "\\" not in line:
        return line
    line = re.sub(r'\\".*$', "", line)  # comment to end of line
    if line.endswith("\\") and not line.endswith("\\\\"):
        line = line[:-1]  # an escaped newline: the line goes on in the next
    return _ESCAPE.sub(sub, line)


def _args(rest: str) -> list[str]:
    """A macro line's arguments: words, or "quoted strings" ("" inside for a quote)."""
    out: list[str] = []
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t":
            i += 1
        if i >= n:
            break
        if rest[i] == '"':
            j = i + 1
            buf = []
            while j < n:
                if rest[j] == '"':
                    if j + 1 < n and rest[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(rest[j])
                j += 1
            out.append("".join(buf))
            i = j + 1
        else:
            j = i
            while j < n and rest[j] not in " \t":
                j += 1
            out.append(rest[i:j])
            i = j
    return out


_WORDS = re.compile(r"\S+")
# man(7) macros that alternate fonts: arguments joined without spaces.
_ALTERNATING = frozenset({"BR", "BI", "IB", "IR", "RB", "RI"})
# Paragraph breaks (a blank line in the text).
_BREAKS = frozenset({"PP", "P", "LP", "sp", "Pp", "Lp", "HP", "TP", "TQ", "IP", "ns", "bp"})
# Requests with no text of their own.
_SILENT = frozenset(
    _WORDS.findall(
        "br fi nf RS RE in ti ne ad na hy nh ft ps vs ta ll lt pl pn po nr ds as rm rn tr cc c2 ec "
        "eo ev mk rt fl ab ig ch wh em so cs cu ul uf lg ss pc mc tm hw hc ie el if EE EX ME UE YS "
        "DT PD Dd Os Bl El Bd Ed Ek Bk Ec Ef ad ce"
    )
)
# mdoc(7) words that are macros when they stand inside a macro line.
_MDOC_CALLABLE = frozenset(
    _WORDS.findall(
        "Ac Ad An Ao Aq Ar At Bc Bo Bq Brc Bro Brq Bsx Bx Cd Cm Dc Do Dq Dv Dx Ec Em En Eo Er Es Ev "
        "Fa Fc Fl Fn Fo Fr Ft Fx Ic Li Lk Ms Mt Nm No Ns Nx Oc Oo Op Ot Ox Pa Pc Pf Po Pq Qc Ql Qo "
        "Qq Sc Sh So Sq Ss St Sx Sy Ta Tn Ux Va Vt Xc Xo Xr"
    )
)


def render(source: str) -> Page:
    """The plain text of a man(7) or mdoc(7) page."""
    out: list[str] = []
    title: str | None = None
    th: str | None = None
    section: str | None = None
    name_lines: list[str] = []
    first_lines: list[str] = []  # the first section's: NAME, whatever the page's language calls it
    sections = 0
    mdoc_name: str | None = None
    skip_until: str | None = None  # inside .de ... .. or an `\{ ... \}` block
    table = 0  # 0: not in a table, 1: reading its format lines, 2: its rows

    def emit(text: str) -> None:
        out.append(text)
        if section == "NAME" and text.strip():
            name_lines.append(text.strip())
        if sections == 1 and text.strip():
            first_lines.append(text.strip())

    for raw in source.splitlines():
        if skip_until is not None:
            if skip_until in raw:
                skip_until = None
            continue
        if raw.startswith(('.\\"', "'\\\"", '.\\"', "'\\\"")) or raw.strip() in (".", "'"):
            continue
        if table:
            if raw.startswith(".TE"):
                table = 0
                continue
            if table == 1:
                if raw.rstrip().endswith("."):
                    table = 2
                continue
            if raw.startswith((".", "'")):
                continue
            cells = [_unescape(c).strip() for c in re.split(r"\t|T\{|T\}", raw)]
            emit(" ".join(c for c in cells if c and c not in ("_", "=")))
            continue
        if raw.startswith((".", "'")) and len(raw) > 1:
            body = raw[1:].lstrip()
            macro, _, rest = body.partition(" ")
            macro = macro.strip()
            if macro in ("de", "de1", "am", "ig"):
                skip_until = ".." if macro != "ig" else ".."
                continue
            if macro in ("if", "ie", "el"):
                if "\\{" in raw and "\\}" not in raw:
                    skip_until = "\\}"
                continue
            if macro == "TS":
                table = 1
                continue
            args = [_unescape(a) for a in _args(rest)]
            if macro == "TH" or macro == "Dt":
                if args:
                    th = f"{args[0].lower()}({args[1]})" if len(args) > 1 else args[0].lower()
                continue
            if macro in ("SH", "Sh", "SS", "Ss"):
                heading = " ".join(args)
                if macro in ("SH", "Sh"):
                    section = heading.upper()
                    sections += 1
                out.extend(["", heading])
                continue
            if macro == "so":
                emit(f"See {' '.join(args)}.")
                continue
            if macro in _BREAKS:
                out.append("")
                if macro == "IP" and args and args[0]:
                    emit(args[0])
                continue
            if macro in _SILENT:
                continue
            if macro in _ALTERNATING:
                emit("".join(args))
                continue
            if macro in ("B", "I", "SM", "SB", "UR", "MT", "OP"):
                if args:
                    emit(" ".join(args))
                continue
            if macro == "Nm" and mdoc_name is None and args:
                mdoc_name = args[0]
            if macro == "Nd":
                emit("- " + " ".join(args))
                continue
            if macro in _MDOC_CALLABLE or macro in ("It", "D1", "Dl"):
                emit(_mdoc_words([macro, *args], mdoc_name))
                continue
            continue  # an unknown request: its arguments are not text
        emit(_unescape(raw))

    text = re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip("\n") + "\n"
    # A translated page names its first section in its own language (名前, NOM, BEZEICHNUNG): that
    # section is the NAME one when it is a few lines that read like one ("ls - list directory
    # contents", "iptables — ...", mdoc's `.Nm` and `.Nd` lines).
    joined = " ".join(first_lines)
    if not name_lines and 0 < len(first_lines) <= 5 and (" - " in joined or " \u2014 " in joined):
        name_lines = first_lines
    if name_lines:
        title = " ".join(" ".join(name_lines).split())
    elif th:
        title = th
    return Page(text, title)


def _mdoc_words(words: list[str], name: str | None) -> str:
    """An mdoc macro line as text: `Fl v` -> `-v`, `Xr ls 1` -> `ls(1)`, other macro names dropped."""
    out: list[str] = []
    i = 0
    glue = False
    while i < len(words):
        w = words[i]
        if w == "Fl":
            nxt = words[i + 1] if i + 1 < len(words) and words[i + 1] not in _MDOC_CALLABLE else ""
            out.append("-" + nxt)
            i += 2 if nxt else 1
            continue
        if w == "Xr" and i + 2 < len(words):
            out.append(f"{words[i + 1]}({words[i + 2]})")
            i += 3
            continue
        if w == "Nm":
            if i + 1 >= len(words) or words[i + 1] in _MDOC_CALLABLE:
                out.append(name or "")
            i += 1
            continue
        if w == "Ns":
            glue = True
            i += 1
            continue
        if w in _MDOC_CALLABLE or w in ("It", "D1", "Dl"):
            i += 1
            continue
        if glue and out:
            out[-1] += w
            glue = False
        else:
            out.append(w)
        i += 1
    return " ".join(x for x in out if x)
