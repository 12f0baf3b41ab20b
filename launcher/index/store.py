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

The formats themselves are in launcher/index/segments.py. A commit writes new segment files (each
fsynced), then writes the new manifest to a temporary file, fsyncs it, `os.replace`s it over
MANIFEST.json and fsyncs the directory (launcher/core/files.py's atomic_write_json). Files are never changed after they are written, so a reader holding a
manifest can always open what it names (it retries if a compaction deleted them in between),
and `kill -9` at any instant leaves the previous manifest and all of its files intact. Files no
manifest names are orphans of an interrupted commit; the next writer deletes them when it opens
(and every commit deletes what it made obsolete).

Ids are stable: `f<n>` for files and `p<n>` for pieces, from counters kept in the manifest, never
reused and never row positions. A file moved on disk keeps its id, its pieces and their vectors.
Deletion is by file: a piece row is live exactly when its file id is in the file table, so the file
table is the tombstone set, and readers mask dead rows instead of rewriting anything. A segment is
rewritten without its dead rows once they pass DEAD_FRACTION, and segments of similar size are
merged MERGE_FACTOR at a time (tiered, as in LSM trees) so there are only ever a few dozen.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from launcher.core.errors import ModelMismatch, StoreError, StoreLocked
from launcher.core.files import atomic_write_json, make_private
from launcher.core.paths import folder_prefix, inside_any
from launcher.core.records import KINDS, FileRecord, Locator, Matrix, Piece, Skip
from launcher.index import keywords, partition
from launcher.index.segments import (
    COL_ERROR,
    COL_FAILED,
    COL_FIRST,
    COL_HASH,
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
    encode_vectors,
    failed_of,
    fsync_dir,
    fsync_file,
    load_npy,
    save_bytes,
    save_npy,
)
from launcher.ingest.roots import ScanOptions, stored_options

SCHEMA = 1  # bump when the layout or the tokenizer (keywords.py) changes
MANIFEST = "MANIFEST.json"
# A manifest write that never reached its rename (atomic_write_json's name; older versions' too).
_MANIFEST_TMP = re.compile(r"\.?MANIFEST\.json(\.\d+\.\d+)?\.tmp$")
LOCK = "LOCK"
TEXT_CAP = 4096  # characters of a piece's text kept for snippets; postings see all of it
MERGE_FACTOR = 8  # this many segments of one size tier are merged into one
DEAD_FRACTION = 0.3  # a segment with more dead rows than this is rewritten without them
MAX_FILE_DELTAS = 16  # file-table deltas before a new base is written

Dtype = Literal["float32", "float16", "int8"]
DTYPES: tuple[str, ...] = ("float32", "float16", "int8")
FileId = str
PieceId = str

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
F32 = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]

_OWN_FILE = re.compile(r"^([pvfc]-\d{8}-[0-9a-f]{6})\.")
_LISTS_FILE = re.compile(r"^([v]-\d{8}-[0-9a-f]{6})\.(c-\d{8}-[0-9a-f]{6})\.lists\.npy$")
_MODALITIES = ("text", "image")


# --- records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileInfo:
    """A file as the index knows it."""

    file_id: FileId
    path: str
    size: int
    mtime_ns: int
    kind: str
    content_hash: str
    n_pieces: int
    error: str | None = None

    @property
    def status(self) -> str:
        """'ok', 'partial' (some pieces, and an error), or 'failed' (an error, no pieces)."""
        if self.error is None:
            return "ok"
        return "partial" if self.n_pieces else "failed"


@dataclass(frozen=True)
class PieceInfo:
    """A piece's metadata: which file, where in it, its (capped) text."""

    piece_id: PieceId
    file_id: FileId
    locator: Locator
    text: str
    modality: str
    has_vector: bool


@dataclass(frozen=True)
class Failure:
    """A file that was skipped or could not be read, and why (one lowercase line)."""

    path: str
    reason: str
    size: int | None = None
    mtime_ns: int | None = None


@dataclass(frozen=True)
class Stats:
    """What `launcher status` shows."""

    files: int
    files_by_kind: dict[str, int]
    pieces: int
    embedded: int
    pending: int
    failed_pieces: int  # pieces that could not be embedded (their reasons are in failures())
    failed: int
    bytes_on_disk: int
    generation: int
    committed_at: float
    identity: dict[str, Any]
    dims: int
    dtype: str
    segments: int


@dataclass(frozen=True)
class VectorBlock:
    """One vector segment as search sees it: memory-mapped, never copied whole."""

    vectors: npt.NDArray[Any]  # (n, dims) float32 | float16 | int8, memory-mapped
    scales: F32 | None  # int8 only: row i is vectors[i] * scales[i]
    piece_ids: I64  # numeric piece ids, sorted
    file_ords: I32  # row -> position in FileColumns, -1 when the file is gone (a dead row)
    lists: npt.NDArray[np.uint16] | None = None  # row -> partition list, when partitioned

    @property
    def live(self) -> Mask:
        """Rows whose file is still indexed."""
        return self.file_ords >= 0


@dataclass(frozen=True)
class PieceBlock:
    """One piece segment as keyword search sees it."""

    postings: keywords.Postings
    piece_ids: I64
    file_ords: I32  # -1 for dead rows


def _ords(lookup: I32, numeric_file_ids: I64) -> I32:
    """Positions of numeric file ids through a lookup; -1 for files no longer indexed."""
    ids = np.asarray(numeric_file_ids, dtype=np.int64)
    inside = ids < len(lookup)
    out = np.full(ids.shape, -1, dtype=np.int32)
    out[inside] = lookup[ids[inside]]
    return out


