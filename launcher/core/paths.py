"""Path strings compared as the stages compare them: absolute, no file-system calls."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from itertools import repeat

import numpy as np
import numpy.typing as npt


def folder_prefix(folder: str) -> str:
    """What every path strictly below `folder` starts with (one separator, whatever the folder ends in)."""
    return folder.rstrip(os.sep) + os.sep


def inside(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or below it (plain string comparison on absolute paths)."""
    return path == folder or path.startswith(folder_prefix(folder))


def inside_any(path: str, folders: Iterable[str]) -> bool:
    """Whether `path` is one of `folders` or below one of them."""
    return any(inside(path, f) for f in folders)


def inside_any_each(paths: Sequence[str], folders: Sequence[str]) -> list[bool]:
    """`inside_any` for many paths at once, without a Python call per path in the common case (every
    path below a folder): a rescan asks it of 100k indexed files."""
    prefixes = tuple(folder_prefix(f) for f in folders)
    kept = list(map(str.startswith, paths, repeat(prefixes)))
    if folders and not all(kept):
        exact = set(folders)
        kept = [k or p in exact for k, p in zip(kept, paths, strict=True)]
    return kept


def positions(paths: Sequence[str], among: Sequence[str]) -> npt.NDArray[np.int64]:
    """Where each path sits in `among`, -1 where it is not there: one list equality when the two
    are in the same order (a walk meeting files in the order they were indexed, the common case),
    else a dictionary probe per path, no Python call each."""
    if paths == among:
        return np.arange(len(paths), dtype=np.int64)
    position = dict(zip(among, range(len(among)), strict=True))
    return np.fromiter(map(position.get, paths, repeat(-1)), np.int64, len(paths))


def unique_paths(roots: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Absolute paths, sorted, without those inside another one (they would be walked twice)."""
    absolute = sorted({os.path.abspath(os.path.expanduser(os.fspath(r))) for r in roots})
    kept: list[str] = []
    seen: set[str] = set()
    for root in absolute:
        # Ancestors sort first, so looking them up costs the path's depth, not the list's length
        # (a watcher's batch may hold 10,000 paths).
        parent, inside = root, False
        while not inside and os.path.dirname(parent) != parent:
            parent = os.path.dirname(parent)
            inside = parent in seen
        if not inside:
            kept.append(root)
            seen.add(root)
    return kept
