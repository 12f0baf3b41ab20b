"""The index's on-disk formats: the file table, piece segments, vector segments, durable writes.

Only launcher.index.store uses this module; see its docstring for the directory layout and the commit
protocol. Everything here is written once (`open(..., "xb")`, fsync) and never modified.
"""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from launcher.core.errors import StoreError
from launcher.core.records import Matrix
from launcher.index import keywords

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]

# A file-table row is kept as the JSON list it is stored as, [id, path, size, mtime_ns, kind,
# content_hash, n_pieces, error, name_key, first_piece(, failed(, taken))]: building 100k
# NamedTuples was a third of open(). A file's pieces have consecutive ids first_piece ..
# first_piece + n_pieces - 1. `failed`, set only when some pieces could not be embedded, maps a
# piece's position in its file (as a string: JSON keys) to the one-line reason; those pieces are
# not pending. `taken`, present for pictures read by a launcher that looks for it, is when the
# picture was taken (EXIF, epoch nanoseconds) or null when it does not say; rows written before it
# existed simply end earlier, so old indexes read as they are.
Row = list[Any]
COL_PATH, COL_SIZE, COL_MTIME, COL_KIND, COL_HASH, COL_NPIECES, COL_ERROR, COL_NAME, COL_FIRST = range(1, 10)
COL_FAILED = 10
COL_TAKEN = 11


def failed_of(row: Row) -> dict[str, str]:
    """A row's failed pieces: position -> reason (empty for most rows)."""
    return row[COL_FAILED] if len(row) > COL_FAILED and row[COL_FAILED] else {}


def taken_of(row: Row) -> int | None:
    """When a picture was taken (epoch ns), None when unknown or not a picture."""
    return row[COL_TAKEN] if len(row) > COL_TAKEN and row[COL_TAKEN] else None


def date_of(row: Row) -> int:
    """The date filters and "newest first" use: when a picture was taken, else the mtime."""
    return taken_of(row) or row[COL_MTIME]  # type: ignore[no-any-return]


class FileTable:
    """file id -> row, with path and content-hash indexes built on first use."""

    def __init__(self) -> None:
        self.rows: dict[int, Row] = {}  # rows are never mutated in place: snapshots share them
        self.skips: dict[str, tuple[str, int | None, int | None]] = {}
        self._by_path: dict[str, int] | None = None
        self._by_hash: dict[str, list[int]] | None = None

    def copy(self) -> FileTable:
        """A copy that can change without touching this one (rows are shared, never mutated)."""
        t = FileTable()
        t.rows = dict(self.rows)
        t.skips = dict(self.skips)
        return t

    def apply(self, doc: dict[str, Any]) -> None:
        """Apply one f-*.json document (a base or a delta)."""
        if doc.get("base"):
            self.rows.clear()
            self.skips.clear()
        for fid in doc.get("delete", ()):
            self.rows.pop(fid, None)
        self.rows.update((r[0], r) for r in doc.get("upsert", ()))
        for path in doc.get("unskip", ()):
            self.skips.pop(path, None)
        for path, (reason, size, mtime) in doc.get("skip", {}).items():
            self.skips[path] = (reason, size, mtime)
        self._by_path = self._by_hash = None

    def by_path(self) -> dict[str, int]:
        """path -> file id."""
        if self._by_path is None:
            self._by_path = {row[COL_PATH]: fid for fid, row in self.rows.items()}
        return self._by_path

    def by_hash(self) -> dict[str, list[int]]:
        """content hash -> file ids."""
        if self._by_hash is None:
            index: dict[str, list[int]] = {}
            for fid, row in self.rows.items():
                if row[COL_HASH]:
                    index.setdefault(row[COL_HASH], []).append(fid)
            self._by_hash = index
        return self._by_hash

    def put(self, fid: int, row: Row) -> None:
        """Insert or replace a row, keeping the indexes current."""
        old = self.rows.get(fid)
        if old is not None:
            self._unindex(fid, old)
        self.rows[fid] = row
        if self._by_path is not None:
            self._by_path[row[COL_PATH]] = fid
        if self._by_hash is not None and row[COL_HASH]:
            self._by_hash.setdefault(row[COL_HASH], []).append(fid)

    def delete(self, fid: int) -> None:
        """Remove a row (KeyError when absent)."""
        old = self.rows.pop(fid)
        self._unindex(fid, old)

    def _unindex(self, fid: int, row: Row) -> None:
        if self._by_path is not None and self._by_path.get(row[COL_PATH]) == fid:
            del self._by_path[row[COL_PATH]]
        if self._by_hash is not None and row[COL_HASH] in self._by_hash:
            ids = [i for i in self._by_hash[row[COL_HASH]] if i != fid]
            if ids:
                self._by_hash[row[COL_HASH]] = ids
            else:
                del self._by_hash[row[COL_HASH]]

    def to_doc(self, ids: Iterable[int] | None = None) -> list[list[Any]]:
        """Rows as JSON lists: all of them, or the given ids that still exist."""
        keys = self.rows.keys() if ids is None else (i for i in ids if i in self.rows)
        return [self.rows[fid] for fid in keys]

    def failed_piece_ids(self) -> I64:
        """Numeric ids of the pieces that failed to embed, sorted."""
        ids = [
            row[COL_FIRST] + int(pos)
            for row in self.rows.values()
            if len(row) > COL_FAILED and row[COL_FAILED]  # failed_of, inlined: it runs per file
            for pos in row[COL_FAILED]
        ]
        return np.array(sorted(ids), dtype=np.int64)

    def numeric_ids(self) -> I64:
        """The file ids, in table order."""
        return np.fromiter(self.rows.keys(), dtype=np.int64, count=len(self.rows))


