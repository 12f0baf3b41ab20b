"""Watch mode's queue: file events, filtered as a scan would filter them, coalesced into batches.

- A deletion or a rename is queued for the worker at once (after a 0.1 s pause in the burst, so
  `rm -r` of a big folder is one update, not thousands). A path moved out of sight is rechecked with
  the next batch instead, so that a rename seen as two halves still keeps its vectors.
- A created or modified path waits until it settles: no event for `settle_s`, and the same size
  and mtime before and after, so a file written in many steps (or a download) is read once, whole.
- Settled paths are taken together once the whole queue went quiet, so that a checkout of 10,000
  files is one batch; a path written forever does not hold the others back for long.
- Names that cannot be indexed are dropped on arrival: hidden and system folders, the user's
  excludes, the index's own folder, and files still being written (*.part, ~$*, ...) until they are
  renamed to their final name. A change to a .gitignore or .ignore rescans its folder.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent

from launcher.core.paths import inside
from launcher.core.records import FileRecord
from launcher.ingest import scan as scan_stage

# Deletions and renames are taken once their events pause this long, and at most FAST_MAX_S
# after the first one.
FAST_QUIET_S = 0.1
FAST_MAX_S = 1.0
# Settled paths are taken once no path changed for settle_s, or once the oldest waited this many
# settle periods (a log appended every second does not hold the other files back forever).
BATCH_MAX_WAIT = 15
# watchdog holds the first half of a rename 0.5 s for its second half, and reports it alone after
# that: a batch waits at least this long after the last event, so both halves land in it.
PAIR_WAIT_S = 0.75

Signature = tuple[int, int]  # (size, mtime_ns)


@dataclass
class _Pending:
    """A created or modified path waiting to settle."""

    since: float  # monotonic time of its last event
    sig: Signature | None  # when last looked at; None: a folder, or gone


def signature(path: str) -> Signature | None:
    """(size, mtime_ns) of a file, None when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


