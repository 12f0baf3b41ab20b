"""The coarse partition of large indexes (launcher/index/partition.py) through the real Store and search.

The threshold is lowered so a few thousand rows count as "large". The vectors are SYNTHETIC:
clusters around random unit centres, so which rows are nearest a query is known from arithmetic.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from launcher.core.records import FileRecord, Piece
from launcher.index import partition
from launcher.index.store import Store
from launcher.query import retrieve as search_module
from launcher.query.retrieve import search

DIMS = 32
ROWS_PER_FILE = 4
IDENTITY = {"model": "synthetic"}


@pytest.fixture(autouse=True)
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partition, "PARTITION_MIN_VALUES", 2000 * DIMS)  # partition past 2000 rows
    monkeypatch.setattr(partition, "MIN_LISTS", 16)
    monkeypatch.setattr(search_module, "PROBE_MIN_ROWS", 100)  # so small probes stay partial here


def clustered(n: int, seed: int, centres: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = centres[rng.integers(0, len(centres), n)] + 0.12 * rng.standard_normal((n, DIMS)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def centres(k: int = 40) -> np.ndarray:
    c = np.random.default_rng(7).standard_normal((k, DIMS)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def add_files(index: Path, first: int, files: int, dtype: str = "int8", seed: int = 0) -> None:
    """`files` files of ROWS_PER_FILE pieces each, embedded, in one writer session."""
    with Store.open_writer(index, IDENTITY, dims=DIMS, dtype=dtype) as w:  # type: ignore[arg-type]
        for f in range(first, first + files):
            pieces = [Piece(text=f"piece {j} of file {f}") for j in range(ROWS_PER_FILE)]
            w.add_file(FileRecord(f"/data/dir{f % 7}/file_{f}.txt", 10, f, "text"), f"h{f}", pieces)
        ids = w.pending_pieces()
        w.set_vectors(ids, clustered(len(ids), seed, centres()))


def test_small_index_has_no_partition(tmp_path: Path) -> None:
    add_files(tmp_path / "ix", 0, 100)
    store = Store.open(tmp_path / "ix")
    assert "partition" not in store.manifest
    assert store.partition() is None


def test_large_index_is_partitioned_and_full_probe_equals_exact(tmp_path: Path) -> None:
    index = tmp_path / "ix"
    add_files(index, 0, 1000)  # 4000 rows
    store = Store.open(index)
    part = store.manifest["partition"]
    assert part["trained_on"] == 4000
    assert part["lists"] >= partition.n_lists(8000) == 64  # dense lists split: a few more
    cent, lists = store.partition()  # type: ignore[misc]
    assert cent.shape == (part["lists"], DIMS)
    assert np.allclose(np.linalg.norm(cent, axis=1), 1.0, atol=1e-5)
    assert sum(len(li) for li in lists) == 4000
    assert all(e["lists"] == part["name"] for e in store.manifest["vectors"])
    assert (index / f"{part['name']}.npy").is_file()
    # Each row's list is its nearest centroid.
    vecs = np.concatenate([b.vectors.astype(np.float32) for b in store.vector_blocks()])
    assert np.array_equal(np.concatenate(lists), np.argmax(vecs @ cent.T, axis=1))

    queries = clustered(20, 99, centres())
    for q in queries:
        exact = search(store, q, "", top_k=10, min_score=-1, probe=0)
        every_list = search(store, q, "", top_k=10, min_score=-1, probe=len(cent))
        assert [h.path for h in exact] == [h.path for h in every_list]
        assert [h.score for h in exact] == pytest.approx([h.score for h in every_list], abs=1e-6)


def test_default_probe_recall_on_clustered_data(tmp_path: Path) -> None:
    add_files(tmp_path / "ix", 0, 1000)
    store = Store.open(tmp_path / "ix")
    found = total = 0
    for q in clustered(30, 5, centres()):
        exact = {h.path for h in search(store, q, "", top_k=10, min_score=-1, probe=0)}
        probed = search(store, q, "", top_k=10, min_score=-1, probe=8)
        found += len(exact & {h.path for h in probed})
        total += len(exact)
        # The files probing finds carry their exact scores.
        for h in probed:
            assert h.scores["vector"] == pytest.approx(
                max(float(np.dot(store.vectors_of([p])[0], q)) for p in store.pieces_of(h.file_id)),
                abs=1e-5,
            )
    assert found / total >= 0.9


def test_keyword_hits_get_their_vector_score_outside_the_probe(tmp_path: Path) -> None:
    add_files(tmp_path / "ix", 0, 1000)
    store = Store.open(tmp_path / "ix")
    q = clustered(1, 11, centres())[0]
    target = "/data/dir3/file_500.txt"
    hits = search(store, q, "file_500", top_k=2000, min_score=-1, probe=1)
    hit = next(h for h in hits if h.path == target)
    fid = store.file_by_path(target).file_id  # type: ignore[union-attr]
    best = max(float(np.dot(store.vectors_of([p])[0], q)) for p in store.pieces_of(fid))
    assert hit.scores["keyword"] > 0
    assert hit.scores["vector"] == pytest.approx(max(best, 0.0), abs=1e-5)


def test_narrow_filter_searches_all_its_rows(tmp_path: Path) -> None:
    add_files(tmp_path / "ix", 0, 1000)
    store = Store.open(tmp_path / "ix")
    for q in clustered(10, 3, centres()):
        exact = search(store, q, "", top_k=5, min_score=-1, probe=0, under="/data/dir2")
        probed = search(store, q, "", top_k=5, min_score=-1, probe=1, under="/data/dir2")
        assert [h.path for h in probed] == [h.path for h in exact]
        assert all(h.path.startswith("/data/dir2/") for h in probed)


def test_new_segments_get_lists_and_growth_retrains(tmp_path: Path) -> None:
    index = tmp_path / "ix"
    add_files(index, 0, 600)  # 2400 rows: partitioned
    first = Store.open(index).manifest["partition"]
    add_files(index, 600, 100, seed=1)  # 2800 rows: same centroids, new segment assigned
    store = Store.open(index)
    assert store.manifest["partition"] == first
    assert len(store.manifest["vectors"]) == 2
    assert store.partition() is not None
    add_files(index, 700, 600, seed=2)  # 5200 rows > 2 x 2400: retrained
    store = Store.open(index)
    second = store.manifest["partition"]
    assert second["name"] != first["name"] and second["trained_on"] == 5200
    names = set(os.listdir(index))
    assert f"{first['name']}.npy" not in names
    assert not [n for n in names if first["name"] + ".lists" in n]
    assert len([n for n in names if n.endswith(".lists.npy")]) == len(store.manifest["vectors"])


def test_shrinking_drops_the_partition(tmp_path: Path) -> None:
    index = tmp_path / "ix"
    add_files(index, 0, 600)
    name = Store.open(index).manifest["partition"]["name"]
    with Store.open_writer(index, IDENTITY, dims=DIMS, dtype="int8") as w:
        for f in range(0, 500):
            w.remove_file(w.file_by_path(f"/data/dir{f % 7}/file_{f}.txt").file_id)  # type: ignore[union-attr]
    store = Store.open(index)
    assert "partition" not in store.manifest and store.partition() is None
    assert not [n for n in os.listdir(index) if name in n]
    q = clustered(1, 4, centres())[0]
    assert len(search(store, q, "", top_k=5, min_score=-1)) == 5


def test_interrupted_commit_leaves_no_trusted_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash after the list files are written but before the manifest: the old index is intact
    and the next writer rewrites the lists instead of trusting the leftovers."""
    index = tmp_path / "ix"
    add_files(index, 0, 400)  # 1600 rows: not partitioned yet
    real_replace = os.replace

    def crash(src: object, dst: object) -> None:
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        add_files(index, 400, 200)
    monkeypatch.setattr(os, "replace", real_replace)
    assert any(n.endswith(".lists.npy") for n in os.listdir(index))  # the leftovers exist
    store = Store.open(index)
    assert "partition" not in store.manifest and len(store.file_columns()) == 400
    add_files(index, 400, 200)
    store = Store.open(index)
    assert store.partition() is not None
    q = clustered(1, 8, centres())[0]
    exact = search(store, q, "", top_k=10, min_score=-1, probe=0)
    full = search(store, q, "", top_k=10, min_score=-1, probe=store.manifest["partition"]["lists"])
    assert [h.path for h in exact] == [h.path for h in full]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_other_storage_types(tmp_path: Path, dtype: str) -> None:
    add_files(tmp_path / "ix", 0, 600, dtype=dtype)
    store = Store.open(tmp_path / "ix")
    assert store.partition() is not None
    q = clustered(1, 2, centres())[0]
    exact = search(store, q, "", top_k=10, min_score=-1, probe=0)
    full = search(store, q, "", top_k=10, min_score=-1, probe=store.manifest["partition"]["lists"])
    assert [h.path for h in exact] == [h.path for h in full]


