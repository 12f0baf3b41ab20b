"""Small file-system helpers the stages share."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any


def atomic_write_json(path: Path, data: Any, *, mode: int = 0o644) -> None:
    """Write JSON so that a reader sees the old file or the new one, never half of either, even
    after a crash: a temporary file beside it, fsynced, renamed over it, the folder fsynced."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # the rename is durable once the folder is synced (POSIX)
        dirfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
