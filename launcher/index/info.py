"""What the index hands out: file and piece info, failures, stats, and the column blocks search scans."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from launcher.core.records import Locator, Piece
from launcher.index import keywords
from launcher.index.manifest import F32, I32, I64, FileId, Mask, PieceId
from launcher.index.segments import (
    COL_HASH,
    COL_KIND,
    COL_MTIME,
    COL_NAME,
    COL_PATH,
    COL_SIZE,
    FileTable,
)


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
class Indexed:
    """The indexed files at or below some folders, as columns: what a rescan's diff compares its
    walk with (a tuple per file for 100k files cost more than the walk itself)."""

    paths: list[str]
    numeric_ids: I64
    sizes: I64
    mtime_ns: I64
    _table: FileTable = field(repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    def known(self, pos: int) -> tuple[FileId, int, int, str, str]:
        """(file id, size, mtime_ns, content hash, kind) of the file at a position (diff.Known's order)."""
        row = self._table.rows[int(self.numeric_ids[pos])]
        return (f"f{row[0]}", row[COL_SIZE], row[COL_MTIME], row[COL_HASH], row[COL_KIND])


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


class FileLookups:
    """The file lookups the reader and the writer share, over their file table (the writer's
    includes its uncommitted changes)."""

    _table: FileTable

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

    def files(self) -> Iterator[FileInfo]:
        """Every indexed file."""
        for fid in list(self._table.rows):
            yield _info(self._table, fid)

    def paths(self) -> list[str]:
        """Every indexed file's path, in table order (no object per file)."""
        return [row[COL_PATH] for row in self._table.rows.values()]
