"""The rescan's bulk diff (walk columns against index columns) against the per-record diff the
watcher uses: same verdicts for unchanged, changed, new, moved and removed files, on a real tree
walked by the real scan and a real index."""

from __future__ import annotations

import os
from pathlib import Path

from launcher.core.records import FileRecord, Skip
from launcher.index.info import PieceMeta
from launcher.index.store import Store
from launcher.ingest import diff
from launcher.ingest.scan import Files, records, scan_files

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