@dataclass(frozen=True)
class FileColumns:
    """The file table as arrays, for filters and grouping; row i is file position i."""

    numeric_ids: I64
    paths: list[str]
    kinds: npt.NDArray[np.uint8]  # index into records.KINDS
    mtime_ns: I64
    date_ns: I64  # what date filters use: a picture's taken time (EXIF) when known, else mtime_ns
    name_keys: list[str]  # keywords.name_key(path)
    _lookup: I32 = field(repr=False)  # numeric file id -> position, -1 if absent

    def __len__(self) -> int:
        return len(self.paths)

    def ords(self, numeric_file_ids: I64) -> I32:
        """Positions of the given numeric file ids; -1 for files no longer indexed."""
        return _ords(self._lookup, numeric_file_ids)

    def file_id(self, pos: int) -> FileId:
        """The string id of the file at a position."""
        return f"f{int(self.numeric_ids[pos])}"


@dataclass(frozen=True)
class PieceMeta:
    """What the index keeps of a piece: its text (for keywords and snippets), locator, modality."""

    text: str = ""
    locator: Locator = field(default_factory=Locator)
    modality: str = "text"

    @staticmethod
    def from_piece(piece: Piece) -> PieceMeta:
        """Drop the image and context; keep what search shows."""
        return PieceMeta(piece.text, piece.locator, piece.modality)


def _info(table: FileTable, fid: int) -> FileInfo:
    return FileInfo(f"f{fid}", *table.rows[fid][COL_PATH:COL_NAME])


def _num(id_: str, prefix: str) -> int:
    if not isinstance(id_, str) or id_[:1] != prefix or not id_[1:].isdigit():
        raise KeyError(f"not a {'file' if prefix == 'f' else 'piece'} id: {id_!r}")
    return int(id_[1:])


# --- reading -----------------------------------------------------------------------------------


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"no index at {root}; run `launcher index` to build one") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read index manifest {path}: {exc}; rebuild the index") from None
    if data.get("schema") != SCHEMA:
        raise StoreError(
            f"index at {root} has schema {data.get('schema')}, this launcher reads {SCHEMA}; "
            "rebuild the index"
        )
    return data  # type: ignore[no-any-return]


def _names(manifest: dict[str, Any], key: str) -> list[str]:
    return [e["name"] for e in manifest[key]]


def _lists_name(vector_segment: str, centroids: str) -> str:
    return f"{vector_segment}.{centroids}.lists.npy"


def _partition_name(manifest: dict[str, Any]) -> str | None:
    part = manifest.get("partition")
    return str(part["name"]) if part else None


def _live_files(manifest: dict[str, Any]) -> set[str]:
    """What a manifest names: segment prefixes, centroids, and list files (full names)."""
    live = set(_names(manifest, "files") + _names(manifest, "pieces") + _names(manifest, "vectors"))
    cname = _partition_name(manifest)
    if cname is not None:
        live.add(cname)
        live.update(_lists_name(e["name"], cname) for e in manifest["vectors"] if e.get("lists") == cname)
    return live


class Store:
    """A read-only snapshot of the index at one generation. Cheap to open; never takes the lock."""

    def __init__(
        self,
        root: Path,
        manifest: dict[str, Any],
        table: FileTable,
        pieces: list[PieceSegment],
        vectors: list[VectorSegment],
    ) -> None:
        self.root = root
        self.manifest = manifest
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
    def stored_dtype(index_dir: str | os.PathLike[str]) -> str | None:
        """The storage type of the index in this directory (manifest only), None when there is none."""
        if not Store.exists(index_dir):
            return None
        return str(_read_manifest(Path(index_dir))["dtype"])

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
    ) -> Writer:
        """The one writer (a context manager). StoreLocked if another process writes; ModelMismatch
        if the index holds another identity/dims/dtype, unless on_mismatch="reset" (then, as with
        reset=True, the writer starts an empty index that replaces the old one at its first
        commit, and `writer.reset_reason` says why). When only keys named in `adopt` differ, the
        index is kept and takes the new identity at the next commit; `writer.adopted` lists them
        (old, new), and the caller re-embeds what they affect."""
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
        for name in todo:
            table.apply(json.loads((root / f"{name}.json").read_text(encoding="utf-8")))
        return Store(root, manifest, table, pieces, vectors)

    # the manifest

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

    # files

    def files(self) -> Iterator[FileInfo]:
        """Every indexed file."""
        for fid in self._table.rows:
            yield _info(self._table, fid)

    def file(self, file_id: FileId) -> FileInfo | None:
        """One file by id, None when it is not (or no longer) indexed."""
        fid = _num(file_id, "f")
        return _info(self._table, fid) if fid in self._table.rows else None

    def file_by_path(self, path: str) -> FileInfo | None:
        """The file indexed at this exact path."""
        fid = self._table.by_path().get(path)
        return None if fid is None else _info(self._table, fid)

    def file_by_hash(self, content_hash: str) -> list[FileInfo]:
        """Files with this content hash (a moved or copied file)."""
        return [_info(self._table, fid) for fid in self._table.by_hash().get(content_hash, ())]

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
            rows = self._table.rows
            ids = self._table.numeric_ids()
            code = {k: i for i, k in enumerate(KINDS)}
            other = code["other"]
            self._columns = FileColumns(
                numeric_ids=ids,
                paths=[r[COL_PATH] for r in rows.values()],
                kinds=np.fromiter((code.get(r[COL_KIND], other) for r in rows.values()), np.uint8, len(rows)),
                mtime_ns=np.fromiter((r[COL_MTIME] for r in rows.values()), np.int64, len(rows)),
                date_ns=np.fromiter((date_of(r) for r in rows.values()), np.int64, len(rows)),
                name_keys=[r[COL_NAME] for r in rows.values()],
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


# --- files search found gone ---------------------------------------------------------------------

GONE = "gone.txt"  # paths search found missing on disk, one a line, for the next writer to remove


def queue_gone(index_dir: str | os.PathLike[str], paths: Iterable[str]) -> None:
    """Ask the next writer (a watcher, the next `launcher index`) to remove these files; appends
    are atomic for short lines, so readers in several processes may call this at once."""
    data = "".join(json.dumps(p, ensure_ascii=True) + "\n" for p in paths).encode()
    if not data:
        return
    fd = os.open(Path(index_dir) / GONE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def take_gone(index_dir: str | os.PathLike[str]) -> list[str]:
    """The queued paths, emptying the queue (a rename first, so a concurrent append is not lost)."""
    path = Path(index_dir) / GONE
    if not path.exists():
        return []
    taking = path.with_name(f".{GONE}.{os.getpid()}.taking")
    try:
        os.replace(path, taking)
    except FileNotFoundError:
        return []
    try:
        lines = taking.read_text(encoding="utf-8").splitlines()
    finally:
        taking.unlink(missing_ok=True)
    out: list[str] = []
    for line in lines:
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, str):
                out.append(value)
    return list(dict.fromkeys(out))


# --- writing -----------------------------------------------------------------------------------


def identity_changes(
    m: dict[str, Any], identity: dict[str, Any], dims: int, dtype: str
) -> dict[str, tuple[Any, Any]]:
    """What differs between a manifest's identity (with dims and dtype) and a writer's: key -> (old, new)."""
    old = {**m["identity"], "dims": m["dims"], "dtype": m["dtype"]}
    new = {**identity, "dims": dims, "dtype": dtype}
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def _check_identity(root: Path, m: dict[str, Any], identity: dict[str, Any], dims: int, dtype: str) -> None:
    changes = identity_changes(m, identity, dims, dtype)
    if changes:
        diff = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items())
        raise ModelMismatch(
            f"index at {root} was built with another model or settings ({diff}); re-index from scratch"
        )


