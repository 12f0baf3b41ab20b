"""Stage 1, scan: real folder trees made in tmp_path, walked by the real scanner."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.core.records import KINDS, FileRecord, Skip
from launcher.ingest.scan import kind_of, scan


def write(path: Path, content: str | bytes = "x") -> Path:
    """Create `path` (and its folders) with `content`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def found(root: Path, **kwargs: object) -> list[str]:
    """Paths of the FileRecords under root, relative to it, '/'-separated, in scan order."""
    return [
        os.path.relpath(r.path, root).replace(os.sep, "/")
        for r in scan([root], **kwargs)  # type: ignore[arg-type]
        if isinstance(r, FileRecord)
    ]


def skips(root: Path, **kwargs: object) -> dict[str, str]:
    """{relative path: reason} of the Skips under root."""
    return {
        os.path.relpath(r.path, root).replace(os.sep, "/"): r.reason
        for r in scan([root], **kwargs)  # type: ignore[arg-type]
        if isinstance(r, Skip)
    }


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("notes.txt", "text"),
        ("server.LOG", "text"),
        ("config.yaml", "text"),
        ("data.csv", "text"),
        ("main.py", "code"),
        ("lib.rs", "code"),
        ("App.tsx", "code"),
        ("Makefile", "code"),
        ("README.md", "markdown"),
        ("guide.rst", "markdown"),
        ("index.HTML", "html"),
        ("page.htm", "html"),
        ("paper.pdf", "pdf"),
        ("IMG_0001.HEIC", "image"),
        ("photo.jpeg", "image"),
        ("anim.gif", "image"),
        ("scan.tiff", "image"),
        ("pic.webp", "image"),
        ("clip.MOV", "video"),
        ("movie.mkv", "video"),
        ("talk.webm", "video"),
        ("report.docx", "office"),
        ("deck.pptx", "office"),
        ("sheet.xlsx", "office"),
        ("novel.epub", "ebook"),
        ("archive.zip", "other"),
        ("noextension", "other"),
        (".bashrc", "other"),
        ("trailingdot.", "other"),
    ],
)
def test_kind_of(name: str, kind: str) -> None:
    assert kind_of(name) == kind
    assert kind_of(Path("/some/folder") / name) == kind
    assert kind in KINDS


def test_nested_unicode_tree_in_sorted_order(tmp_path: Path) -> None:
    write(tmp_path / "b.txt", "bee")
    write(tmp_path / "a" / "z.md", "# zed")
    write(tmp_path / "a" / "deep" / "er" / "code.py", "print(1)\n")
    write(tmp_path / "résumé.pdf", b"%PDF-1.4")
    write(tmp_path / "日本語" / "メモ.txt", "こんにちは")
    write(tmp_path / "empty.txt", "")
    write(tmp_path / "blob.bin", b"\x00\x01")

    records = [r for r in scan([tmp_path]) if isinstance(r, FileRecord)]
    rel = [os.path.relpath(r.path, tmp_path) for r in records]
    # Depth-first, entries sorted by name at every level.
    assert rel == [
        "a/deep/er/code.py",
        "a/z.md",
        "b.txt",
        "blob.bin",
        "empty.txt",
        "résumé.pdf",
        "日本語/メモ.txt",
    ]
    by_name = {os.path.basename(r.path): r for r in records}
    assert by_name["code.py"].kind == "code"
    assert by_name["z.md"].kind == "markdown"
    assert by_name["résumé.pdf"].kind == "pdf"
    assert by_name["blob.bin"].kind == "other"  # findable by name; the caller decides
    assert by_name["empty.txt"].size == 0  # zero-byte files are yielded; extract decides
    assert by_name["b.txt"].size == 3
    st = os.stat(tmp_path / "b.txt")
    assert by_name["b.txt"].mtime_ns == st.st_mtime_ns
    assert all(os.path.isabs(r.path) for r in records)
    # Deterministic: a second scan gives the same records.
    assert [r for r in scan([tmp_path]) if isinstance(r, FileRecord)] == records