def load_npy(path: Path) -> npt.NDArray[Any]:
    """Memory-map a .npy file (a zero-length array cannot be mapped, and need not be)."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)  # type: ignore[no-any-return]
    except ValueError:
        return np.load(path, allow_pickle=False)  # type: ignore[no-any-return]


def _create(path: Path) -> Any:
    """A new file, private to the user (0600) whatever the umask; FileExistsError if it exists."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def save_npy(path: Path, arr: npt.NDArray[Any]) -> int:
    """Write a .npy file that did not exist, fsync it, return its size."""
    with _create(path) as fh:
        np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())
        return fh.tell()


def save_bytes(path: Path, data: bytes) -> int:
    """Write a file that did not exist, fsync it, return its size."""
    with _create(path) as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return len(data)


def fsync_file(path: Path) -> int:
    """fsync a file written some other way (a streamed memmap); return its size."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the directory's entries (new, renamed, removed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PieceSegment:
    """Piece metadata and keyword postings for a run of pieces; immutable once written."""

    def __init__(self, root: Path, name: str) -> None:
        base = root / name
        self.name = name
        self.ids: I64 = load_npy(base.with_suffix(".ids.npy"))
        self.files: I64 = load_npy(base.with_suffix(".files.npy"))
        self.offsets: I64 = load_npy(base.with_suffix(".offsets.npy"))
        with open(base.with_suffix(".jsonl"), "rb") as fh:
            # The mapping keeps the file readable even after a compaction unlinks it.
            self._text = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self.postings = keywords.Postings(
            terms=load_npy(base.with_suffix(".terms.npy")),
            starts=load_npy(base.with_suffix(".starts.npy")),
            entries=load_npy(base.with_suffix(".entries.npy")).reshape(-1, 2),
            doclen=load_npy(base.with_suffix(".doclen.npy")),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def row_of(self, pid: int) -> int | None:
        """The row of a numeric piece id, None when not in this segment."""
        i = int(np.searchsorted(self.ids, pid))
        return i if i < len(self.ids) and int(self.ids[i]) == pid else None

    def line(self, row: int) -> bytes:
        """A row's raw JSON line."""
        return self._text[int(self.offsets[row]) : int(self.offsets[row + 1])]

    def meta(self, row: int) -> tuple[str, dict[str, Any], str]:
        """A row's modality, locator dict and (capped) text."""
        modality, locator, text = json.loads(self.line(row))
        return modality, locator, text

    @staticmethod
    def write(
        root: Path, name: str, ids: I64, files: I64, lines: Sequence[bytes], post: keywords.Postings
    ) -> int:
        """Write a new segment (row i = ids[i], files[i], lines[i]); return its size in bytes."""
        base = root / name
        offsets = np.zeros(len(lines) + 1, dtype=np.int64)
        np.cumsum([len(x) for x in lines], out=offsets[1:])
        return (
            save_npy(base.with_suffix(".ids.npy"), ids)
            + save_npy(base.with_suffix(".files.npy"), files)
            + save_npy(base.with_suffix(".offsets.npy"), offsets)
            + save_bytes(base.with_suffix(".jsonl"), b"".join(lines))
            + save_npy(base.with_suffix(".terms.npy"), post.terms)
            + save_npy(base.with_suffix(".starts.npy"), post.starts)
            + save_npy(base.with_suffix(".entries.npy"), post.entries)
            + save_npy(base.with_suffix(".doclen.npy"), post.doclen)
        )


