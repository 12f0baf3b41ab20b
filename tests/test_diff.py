"""The rescan's bulk diff (walk columns against index columns) against the per-record diff the
watcher uses: same verdicts for unchanged, changed, new, moved and removed files, on a real tree
walked by the real scan and a real index."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.core.records import FileRecord, Skip
from launcher.index import scanstate
from launcher.index.gone import queue_gone
from launcher.index.info import PieceMeta
from launcher.index.roots import ScanOptions
from launcher.index.store import Store, Stored
from launcher.ingest import diff
from launcher.ingest.pipeline import Indexer, IndexOptions
from launcher.ingest.scan import Files, records, scan_files
from launcher.models.embed import Embedder, load_embedder
from tests.conftest import MINILM

IDENTITY = {"model": "test", "mmproj": None}


def _plan_both(root: Path, index: Path) -> tuple[diff.Plan, diff.Plan]:
    found = list(scan_files([root]))
    runs = [f for f in found if isinstance(f, Files)]
    paths = [p for f in runs for p in f.paths]
    sizes = [s for f in runs for s in f.sizes]
    mtimes = [m for f in runs for m in f.mtimes]
    with Store.open_writer(index, IDENTITY, dims=4) as w:
        indexed = w.indexed_under([str(root)])
        bulk = diff.plan_files(paths, sizes, mtimes, indexed)
        known = {indexed.paths[i]: indexed.known(i) for i in range(len(indexed))}
        one_by_one = diff.plan([r for r in records(iter(found)) if isinstance(r, FileRecord)], known)
    return bulk, one_by_one


def test_bulk_diff_agrees_with_the_record_diff(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    files = {
        "same.txt": b"unchanged",
        "sub/same2.md": b"# also unchanged",
        "grown.txt": b"was short",
        "touched.txt": b"same size",
        "gone.txt": b"deleted from disk",
        "old-name.txt": b"moved content, 25 bytes..",
    }
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    index = tmp_path / "index"
    with Store.open_writer(index, IDENTITY, dims=4) as w:
        # An unrelated root's file: never part of this diff.
        w.add_file(FileRecord("/elsewhere/x.txt", 1, 1, "text"), "hx", [])
        for rel, data in files.items():
            path = str(root / rel)
            st = os.stat(path)
            w.add_file(
                FileRecord(path, st.st_size, st.st_mtime_ns, "markdown" if rel.endswith(".md") else "text"),
                diff.content_hash(path),
                [PieceMeta(data.decode())],
            )
    (root / "grown.txt").write_bytes(b"was short, now longer")
    st = os.stat(root / "touched.txt")
    os.utime(root / "touched.txt", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    (root / "gone.txt").unlink()
    (root / "old-name.txt").rename(root / "sub" / "new-name.txt")
    (root / "fresh.txt").write_bytes(b"never indexed")

    bulk, one_by_one = _plan_both(root, index)
    assert bulk.unchanged == one_by_one.unchanged == 2
    assert sorted((r.path, fid) for r, fid in bulk.changed) == sorted(
        (r.path, fid) for r, fid in one_by_one.changed
    )
    assert sorted(os.path.basename(r.path) for r, _ in bulk.changed) == ["grown.txt", "touched.txt"]
    assert [r.path for r in bulk.new] == [r.path for r in one_by_one.new] == [str(root / "fresh.txt")]
    assert bulk.new[0] == FileRecord(
        str(root / "fresh.txt"), 13, os.stat(root / "fresh.txt").st_mtime_ns, "text"
    )
    assert [(r.path, fid) for r, fid, _ in bulk.moved] == [(r.path, fid) for r, fid, _ in one_by_one.moved]
    assert [r.path for r, _, _ in bulk.moved] == [str(root / "sub" / "new-name.txt")]
    assert sorted(bulk.removed) == sorted(one_by_one.removed) and len(bulk.removed) == 1


def test_bulk_diff_of_an_unchanged_tree_makes_no_records(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    for i in range(30):
        (root / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (root / f"d{i % 3}" / f"f{i}.txt").write_text(f"file {i}")
    index = tmp_path / "index"
    with Store.open_writer(index, IDENTITY, dims=4) as w:
        for r in records(scan_files([root])):
            assert not isinstance(r, Skip)
            w.add_file(r, "h", [])
    bulk, one_by_one = _plan_both(root, index)
    assert bulk.unchanged == one_by_one.unchanged == 30
    assert not (bulk.new or bulk.changed or bulk.moved or bulk.removed)


# --- the unchanged rescan's shortcut: the walk against the recorded scan state -----------------


@pytest.fixture(scope="module")
def model() -> Iterator[Embedder]:
    from launcher.models.embed.llama import LlamaOptions

    with load_embedder(MINILM, None, LlamaOptions(n_threads=1)) as e:
        yield e


def _generation(index: Path) -> int:
    stored = Stored.read(index)
    assert stored is not None
    return stored.generation


def _docs(root: Path) -> Path:
    for i in range(12):
        (root / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (root / f"d{i % 3}" / f"note{i}.txt").write_text(f"note {i} about topic {i * 7}\n", encoding="utf-8")
    return root


def test_an_unchanged_tree_is_answered_without_opening_the_index(tmp_path: Path, model: Embedder) -> None:
    docs, index = _docs(tmp_path / "docs"), tmp_path / "index"
    first = Indexer(index, model, IndexOptions()).run([docs])
    assert first.new == 12 and (index / scanstate.STATE).is_file()
    assert (index / scanstate.STATE).stat().st_mode & 0o777 == 0o600  # it names every file: private
    gen = _generation(index)
    again = Indexer(index, model, IndexOptions()).run([docs])
    assert (again.unchanged, again.new, again.changed, again.removed, again.pieces_pending) == (
        12,
        0,
        0,
        0,
        0,
    )
    assert _generation(index) == gen  # nothing committed: no writer was opened

    # A refresh of every root (no paths) takes the shortcut too.
    assert Indexer(index, model, IndexOptions()).run(None).unchanged == 12 and _generation(index) == gen


def test_the_shortcut_never_hides_a_change(tmp_path: Path, model: Embedder) -> None:
    docs, index = _docs(tmp_path / "docs"), tmp_path / "index"
    Indexer(index, model, IndexOptions()).run([docs])
    note = docs / "d0" / "note0.txt"
    st = note.stat()
    os.utime(note, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # 1 ns later, same size
    r = Indexer(index, model, IndexOptions()).run([docs])
    assert (r.changed, r.unchanged) == (1, 11)

    (docs / "d2" / "link.txt").symlink_to(docs / "nowhere.txt")  # a new skip alone is a change too
    r = Indexer(index, model, IndexOptions()).run([docs])
    assert [s.reason for s in r.skipped] == ["broken symlink"]
    assert [f.path for f in Store.open(index).failures()] == [str(docs / "d2" / "link.txt")]
    (docs / "d1" / "note1.txt").unlink()
    (docs / "d2" / "new.txt").write_text("a new note\n", encoding="utf-8")
    r = Indexer(index, model, IndexOptions()).run([docs])
    assert (r.new, r.removed, r.unchanged) == (1, 1, 11)
    (docs / "d2" / "link.txt").unlink()  # and a skip that went away
    gen = _generation(index)
    r = Indexer(index, model, IndexOptions()).run([docs])
    assert r.skipped == [] and _generation(index) == gen + 1 and Store.open(index).failures() == []


def test_another_writer_or_a_damaged_state_means_the_table_is_read(tmp_path: Path, model: Embedder) -> None:
    docs, index = _docs(tmp_path / "docs"), tmp_path / "index"
    Indexer(index, model, IndexOptions()).run([docs])
    # Another writer commits (a watcher's update, another process): the recorded state is stale.
    # Here the disk goes back to what the state recorded, so only the commit check tells them apart.
    note = docs / "d0" / "note0.txt"
    original, st = note.read_bytes(), note.stat()
    note.write_text("rewritten while nobody rescanned\n", encoding="utf-8")
    Indexer(index, model, IndexOptions()).update(changed=[str(note)])
    note.write_bytes(original)
    os.utime(note, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = Indexer(index, model, IndexOptions()).run([docs])
    assert (r.changed, r.unchanged) == (1, 11)
    # A torn or foreign file is ignored, never trusted.
    (index / scanstate.STATE).write_bytes(b"PK\x03\x04 not really a zip")
    os.utime(docs / "d2" / "note2.txt", ns=(0, 10**18))
    r = Indexer(index, model, IndexOptions()).run([docs])
    assert (r.changed, r.unchanged) == (1, 11)


def test_pending_pieces_still_get_embedded(tmp_path: Path, model: Embedder) -> None:
    docs, index = _docs(tmp_path / "docs"), tmp_path / "index"
    names_only = Indexer(index, model, IndexOptions(embed=False)).run([docs])
    assert names_only.pieces_pending == 12
    gen = _generation(index)
    assert Indexer(index, model, IndexOptions(embed=False)).run([docs]).pieces_pending == 12
    assert _generation(index) == gen  # names only again: nothing to do
    r = Indexer(index, model, IndexOptions()).run([docs])  # embedding now: the pieces wait
    assert (r.pieces_embedded, r.pieces_pending) == (12, 0)


def test_whatever_else_a_run_would_do_goes_the_long_way(tmp_path: Path, model: Embedder) -> None:
    """Work the walk cannot see: a failed file to retry, a file search queued as gone in another
    root, new options for a root, another model setting. Each is done, not skipped."""
    docs, other, index = _docs(tmp_path / "docs"), _docs(tmp_path / "other"), tmp_path / "index"
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 not really a pdf")
    first = Indexer(index, model, IndexOptions()).run([docs, other])
    assert [s.path for s in first.failed] == [str(docs / "broken.pdf")]

    retried = Indexer(index, model, IndexOptions(retry_failed=True)).run([docs])
    assert [s.path for s in retried.failed] == [str(docs / "broken.pdf")]  # read again, failed again

    gone = other / "d0" / "note0.txt"
    gone.unlink()
    queue_gone(index, [str(gone)])  # as search does when a hit is gone from disk
    assert Indexer(index, model, IndexOptions()).run([docs]).removed == 1
    assert Store.open(index).file_by_path(str(gone)) is None

    bigger = ScanOptions(max_image_pixels=ScanOptions().max_image_pixels * 2)
    Indexer(index, model, IndexOptions(), root_options={str(docs): bigger}).run([docs])
    stored = Stored.read(index)
    assert stored is not None and stored.root_options()[str(docs)] == bigger

    narrower = Indexer(index, model, IndexOptions(dims=128)).run([docs, other])
    assert narrower.reset_reason is not None and Stored.read(index).dims == 128  # type: ignore[union-attr]
