"""The one writer: add, move and remove files, attach vectors, commit a new manifest atomically."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from launcher.core.errors import ModelMismatch, StoreLocked
from launcher.core.files import atomic_write_json, make_private
from launcher.core.paths import inside_any, inside_any_each
from launcher.core.records import KINDS, FileRecord, Matrix, Piece, Skip
from launcher.index import keywords
from launcher.index.compaction import Compaction
from launcher.index.info import (
    Failure,
    FileLookups,
    Indexed,
    PieceMeta,
    _num,
)
from launcher.index.manifest import (
    _LISTS_FILE,
    _MANIFEST_TMP,
    _MODALITIES,
    _OWN_FILE,
    DTYPES,
    I64,
    LOCK,
    MANIFEST,
    MAX_FILE_DELTAS,
    SCHEMA,
    TEXT_CAP,
    Dtype,
    FileId,
    Mask,
    PieceId,
    _live_files,
    _names,
    _read_manifest,
)
from launcher.index.roots import ScanOptions, stored_options
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
    encode_vectors,
    failed_of,
    fsync_dir,
    save_bytes,
    save_npy,
)

if TYPE_CHECKING:
    # Only a name for the type checker: Store opens writers, so the writer is handed the reader's
    # class (Writer's `snapshots`) rather than importing it, and the two modules form no cycle.
    from launcher.index.store import Store


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


class Writer(Compaction, FileLookups):
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
        snapshots: type[Store],
        previous: Store | None = None,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"storage dtype must be one of {DTYPES}, not {dtype!r}")
        if dims < 1:
            raise ValueError(f"dims must be positive, not {dims}")
        self.root = root
        self.dims = dims
        self.dtype: str = dtype
        self._snapshots = snapshots  # the reader's class: the writer's state as readers see it
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
            self._open(reset, on_mismatch, previous)
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

    def _open(self, reset: bool, on_mismatch: str, previous: Store | None) -> None:
        if self._snapshots.exists(self.root):
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
            # The file table parts `previous` already read (written once, never changed) are reused.
            base = self._snapshots._from_manifest(self.root, manifest, previous)
            if reset:
                # A fresh, empty index; readers keep seeing the old one until our first commit.
                base = self._snapshots(self.root, self._fresh(manifest), FileTable(), [], [])
        else:
            self._clean_orphans(None)
            base = self._snapshots(self.root, self._fresh(None), FileTable(), [], [])
        self._base = base
        self._table = base._table.copy()
        self._next_file = int(base.manifest["next_file"])
        self._next_piece = int(base.manifest["next_piece"])
        # A new or reset index commits even if empty; so does one that took over a new identity.
        self._dirty = not self._snapshots.exists(self.root) or reset or bool(self.adopted)
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

    def failure(self, path: str) -> Failure | None:
        """The recorded skip for a path."""
        s = self._table.skips.get(path)
        return None if s is None else Failure(path, *s)

    def pending_pieces(self) -> list[PieceId]:
        """Pieces of live files that still need a vector, in insertion order."""
        out = [f"p{int(i)}" for i in self._pend_ids[self._pending_committed()]]
        out += [f"p{p}" for p in self._pending_new()]
        return out

    def pending_count(self) -> int:
        """How many pieces still need a vector (counted, not listed)."""
        return int(self._pending_committed().sum()) + len(self._pending_new())

    def _pending_committed(self) -> Mask:
        """Which of the pieces pending when the writer opened still are."""
        live = np.sort(self._table.numeric_ids())
        return ~self._pend_done & contains_sorted(live, self._pend_files)  # type: ignore[no-any-return]

    def _pending_new(self) -> list[int]:
        """Pieces added by this writer that still need a vector."""
        rows = self._table.rows
        return [
            p
            for p, f in zip(self._new_ids, self._new_files, strict=True)
            if p not in self._new_done and f in rows
        ]

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

    def indexed_under(self, roots: Sequence[str]) -> Indexed:
        """The indexed files at or below any of these folders (or equal to one of these paths), as
        columns: what a rescan's diff needs, without a Python object per file."""
        rows = list(self._table.rows.values())
        paths = list(map(itemgetter(COL_PATH), rows))
        kept = inside_any_each(paths, roots)
        if not all(kept):
            rows = [r for r, k in zip(rows, kept, strict=True) if k]
            paths = list(map(itemgetter(COL_PATH), rows))
        n = len(rows)
        return Indexed(
            paths=paths,
            numeric_ids=np.fromiter(map(itemgetter(0), rows), np.int64, n),
            sizes=np.fromiter(map(itemgetter(COL_SIZE), rows), np.int64, n),
            mtime_ns=np.fromiter(map(itemgetter(COL_MTIME), rows), np.int64, n),
            _table=self._table,
        )

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
        under = self.indexed_under([root])
        for fid in under.numeric_ids.tolist():
            self._remove(fid)
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
        self._base = self._snapshots(
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