class VectorSegment:
    """Vectors for a set of pieces, rows sorted by piece id; immutable once written."""

    def __init__(self, root: Path, name: str) -> None:
        base = root / name
        self.name = name
        self.vectors: npt.NDArray[Any] = load_npy(base.with_suffix(".vec.npy"))
        self.ids: I64 = load_npy(base.with_suffix(".ids.npy"))
        self.files: I64 = load_npy(base.with_suffix(".files.npy"))
        scale = base.with_suffix(".scale.npy")
        self.scales: F32 | None = load_npy(scale) if self.vectors.dtype == np.int8 else None
        if self.scales is None and scale.exists():
            raise StoreError(f"vector segment {base} has scales but is not int8; rebuild the index")

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def write_index(root: Path, name: str, ids: I64, files: I64, scales: F32 | None) -> int:
        """The files beside <name>.vec.npy, which the caller writes (whole, or streamed by a merge)."""
        nbytes = save_npy(root / f"{name}.ids.npy", ids) + save_npy(root / f"{name}.files.npy", files)
        if scales is not None:
            nbytes += save_npy(root / f"{name}.scale.npy", scales)
        return nbytes

    def has(self, pid: int) -> bool:
        """Whether this segment holds the piece's vector."""
        i = int(np.searchsorted(self.ids, pid))
        return i < len(self.ids) and int(self.ids[i]) == pid

    def floats(self, rows: npt.NDArray[np.intp]) -> Matrix:
        """Some rows decoded to float32."""
        out = np.asarray(self.vectors[rows], dtype=np.float32)
        if self.scales is not None:
            out *= self.scales[rows, None]
        return out


def encode_vectors(vectors: Matrix, dtype: str) -> tuple[npt.NDArray[Any], F32 | None]:
    """float32 rows -> stored rows (+ per-row scales for int8: symmetric, max |x| maps to 127)."""
    if dtype == "float32":
        return vectors.astype(np.float32), None
    if dtype == "float16":
        return vectors.astype(np.float16), None
    amax = np.abs(vectors).max(axis=1)
    scales = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.rint(vectors / scales[:, None]).clip(-127, 127).astype(np.int8)
    return q, scales


def contains_sorted(sorted_haystack: I64, needles: I64) -> Mask:
    """needles[i] in sorted_haystack, by binary search."""
    if len(sorted_haystack) == 0:
        return np.zeros(len(needles), dtype=bool)
    i = np.searchsorted(sorted_haystack, needles).clip(0, len(sorted_haystack) - 1)
    return sorted_haystack[i] == needles  # type: ignore[no-any-return]
