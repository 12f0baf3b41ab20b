"""Stage 2, diff: compare what the scan found with what the index holds.

unchanged (same size and mtime) -> nothing to do, not even a read;
moved or renamed (a vanished file's content hash reappears elsewhere) -> reuse its vectors;
changed -> re-extract; gone -> remove. Only files whose size equals a vanished file's size are
hashed during the diff, so a rename costs one read and an unchanged tree costs nothing.

A full rescan compares in bulk (`plan_files`: the walk's columns against the index's, one dictionary
probe per file and array comparisons, no object per unchanged file); a watcher's small update
compares records (`plan`). Both find moves the same way.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from launcher.core.paths import positions
from launcher.core.records import FileRecord
from launcher.index.info import Indexed
from launcher.index.manifest import I64
from launcher.ingest.scan import kind_of

FULL_HASH_LIMIT = 64 << 20  # larger files (videos) are hashed by samples
SAMPLE = 1 << 20


def content_hash(path: str | Path, size: int | None = None) -> str:
    """BLAKE2b of the content; for files over 64 MiB, of the size and five 1 MiB samples."""
    p = Path(path)
    if size is None:
        size = p.stat().st_size
    h = hashlib.blake2b(digest_size=16)
    with p.open("rb") as f:
        if size <= FULL_HASH_LIMIT:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(str(size).encode())
            for i in range(5):
                f.seek((size - SAMPLE) * i // 4)
                h.update(f.read(SAMPLE))
    return h.hexdigest()


class Known(NamedTuple):
    """What the index remembers about a file (a tuple: a rescan builds one per indexed file)."""

    file_id: str
    size: int
    mtime_ns: int
    content_hash: str
    kind: str = ""  # "" when unknown: a move is then matched by content alone


@dataclass
class Plan:
    """The work a scan implies."""

    unchanged: int = 0
    new: list[FileRecord] = field(default_factory=list)
    changed: list[tuple[FileRecord, str]] = field(default_factory=list)  # (record, old file_id)
    moved: list[tuple[FileRecord, str, str]] = field(default_factory=list)  # (record, file_id, hash)
    removed: list[str] = field(default_factory=list)  # file ids


def plan(
    records: Iterable[FileRecord],
    known: Mapping[str, tuple[str, int, int, str, str]],
) -> Plan:
    """Sort scanned files into unchanged / new / changed / moved, and find the removed ones.

    `known` holds Known tuples, or plain tuples in Known's order (Store.state_under: no object per
    indexed file).
    """
    result = Plan()
    seen: set[str] = set()
    fresh: list[FileRecord] = []
    for rec in records:
        seen.add(rec.path)
        old = known.get(rec.path)
        if old is None:
            fresh.append(rec)
        elif old[1] == rec.size and old[2] == rec.mtime_ns:  # Known.size, Known.mtime_ns
            result.unchanged += 1
        else:
            result.changed.append((rec, old[0]))
    vanished = [Known(*k) for path, k in known.items() if path not in seen]
    _moves(result, fresh, vanished)
    return result


def same_files(
    paths: Sequence[str],
    sizes: Sequence[int],
    mtimes: Sequence[int],
    known_paths: Sequence[str],
    known_sizes: I64,
    known_mtimes: I64,
) -> bool:
    """Whether a walk found exactly the known files, each with its known size and mtime."""
    if len(paths) != len(known_paths):
        return False
    at = positions(paths, known_paths)
    return bool(_unchanged(at, sizes, mtimes, known_sizes, known_mtimes).all())


def _unchanged(
    at: I64, sizes: Sequence[int], mtimes: Sequence[int], known_sizes: I64, known_mtimes: I64
) -> npt.NDArray[np.bool_]:
    """Which walked files are known (`at`, from paths.positions) with the same size and mtime."""
    same = np.zeros(len(at), dtype=bool)
    found = at >= 0
    old = at[found]
    same[found] = (known_sizes[old] == np.asarray(sizes, dtype=np.int64)[found]) & (
        known_mtimes[old] == np.asarray(mtimes, dtype=np.int64)[found]
    )
    return same


def plan_files(paths: Sequence[str], sizes: Sequence[int], mtimes: Sequence[int], indexed: Indexed) -> Plan:
    """`plan` for a whole walk given as columns (scan.Files runs joined), against the index's columns.

    Unchanged files, nearly all of a rescan, cost a dictionary probe each and a share of three array
    comparisons; a FileRecord is made only for a new or changed file."""
    result = Plan()
    at = positions(paths, indexed.paths)
    same = _unchanged(at, sizes, mtimes, indexed.sizes, indexed.mtime_ns)
    result.unchanged = int(same.sum())
    fresh: list[FileRecord] = []
    for i in np.flatnonzero(~same).tolist():
        rec = FileRecord(paths[i], sizes[i], mtimes[i], kind_of(paths[i]))
        if at[i] < 0:
            fresh.append(rec)
        else:
            result.changed.append((rec, f"f{int(indexed.numeric_ids[at[i]])}"))
    seen = np.zeros(len(indexed), dtype=bool)
    seen[at[at >= 0]] = True
    vanished = [Known(*indexed.known(j)) for j in np.flatnonzero(~seen).tolist()]
    _moves(result, fresh, vanished)
    return result


def _moves(result: Plan, fresh: list[FileRecord], vanished: list[Known]) -> None:
    """Sort the files the index does not know into moved (a vanished file's content reappears) and
    new, and the vanished ones not moved into removed."""
    by_size: dict[int, list[Known]] = defaultdict(list)
    for k in vanished:
        by_size[k.size].append(k)
    reused: set[str] = set()
    for rec in fresh:
        candidates = [k for k in by_size.get(rec.size, ()) if k.file_id not in reused]
        if candidates:
            try:
                digest = content_hash(rec.path, rec.size)
            except OSError:
                digest = ""
            # Same content under a name of another kind (README -> README.md) is read again: its
            # pieces would be made another way.
            match = next(
                (k for k in candidates if digest and k.content_hash == digest and k.kind in ("", rec.kind)),
                None,
            )
            if match is not None:
                reused.add(match.file_id)
                result.moved.append((rec, match.file_id, digest))
                continue
        result.new.append(rec)
    result.removed = [k.file_id for k in vanished if k.file_id not in reused]