class ChangeQueue:
    """Changes under some roots, from watchdog events (observer threads) to the worker. Thread-safe."""

    def __init__(
        self,
        roots: Sequence[str],
        *,
        settle_s: float,
        index_dir: Path,
        include_hidden: bool = False,
        excludes: Sequence[str] = (),
        per_root: Mapping[str, tuple[bool, Sequence[str]]] | None = None,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.roots = list(roots)
        self.settle_s = settle_s
        self.include_hidden = include_hidden
        self._excluded = scan_stage.exclude_matcher(excludes)
        # Roots scanned with their own options (hidden files, excludes) filter their events by them.
        self._per_root = {
            r: (hidden, scan_stage.exclude_matcher(ex)) for r, (hidden, ex) in (per_root or {}).items()
        }
        self._index_dirs = {os.path.abspath(index_dir), os.path.realpath(index_dir)}
        self._wake = wake
        self._lock = threading.Lock()
        self._dirty: dict[str, _Pending] = {}
        self._removed: set[str] = set()
        self._moves: list[tuple[str, str]] = []
        self._fast_first = 0.0  # monotonic times of the first and last queued deletion or rename
        self._fast_last = 0.0
        self.last_event: float | None = None  # wall time of the last change queued
        self.revision = 0  # bumped by every change queued (for the status file)

    def __len__(self) -> int:
        with self._lock:
            return len(self._dirty) + len(self._removed) + len(self._moves)

    # -- the observers' side -----------------------------------------------------------------------

    def on_event(self, event: FileSystemEvent) -> None:
        """Queue what a watchdog event means for the index."""
        if event.is_synthetic:
            return  # watchdog's guesses for a moved or created folder's content: the folder covers them
        kind = event.event_type
        if kind in ("opened", "closed_no_write") or (kind == "modified" and event.is_directory):
            return  # a folder's own mtime: its entries report themselves
        src = os.fsdecode(event.src_path)
        if kind == "moved":
            dst = os.fsdecode(event.dest_path)
            if not src:  # moved in from a folder not watched
                self._touched(dst, event.is_directory)
            elif not dst:  # moved out, or its other half was missed (see _moved_away)
                self._moved_away(src, event.is_directory)
            else:
                self._moved(src, dst, event.is_directory)
        elif kind == "deleted":
            self._deleted(src, event.is_directory)
        else:
            self._touched(src, event.is_directory)

    def _root_of(self, path: str) -> str | None:
        if any(inside(path, d) for d in self._index_dirs):
            return None  # the index's own commits
        return next((r for r in self.roots if inside(path, r)), None)

    def _visible(self, path: str, root: str, *, is_dir: bool, partial_ok: bool = False) -> bool:
        """Whether a full scan could index this path, by its name alone (cheap, on every event);
        the rescan applies the rest (ignore files, size caps)."""
        rel = path[len(root) + 1 :]
        parts = rel.split(os.sep) if rel else []
        hidden, excluded = self._per_root.get(root, (self.include_hidden, self._excluded))
        for i, part in enumerate(parts):
            if part in scan_stage.SYSTEM_DIRS or (part.startswith(".") and not hidden):
                return False
            sub = "/".join(parts[: i + 1])
            if excluded(part, sub, os.path.join(root, *parts[: i + 1]), is_dir or i < len(parts) - 1):
                return False
        return partial_ok or not parts or not scan_stage.is_partial_name(parts[-1])

    def _touched(self, path: str, is_dir: bool) -> None:
        root = self._root_of(path)
        if root is None:
            return
        if os.path.basename(path) in scan_stage.IGNORE_FILES:
            # New ignore rules change what is indexed in the whole folder.
            path, is_dir = os.path.dirname(path), True
            if not inside(path, root):
                return
        if not self._visible(path, root, is_dir=is_dir):
            return
        sig = None if is_dir else signature(path)
        with self._lock:
            self._dirty[path] = _Pending(time.monotonic(), sig)
            self._changed()

    def _deleted(self, path: str, is_dir: bool) -> None:
        root = self._root_of(path)
        if root is None:
            return
        if os.path.basename(path) in scan_stage.IGNORE_FILES:
            self._touched(path, False)
            return
        if not self._visible(path, root, is_dir=is_dir, partial_ok=True):
            return
        with self._lock:
            self._drop(path, is_dir)
            self._removed.add(path)
            self._fast_changed()
        self._wake()

    def _moved(self, src: str, dst: str, is_dir: bool) -> None:
        sroot, droot = self._root_of(src), self._root_of(dst)
        src_ok = sroot is not None and self._visible(src, sroot, is_dir=is_dir, partial_ok=True)
        dst_ok = droot is not None and self._visible(dst, droot, is_dir=is_dir)
        if not src_ok:
            if dst_ok:
                self._touched(dst, is_dir)  # e.g. a finished download renamed from *.part
            return
        sig = None if is_dir else signature(dst)
        now = time.monotonic()
        with self._lock:
            self._removed.add(src)  # whatever the rename cannot re-path is gone
            moved = self._drop(src, is_dir)
            if dst_ok:
                self._moves.append((src, dst))
                for path in moved:
                    self._dirty[dst + path[len(src) :]] = _Pending(now, None)
                # Confirm the destination once it settles: a stat per file, no reading if unchanged.
                self._dirty[dst] = _Pending(now, sig)
            self._fast_changed()
        self._wake()

    def _moved_away(self, path: str, is_dir: bool) -> None:
        # Not a deletion: the files may reappear under a name we are about to see. `mkdir new &&
        # mv old new/` renames into a folder inotify does not watch yet, so the rename arrives as
        # two halves. Rescanning the old path with the batch that reads the new one lets the diff
        # match them by content and keep their vectors; a move to the trash is a removal then.
        root = self._root_of(path)
        if root is None or not self._visible(path, root, is_dir=is_dir, partial_ok=True):
            return
        with self._lock:
            self._drop(path, is_dir)
            self._dirty[path] = _Pending(time.monotonic(), None)
            self._changed()

    def _changed(self) -> None:
        self.last_event = time.time()
        self.revision += 1

    def _fast_changed(self) -> None:
        now = time.monotonic()
        self._fast_first = self._fast_first or now
        self._fast_last = now
        self._changed()

    def _drop(self, path: str, is_dir: bool) -> list[str]:
        """Forget queued paths at (or, for a folder, below) path; returns them."""
        gone = [path] if path in self._dirty else []
        if is_dir:
            gone += [p for p in self._dirty if p.startswith(path + os.sep)]
        for p in gone:
            del self._dirty[p]
        return gone

    # -- the worker's side -------------------------------------------------------------------------

    def ready(self) -> bool:
        """Something can be taken now (the worker stops embedding for it)."""
        now = time.monotonic()
        with self._lock:
            return self._fast_ready(now) or self._batch_due(now)

    def _fast_ready(self, now: float) -> bool:
        if not (self._removed or self._moves):
            return False
        return now - self._fast_last >= FAST_QUIET_S or now - self._fast_first >= FAST_MAX_S

    def _batch_due(self, now: float) -> bool:
        if not self._dirty:
            return False
        sinces = [e.since for e in self._dirty.values()]
        quiet = max(self.settle_s, PAIR_WAIT_S)
        return now - max(sinces) >= quiet or now - min(sinces) >= BATCH_MAX_WAIT * quiet

    def take_moves_and_removals(self) -> tuple[list[str], list[tuple[str, str]]]:
        """The queued deletions and renames, once their burst is over; ([], []) before."""
        with self._lock:
            if not self._fast_ready(time.monotonic()):
                return [], []
            removed, moves = sorted(self._removed), self._moves
            self._removed, self._moves = set(), []
            self._fast_first = 0.0
            return removed, moves

    def put_back(self, removed: Sequence[str], moves: Sequence[tuple[str, str]]) -> None:
        """Return deletions and renames the worker could not apply (the index was locked)."""
        with self._lock:
            self._removed.update(removed)
            self._moves[:0] = moves

    def take_settled(self) -> list[str]:
        """The changed paths that settled, as one batch (taken off the queue); [] while the queue is busy."""
        now = time.monotonic()
        with self._lock:
            if not self._batch_due(now):
                return []
            quiet = [(p, e) for p, e in self._dirty.items() if now - e.since >= self.settle_s]
        checked = []
        for path, entry in quiet:  # stat outside the lock: events keep arriving meanwhile
            sig = None if entry.sig is None and os.path.isdir(path) else signature(path)
            checked.append((path, entry, sig))
        with self._lock:
            taken = []
            for path, entry, sig in checked:
                if self._dirty.get(path) is not entry:
                    continue  # a newer event replaced it
                if sig == entry.sig:
                    taken.append(path)
                    del self._dirty[path]
                else:
                    # Still being written without events (a network share, mmap): wait again.
                    entry.sig, entry.since = sig, now
            return taken

    def requeue(self, paths: Sequence[str], *, ready: bool = False) -> None:
        """Queue paths again: not read yet (deferred, interrupted), or not applied (ready=True)."""
        now = time.monotonic()
        since = now - self.settle_s if ready else now
        for path in paths:
            root = self._root_of(path)
            is_dir = os.path.isdir(path)
            if root is None or not self._visible(path, root, is_dir=is_dir):
                continue
            sig = None if is_dir else signature(path)
            with self._lock:
                self._dirty.setdefault(path, _Pending(since, sig))

    def too_recent(self, rec: FileRecord) -> bool:
        """Modified less than settle_s ago: maybe still being written, so read it once it settles."""
        return 0 <= time.time() - rec.mtime_ns / 1e9 < self.settle_s