class Writer:
    """The one writer: add, move and remove files, attach vectors, commit atomically.

    Changes are invisible to readers until `commit()`. Used as a context manager it commits on a
    clean exit and discards uncommitted changes on an exception; either way it releases the lock.
    """

    def __init__(
        self,
        root: Path,
        identity: dict[str, Any],
        *,
        dims: int,
        dtype: Dtype,
        reset: bool,
        on_mismatch: str,
        adopt: Sequence[str] = (),
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"storage dtype must be one of {DTYPES}, not {dtype!r}")
        if dims < 1:
            raise ValueError(f"dims must be positive, not {dims}")
        self.root = root
        self.dims = dims
        self.dtype: str = dtype
        # Round-trip through JSON so the comparison with a stored identity sees the same types.
        self.identity: dict[str, Any] = json.loads(json.dumps(identity))
        self.reset_reason: str | None = "requested" if reset else None  # why this writer starts afresh
        self._adopt = tuple(adopt)
        self.adopted: dict[str, tuple[Any, Any]] = {}  # identity keys taken over: key -> (old, new)
        self._roots: dict[str, ScanOptions] | None = None  # set: the roots and options to commit
        self._tag = secrets.randbits(24)
        self._seq = 0
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        make_private(root, recursive=True)  # an index written by an older version, or another umask
        self._lock_fd = self._lock()
        try:
            self._open(reset, on_mismatch)
        except BaseException:
            self.close()
            raise

    def _lock(self) -> int:
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreLocked(
                f"index at {self.root} is being written by pid {pid}; wait for it or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _open(self, reset: bool, on_mismatch: str) -> None:
        if Store.exists(self.root):
            manifest = _read_manifest(self.root)
            if not reset:
                try:
                    _check_identity(self.root, manifest, self.identity, self.dims, self.dtype)
                except ModelMismatch as exc:
                    changes = identity_changes(manifest, self.identity, self.dims, self.dtype)
                    if set(changes) <= set(self._adopt):
                        self.adopted = changes
                    elif on_mismatch != "reset":
                        raise
                    else:
                        reset, self.reset_reason = True, str(exc)
            self._clean_orphans(manifest)
            base = Store._from_manifest(self.root, manifest, None)
            if reset:
                # A fresh, empty index; readers keep seeing the old one until our first commit.
                base = Store(self.root, self._fresh(manifest), FileTable(), [], [])
        else:
            self._clean_orphans(None)
            base = Store(self.root, self._fresh(None), FileTable(), [], [])
        self._base = base
        self._table = base._table.copy()
        self._next_file = int(base.manifest["next_file"])
        self._next_piece = int(base.manifest["next_piece"])
        # A new or reset index commits even if empty; so does one that took over a new identity.
        self._dirty = not Store.exists(self.root) or reset or bool(self.adopted)
        self._pend_ids, self._pend_files = base._pending_numeric()
        self._pend_done = np.zeros(len(self._pend_ids), dtype=bool)
        self._clear_session()

    def _fresh(self, old: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "generation": int(old["generation"]) if old else 0,
            "committed_at": 0.0,
            "identity": self.identity,
            "dims": self.dims,
            "dtype": self.dtype,
            # Counters survive a reset so an id is never reused in this directory.
            "next_file": int(old["next_file"]) if old else 1,
            "next_piece": int(old["next_piece"]) if old else 1,
            "roots": list(old.get("roots", [])) if old else [],
            "scan": dict(old.get("scan", {})) if old else {},
            "files": [],
            "pieces": [],
            "vectors": [],
        }

    def _clear_session(self) -> None:
        self._upserted: set[int] = set()
        self._deleted: set[int] = set()
        self._skipped: set[str] = set()
        self._unskipped: set[str] = set()
        self._new_ids: list[int] = []
        self._new_files: list[int] = []
        self._new_lines: list[bytes] = []
        self._new_texts: list[str] = []
        self._new_index: dict[int, int] = {}  # piece id -> file id, for uncommitted pieces
        self._new_done: set[int] = set()
        self._vec_ids: list[int] = []
        self._vec_files: list[int] = []
        self._vec_rows: list[Matrix] = []

    def _clean_orphans(self, manifest: dict[str, Any] | None) -> None:
        live = _live_files(manifest) if manifest is not None else set()
        for entry in os.scandir(self.root):
            m = _OWN_FILE.match(entry.name)
            stale_lists = _LISTS_FILE.match(entry.name) is not None and entry.name not in live
            if (m and m.group(1) not in live) or stale_lists or _MANIFEST_TMP.match(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)

    # context manager

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                self.commit()
        finally:
            self.close()

    def close(self) -> None:
        """Release the lock; uncommitted changes are dropped."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = -1

    # reads that see this writer's uncommitted changes

    @property
    def generation(self) -> int:
        """The last committed generation."""
        return self._base.generation

    def file(self, file_id: FileId) -> FileInfo | None:
        """One file by id."""
        fid = _num(file_id, "f")
        return _info(self._table, fid) if fid in self._table.rows else None

    def file_by_path(self, path: str) -> FileInfo | None:
        """The file indexed at this exact path."""
        fid = self._table.by_path().get(path)
        return None if fid is None else _info(self._table, fid)

    def file_by_hash(self, content_hash: str) -> list[FileInfo]:
        """Files with this content hash."""
        return [_info(self._table, fid) for fid in self._table.by_hash().get(content_hash, ())]

    def files(self) -> Iterator[FileInfo]:
        """Every indexed file."""
        for fid in list(self._table.rows):
            yield _info(self._table, fid)

    def failure(self, path: str) -> Failure | None:
        """The recorded skip for a path."""
        s = self._table.skips.get(path)
        return None if s is None else Failure(path, *s)

    def pending_pieces(self) -> list[PieceId]:
        """Pieces of live files that still need a vector, in insertion order."""
        live = np.sort(self._table.numeric_ids())
        keep = ~self._pend_done & contains_sorted(live, self._pend_files)
        out = [f"p{int(i)}" for i in self._pend_ids[keep]]
        rows = self._table.rows
        out += [
            f"p{p}"
            for p, f in zip(self._new_ids, self._new_files, strict=True)
            if p not in self._new_done and f in rows
        ]
        return out

    def pending_count(self) -> int:
        """How many pieces still need a vector."""
        return len(self.pending_pieces())

    def pending_by_file(self) -> dict[FileId, list[PieceId]]:
        """Pending piece ids grouped by file, files in the order their first pending piece was added."""
        out: dict[FileId, list[PieceId]] = {}
        rows = self._table.rows
        for pid in self.pending_pieces():
            num = int(pid[1:])
            fid = self._new_index.get(num)
            if fid is None:
                fid = int(self._pend_files[int(np.searchsorted(self._pend_ids, num))])
            if fid in rows:
                out.setdefault(f"f{fid}", []).append(pid)
        return out

    def files_by_id(self, file_ids: Iterable[FileId]) -> dict[FileId, FileRecord]:
        """Scan-style records of some indexed files (to re-extract them)."""
        out: dict[FileId, FileRecord] = {}
        for file_id in file_ids:
            r = self._table.rows[_num(file_id, "f")]
            out[file_id] = FileRecord(r[COL_PATH], r[COL_SIZE], r[COL_MTIME], r[COL_KIND])
        return out

    def state_under(self, roots: Sequence[str]) -> dict[str, tuple[str, int, int, str, str]]:
        """path -> (file id, size, mtime_ns, content hash, kind) of the indexed files at or below any of
        these folders: what a rescan's diff needs, as plain tuples (FileInfo objects for 100k
        files cost more than the scan itself)."""
        exact = set(roots)
        prefixes = tuple(folder_prefix(r) for r in roots)
        return {
            row[COL_PATH]: (f"f{fid}", row[COL_SIZE], row[COL_MTIME], row[COL_HASH], row[COL_KIND])
            for fid, row in self._table.rows.items()
            if row[COL_PATH].startswith(prefixes) or row[COL_PATH] in exact
        }

    def piece_count(self, file_id: FileId) -> int:
        """How many pieces the file was indexed with."""
        return int(self._table.rows[_num(file_id, "f")][COL_NPIECES])

    def pieces_of(self, file_id: FileId) -> list[PieceId]:
        """A file's piece ids, in extraction order."""
        row = self._table.rows[_num(file_id, "f")]
        return [f"p{row[COL_FIRST] + i}" for i in range(row[COL_NPIECES])]

    def piece_positions(self, file_id: FileId, piece_ids: Sequence[PieceId]) -> list[int]:
        """Where each piece sits in the file's extraction order (0-based), to re-extract and match."""
        row = self._table.rows[_num(file_id, "f")]
        out = []
        for pid in piece_ids:
            pos = _num(pid, "p") - row[COL_FIRST]
            if not 0 <= pos < row[COL_NPIECES]:
                raise KeyError(f"piece {pid} is not a piece of file {file_id}")
            out.append(pos)
        return out

    # changes

    def add_file(
        self,
        rec: FileRecord,
        content_hash: str,
        pieces: Sequence[PieceMeta | Piece],
        *,
        error: str | None = None,
        taken_ns: int | None = None,
    ) -> tuple[FileId, list[PieceId]]:
        """Index a file and its pieces (without vectors yet); replaces a file already at this path.
        With `error` it is recorded as failed (no pieces) or partial, and not retried while unchanged.
        A picture's `taken_ns` (EXIF) is stored for every picture, null when it has none."""
        if rec.kind not in KINDS:
            raise ValueError(f"unknown kind {rec.kind!r} for {rec.path}")
        old = self._table.by_path().get(rec.path)
        if old is not None:
            self._remove(old)
        fid = self._next_file
        self._next_file += 1
        name = keywords.name_key(rec.path)
        row = [fid, rec.path, rec.size, rec.mtime_ns, rec.kind, content_hash, len(pieces), error, name]
        row.append(self._next_piece)
        if rec.kind == "image":
            # Recorded even when unknown (null), so a row that lacks the column is one made before
            # pictures were asked for it (see set_taken).
            row += [None, taken_ns]
        self._table.put(fid, row)
        self._upserted.add(fid)
        self._unskip(rec.path)
        ids: list[PieceId] = []
        for piece in pieces:
            pid = self._next_piece
            self._next_piece += 1
            modality = piece.modality if piece.modality in _MODALITIES else "text"
            line = json.dumps([modality, piece.locator.to_dict(), piece.text[:TEXT_CAP]], ensure_ascii=True)
            self._new_ids.append(pid)
            self._new_files.append(fid)
            self._new_lines.append(line.encode("utf-8") + b"\n")
            self._new_texts.append(piece.text)
            self._new_index[pid] = fid
            ids.append(f"p{pid}")
        self._dirty = True
        return f"f{fid}", ids

    def remove_file(self, file_id: FileId) -> None:
        """Forget a file; its pieces and vectors become dead rows (KeyError when unknown)."""
        self._remove(_num(file_id, "f"))

    def _remove(self, fid: int) -> None:
        if fid not in self._table.rows:
            raise KeyError(f"file f{fid} is not in the index")
        self._table.delete(fid)
        self._upserted.discard(fid)
        self._deleted.add(fid)
        self._dirty = True

    def move_file(
        self, file_id: FileId, new_path: str, size: int, mtime_ns: int, content_hash: str | None = None
    ) -> None:
        """A file moved or renamed on disk: same id, pieces and vectors, new path and stat."""
        fid = _num(file_id, "f")
        if fid not in self._table.rows:
            raise KeyError(f"file {file_id} is not in the index")
        other = self._table.by_path().get(new_path)
        if other is not None and other != fid:
            self._remove(other)  # whatever was at the destination was overwritten on disk
        new = list(self._table.rows[fid])  # a copy: the committed snapshot shares the old row
        new[COL_PATH], new[COL_SIZE], new[COL_MTIME], new[COL_NAME] = (
            new_path,
            size,
            mtime_ns,
            keywords.name_key(new_path),
        )
        if content_hash is not None:
            new[COL_HASH] = content_hash
        self._table.put(fid, new)
        self._upserted.add(fid)
        self._unskip(new_path)
        self._dirty = True

    def pictures_without_taken(self) -> list[tuple[FileId, str]]:
        """Pictures indexed before the taken time was recorded: (file id, path)."""
        return [
            (f"f{fid}", row[COL_PATH])
            for fid, row in self._table.rows.items()
            if row[COL_KIND] == "image" and len(row) <= COL_TAKEN
        ]

    def set_taken(self, file_id: FileId, taken_ns: int | None) -> None:
        """Record when a picture was taken (None: it does not say), keeping everything else."""
        fid = _num(file_id, "f")
        if fid not in self._table.rows:
            raise KeyError(f"file {file_id} is not in the index")
        new = list(self._table.rows[fid])  # a copy: the committed snapshot shares the old row
        new += [None] * (COL_TAKEN + 1 - len(new))
        new[COL_TAKEN] = taken_ns
        self._table.put(fid, new)
        self._upserted.add(fid)
        self._dirty = True

    def record_failure(self, target: FileRecord | str, reason: str, *, file_id: FileId | None = None) -> None:
        """Remember why something could not be indexed (one lowercase line).

        - a path (str): a skip (scan-level: unreadable folder, too large...), listed by failures();
        - a FileRecord: a file that could not be read; it becomes a failed file with no pieces,
          so an unchanged broken file is not read again on the next run (and its name is searchable);
        - a FileRecord with file_id: an indexed file that failed later (embedding); it keeps its
          pieces and is marked partial.
        """
        if isinstance(target, str):
            self._table.skips[target] = (reason, None, None)
            self._skipped.add(target)
            self._unskipped.discard(target)
            self._dirty = True
        elif file_id is not None:
            fid = _num(file_id, "f")
            new = list(self._table.rows[fid])
            new[COL_ERROR] = reason
            self._table.put(fid, new)
            self._upserted.add(fid)
            self._dirty = True
        else:
            self.add_file(target, "", [], error=reason)

    def record_skips(self, skips: Iterable[Skip], *, replace_under: Sequence[str] | None = None) -> None:
        """Record the scan's skips; earlier skips under `replace_under` (default: the roots given to
        set_roots) that this scan did not report again are forgotten."""
        skips = list(skips)
        under = replace_under if replace_under is not None else list(self._roots or {})
        if under:
            fresh = {s.path for s in skips}
            for path in [p for p in self._table.skips if inside_any(p, under) and p not in fresh]:
                self._unskip(path)
        for skip in skips:
            self.record_failure(skip.path, skip.reason)

    def root_options(self) -> dict[str, ScanOptions]:
        """The roots and their scan options, as they will be committed."""
        if self._roots is not None:
            return dict(self._roots)
        return stored_options(self._base.manifest)

    def set_roots(self, roots: Mapping[str, ScanOptions] | Sequence[str]) -> None:
        """The index's roots, with the scan options each is indexed with (a plain list keeps the
        options already remembered, else the defaults); kept in the manifest for status and watch."""
        if not isinstance(roots, Mapping):
            known = self.root_options()
            roots = {str(r): known.get(str(r), ScanOptions()) for r in roots}
        self._roots = {str(r): o for r, o in roots.items()}
        self._dirty = True

    def forget_root(self, root: str) -> int:
        """Drop a root and every file and skip recorded under it; returns how many files went."""
        roots = self.root_options()
        if root not in roots:
            raise KeyError(root)
        del roots[root]
        under = self.state_under([root])
        for file_id, *_ in under.values():
            self._remove(_num(file_id, "f"))
        for path in [p for p in self._table.skips if inside_any(p, [root])]:
            self._unskip(path)
        self.set_roots(roots)
        return len(under)

    def _unskip(self, path: str) -> None:
        if self._table.skips.pop(path, None) is not None:
            self._skipped.discard(path)
            self._unskipped.add(path)
            self._dirty = True

    def set_vectors(self, piece_ids: Sequence[PieceId], vectors: Matrix) -> None:
        """Attach unit vectors (float32, (n, dims), already truncated and renormalised) to pending
        pieces. KeyError for a piece that is unknown or already has one; pieces whose file was
        removed meanwhile are dropped silently."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape != (len(piece_ids), self.dims):
            raise ValueError(
                f"expected vectors of shape ({len(piece_ids)}, {self.dims}), got {vectors.shape}"
            )
        vectors = vectors.astype(np.float32, copy=False)
        norms = np.linalg.norm(vectors, axis=1)
        if not np.all(np.abs(norms - 1.0) < 1e-2):
            raise ValueError("vectors must be finite and unit-length (renormalise after truncating)")
        nums = [_num(p, "p") for p in piece_ids]
        if len(set(nums)) != len(nums):
            raise ValueError("a piece id appears twice in one set_vectors call")
        files: list[int] = []
        committed: list[int] = []
        for pid in nums:
            if pid in self._new_index:
                if pid in self._new_done:
                    raise KeyError(f"piece p{pid} already has a vector")
                files.append(self._new_index[pid])
                committed.append(-1)
                continue
            i = int(np.searchsorted(self._pend_ids, pid))
            if i >= len(self._pend_ids) or int(self._pend_ids[i]) != pid or self._pend_done[i]:
                raise KeyError(f"piece p{pid} is not pending (unknown, or it already has a vector)")
            files.append(int(self._pend_files[i]))
            committed.append(i)
        keep = []
        for k, (pid, fid, i) in enumerate(zip(nums, files, committed, strict=True)):
            if i < 0:
                self._new_done.add(pid)
            else:
                self._pend_done[i] = True
            if fid in self._table.rows:
                keep.append(k)
                self._vec_ids.append(pid)
                self._vec_files.append(fid)
        if keep:
            self._vec_rows.append(vectors[keep])
            self._dirty = True

    def fail_pieces(self, file_id: FileId, reasons: dict[PieceId, str]) -> None:
        """Settle pending pieces that could not be embedded: they keep no vector, are no longer
        pending, and the file is marked partial with a one-line summary. They are tried again when
        the file changes (it is read anew) or after retry_failed()."""
        fid = _num(file_id, "f")
        row = list(self._table.rows[fid])
        failed = dict(failed_of(row))
        for pid, reason in reasons.items():
            num = _num(pid, "p")
            pos = num - row[COL_FIRST]
            if not 0 <= pos < row[COL_NPIECES]:
                raise KeyError(f"piece {pid} is not a piece of file {file_id}")
            if num in self._new_index:
                self._new_done.add(num)
            else:
                i = int(np.searchsorted(self._pend_ids, num))
                if i < len(self._pend_ids) and int(self._pend_ids[i]) == num:
                    self._pend_done[i] = True
            failed[str(pos)] = reason
        first = failed[min(failed, key=int)]
        row += [None] * (COL_FAILED + 1 - len(row))
        row[COL_FAILED] = failed
        row[COL_ERROR] = f"{len(failed)} of {row[COL_NPIECES]} pieces could not be embedded: {first}"
        self._table.put(fid, row)
        self._upserted.add(fid)
        self._dirty = True

    def retry_failed(self) -> list[FileRecord]:
        """Make the failed pieces of every file pending again (their files stay indexed) and forget
        the files that failed as a whole, which are returned so that the caller reads them again."""
        again: list[FileRecord] = []
        revived: list[tuple[int, int]] = []  # (piece id, file id)
        for fid, row in list(self._table.rows.items()):
            failed = failed_of(row)
            if failed:
                revived += [(row[COL_FIRST] + int(pos), fid) for pos in failed]
                new = list(row)
                new[COL_FAILED] = None
                new[COL_ERROR] = None
                self._table.put(fid, new)
                self._upserted.add(fid)
            elif row[COL_ERROR] and not row[COL_NPIECES]:
                again.append(FileRecord(row[COL_PATH], row[COL_SIZE], row[COL_MTIME], row[COL_KIND]))
                self._remove(fid)
        if revived:
            ids = np.concatenate([self._pend_ids, np.array([p for p, _ in revived], dtype=np.int64)])
            files = np.concatenate([self._pend_files, np.array([f for _, f in revived], dtype=np.int64)])
            done = np.concatenate([self._pend_done, np.zeros(len(revived), dtype=bool)])
            order = np.argsort(ids, kind="stable")
            self._pend_ids, self._pend_files, self._pend_done = ids[order], files[order], done[order]
        self._dirty = self._dirty or bool(revived or again)
        return again

    # committing

    def commit(self) -> int:
        """Make every change so far durable and visible, atomically; returns the new generation."""
        if not self._dirty:
            return self.generation
        old = self._base.manifest
        gen = int(old["generation"]) + 1
        m: dict[str, Any] = {k: v for k, v in old.items() if k not in ("files", "pieces", "vectors")}
        m.update(
            generation=gen, next_file=self._next_file, next_piece=self._next_piece, identity=self.identity
        )
        if self._roots is not None:
            m["roots"] = sorted(self._roots)
            m["scan"] = {r: self._roots[r].to_json() for r in sorted(self._roots)}
        m["files"] = self._write_files(gen, list(old["files"]))
        pieces = list(old["pieces"])
        vectors = list(old["vectors"])
        if self._new_ids:
            name = self._name("p", gen)
            post = keywords.build_postings(self._new_texts)
            ids = np.array(self._new_ids, dtype=np.int64)
            nbytes = PieceSegment.write(
                self.root, name, ids, np.array(self._new_files, dtype=np.int64), self._new_lines, post
            )
            pieces.append({"name": name, "rows": len(ids), "bytes": nbytes})
        if self._vec_ids:
            vectors.append(self._write_new_vectors(gen))
        live = np.sort(self._table.numeric_ids())
        segs_p = {s.name: s for s in self._base._pieces}
        segs_v = {s.name: s for s in self._base._vectors}
        segs_p.update(
            {e["name"]: PieceSegment(self.root, e["name"]) for e in pieces if e["name"] not in segs_p}
        )
        segs_v.update(
            {e["name"]: VectorSegment(self.root, e["name"]) for e in vectors if e["name"] not in segs_v}
        )
        m["pieces"] = self._compact(gen, pieces, segs_p, live, self._merge_pieces)
        m["vectors"] = self._compact(gen, vectors, segs_v, live, self._merge_vectors)
        self._partition(gen, m, segs_v)
        m["committed_at"] = time.time()
        fsync_dir(self.root)  # the segments' names are durable before the manifest names them
        atomic_write_json(self.root / MANIFEST, m, indent=1)
        # Committed. What the new manifest no longer names (merged segments, a reset index's
        # files) is garbage now; readers that still use it hold it open or mapped.
        self._clean_orphans(m)
        self._after_commit(m, segs_p, segs_v)
        return gen

    def _after_commit(
        self, m: dict[str, Any], segs_p: dict[str, PieceSegment], segs_v: dict[str, VectorSegment]
    ) -> None:
        # Pieces added in this session join the pending arrays; embedded ones leave them.
        new_ids = np.array(self._new_ids, dtype=np.int64)
        new_done = np.array([p in self._new_done for p in self._new_ids], dtype=bool)
        ids = np.concatenate([self._pend_ids, new_ids])
        files = np.concatenate([self._pend_files, np.array(self._new_files, dtype=np.int64)])
        keep = ~np.concatenate([self._pend_done, new_done])
        self._pend_ids, self._pend_files = ids[keep], files[keep]
        self._pend_done = np.zeros(len(self._pend_ids), dtype=bool)
        self._base = Store(
            self.root,
            m,
            self._table.copy(),
            [segs_p[n] for n in _names(m, "pieces")],
            [segs_v[n] for n in _names(m, "vectors")],
        )
        self._clear_session()
        self._dirty = False

    def snapshot(self) -> Store:
        """The last committed state, as a reader would see it."""
        return self._base

    def _name(self, prefix: str, gen: int) -> str:
        # Unique within this session by the counter; earlier sessions' uncommitted names were
        # cleaned at open, and committed ones carry an older generation.
        self._seq += 1
        return f"{prefix}-{gen:08d}-{(self._tag + self._seq) % (1 << 24):06x}"

    def _write_files(self, gen: int, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        changes = len(self._upserted) + len(self._deleted) + len(self._skipped) + len(self._unskipped)
        if not entries and not changes and not self._dirty:
            return entries
        name = self._name("f", gen)
        delta_rows = sum(int(e["rows"]) for e in entries[1:]) + changes
        if not entries or len(entries) > MAX_FILE_DELTAS or delta_rows > max(256, len(self._table.rows) // 4):
            doc: dict[str, Any] = {
                "base": True,
                "upsert": self._table.to_doc(),
                "skip": {p: list(v) for p, v in self._table.skips.items()},
            }
            entries = []
            rows = len(self._table.rows) + len(self._table.skips)
        elif changes:
            doc = {
                "upsert": self._table.to_doc(sorted(self._upserted)),
                "delete": sorted(self._deleted),
                "skip": {p: list(self._table.skips[p]) for p in sorted(self._skipped)},
                "unskip": sorted(self._unskipped),
            }
            rows = changes
        else:
            return entries
        nbytes = save_bytes(self.root / f"{name}.json", json.dumps(doc, ensure_ascii=True).encode("utf-8"))
        return [*entries, {"name": name, "rows": rows, "bytes": nbytes}]

    def _write_new_vectors(self, gen: int) -> dict[str, Any]:
        ids = np.array(self._vec_ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        mat = np.concatenate(self._vec_rows)[order]
        return self._write_vectors(
            self._name("v", gen), ids[order], np.array(self._vec_files, dtype=np.int64)[order], mat
        )

    def _write_vectors(self, name: str, ids: I64, files: I64, mat: Matrix) -> dict[str, Any]:
        stored, scales = encode_vectors(mat, self.dtype)
        nbytes = save_npy(self.root / f"{name}.vec.npy", stored)
        nbytes += VectorSegment.write_index(self.root, name, ids, files, scales)
        return {"name": name, "rows": len(ids), "bytes": nbytes}

    # partition (launcher/index/partition.py)

    def _partition(self, gen: int, m: dict[str, Any], segs: dict[str, VectorSegment]) -> None:
        """Train, keep or drop the partition for the segments in m["vectors"], and write the list
        ids of every segment that lacks them for the current centroids."""
        entries: list[dict[str, Any]] = [dict(e) for e in m["vectors"]]  # never edit the old manifest's
        m["vectors"] = entries
        rows = sum(int(e["rows"]) for e in entries)
        part = m.get("partition")
        if not partition.wanted(rows, self.dims):
            m.pop("partition", None)
            for e in entries:
                e.pop("lists", None)
            return
        cent: F32 | None = None
        if part is None or partition.needs_retraining(rows, int(part["trained_on"])):
            lists = partition.n_lists(int(rows * partition.RETRAIN_GROWTH))  # sized for its lifetime
            cent = partition.train(
                self._sample([segs[e["name"]] for e in entries], lists * partition.SAMPLE_PER_LIST), lists
            )
            cname = self._name("c", gen)
            save_npy(self.root / f"{cname}.npy", cent)
            part = {"name": cname, "lists": len(cent), "trained_on": rows}
            m["partition"] = part
        for e in entries:
            if e.get("lists") == part["name"]:
                continue
            if cent is None:  # read only when a segment lacks its lists (not for commits without vectors)
                cent = np.load(self.root / f"{part['name']}.npy")
            path = self.root / _lists_name(e["name"], part["name"])
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a leftover of an interrupted commit
            save_npy(path, partition.assign(segs[e["name"]].vectors, cent))
            e["lists"] = part["name"]

    @staticmethod
    def _sample(segs: Sequence[VectorSegment], count: int) -> F32:
        """About `count` rows drawn uniformly from the segments, decoded to float32."""
        total = sum(len(s) for s in segs)
        rng = np.random.default_rng(partition.SEED)
        picks = np.sort(rng.choice(total, min(count, total), replace=False))
        out = []
        start = 0
        for s in segs:
            mine = picks[(picks >= start) & (picks < start + len(s))] - start
            if len(mine):
                out.append(s.floats(mine))
            start += len(s)
        return np.concatenate(out).astype(np.float32)

    # compaction

    def _compact(
        self,
        gen: int,
        entries: list[dict[str, Any]],
        segs: dict[str, Any],
        live_files: I64,
        merge: Any,
    ) -> list[dict[str, Any]]:
        """Drop empty segments, rewrite mostly-dead ones, merge MERGE_FACTOR of a size tier."""
        alive: dict[str, Mask] = {
            e["name"]: contains_sorted(live_files, np.asarray(segs[e["name"]].files)) for e in entries
        }
        kept: list[dict[str, Any]] = []
        groups: list[list[dict[str, Any]]] = []
        tiers: dict[int, list[dict[str, Any]]] = {}
        for e in entries:
            n_live = int(alive[e["name"]].sum())
            if n_live == 0:
                continue
            if n_live < (1 - DEAD_FRACTION) * e["rows"]:
                groups.append([e])
                continue
            tiers.setdefault(int(math.log(n_live, MERGE_FACTOR)), []).append(e)
        for tier in tiers.values():
            if len(tier) >= MERGE_FACTOR:
                groups.append(tier)
            else:
                kept += tier
        for group in groups:
            kept.append(
                merge(
                    self._name(group[0]["name"][0], gen), [(segs[e["name"]], alive[e["name"]]) for e in group]
                )
            )
            segs[kept[-1]["name"]] = (PieceSegment if kept[-1]["name"][0] == "p" else VectorSegment)(
                self.root, kept[-1]["name"]
            )
        # Keep the manifest in id order: older segments first, like the pieces themselves.
        return sorted(kept, key=lambda e: int(np.asarray(segs[e["name"]].ids[0])))

    @staticmethod
    def _gather(
        parts: Sequence[tuple[Any, Mask]],
    ) -> tuple[I64, I64, list[tuple[int, I64]], npt.NDArray[np.intp]]:
        """Live rows of several segments in piece-id order: ids, files, (segment, rows), order."""
        rows = [np.flatnonzero(keep) for _, keep in parts]
        ids = np.concatenate([np.asarray(seg.ids)[r] for (seg, _), r in zip(parts, rows, strict=True)])
        files = np.concatenate([np.asarray(seg.files)[r] for (seg, _), r in zip(parts, rows, strict=True)])
        order = np.argsort(ids, kind="stable")
        return ids[order], files[order], list(enumerate(rows)), order

    def _merge_pieces(self, name: str, parts: Sequence[tuple[PieceSegment, Mask]]) -> dict[str, Any]:
        ids, files, rows, order = self._gather(parts)
        src = np.concatenate([np.full(len(r), k) for k, r in rows])
        src_row = np.concatenate([r for _, r in rows])
        position = np.empty(len(order), dtype=np.int64)
        position[order] = np.arange(len(order))
        remaps = []
        start = 0
        for (seg, _), (_, r) in zip(parts, rows, strict=True):
            new_row = np.full(len(seg), -1, dtype=np.int64)
            new_row[r] = position[start : start + len(r)]
            remaps.append((seg.postings, new_row))
            start += len(r)
        post = keywords.merge_postings(remaps)
        lines = [parts[int(src[i])][0].line(int(src_row[i])) for i in order]
        nbytes = PieceSegment.write(self.root, name, ids, files, lines, post)
        return {"name": name, "rows": len(ids), "bytes": nbytes}

    def _merge_vectors(self, name: str, parts: Sequence[tuple[VectorSegment, Mask]]) -> dict[str, Any]:
        ids, files, rows, order = self._gather(parts)
        src = np.concatenate([np.full(len(r), k) for k, r in rows])
        src_row = np.concatenate([r for _, r in rows])
        dtype = parts[0][0].vectors.dtype
        path = self.root / f"{name}.vec.npy"
        # Created empty and private first: open_memmap would make it with the umask's mode.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(len(ids), self.dims))
        scales = np.empty(len(ids), dtype=np.float32) if dtype == np.int8 else None
        chunk = 65536  # bounded memory: a merge never holds all vectors at once
        for a in range(0, len(ids), chunk):
            sel = order[a : a + chunk]
            s, r = src[sel], src_row[sel]
            for k in np.unique(s):
                hit = s == k
                seg = parts[int(k)][0]
                out[a : a + len(sel)][hit] = seg.vectors[r[hit]]
                if scales is not None and seg.scales is not None:
                    scales[a : a + len(sel)][hit] = seg.scales[r[hit]]
        out.flush()
        del out
        nbytes = fsync_file(path) + VectorSegment.write_index(self.root, name, ids, files, scales)
        return {"name": name, "rows": len(ids), "bytes": nbytes}