@pytest.mark.skipif(sys.platform != "linux", reason="only Linux file systems accept arbitrary name bytes")
def test_undecodable_file_name(tmp_path: Path) -> None:
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9-latin1.txt")  # not valid UTF-8
    with open(raw, "wb") as f:
        f.write(b"hello")
    (record,) = [r for r in scan([tmp_path]) if isinstance(r, FileRecord)]
    assert os.fsencode(record.path) == raw  # round-trips through surrogateescape
    assert record.size == 5
    assert record.kind == "text"
    with open(record.path, "rb") as f:
        assert f.read() == b"hello"


def test_hidden_and_system_folders(tmp_path: Path) -> None:
    write(tmp_path / "doc.txt")
    write(tmp_path / ".secret.txt")
    write(tmp_path / ".config" / "app.toml")
    write(tmp_path / "node_modules" / "left-pad" / "index.js")
    write(tmp_path / "pkg" / "__pycache__" / "mod.cpython-311.pyc")
    write(tmp_path / "pkg" / "mod.py")
    write(tmp_path / "repo" / ".git" / "HEAD")
    write(tmp_path / "env" / "pyvenv.cfg", "home = /usr/bin")
    write(tmp_path / "env" / "lib" / "site.py")
    write(tmp_path / "conda" / "conda-meta" / "history")
    write(tmp_path / "conda" / "lib" / "x.py")
    write(tmp_path / "$RECYCLE.BIN" / "deleted.txt")
    write(tmp_path / "Library" / "Caches" / "cache.db")
    write(tmp_path / "Library" / "Notes" / "kept.txt")
    write(tmp_path / "photos" / "Thumbs.db")

    assert found(tmp_path) == ["Library/Notes/kept.txt", "doc.txt", "pkg/mod.py"]
    # include_hidden brings dot-names back, but system folders such as .git stay out.
    assert found(tmp_path, include_hidden=True) == [
        ".config/app.toml",
        ".secret.txt",
        "Library/Notes/kept.txt",
        "doc.txt",
        "pkg/mod.py",
    ]


def test_a_root_named_explicitly_is_walked_even_if_hidden_or_a_venv(tmp_path: Path) -> None:
    write(tmp_path / ".dotfolder" / "in.txt")
    write(tmp_path / "venv" / "pyvenv.cfg")
    write(tmp_path / "venv" / "notes.txt")
    assert found(tmp_path / ".dotfolder") == ["in.txt"]
    assert "notes.txt" in found(tmp_path / "venv")


def test_gitignore_and_ignore_files_nested(tmp_path: Path) -> None:
    write(tmp_path / ".gitignore", "*.log\n!keep.log\nbuild/\n/top-only.txt\n# a comment\n")
    write(tmp_path / "app.log")
    write(tmp_path / "keep.log")
    write(tmp_path / "top-only.txt")
    write(tmp_path / "build" / "out.txt")
    write(tmp_path / "src" / "build.txt")  # a file named like the ignored folder stays
    write(tmp_path / "src" / "top-only.txt")  # "/top-only.txt" is anchored to the root
    write(tmp_path / "src" / "deep" / "trace.log")  # root patterns reach into subfolders
    write(tmp_path / "src" / "build" / "gen.txt")  # so does "build/"
    # Nested .gitignore: applies to its own subtree only, and may re-include.
    write(tmp_path / "sub" / ".gitignore", "secret.txt\n!important.log\n")
    write(tmp_path / "sub" / "secret.txt")
    write(tmp_path / "sub" / "important.log")
    write(tmp_path / "sub" / "inner" / "secret.txt")
    write(tmp_path / "other" / "secret.txt")
    # .ignore (ripgrep's) has the same syntax and wins over .gitignore in the same folder.
    write(tmp_path / "rg" / ".gitignore", "*.md\n")
    write(tmp_path / "rg" / ".ignore", "!README.md\ndraft*\n")
    write(tmp_path / "rg" / "README.md")
    write(tmp_path / "rg" / "notes.md")
    write(tmp_path / "rg" / "draft1.txt")
    write(tmp_path / "rg" / "final.txt")

    assert found(tmp_path) == [
        "keep.log",
        "other/secret.txt",
        "rg/README.md",
        "rg/final.txt",
        "src/build.txt",
        "src/top-only.txt",
        "sub/important.log",
    ]


