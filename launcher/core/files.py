"""Small file-system helpers the stages share."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any

# The umask the person had before the launcher made its own files private (keep_private): the
# programs it starts for them (opener, browser) get theirs back.
USER_UMASK: int | None = None


def keep_private() -> None:
    """From now on this process creates folders 0700 and files 0600, whatever the umask was."""
    global USER_UMASK
    old = os.umask(0o077)
    if USER_UMASK is None:
        USER_UMASK = old


def make_private(path: Path, *, recursive: bool = False) -> None:
    """Folders 0700, files 0600 (the owner's bits kept), fixing what an older version or a looser
    umask left readable by others; symlinks are not followed, paths of other users not touched."""
    try:
        st = path.lstat()
    except OSError:
        return
    if st.st_uid != os.getuid():
        return
    import stat

    if stat.S_ISDIR(st.st_mode):
        if st.st_mode & 0o077:
            with contextlib.suppress(OSError):
                os.chmod(path, 0o700)
        if recursive:
            with contextlib.suppress(OSError), os.scandir(path) as it:
                for entry in it:
                    make_private(Path(entry.path), recursive=True)
    elif stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
        with contextlib.suppress(OSError):
            os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)


def atomic_write_json(path: Path, data: Any, *, mode: int = 0o600, indent: int = 2) -> None:
    """Write JSON so that a reader sees the old file or the new one, never half of either, even
    after a crash: a temporary file beside it, fsynced, renamed over it, the folder fsynced."""
    # Named per process and thread: two threads of one process may write the same file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=indent, ensure_ascii=True)
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
