"""Manual pages and gzipped text: real man pages from this machine's /usr/share/man (as Debian ships
them, gzipped troff), rendered to the text a reader sees, indexed through the real CLI."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

from launcher.core.records import FileRecord
from launcher.ingest.extract import ExtractError, extract
from launcher.ingest.extract.man import GZIP_RATIO_FLOOR, render, troff_like
from tests.test_index_cli import cli, ok

MAN1 = Path("/usr/share/man/man1")
REAL_PAGES = ("tar.1.gz", "ls.1.gz", "xargs.1.gz", "gzip.1.gz")


def real_page(name: str) -> Path:
    path = MAN1 / name
    if not path.exists():
        pytest.skip(f"{path} is not installed on this machine")
    return path


def record(path: Path, kind: str = "other") -> FileRecord:
    st = path.stat()
    return FileRecord(str(path), st.st_size, st.st_mtime_ns, kind)


def test_real_man_page_renders_to_plain_text() -> None:
    source = gzip.decompress(real_page("tar.1.gz").read_bytes()).decode("utf-8")
    assert troff_like(source.encode())
    page = render(source)
    assert page.title == "tar - an archiving utility"
    assert "tar --create [--file ARCHIVE]" in page.text  # \fB\-\-create\fR -> --create
    for leftover in ("\\f", "\\-", ".SH", ".TP", '.\\"'):
        assert leftover not in page.text, leftover
    assert "it under the terms of the GNU General Public License" not in page.text  # a troff comment


def test_mdoc_and_special_characters() -> None:
    page = render(
        ".Dd May 1, 2024\n.Dt FROB 1\n.Os\n.Sh NAME\n.Nm frob\n.Nd twiddle the \\(lqbits\\(rq\n"
        ".Sh SYNOPSIS\n.Nm\n.Op Fl v\n.Ar file\n.Sh SEE ALSO\n.Xr ls 1\n"
        ".de XX\nmacro body that is not text\n..\n"
        ".TS\nl l.\nkey\tvalue\n.TE\n"
        "caf\\[u00E9] \\(em \\*(lqquoted\\*(rq \\e \\fBbold\\fP\n"
    )
    assert page.title == "frob - twiddle the “bits”"
    assert "frob\n-v\nfile" in page.text
    assert "ls(1)" in page.text
    assert "macro body" not in page.text
    assert "key value" in page.text
    assert "café — “quoted” \\ bold" in page.text


def test_a_translated_page_is_titled_by_its_first_section() -> None:
    # The layout of Debian's manpages-ja and manpages-de: the NAME section under its own language's
    # heading (Japanese ls(1) and biff(1), 734 of manpages-ja's 747 man1/man8 pages get a title so).
    man = '.TH LS "1" "2021年5月" "GNU coreutils"\n.SH 名前\nls \\- ディレクトリの内容をリスト表示する\n.SH 書式\n.B ls\n'
    assert render(man).title == "ls - ディレクトリの内容をリスト表示する"
    mdoc = ".Dd June 6, 1993\n.Dt BIFF 1\n.Sh 名前\n.Nm biff\n.Nd メールの到着を知らせる\n.Sh 書式\n.Nm\n"
    assert render(mdoc).title == "biff - メールの到着を知らせる"
    german = ".TH LS 1\n.SH BEZEICHNUNG\nls \\(em Verzeichnisinhalte auflisten\n.SH ÜBERSICHT\nls\n"
    assert render(german).title == "ls \u2014 Verzeichnisinhalte auflisten"
    # A first section that is not a NAME line (long, or without the dash) leaves name(section).
    other = ".TH FOO 1\n.SH DESCRIPTION\nfoo does things\n.SH OPTIONS\n-x\n"
    assert render(other).title == "foo(1)"


def test_gzipped_man_page_plain_page_and_gzipped_text(tmp_path: Path) -> None:
    shutil.copy(real_page("ls.1.gz"), tmp_path / "ls.1.gz")
    (tmp_path / "xargs.1").write_bytes(gzip.decompress(real_page("xargs.1.gz").read_bytes()))
    (tmp_path / "changelog.gz").write_bytes(gzip.compress(b"version 2.1\n\n * Fixed the frobnicator.\n"))
    (tmp_path / "notes.1").write_text("not a man page, just notes about chapter 1\n")

    ls = extract(record(tmp_path / "ls.1.gz"))
    assert ls and "list directory contents" in ls[0].context  # the NAME line is the title
    assert any("--almost-all" in p.text for p in ls)
    xargs = extract(record(tmp_path / "xargs.1"))
    assert any("build and execute command lines" in p.text for p in xargs)
    assert not any("\\f" in p.text for p in ls + xargs)
    changelog = extract(record(tmp_path / "changelog.gz"))
    assert [p.text for p in changelog] == ["version 2.1\n\n * Fixed the frobnicator."]
    assert "notes about chapter 1" in extract(record(tmp_path / "notes.1"))[0].text


def test_broken_archive_and_bomb_gzip(tmp_path: Path) -> None:
    data = gzip.compress(b"line of text\n" * 1000)
    (tmp_path / "cut.txt.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ExtractError, match="broken gzip file"):
        extract(record(tmp_path / "cut.txt.gz"))
    # A tarball is data, not text: findable by name only, not an error.
    import tarfile

    (tmp_path / "in.txt").write_text("inside")
    with tarfile.open(tmp_path / "bundle.tar.gz", "w:gz") as t:
        t.add(tmp_path / "in.txt", arcname="in.txt")
    assert extract(record(tmp_path / "bundle.tar.gz")) == []
    # 256 MB of text in ~1 MB: only max_text_bytes of it is ever decompressed.
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    line = b"all work and no play makes jack a dull boy\n" * 1000
    with open(tmp_path / "bomb.txt.gz", "wb") as f:
        for _ in range(256 * 2**20 // len(line)):
            f.write(z.compress(line))
        f.write(z.flush())
    assert os.path.getsize(tmp_path / "bomb.txt.gz") < 2 * 2**20
    from launcher.ingest.extract import ExtractSettings

    pieces = extract(record(tmp_path / "bomb.txt.gz"), settings=ExtractSettings(max_text_bytes=2**20))
    last = max(p.locator.line_end or 0 for p in pieces)
    assert last == 2**20 // len(b"all work and no play makes jack a dull boy\n")  # whole lines up to the cap
    # With the default cap (32 MB) it is refused once it passes 100:1, after 4 MB, not embedded.
    with pytest.raises(ExtractError, match=r"possible gzip bomb: \d+ mb of data from the first \d+ kb"):
        extract(record(tmp_path / "bomb.txt.gz"))
    # Large text that is not made to expand (6 MB of numbered lines of random words, about 3:1) is
    # read whole.
    words = np.random.default_rng(5).choice(["harbour", "invoice", "keeper", "lamp", "tide", "rope"], 800_000)
    text = "".join(f"{i}: {' '.join(words[i * 5 : i * 5 + 5])}\n" for i in range(160_000))
    assert len(text) > GZIP_RATIO_FLOOR
    with gzip.open(tmp_path / "big.txt.gz", "wt") as f:
        f.write(text)
    assert max(p.locator.line_end or 0 for p in extract(record(tmp_path / "big.txt.gz"))) == 160_000


@pytest.mark.slow
def test_cli_indexes_and_finds_real_man_pages(tmp_path: Path) -> None:
    folder = tmp_path / "man"
    folder.mkdir()
    for name in REAL_PAGES:
        shutil.copy(real_page(name), folder / name)
    home = tmp_path / "home"
    summary = json.loads(ok(cli(home, "index", str(folder), "--json", timeout=900)).stdout)
    assert summary["pieces_pending"] == 0
    status = json.loads(ok(cli(home, "status", "--json")).stdout)
    assert status["failures"] == []
    for query, answer in (
        ("build and execute command lines from standard input", "xargs.1.gz"),
        ("list directory contents sorted by modification time", "ls.1.gz"),
        ("compress or expand files", "gzip.1.gz"),
    ):
        hits = json.loads(ok(cli(home, "search", query, "--json")).stdout)["hits"]
        assert os.path.basename(hits[0]["path"]) == answer, (query, [h["path"] for h in hits])
        assert "\\f" not in hits[0]["snippet"]