def test_negative_probe_is_refused(tmp_path: Path) -> None:
    add_files(tmp_path / "ix", 0, 10)
    with pytest.raises(ValueError, match="probe"):
        search(Store.open(tmp_path / "ix"), centres()[0], "", probe=-1)


def test_kmeans_lists_do_not_mix_separated_clusters() -> None:
    """With more lists than clusters (the IVF regime), no list mixes two clusters and none is empty."""
    c = centres(16)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 16, 3000)
    x = c[labels] + 0.05 * rng.standard_normal((3000, DIMS)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cent = partition.train(x.astype(np.float32), 32)
    got = partition.assign(x, cent)
    assert len(cent) >= 32 and len(np.unique(got)) == len(cent)
    for li in range(len(cent)):
        assert len(np.unique(labels[got == li])) == 1


def test_probe_widens_to_min_rows() -> None:
    cent = centres(8)
    q = cent[3]
    sizes = np.array([10, 10, 10, 5, 10, 10, 10, 10])
    assert partition.probe(cent, q, 1).sum() == 1 and partition.probe(cent, q, 1)[3]
    wide = partition.probe(cent, q, 1, sizes, min_rows=22)
    order = np.argsort(-(cent @ q))
    assert wide.sum() == 3 and wide[order[:3]].all()  # 5 + 10 + 10 >= 22
    assert partition.probe(cent, q, 1, sizes, min_rows=10_000).all()


def test_partial_probe_really_skips_rows(tmp_path: Path) -> None:
    """The probed search reads fewer rows than exist (the path the other tests rely on)."""
    add_files(tmp_path / "ix", 0, 1000)
    store = Store.open(tmp_path / "ix")
    q = clustered(1, 13, centres())[0]
    cols = store.file_columns()
    allowed = np.ones(len(cols) + 1, dtype=bool)
    allowed[-1] = False
    scored = search_module._row_scores(store, q.astype(np.float32), allowed, 2)
    assert scored.rows is not None and 0 < len(scored.rows) < 4000 // 4
