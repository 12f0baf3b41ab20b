"""A rescan's shortcut: what the file table says about each file's place on disk, at one commit.

`launcher index` over an unchanged tree must compare every file with the index. The file table is
JSON (16 MB for 100k files, ~0.1 s to read); these columns (paths, sizes, mtimes, the recorded
skips) load in a few ms. A job writes them after it commits; the next job uses them only while
the manifest is still at that commit (same generation and commit time): any other writer's commit
makes them stale, and the job reads the table as before. A cache: a missing, stale or unreadable
file only means the table is read.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from launcher.core.paths import inside_any_each, positions
from launcher.index.manifest import I64
from launcher.index.segments import COL_MTIME, COL_PATH, COL_SIZE

if TYPE_CHECKING:
    from launcher.index.store import Store

STATE = "scan-state.npz"
_VERSION = 1


@dataclass(frozen=True)
class ScanState:
    """The file table's scan columns at one commit, and what a job would still have to do there."""

    generation: int
    committed_at: float
    paths: list[str]
    sizes: I64
    mtimes: I64
    skips: dict[str, str]  # recorded scan skips: path -> reason
    pending: int  # pieces still waiting for a vector
    untaken: int  # pictures whose taken time was never looked for

    def under(self, folders: list[str]) -> tuple[list[str], I64, I64]:
        """The columns of the files at or below the folders (or equal to one of them)."""
        kept = inside_any_each(self.paths, folders)
        if all(kept):
            return self.paths, self.sizes, self.mtimes
        idx = np.flatnonzero(kept)
        return [self.paths[i] for i in idx.tolist()], self.sizes[idx], self.mtimes[idx]


def write(
    index_dir: str | os.PathLike[str],
    store: Store,
    pending: int,
    untaken: int,
    walk_order: Sequence[str] = (),
) -> None:
    """Record a committed snapshot's scan columns, the files a walk met first in the order it met
    them (so that the next walk's comparison is one list equality, not a dictionary probe a file).
    Best effort: a failure to write leaves no file, and the next job reads the table."""
    root = Path(index_dir)
    manifest, table = store.manifest, store._table
    rows = list(table.rows.values())
    n = len(rows)
    met = positions(walk_order, list(map(itemgetter(COL_PATH), rows)))
    met = met[met >= 0]
    order = np.concatenate([met, np.setdiff1d(np.arange(n, dtype=np.int64), met)]).tolist()
    rows = [rows[i] for i in order]
    meta = {
        "version": _VERSION,
        "generation": int(manifest["generation"]),
        "committed_at": float(manifest.get("committed_at", 0.0)),
        "skips": {p: s[0] for p, s in table.skips.items()},
        "pending": int(pending),
        "untaken": int(untaken),
    }
    paths = "\0".join(map(itemgetter(COL_PATH), rows)).encode("utf-8", "surrogatepass")
    tmp = root / f".{STATE}.{os.getpid()}.tmp"
    for left in root.glob(f".{STATE}.*.tmp"):  # a writer killed mid-write left it
        if left != tmp:
            left.unlink(missing_ok=True)
    try:
        # Private, as everything in the index folder: it names every indexed file.
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            np.savez(
                f,
                meta=np.frombuffer(json.dumps(meta, ensure_ascii=True).encode(), dtype=np.uint8),
                paths=np.frombuffer(paths, dtype=np.uint8),
                count=np.array([n], dtype=np.int64),
                sizes=np.fromiter(map(itemgetter(COL_SIZE), rows), np.int64, n),
                mtimes=np.fromiter(map(itemgetter(COL_MTIME), rows), np.int64, n),
            )
        os.replace(tmp, root / STATE)
    except OSError:
        tmp.unlink(missing_ok=True)


def read(index_dir: str | os.PathLike[str], manifest: dict[str, Any]) -> ScanState | None:
    """The recorded columns if they are those of `manifest`'s commit, else None."""
    try:
        with np.load(Path(index_dir) / STATE, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes())
            if (
                meta.get("version") != _VERSION
                or meta.get("generation") != int(manifest["generation"])
                or meta.get("committed_at") != float(manifest.get("committed_at", 0.0))
            ):
                return None
            n = int(z["count"][0])
            blob = z["paths"].tobytes().decode("utf-8", "surrogatepass")
            paths = blob.split("\0") if n else []
            sizes, mtimes = z["sizes"], z["mtimes"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # missing, torn or from another version: read the table instead
    if len(paths) != n or len(sizes) != n or len(mtimes) != n:
        return None
    return ScanState(
        generation=meta["generation"],
        committed_at=meta["committed_at"],
        paths=paths,
        sizes=sizes,
        mtimes=mtimes,
        skips=dict(meta["skips"]),
        pending=int(meta["pending"]),
        untaken=int(meta["untaken"]),
    )
