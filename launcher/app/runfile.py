"""The run file: how the CLI finds the resident process and proves it is the same user.

`<LAUNCHER_HOME>/run/launcher.json` (mode 0600, in a 0700 folder) holds the pid, the address and a
random token. The process holds an exclusive lock on `run/launcher.lock` for its whole life, so
"is one running?" is answered by the lock, not by guessing from a pid that may have been reused:
a run file whose lock is free belongs to a dead process and is removed by whoever notices.
"""

from __future__ import annotations

import fcntl
import hmac
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from launcher.core import config
from launcher.core.errors import AlreadyRunning, ServerError
from launcher.core.files import atomic_write_json

RUN_FILE = "launcher.json"
LOCK_FILE = "launcher.lock"


@dataclass(frozen=True)
class RunInfo:
    """What a running `launcher launch` publishes about itself."""

    pid: int
    host: str
    port: int
    token: str
    index_dir: str
    model: str  # the model file the process loaded
    started: float

    @property
    def url(self) -> str:
        """The base URL of its HTTP API and window."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def new_token() -> str:
    """A fresh random secret (256 bits)."""
    return secrets.token_urlsafe(32)


def same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented token with the real one."""
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def run_dir() -> Path:
    """The run folder, created private to the user."""
    path = config.run_dir()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_uid != os.getuid():
        raise ServerError(f"{path} belongs to another user: set LAUNCHER_HOME to a folder of your own")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def _open_lock(path: Path) -> IO[bytes]:
    return open(path, "a+b")  # noqa: SIM115 - held open for the life of the process


def _try_lock(handle: IO[bytes]) -> bool:
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _read(path: Path) -> RunInfo | None:
    try:
        if path.stat().st_uid != os.getuid():
            return None
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return RunInfo(**data)
    except (OSError, ValueError, TypeError):
        return None


def read_running() -> RunInfo | None:
    """The running process's run file, or None; a run file left by a dead process is removed."""
    folder = config.run_dir()
    path = folder / RUN_FILE
    if not path.exists():
        return None
    with _open_lock(folder / LOCK_FILE) as probe:
        if _try_lock(probe):
            # Nobody holds the lock, so nobody is running: the file is stale. Removing it while we
            # hold the lock cannot race with a process that is starting (it waits for the lock).
            path.unlink(missing_ok=True)
            return None
    return _read(path)


class Instance:
    """The single resident process of this user: holds the lock, publishes and removes the run file."""

    def __init__(self) -> None:
        self.folder = run_dir()
        self.path = self.folder / RUN_FILE
        self._lock: IO[bytes] | None = None
        self.info: RunInfo | None = None

    def acquire(self) -> None:
        """Become the one running process, or raise AlreadyRunning saying where the other one is."""
        handle = _open_lock(self.folder / LOCK_FILE)
        for _ in range(10):  # a client checking for a stale run file holds the lock for an instant
            if _try_lock(handle):
                break
            time.sleep(0.05)
        else:
            handle.close()
            other = None
            for _ in range(20):  # it may be starting up and not have published its address yet
                other = _read(self.path)
                if other is not None:
                    break
                time.sleep(0.1)
            where = f" (pid {other.pid}) at {other.url}" if other else ""
            raise AlreadyRunning(
                f"launcher is already running{where}: use `launcher toggle` to show its window"
            )
        self._lock = handle
        self.path.unlink(missing_ok=True)  # left by a process that died

    def publish(self, info: RunInfo) -> None:
        """Write the run file atomically, readable by this user only."""
        atomic_write_json(self.path, asdict(info))
        self.info = info

    def release(self) -> None:
        """Remove the run file and let the lock go."""
        if self._lock is None:
            return
        current = _read(self.path)
        if current is not None and current.pid == os.getpid():
            self.path.unlink(missing_ok=True)
        self._lock.close()
        self._lock = None
