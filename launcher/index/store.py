"""Stage 5, the index: JSON for metadata, NumPy for vectors, immutable segments, atomic commits.

On disk, in one directory:

    MANIFEST.json            the committed state: schema, generation, identity, dims, dtype,
                             id counters, and the live segments below (replaced atomically)
    LOCK                     flock()ed by the one writer; holds its pid
    f-<gen>-<tag>.json       file table: a base, then small deltas (upserts, deletes, skips)
    p-<gen>-<tag>.*          a piece segment: .ids.npy .files.npy (int64), .jsonl (one
                             [modality, locator, text] per row) + .offsets.npy into it,
                             BM25 postings .terms.npy .starts.npy .entries.npy .doclen.npy
    v-<gen>-<tag>.*          a vector segment: .vec.npy (n, dims) float32/float16/int8,
                             .ids.npy piece ids (sorted), .files.npy, .scale.npy (int8 only),
                             .<c-name>.lists.npy (its rows' partition lists, large indexes)
    c-<gen>-<tag>.npy        partition centroids of a large index (launcher/index/partition.py)
    scan-state.npz           a cache: the file table's paths, sizes, mtimes and skips at one
                             commit, for `launcher index` over an unchanged tree (scanstate.py)
    gone.txt                 files search found gone, for the next writer (gone.py)

The formats themselves are in launcher/index/segments.py. A commit writes new segment files (each
fsynced), then writes the new manifest to a temporary file, fsyncs it, `os.replace`s it over
MANIFEST.json and fsyncs the directory (launcher/core/files.py's atomic_write_json). Files are
never changed after they are written, so a reader holding a manifest can always open what it
names (it retries if a compaction deleted them in between), and `kill -9` at any instant leaves
the previous manifest and all of its files intact. Files no manifest names are orphans of an
interrupted commit; the next writer deletes them when it opens (and every commit deletes what it
made obsolete).

Ids are stable: `f<n>` for files and `p<n>` for pieces, from counters kept in the manifest, never
reused and never row positions. A file moved on disk keeps its id, its pieces and their vectors.
Deletion is by file: a piece row is live exactly when its file id is in the file table, so the file
table is the tombstone set, and readers mask dead rows instead of rewriting anything. A segment is
rewritten without its dead rows once they pass DEAD_FRACTION, and segments of similar size are
merged MERGE_FACTOR at a time (tiered, as in LSM trees) so there are only ever a few dozen.

This module is the reader (`Store`, one snapshot). The writer is launcher/index/writer.py, its
merges and partition upkeep launcher/index/compaction.py, the manifest's names and reading
launcher/index/manifest.py, what both hand out launcher/index/info.py, the queue of files
search found gone launcher/index/gone.py, and the scan state a rescan compares with
launcher/index/scanstate.py.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from launcher.core.errors import StoreError
from launcher.core.gcpause import paused_gc
from launcher.core.records import KINDS, Locator, Matrix
from launcher.index.info import (
    Failure,
    FileColumns,
    FileLookups,
    PieceBlock,
    PieceInfo,
    Stats,
    VectorBlock,
    _num,
    _ords,
)
from launcher.index.manifest import (
    F32,
    I32,
    I64,
    MANIFEST,
    Dtype,
    FileId,
    PieceId,
    _lists_name,
    _names,
    _partition_name,
    _read_manifest,
)
from launcher.index.roots import ScanOptions, stored_options
from launcher.index.segments import (
    COL_ERROR,
    COL_FIRST,
    COL_KIND,
    COL_MTIME,
    COL_NAME,
    COL_NPIECES,
    COL_PATH,
    COL_SIZE,
    COL_TAKEN,
    FileTable,
    PieceSegment,
    VectorSegment,
    contains_sorted,
    date_of,
    failed_of,
    load_npy,
)
from launcher.index.writer import Writer


class Stored:
    """What an index's manifest says, without its file table: the settings a job decides before it
    opens the index (a 100k-file table costs ~0.1 s to read; a manifest, a few kB). Store is one too."""

    def __init__(self, manifest: dict[str, Any]) -> None:
        self.manifest = manifest

    @staticmethod
    def read(index_dir: str | os.PathLike[str]) -> Stored | None:
        """The manifest of the index in this directory, None when there is none."""
        if not Store.exists(index_dir):
            return None
        return Stored(_read_manifest(Path(index_dir)))

    @property
    def generation(self) -> int:
        """Increases by one with every commit."""
        return int(self.manifest["generation"])

    @property
    def identity(self) -> dict[str, Any]:
        """The model and pipeline identity the vectors were made with."""
        return dict(self.manifest["identity"])

    @property
    def dims(self) -> int:
        """Stored vector width (after Matryoshka truncation)."""
        return int(self.manifest["dims"])

    @property
    def dtype(self) -> str:
        """Storage dtype of the vectors: float32, float16 or int8."""
        return str(self.manifest["dtype"])

    @property
    def roots(self) -> list[str]:
        """The folders the index covers (every `launcher index PATH` adds one)."""
        return list(self.manifest.get("roots", []))

    def root_options(self) -> dict[str, ScanOptions]:
        """Each root's remembered scan options (the defaults for an index from before they were kept)."""
        return stored_options(self.manifest)