def test_user_excludes(tmp_path: Path) -> None:
    write(tmp_path / "a.tmp")
    write(tmp_path / "keep.txt")
    write(tmp_path / "drafts" / "one.txt")
    write(tmp_path / "docs" / "drafts" / "two.txt")
    write(tmp_path / "docs" / "old" / "three.txt")
    write(tmp_path / "docs" / "new" / "four.txt")
    write(tmp_path / "docs" / "new" / "x.tmp")
    write(tmp_path / "folder-only" / "f.txt")
    write(tmp_path / "sub" / "folder-only")  # a file: "folder-only/" names folders only

    assert found(tmp_path, excludes=["*.tmp", "drafts", "docs/old/*", "folder-only/"]) == [
        "docs/new/four.txt",
        "keep.txt",
        "sub/folder-only",
    ]
    # An absolute glob matches the absolute path.
    assert found(tmp_path, excludes=[str(tmp_path / "docs") + "/*"]) == [
        "a.tmp",
        "drafts/one.txt",
        "folder-only/f.txt",
        "keep.txt",
        "sub/folder-only",
    ]


def test_index_dir_is_never_yielded(tmp_path: Path) -> None:
    write(tmp_path / "notes.txt")
    index = tmp_path / "launcher-index"
    write(index / "segment-0001.npy", b"\x93NUMPY")
    write(index / "meta.json", "{}")
    assert found(tmp_path, index_dir=index) == ["notes.txt"]
    # Also when the index folder is given through a symlink, and when a root lies inside the index.
    (tmp_path.parent / f"{tmp_path.name}-link").symlink_to(index)
    assert found(tmp_path, index_dir=tmp_path.parent / f"{tmp_path.name}-link") == ["notes.txt"]
    assert found(index, index_dir=index) == []
    (tmp_path / "shortcut.json").symlink_to(index / "meta.json")
    assert found(tmp_path, index_dir=index) == ["notes.txt"]


def test_index_dir_reached_through_a_symlinked_root(tmp_path: Path) -> None:
    real = tmp_path / "real"
    write(real / "doc.txt")
    write(real / "idx" / "vectors.npy", b"0")
    (tmp_path / "alias").symlink_to(real)
    records = [r for r in scan([tmp_path / "alias"], index_dir=real / "idx") if isinstance(r, FileRecord)]
    assert [os.path.basename(r.path) for r in records] == ["doc.txt"]
    assert records[0].path == str(tmp_path / "alias" / "doc.txt")  # the path as the root spells it


def test_symlinks_and_loops(tmp_path: Path) -> None:
    write(tmp_path / "a" / "file.txt")
    (tmp_path / "a" / "loop").symlink_to(tmp_path)  # a/loop -> the root: a cycle
    (tmp_path / "a" / "again").symlink_to(tmp_path / "a")  # a/again -> a: its own parent
    write(tmp_path / "target" / "t.txt")
    (tmp_path / "linkdir").symlink_to(tmp_path / "target")
    (tmp_path / "linkfile.txt").symlink_to(tmp_path / "a" / "file.txt")
    (tmp_path / "dangling.txt").symlink_to(tmp_path / "nowhere.txt")

    # Default: symlinked folders are not followed (and say so); symlinked files are records.
    assert found(tmp_path) == ["a/file.txt", "linkfile.txt", "target/t.txt"]
    reasons = skips(tmp_path)
    assert reasons["a/loop"] == "symlinked folder not followed; use --follow-symlinks to walk it"
    assert reasons["linkdir"] == "symlinked folder not followed; use --follow-symlinks to walk it"
    assert reasons["dangling.txt"] == "broken symlink"

    # Following: the loop is detected by (st_dev, st_ino), and every folder is walked once.
    files = found(tmp_path, follow_symlinks=True)
    assert files == ["a/file.txt", "linkdir/t.txt", "linkfile.txt"]
    reasons = skips(tmp_path, follow_symlinks=True)
    assert reasons["a/loop"] == "symlink loop; folder is its own ancestor"
    assert reasons["a/again"] == "symlink loop; folder is its own ancestor"
    assert reasons["target"] == "folder already scanned through another path"


