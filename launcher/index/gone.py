"""Files search found gone from disk: queued by readers, taken by the next writer."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

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