class Store(Stored, FileLookups):
    """A read-only snapshot of the index at one generation. Cheap to open; never takes the lock."""

    def __init__(
        self,
        root: Path,
        manifest: dict[str, Any],
        table: FileTable,
        pieces: list[PieceSegment],
        vectors: list[VectorSegment],
    ) -> None:
        super().__init__(manifest)
        self.root = root
        self._table = table
        self._pieces = pieces
        self._vectors = vectors
        self._columns: FileColumns | None = None
        self._lookup: I32 | None = None  # numeric file id -> position (also inside _columns)
        self._piece_ords: list[I32] | None = None
        self._vector_ords: list[I32] | None = None
        self._partition: tuple[F32, list[npt.NDArray[np.uint16]]] | None | bool = False  # False: not loaded
        # Derived data that search builds once per snapshot (name index, BM25 statistics...).
        self.cache: dict[str, Any] = {}

    # opening

    @staticmethod
    def exists(index_dir: str | os.PathLike[str]) -> bool:
        """Whether an index has been committed in this directory."""
        return (Path(index_dir) / MANIFEST).is_file()

    @staticmethod
    def open(index_dir: str | os.PathLike[str]) -> Store:
        """The latest committed snapshot."""
        return Store._load(Path(index_dir), None)

    @staticmethod
    def open_writer(
        index_dir: str | os.PathLike[str],
        identity: dict[str, Any],
        *,
        dims: int,
        dtype: Dtype = "float16",
        reset: bool = False,
        on_mismatch: Literal["raise", "reset"] = "raise",
        adopt: Sequence[str] = (),
        previous: Store | None = None,
    ) -> Writer:
        """The one writer (a context manager). StoreLocked if another process writes; ModelMismatch
        if the index holds another identity/dims/dtype, unless on_mismatch="reset" (then, as with
        reset=True, the writer starts an empty index that replaces the old one at its first
        commit, and `writer.reset_reason` says why). When only keys named in `adopt` differ, the
        index is kept and takes the new identity at the next commit; `writer.adopted` lists them
        (old, new), and the caller re-embeds what they affect. `previous`, a snapshot of this index
        the caller holds (an earlier writer's), spares reading again the file-table parts it has."""
        if on_mismatch not in ("raise", "reset"):
            raise ValueError(f"on_mismatch must be 'raise' or 'reset', not {on_mismatch!r}")
        return Writer(
            Path(index_dir),
            identity,
            dims=dims,
            dtype=dtype,
            reset=reset,
            on_mismatch=on_mismatch,
            adopt=adopt,
            snapshots=Store,
            previous=previous,
        )

    def refresh(self) -> Store:
        """The latest snapshot, reusing what is unchanged; self when nothing was committed since."""
        try:
            gen = json.loads((self.root / MANIFEST).read_text(encoding="utf-8")).get("generation")
        except (OSError, ValueError):
            gen = None
        return self if gen == self.generation else Store._load(self.root, self)

    @staticmethod
    def _load(root: Path, previous: Store | None) -> Store:
        last: Exception | None = None
        for _ in range(10):  # a compaction may delete files between our manifest read and open
            manifest = _read_manifest(root)
            try:
                return Store._from_manifest(root, manifest, previous)
            except FileNotFoundError as exc:
                last = exc
                time.sleep(0.01)
        raise StoreError(f"index at {root} keeps changing under the reader ({last}); try again")

    @staticmethod
    def _from_manifest(root: Path, manifest: dict[str, Any], previous: Store | None) -> Store:
        old_p = {s.name: s for s in previous._pieces} if previous else {}
        old_v = {s.name: s for s in previous._vectors} if previous else {}
        pieces = [old_p[n] if n in old_p else PieceSegment(root, n) for n in _names(manifest, "pieces")]
        vectors = [old_v[n] if n in old_v else VectorSegment(root, n) for n in _names(manifest, "vectors")]
        files = _names(manifest, "files")
        done = _names(previous.manifest, "files") if previous else []
        if previous and files[: len(done)] == done:
            table = previous._table.copy() if len(files) > len(done) else previous._table
            todo = files[len(done) :]
        else:
            table, todo = FileTable(), files
        with paused_gc():
            for name in todo:
                table.apply(json.loads((root / f"{name}.json").read_text(encoding="utf-8")))
        return Store(root, manifest, table, pieces, vectors)

    # files

    def failures(self) -> list[Failure]:
        """Skipped paths and files that failed (wholly or partly), sorted by path."""
        out = [Failure(p, r, s, m) for p, (r, s, m) in self._table.skips.items()]
        out += [
            Failure(r[COL_PATH], r[COL_ERROR], r[COL_SIZE], r[COL_MTIME])
            for r in self._table.rows.values()
            if r[COL_ERROR]
        ]
        return sorted(out, key=lambda f: f.path)

    def file_columns(self) -> FileColumns:
        """The file table as arrays (built once per snapshot)."""
        if self._columns is None:
            # Column by column with C-level maps (a watcher's commit makes a new snapshot, and the
            # first search on it builds these): no Python call per file except for pictures' dates.
            rows = list(self._table.rows.values())
            n = len(rows)
            code = {k: i for i, k in enumerate(KINDS)}
            kinds = np.fromiter(
                map(code.get, map(itemgetter(COL_KIND), rows), repeat(code["other"])), np.uint8, n
            )
            mtimes = np.fromiter(map(itemgetter(COL_MTIME), rows), np.int64, n)
            dates = mtimes.copy()
            lengths = np.fromiter(map(len, rows), np.int64, n)
            for i in np.flatnonzero(lengths > COL_TAKEN).tolist():  # rows with a taken time (pictures)
                dates[i] = date_of(rows[i])
            self._columns = FileColumns(
                numeric_ids=self._table.numeric_ids(),
                paths=list(map(itemgetter(COL_PATH), rows)),
                kinds=kinds,
                mtime_ns=mtimes,
                date_ns=dates,
                name_keys=list(map(itemgetter(COL_NAME), rows)),
                _lookup=self._file_lookup(),
            )
        return self._columns

    def _file_lookup(self) -> I32:
        """Numeric file id -> position in the file table (once per snapshot): all that piece_ords
        needs, without the columns (a writer's open, on every rescan, needs only this)."""
        if self._lookup is None:
            ids = self._table.numeric_ids()
            lookup = np.full(int(ids.max(initial=-1)) + 1, -1, dtype=np.int32)
            lookup[ids] = np.arange(len(ids), dtype=np.int32)
            self._lookup = lookup
        return self._lookup

    # pieces

    def piece(self, piece_id: PieceId) -> PieceInfo | None:
        """A piece's metadata, None when unknown or its file is gone."""
        pid = _num(piece_id, "p")
        for seg in self._pieces:
            row = seg.row_of(pid)
            if row is not None:
                fid = int(seg.files[row])
                if fid not in self._table.rows:
                    return None
                modality, loc, text = seg.meta(row)
                has = any(v.has(pid) for v in self._vectors)
                return PieceInfo(piece_id, f"f{fid}", Locator.from_dict(loc), text, modality, has)
        return None

    def pieces_of(self, file_id: FileId) -> list[PieceId]:
        """A file's piece ids in the order they were added."""
        fid = _num(file_id, "f")
        row = self._table.rows.get(fid)
        return [] if row is None else [f"p{row[COL_FIRST] + i}" for i in range(row[COL_NPIECES])]

    def pending_pieces(self) -> list[PieceId]:
        """Live pieces that have no vector yet, in insertion order."""
        return [f"p{int(i)}" for i in self._pending_numeric()[0]]

    def _pending_numeric(self) -> tuple[I64, I64]:
        live = self.piece_ords()
        ids = np.concatenate(
            [s.ids[o >= 0] for s, o in zip(self._pieces, live, strict=True)] or [np.zeros(0, np.int64)]
        )
        files = np.concatenate(
            [s.files[o >= 0] for s, o in zip(self._pieces, live, strict=True)] or [np.zeros(0, np.int64)]
        )
        have = np.sort(np.concatenate([np.asarray(v.ids) for v in self._vectors] or [np.zeros(0, np.int64)]))
        # Failed pieces are settled too: they wait for their file to change (or --retry-failed).
        have = np.union1d(have, self._table.failed_piece_ids())
        pending = ~contains_sorted(have, ids)
        order = np.argsort(ids[pending], kind="stable")
        return ids[pending][order], files[pending][order]

    def piece_ords(self) -> list[I32]:
        """Per piece segment: row -> file position, -1 for dead rows."""
        if self._piece_ords is None:
            lookup = self._file_lookup()
            self._piece_ords = [_ords(lookup, np.asarray(s.files)) for s in self._pieces]
        return self._piece_ords

    def piece_blocks(self) -> list[PieceBlock]:
        """The piece segments' postings with their row -> file mapping, for BM25."""
        return [
            PieceBlock(s.postings, s.ids, o) for s, o in zip(self._pieces, self.piece_ords(), strict=True)
        ]

    # vectors

    def vector_blocks(self) -> list[VectorBlock]:
        """The vector segments, memory-mapped, with piece ids and the live-row mapping."""
        if self._vector_ords is None:
            cols = self.file_columns()
            self._vector_ords = [cols.ords(np.asarray(v.files)) for v in self._vectors]
        part = self.partition()
        lists: list[npt.NDArray[np.uint16] | None] = list(part[1]) if part else [None] * len(self._vectors)
        return [
            VectorBlock(v.vectors, v.scales, v.ids, o, li)
            for v, o, li in zip(self._vectors, self._vector_ords, lists, strict=True)
        ]

    def partition(self) -> tuple[F32, list[npt.NDArray[np.uint16]]] | None:
        """The partition's centroids and each vector segment's row lists (memory-mapped), or None
        when the index is not partitioned (small, or a segment's lists are not written yet)."""
        if self._partition is False:
            self._partition = None
            cname = _partition_name(self.manifest)
            entries = self.manifest["vectors"]
            if cname is not None and entries and all(e.get("lists") == cname for e in entries):
                cent = load_npy(self.root / f"{cname}.npy")
                lists = [load_npy(self.root / _lists_name(e["name"], cname)) for e in entries]
                self._partition = (np.asarray(cent, dtype=np.float32), lists)
        return self._partition  # type: ignore[return-value]

    def vectors_of(self, piece_ids: Sequence[PieceId]) -> Matrix:
        """Decoded float32 vectors of some pieces (KeyError when one has none)."""
        out = np.zeros((len(piece_ids), self.dims), dtype=np.float32)
        for i, piece_id in enumerate(piece_ids):
            pid = _num(piece_id, "p")
            for v in self._vectors:
                j = int(np.searchsorted(v.ids, pid))
                if j < len(v.ids) and int(v.ids[j]) == pid:
                    out[i] = v.floats(np.array([j]))[0]
                    break
            else:
                raise KeyError(f"piece {piece_id} has no vector")
        return out

    def stats(self) -> Stats:
        """Counts, sizes and identity for `launcher status` (computed once per snapshot)."""
        if "stats" not in self.cache:
            self.cache["stats"] = self._stats()
        return self.cache["stats"]  # type: ignore[no-any-return]

    def _stats(self) -> Stats:
        by_kind: dict[str, int] = {}
        failed = 0
        for r in self._table.rows.values():
            by_kind[r[COL_KIND]] = by_kind.get(r[COL_KIND], 0) + 1
            failed += r[COL_ERROR] is not None
        pieces = sum(int((o >= 0).sum()) for o in self.piece_ords())
        embedded = sum(int(b.live.sum()) for b in self.vector_blocks())
        failed_pieces = sum(len(failed_of(r)) for r in self._table.rows.values())
        m = self.manifest
        entries = m["files"] + m["pieces"] + m["vectors"]
        return Stats(
            files=len(self._table.rows),
            files_by_kind=dict(sorted(by_kind.items())),
            pieces=pieces,
            embedded=embedded,
            pending=pieces - embedded - failed_pieces,
            failed_pieces=failed_pieces,
            failed=failed + len(self._table.skips),
            bytes_on_disk=sum(int(e["bytes"]) for e in entries),
            generation=self.generation,
            committed_at=float(m["committed_at"]),
            identity=self.identity,
            dims=self.dims,
            dtype=self.dtype,
            segments=len(m["pieces"]) + len(m["vectors"]),
        )