@contextlib.contextmanager
def as_user(uid: int) -> Iterator[None]:
    """Run the block with effective uid `uid` (root can switch back: its saved uid stays 0)."""
    try:
        os.seteuid(uid)
    except PermissionError:
        pytest.skip("running as root without the setuid capability: chmod 000 cannot deny reading")
    try:
        yield
    finally:
        os.seteuid(0)


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="needs POSIX permissions")
def test_unreadable_folder_becomes_a_skip() -> None:
    # Our own folder under /tmp: pytest's tmp_path sits in a 0700 folder another user cannot enter.
    root = Path(tempfile.mkdtemp(prefix="launcher-scan-"))
    try:
        root.chmod(0o755)
        write(root / "ok.txt")
        write(root / "locked" / "inner.txt")
        write(root / "z" / "after.txt")
        (root / "locked").chmod(0o000)
        if os.access(root / "locked", os.R_OK):
            if os.geteuid() != 0:
                pytest.skip("chmod 000 does not deny reading on this file system")
            # Root ignores permissions: act as 'nobody' for the scan, so the denial is real.
            with as_user(65534):
                results = list(scan([root]))
        else:
            results = list(scan([root]))
        assert [os.path.relpath(r.path, root) for r in results if isinstance(r, FileRecord)] == [
            "ok.txt",
            "z/after.txt",
        ]
        assert [(r.path, r.reason) for r in results if isinstance(r, Skip)] == [
            (str(root / "locked"), "permission denied")
        ]
    finally:
        (root / "locked").chmod(0o755)
        shutil.rmtree(root)


def test_size_cap(tmp_path: Path) -> None:
    write(tmp_path / "small.txt", "x" * 100)
    write(tmp_path / "big.txt", "x" * 3000)
    write(tmp_path / "huge.bin", b"\x00" * (3 * 1024 * 1024))
    assert found(tmp_path, max_file_bytes=2048) == ["small.txt"]
    assert skips(tmp_path, max_file_bytes=2048) == {
        "big.txt": "file is 2.9 kb, over the 2.0 kb limit; raise it with --max-file-mb",
        "huge.bin": "file is 3.0 mb, over the 2.0 kb limit; raise it with --max-file-mb",
    }
    assert found(tmp_path, max_file_bytes=10 * 1024 * 1024) == ["big.txt", "huge.bin", "small.txt"]


def test_roots_missing_overlapping_and_files(tmp_path: Path) -> None:
    write(tmp_path / "docs" / "a.txt")
    write(tmp_path / "docs" / "sub" / "b.txt")
    single = write(tmp_path / "single.md", "# one")
    results = list(scan([tmp_path / "docs", tmp_path / "docs" / "sub", single, tmp_path / "missing"]))
    records = [r.path for r in results if isinstance(r, FileRecord)]
    # The nested root is not walked twice; a file root is a record itself.
    assert records == [
        str(tmp_path / "docs" / "a.txt"),
        str(tmp_path / "docs" / "sub" / "b.txt"),
        str(single),
    ]
    assert Skip(str(tmp_path / "missing"), "no such file or folder") in results


def test_special_files_are_skipped(tmp_path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this platform")
    os.mkfifo(tmp_path / "pipe.txt")  # opening it would block forever
    write(tmp_path / "real.txt")
    assert found(tmp_path) == ["real.txt"]
    assert skips(tmp_path) == {"pipe.txt": "not a regular file"}
