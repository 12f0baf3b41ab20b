"""The index on disk: round trips, stable ids, dtypes, tombstones, compaction, locking, crashes.

Vectors here are synthetic random unit vectors (no model runs in these tests): the store only
stores and returns them, so their meaning does not matter.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from launcher.core.errors import ModelMismatch, StoreError, StoreLocked
from launcher.core.records import FileRecord, Locator, Piece, Skip
from launcher.index import compaction, gone
from launcher.index import manifest as manifest_mod
from launcher.index.info import PieceMeta
from launcher.index.store import Store, Stored

IDENTITY = {
    "model": "synthetic",
    "model_sha256": "0" * 64,
    "model_size": 1,
    "pipeline": 1,
    "instruction": "x",
}
ROOT = Path(__file__).resolve().parent.parent


def unit(n: int, dims: int, seed: int = 0) -> np.ndarray:
    """Synthetic random unit vectors (not model output)."""
    v = np.random.default_rng(seed).standard_normal((n, dims)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def rec(path: str, size: int = 10, mtime_ns: int = 1, kind: str = "text") -> FileRecord:
    return FileRecord(path, size, mtime_ns, kind)


def pieces(*texts: str) -> list[Piece]:
    return [Piece(text=t, locator=Locator(line_start=i + 1, line_end=i + 1)) for i, t in enumerate(texts)]


def own_files(index: Path) -> set[str]:
    return {p.name for p in index.iterdir() if manifest_mod._OWN_FILE.match(p.name)}


def named_files(index: Path) -> set[str]:
    """Every file the manifest names, by segment prefix."""
    m = json.loads((index / "MANIFEST.json").read_text())
    names = {e["name"] for k in ("files", "pieces", "vectors") for e in m[k]}
    return {p.name for p in index.iterdir() if p.name.split(".")[0] in names}


def test_round_trip_and_reopen(tmp_path: Path) -> None:
    index = tmp_path / "index"
    with Store.open_writer(index, IDENTITY, dims=8) as w:
        fa, pa = w.add_file(rec("/docs/a.txt"), "hash-a", pieces("alpha one", "alpha two"))
        fb, pb = w.add_file(
            rec("/docs/b.pdf", kind="pdf"),
            "hash-b",
            [Piece(text="page", locator=Locator(page=3), modality="image")],
        )
        assert w.file_by_path("/docs/a.txt") is not None  # the writer sees its own uncommitted work
        assert not Store.exists(index)
    s = Store.open(index)
    assert s.generation == 1
    assert s.identity == IDENTITY and s.dims == 8 and s.dtype == "float16"
    assert {f.path for f in s.files()} == {"/docs/a.txt", "/docs/b.pdf"}
    a = s.file_by_path("/docs/a.txt")
    assert a is not None and a.file_id == fa and a.n_pieces == 2 and a.status == "ok"
    assert [f.file_id for f in s.file_by_hash("hash-b")] == [fb]
    assert s.pieces_of(fa) == pa
    info = s.piece(pb[0])
    assert info is not None
    assert (info.file_id, info.locator, info.text, info.modality, info.has_vector) == (
        fb,
        Locator(page=3),
        "page",
        "image",
        False,
    )
    st = s.stats()
    assert (st.files, st.pieces, st.embedded, st.pending) == (2, 3, 0, 3)
    assert st.files_by_kind == {"pdf": 1, "text": 1}
    assert st.bytes_on_disk > 0 and st.committed_at > 0
    assert s.pending_pieces() == pa + pb


def test_ids_stay_stable_across_commits_and_merges(tmp_path: Path) -> None:
    index = tmp_path / "index"
    vec = unit(2 * (compaction.MERGE_FACTOR + 2), 16)
    expect: dict[str, tuple[str, np.ndarray]] = {}
    with Store.open_writer(index, IDENTITY, dims=16, dtype="float32") as w:
        for i in range(compaction.MERGE_FACTOR + 2):  # one small segment per commit, until a merge
            _, ids = w.add_file(rec(f"/d/{i}.txt"), f"h{i}", pieces(f"file {i} first", f"file {i} second"))
            w.set_vectors(ids, vec[2 * i : 2 * i + 2])
            w.commit()
            for j, pid in enumerate(ids):
                expect[pid] = (f"file {i} {'first' if j == 0 else 'second'}", vec[2 * i + j])
    s = Store.open(index)
    assert s.stats().segments < 2 * (compaction.MERGE_FACTOR + 2)  # merged
    for pid, (text, v) in expect.items():
        info = s.piece(pid)
        assert info is not None and info.text == text and info.has_vector
        np.testing.assert_array_equal(s.vectors_of([pid])[0], v)
    assert s.pending_pieces() == []


@pytest.mark.parametrize(("dtype", "tol"), [("float32", 0.0), ("float16", 1e-3), ("int8", 2e-2)])
def test_dims_and_dtypes(tmp_path: Path, dtype: str, tol: float) -> None:
    dims = 256
    vec = unit(50, dims, seed=1)
    with Store.open_writer(tmp_path / "i", IDENTITY, dims=dims, dtype=dtype) as w:  # type: ignore[arg-type]
        _, ids = w.add_file(rec("/x.txt"), "h", pieces(*[f"t{i}" for i in range(50)]))
        w.set_vectors(ids, vec)
    s = Store.open(tmp_path / "i")
    (block,) = s.vector_blocks()
    assert block.vectors.dtype == np.dtype(dtype) and block.vectors.shape == (50, dims)
    assert isinstance(block.vectors, np.memmap)  # memory-mapped, not read
    assert (block.scales is not None) == (dtype == "int8")
    back = s.vectors_of(ids)
    assert np.abs(back - vec).max() <= tol
    cos = (back * vec).sum(axis=1) / np.linalg.norm(back, axis=1)
    assert cos.min() > 0.99


def test_int8_scores_match_float32(tmp_path: Path) -> None:
    from launcher.query.retrieve import cosine_scores

    dims = 1024
    vec = unit(300, dims, seed=2)
    for dtype in ("float32", "int8"):
        with Store.open_writer(tmp_path / dtype, IDENTITY, dims=dims, dtype=dtype) as w:  # type: ignore[arg-type]
            _, ids = w.add_file(rec("/x.txt"), "h", pieces(*["t"] * 300))
            w.set_vectors(ids, vec)
    q = unit(1, dims, seed=3)[0]
    exact = cosine_scores(Store.open(tmp_path / "float32"), q)
    approx = cosine_scores(Store.open(tmp_path / "int8"), q)
    np.testing.assert_allclose(exact, vec @ q, atol=1e-5)
    # per-vector cosine of the int8 copy against the original is > 0.99 (checked above); here the
    # query scores themselves agree to within a small absolute error
    assert np.abs(exact - approx).max() < 0.01
    assert np.corrcoef(exact, approx)[0, 1] > 0.99


def test_set_vectors_checks_its_input(tmp_path: Path) -> None:
    with Store.open_writer(tmp_path / "i", IDENTITY, dims=4) as w:
        _, ids = w.add_file(rec("/x.txt"), "h", pieces("a", "b"))
        with pytest.raises(ValueError, match="shape"):
            w.set_vectors(ids, unit(2, 5))
        with pytest.raises(ValueError, match="unit-length"):
            w.set_vectors(ids, 2 * unit(2, 4))
        with pytest.raises(KeyError, match="not pending"):
            w.set_vectors(["p999"], unit(1, 4))
        with pytest.raises(KeyError, match="not a piece id"):
            w.set_vectors(["f1"], unit(1, 4))
        w.set_vectors(ids[:1], unit(1, 4))
        with pytest.raises(KeyError, match="already has a vector"):
            w.set_vectors(ids[:1], unit(1, 4))
        w.commit()
        with pytest.raises(KeyError, match="not pending"):
            w.set_vectors(ids[:1], unit(1, 4))
        assert w.pending_pieces() == ids[1:]


def test_pending_pieces_in_insertion_order(tmp_path: Path) -> None:
    index = tmp_path / "i"
    with Store.open_writer(index, IDENTITY, dims=4) as w:
        _, a = w.add_file(rec("/a"), "ha", pieces("1", "2", "3"))
        w.commit()
        _, b = w.add_file(rec("/b"), "hb", pieces("4", "5"))
        assert w.pending_pieces() == a + b
        w.set_vectors([a[1], b[0]], unit(2, 4))
        assert w.pending_pieces() == [a[0], a[2], b[1]]
    assert Store.open(index).pending_pieces() == [a[0], a[2], b[1]]
    with Store.open_writer(index, IDENTITY, dims=4) as w:  # a new session picks the backlog up
        assert w.pending_pieces() == [a[0], a[2], b[1]]
        w.set_vectors([a[0], a[2], b[1]], unit(3, 4, seed=5))
    st = Store.open(index).stats()
    assert (st.pieces, st.embedded, st.pending) == (5, 5, 0)


def test_move_file_keeps_id_pieces_and_vectors(tmp_path: Path) -> None:
    index = tmp_path / "i"
    vec = unit(2, 8)
    with Store.open_writer(index, IDENTITY, dims=8) as w:
        fid, ids = w.add_file(rec("/old/name.txt", size=5, mtime_ns=7), "same-hash", pieces("x", "y"))
        w.set_vectors(ids, vec)
    before = Store.open(index).vectors_of(ids)
    with Store.open_writer(index, IDENTITY, dims=8) as w:
        (found,) = w.file_by_hash("same-hash")
        w.move_file(found.file_id, "/new/renamed.txt", 5, 9)
    s = Store.open(index)
    assert s.file_by_path("/old/name.txt") is None
    moved = s.file_by_path("/new/renamed.txt")
    assert moved is not None and moved.file_id == fid and moved.mtime_ns == 9
    assert s.pieces_of(fid) == ids and s.pending_pieces() == []
    np.testing.assert_array_equal(s.vectors_of(ids), before)


def test_tombstones_mask_then_compaction_drops(tmp_path: Path) -> None:
    index = tmp_path / "i"
    with Store.open_writer(index, IDENTITY, dims=8) as w:
        added = [w.add_file(rec(f"/f{i}"), f"h{i}", pieces(f"text {i}")) for i in range(10)]
        w.set_vectors([ids[0] for _, ids in added], unit(10, 8))
    first = Store.open(index)
    with Store.open_writer(index, IDENTITY, dims=8) as w:
        w.remove_file(added[0][0])  # 10% dead: masked, not rewritten
    s = Store.open(index)
    (block,) = s.vector_blocks()
    assert len(block.vectors) == 10 and int(block.live.sum()) == 9
    assert s.piece(added[0][1][0]) is None and s.file(added[0][0]) is None
    assert s.stats().pieces == 9
    with Store.open_writer(index, IDENTITY, dims=8) as w:
        for fid, _ in added[1:5]:
            w.remove_file(fid)  # now 50% dead: rewritten without them
    s = Store.open(index)
    (block,) = s.vector_blocks()
    assert len(block.vectors) == 5 and bool(block.live.all())
    assert own_files(index) == named_files(index)  # the old segments' files are gone
    assert sorted(f.path for f in s.files()) == [f"/f{i}" for i in range(5, 10)]
    # a reader that opened before the compaction keeps working on its snapshot
    assert first.piece(added[0][1][0]) is not None and len(first.vector_blocks()[0].vectors) == 10
    assert first.refresh().generation == s.generation


def test_add_same_path_replaces(tmp_path: Path) -> None:
    with Store.open_writer(tmp_path / "i", IDENTITY, dims=4) as w:
        old, _ = w.add_file(rec("/a", size=1), "h1", pieces("old"))
        w.commit()
        new, ids = w.add_file(rec("/a", size=2), "h2", pieces("new"))
    s = Store.open(tmp_path / "i")
    assert new != old and s.file(old) is None
    assert [f.file_id for f in s.files()] == [new] and s.pending_pieces() == ids


def test_identity_mismatch_and_reset(tmp_path: Path) -> None:
    index = tmp_path / "i"
    with Store.open_writer(index, IDENTITY, dims=8) as w:
        fid, _ = w.add_file(rec("/a"), "h", pieces("a"))
    other = {**IDENTITY, "model": "another"}
    with pytest.raises(ModelMismatch, match=r"model 'synthetic' -> 'another'"):
        Store.open_writer(index, other, dims=8)
    with pytest.raises(ModelMismatch, match="dims 8 -> 4"):
        Store.open_writer(index, IDENTITY, dims=4)
    with pytest.raises(ModelMismatch, match="dtype"):
        Store.open_writer(index, IDENTITY, dims=8, dtype="int8")
    w = Store.open_writer(index, other, dims=4, reset=True)
    assert Store.open(index).identity == IDENTITY  # readers see the old index until the commit
    fid2, _ = w.add_file(rec("/b"), "h", pieces("b"))
    w.commit()
    w.close()
    s = Store.open(index)
    assert s.identity == other and s.dims == 4
    assert [f.path for f in s.files()] == ["/b"] and fid2 != fid  # ids are never reused
    assert own_files(index) == named_files(index)


def test_second_writer_is_locked_out_readers_are_not(tmp_path: Path) -> None:
    index = tmp_path / "i"
    with Store.open_writer(index, IDENTITY, dims=4) as w:
        w.add_file(rec("/a"), "h", pieces("a"))
        w.commit()
        with pytest.raises(StoreLocked, match=rf"being written by pid {os.getpid()}; wait for it or stop it"):
            Store.open_writer(index, IDENTITY, dims=4)
        assert len(list(Store.open(index).files())) == 1
    Store.open_writer(index, IDENTITY, dims=4).close()  # free again


def test_missing_index_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"^no index at .*; run `launcher index` to build one$"):
        Store.open(tmp_path / "nothing")


def test_failures_are_recorded_and_cleared(tmp_path: Path) -> None:
    index = tmp_path / "i"
    with Store.open_writer(index, IDENTITY, dims=4) as w:
        w.set_roots(["/r"])
        w.record_skips([Skip("/r/locked", "permission denied"), Skip("/r/huge.bin", "larger than 100 mb")])
        w.record_failure(rec("/r/broken.pdf", size=7, mtime_ns=3, kind="pdf"), "not a pdf")  # unreadable
        fid, _ = w.add_file(rec("/r/a.txt"), "ha", pieces("x"))
        w.record_failure(rec("/r/a.txt"), "embedding failed", file_id=fid)  # failed later: keeps pieces
    s = Store.open(index)
    assert s.roots == ["/r"]
    assert [(f.path, f.reason) for f in s.failures()] == [
        ("/r/a.txt", "embedding failed"),
        ("/r/broken.pdf", "not a pdf"),
        ("/r/huge.bin", "larger than 100 mb"),
        ("/r/locked", "permission denied"),
    ]
    broken = s.file_by_path("/r/broken.pdf")
    assert broken is not None and broken.status == "failed" and (broken.size, broken.mtime_ns) == (7, 3)
    a = s.file_by_path("/r/a.txt")
    assert a is not None and a.status == "partial" and a.n_pieces == 1
    assert s.stats().failed == 4
    with Store.open_writer(index, IDENTITY, dims=4) as w:
        w.set_roots(["/r"])
        w.record_skips([Skip("/r/huge.bin", "larger than 100 mb")])  # /r/locked is readable now
        w.add_file(rec("/r/broken.pdf", size=8, kind="pdf"), "hb", pieces("fixed"))  # replaces the failure
    assert [f.path for f in Store.open(index).failures()] == ["/r/a.txt", "/r/huge.bin"]


def test_what_the_indexer_asks_of_the_writer(tmp_path: Path) -> None:
    index = tmp_path / "i"
    with Store.open_writer(index, IDENTITY, dims=4) as w:
        fa, pa = w.add_file(rec("/r/a.txt"), "ha", [PieceMeta.from_piece(p) for p in pieces("1", "2", "3")])
        fb, pb = w.add_file(rec("/elsewhere/b.txt"), "hb", pieces("4"))
        w.commit()
        fc, pc = w.add_file(rec("/r/sub/c.txt"), "hc", pieces("5", "6"))
        w.set_vectors([pa[1]], unit(1, 4))
        assert w.pending_count() == 5
        assert w.pending_by_file() == {fa: [pa[0], pa[2]], fb: pb, fc: pc}
        assert w.indexed_under(["/r"]).paths == ["/r/a.txt", "/r/sub/c.txt"]
        under = w.indexed_under(["/r/"])
        assert under.numeric_ids.tolist() == [int(fa[1:]), int(fc[1:])]
        assert under.sizes.tolist() == [10, 10] and under.mtime_ns.tolist() == [1, 1]
        assert under.known(0) == (fa, 10, 1, "ha", "text")
        assert w.indexed_under(["/r/sub/c.txt", "/r/su"]).paths == ["/r/sub/c.txt"]  # a file; no half-names
        assert w.files_by_id([fc]) == {fc: rec("/r/sub/c.txt")}
        assert w.piece_count(fa) == 3 and w.pieces_of(fa) == pa
        assert w.piece_positions(fa, [pa[2], pa[0]]) == [2, 0]
        with pytest.raises(KeyError, match="is not a piece of file"):
            w.piece_positions(fa, pb)
        w.move_file(fb, "/r/b.txt", 10, 2, "new-hash")
        assert w.file_by_hash("new-hash")[0].path == "/r/b.txt"
    s = Store.open(index)
    assert s.pieces_of(fc) == pc and s.piece(pc[1]) is not None


def test_on_mismatch_reset_says_why(tmp_path: Path) -> None:
    index = tmp_path / "i"
    with Store.open_writer(index, IDENTITY, dims=4) as w:
        assert w.reset_reason is None
        w.add_file(rec("/a"), "h", pieces("a"))
    with Store.open_writer(index, {**IDENTITY, "pipeline": 2}, dims=4, on_mismatch="reset") as w:
        assert w.reset_reason is not None and "pipeline 1 -> 2" in w.reset_reason
    s = Store.open(index)
    assert list(s.files()) == [] and s.identity["pipeline"] == 2


def test_orphans_of_an_interrupted_commit_are_cleaned(tmp_path: Path) -> None:
    index = tmp_path / "i"
    with Store.open_writer(index, IDENTITY, dims=4) as w:
        w.add_file(rec("/a"), "h", pieces("a"))
    for junk in ("v-00000009-abcdef.vec.npy", "p-00000009-abcdef.jsonl", "f-00000009-abcdef.json"):
        (index / junk).write_bytes(b"half written")
    (index / "MANIFEST.json.tmp").write_text("{")
    (index / "notes.txt").write_text("not ours")
    assert Store.open(index).generation == 1  # readers ignore orphans
    Store.open_writer(index, IDENTITY, dims=4).close()
    assert own_files(index) == named_files(index)
    assert not (index / "MANIFEST.json.tmp").exists() and (index / "notes.txt").exists()


def test_many_file_commits_fold_into_a_new_base(tmp_path: Path) -> None:
    index = tmp_path / "i"
    with Store.open_writer(index, IDENTITY, dims=4) as w:
        for i in range(manifest_mod.MAX_FILE_DELTAS + 3):
            w.add_file(rec(f"/f{i}"), f"h{i}", [])
            w.commit()
    m = json.loads((index / "MANIFEST.json").read_text())
    assert len(m["files"]) <= manifest_mod.MAX_FILE_DELTAS + 1
    assert len(list(Store.open(index).files())) == manifest_mod.MAX_FILE_DELTAS + 3


CHILD = textwrap.dedent(
    """
    import json, sys, zlib
    import numpy as np
    from launcher.core.records import FileRecord
    from launcher.core.records import Locator
    from launcher.core.records import Piece
    from launcher.index.store import Store

    index, run = sys.argv[1], int(sys.argv[2])
    ident = {"model": "synthetic"}

    def vec(text):  # a synthetic unit vector derived from the piece id, so the test can check it
        v = np.random.default_rng(zlib.crc32(text.encode())).standard_normal(32).astype(np.float32)
        return v / np.linalg.norm(v)

    with Store.open_writer(index, ident, dims=32, dtype="int8") as w:
        print(json.dumps({"ready": True}), flush=True)
        i = 0
        while True:
            i += 1
            path = f"/run{run}/file{i}.txt"
            texts = [f"{path} piece {j}" for j in range(3)]
            parts = [Piece(t, locator=Locator(page=j)) for j, t in enumerate(texts)]
            w.add_file(FileRecord(path, i, i, "text"), f"h{run}-{i}", parts)
            pending = w.pending_pieces()[:4]
            if pending:
                w.set_vectors(pending, np.stack([vec(p) for p in pending]))
            if i % 3 == 0:
                files = sorted(w.files(), key=lambda f: f.path)
                w.remove_file(files[len(files) // 2].file_id)
            files = sorted(f.path for f in w.files())
            state = {"gen": w.generation + 1, "files": files, "pending": len(w.pending_pieces())}
            print(json.dumps(state), flush=True)
            print(json.dumps({"committed": w.commit()}), flush=True)
    """
)


def test_kill_9_at_any_moment_leaves_the_last_commit(tmp_path: Path) -> None:
    index = tmp_path / "i"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(1234)
    deadline = time.monotonic() + 25
    runs = 0
    while runs < 6 and time.monotonic() < deadline:
        runs += 1
        before = Store.open(index).generation if Store.exists(index) else 0
        child = subprocess.Popen(
            [sys.executable, str(script), str(index), str(runs)], stdout=subprocess.PIPE, env=env, text=True
        )
        assert child.stdout is not None
        assert json.loads(child.stdout.readline()) == {"ready": True}
        time.sleep(rng.uniform(0.05, 0.8))
        os.kill(child.pid, signal.SIGKILL)
        out, _ = child.communicate()
        intents: dict[int, dict[str, object]] = {}
        committed = before
        for line in out.splitlines():
            try:
                msg = json.loads(line)
            except ValueError:
                continue  # the kill cut this line short
            if "committed" in msg:
                committed = msg["committed"]
            elif "gen" in msg:
                intents[msg["gen"]] = msg
        s = Store.open(index)
        # The commit in flight either happened entirely or not at all.
        assert s.generation in (committed, committed + 1)
        if s.generation in intents:
            want = intents[s.generation]
            assert sorted(f.path for f in s.files()) == want["files"]
            assert len(s.pending_pieces()) == want["pending"]
        # Every file the manifest names is complete and readable, and every vector is intact.
        for block in s.vector_blocks():
            assert np.isfinite(np.asarray(block.vectors, dtype=np.float32)).all()
        for f in s.files():
            for pid in s.pieces_of(f.file_id):
                info = s.piece(pid)
                assert info is not None and info.text.startswith(f.path)
                if info.has_vector:
                    v = np.random.default_rng(_crc(pid)).standard_normal(32).astype(np.float32)
                    v /= np.linalg.norm(v)
                    assert float(s.vectors_of([pid])[0] @ v) > 0.99
    # A new writer cleans up after the crashes and carries on.
    with Store.open_writer(index, {"model": "synthetic"}, dims=32, dtype="int8") as w:
        assert own_files(index) == named_files(index)
        w.add_file(rec("/after/crash.txt"), "h", pieces("still works"))
    assert Store.open(index).file_by_path("/after/crash.txt") is not None
    assert runs >= 3


def _crc(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode())


def test_readers_keep_working_while_a_writer_commits(tmp_path: Path) -> None:
    from launcher.query.retrieve import search

    index = tmp_path / "i"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, str(script), str(index), "1"], stdout=subprocess.PIPE, env=env)
    try:
        assert child.stdout is not None
        child.stdout.readline()
        while not Store.exists(index):
            time.sleep(0.01)
        s = Store.open(index)
        seen = set()
        query = np.ones(32, dtype=np.float32) / np.sqrt(32)
        end = time.monotonic() + 2.0
        while time.monotonic() < end:  # commits and compactions go on meanwhile; no lock taken
            s = s.refresh()
            seen.add(s.generation)
            for hit in search(s, query, "piece", min_score=0.0):
                assert s.piece(hit.piece_id) is not None
    finally:
        child.kill()
        child.wait()
    assert len(seen) > 3


def test_roots_keep_their_scan_options_and_forget_drops_one(tmp_path: Path) -> None:
    from launcher.index.roots import ScanOptions

    index = tmp_path / "i"
    docs = ScanOptions(excludes=("*.log",), include_hidden=True, max_file_bytes=5)
    with Store.open_writer(index, IDENTITY, dims=4) as w:
        w.set_roots({"/docs": docs, "/pics": ScanOptions()})
        w.add_file(rec("/docs/a.txt"), "ha", pieces("a"))
        w.add_file(rec("/docs/sub/b.txt"), "hb", pieces("b"))
        w.add_file(rec("/pics/c.txt"), "hc", pieces("c"))
        w.add_file(rec("/docs2/d.txt"), "hd", pieces("d"))  # a sibling whose name starts the same
        w.record_skips([Skip("/docs/huge.bin", "larger than 1 mb")])
    s = Store.open(index)
    assert s.roots == ["/docs", "/pics"] and s.root_options() == {"/docs": docs, "/pics": ScanOptions()}
    # A plain list of roots keeps what each remembers.
    with Store.open_writer(index, IDENTITY, dims=4) as w:
        w.set_roots(["/docs", "/pics", "/new"])
    assert Store.open(index).root_options()["/docs"] == docs
    with Store.open_writer(index, IDENTITY, dims=4) as w:
        assert w.forget_root("/docs") == 2
        with pytest.raises(KeyError):
            w.forget_root("/nowhere")
    s = Store.open(index)
    assert s.roots == ["/new", "/pics"] and "/docs" not in s.root_options()
    assert sorted(f.path for f in s.files()) == ["/docs2/d.txt", "/pics/c.txt"]
    assert s.failures() == []


def test_a_manifest_without_scan_options_gives_its_roots_the_defaults(tmp_path: Path) -> None:
    from launcher.index.roots import ScanOptions

    index = tmp_path / "i"
    with Store.open_writer(index, IDENTITY, dims=4) as w:
        w.set_roots({"/docs": ScanOptions(include_hidden=True)})
    manifest = index / manifest_mod.MANIFEST
    data = json.loads(manifest.read_text(encoding="utf-8"))
    del data["scan"]
    manifest.write_text(json.dumps(data), encoding="utf-8")
    assert Store.open(index).root_options() == {"/docs": ScanOptions()}
    data["scan"] = {"/docs": {"excludes": "not a list", "include_hidden": "yes", "max_file_bytes": -1}}
    manifest.write_text(json.dumps(data), encoding="utf-8")
    assert Store.open(index).root_options() == {"/docs": ScanOptions()}


def test_gone_queue_round_trip(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    assert gone.take_gone(tmp_path) == []
    gone.queue_gone(tmp_path, ["/a b/c.txt", "/x\nnewline"])
    gone.queue_gone(tmp_path, ["/a b/c.txt"])
    assert (tmp_path / gone.GONE).stat().st_mode & 0o777 == 0o600
    assert gone.take_gone(tmp_path) == ["/a b/c.txt", "/x\nnewline"]
    assert gone.take_gone(tmp_path) == [] and not (tmp_path / gone.GONE).exists()


def test_new_index_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    index = tmp_path / "i"
    index.mkdir(mode=0o755)
    os.chmod(index, 0o755)
    (index / "model.json").write_text("{}", encoding="utf-8")
    os.chmod(index / "model.json", 0o644)
    old = os.umask(0o022)
    try:
        with Store.open_writer(index, IDENTITY, dims=4) as w:
            _, ids = w.add_file(rec("/r/a.txt"), "ha", pieces("a", "b"))
            w.set_vectors(ids, unit(2, 4))
    finally:
        os.umask(old)
    assert index.stat().st_mode & 0o777 == 0o700
    modes = {p.name: p.stat().st_mode & 0o777 for p in index.iterdir()}
    assert modes and all(m == 0o600 for m in modes.values()), modes


def test_a_writer_builds_on_a_previous_snapshot_and_still_sees_other_writers(tmp_path: Path) -> None:
    index = tmp_path / "i"
    with Store.open_writer(index, IDENTITY, dims=4) as w:
        fa, _ = w.add_file(rec("/r/a.txt"), "ha", pieces("alpha"))
    first = w.snapshot()
    # Another writer (another process, as far as the index knows) commits in between.
    with Store.open_writer(index, IDENTITY, dims=4) as other:
        fb, _ = other.add_file(rec("/r/b.txt"), "hb", pieces("beta"))
        other.remove_file(fa)
        fc, _ = other.add_file(rec("/r/c.txt"), "hc", pieces("gamma"))
    with Store.open_writer(index, IDENTITY, dims=4, previous=first) as w2:
        # The part both have read is shared, not parsed again; the deltas since are applied.
        assert w2.indexed_under(["/r"]).paths == ["/r/b.txt", "/r/c.txt"]
        assert w2.file_by_path("/r/a.txt") is None
        w2.add_file(rec("/r/d.txt"), "hd", pieces("delta"))
    with Store.open_writer(index, IDENTITY, dims=4, previous=w2.snapshot()) as w3:
        assert w3.indexed_under(["/r"]).paths == ["/r/b.txt", "/r/c.txt", "/r/d.txt"]
        row_c = w3.snapshot()._table.rows[int(fc[1:])]
        assert row_c is w2.snapshot()._table.rows[int(fc[1:])]  # the same row object: not read again
    assert [f.path for f in Store.open(index).files()] == ["/r/b.txt", "/r/c.txt", "/r/d.txt"]


def test_stored_reads_the_manifest_alone(tmp_path: Path) -> None:
    index = tmp_path / "i"
    assert Stored.read(index) is None
    with Store.open_writer(index, IDENTITY, dims=4, dtype="int8") as w:
        w.set_roots(["/r"])
        w.add_file(rec("/r/a.txt"), "ha", pieces("alpha"))
    for table_part in index.glob("f-*.json"):
        table_part.unlink()  # a reader of the file table would fail now
    with pytest.raises((StoreError, FileNotFoundError)):
        Store.open(index)
    stored = Stored.read(index)
    assert stored is not None
    assert (stored.roots, stored.dtype, stored.dims, stored.identity) == (["/r"], "int8", 4, IDENTITY)
    assert list(stored.root_options()) == ["/r"]
