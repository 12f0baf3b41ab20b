"""Watch mode: keep the index in step with its folders, in the background.

A watchdog observer per root feeds the change queue (launcher/watch/changes.py: filtering, settling,
coalescing); one worker thread turns it into index updates:
- deletions and renames are applied at once (a rename re-paths files and keeps their vectors);
- created and modified paths are read once they settled, as ONE batch (a checkout of 10,000 files
  is one job): read first, so names and text are searchable at once, then embedded newest first, a
  few pieces per model call at low priority, giving way to pause, to new events and to queries;
- a reconcile pass (the stat walk and diff of `launcher index`) runs at start, on an interval, after
  the kernel dropped events and after the machine slept, so what the observer missed is repaired.
The writer lock is held only while a batch is applied: `launcher index` meanwhile gets a clear
"being written" error instead of hanging, and a watcher that finds the index locked tries again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from launcher.core.errors import ModelMismatch, StoreError, StoreLocked
from launcher.core.files import atomic_write_json
from launcher.core.paths import inside, unique_paths
from launcher.index.gone import take_gone
from launcher.index.roots import ScanOptions
from launcher.index.store import Stored
from launcher.ingest.pipeline import Indexer, IndexOptions, IndexReport, Progress
from launcher.models.embed import Embedder
from launcher.watch.changes import ChangeQueue

log = logging.getLogger("launcher.watch")

STATUS_FILE = "watcher.json"  # in the index folder, replaced atomically; `launcher status` reads it
PAUSE_FILE = "watch.pause"  # in the index folder: while it exists, the watcher is paused
EMBED_UNIT = 8  # pieces per model call: a query waits at most this long for the shared model
YIELD_S = 0.001  # pause between model calls, so a query blocked on the model's lock gets it
RETRY_S = 2.0  # wait after finding the index locked by another writer
POLL_INTERVAL_S = 5.0  # polling observers walk the whole tree this often
WORKER_NICE = 10  # the embedding thread's nice value (the systemd unit uses the same)
HEALTH_EVERY_S = 5.0  # how often dead observers are looked for
STATUS_EVERY_S = 0.5  # progress rewrites the status file at most this often
SLEEP_GAP_S = 30.0  # wall time ran this much ahead of monotonic time: the machine slept
NETWORK_FS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "davfs", "fuse.sshfs"}
)


@dataclass
class RootStatus:
    """How one root is watched: 'native' (inotify, FSEvents...), 'polling', or 'none', and why."""

    path: str
    observer: str
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"path": self.path, "observer": self.observer, "reason": self.reason}


def _iso(t: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) if t else None


def lower_thread_priority(nice: int = WORKER_NICE) -> None:
    """Lower the calling thread's CPU and disk priority, leaving the rest of the process alone.

    On Linux the nice value belongs to the thread, not the process, and threads inherit it when
    created: llama.cpp's OpenMP helpers are made per calling thread, so the embedding done from this
    thread runs niced while queries from other threads do not. Elsewhere this does nothing (there it
    would nice the whole process, queries included)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError):
        if os.getpriority(os.PRIO_PROCESS, 0) < nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)  # who=0: this thread, on Linux
    with contextlib.suppress(Exception):
        import psutil

        psutil.Process(threading.get_native_id()).ionice(psutil.IOPRIO_CLASS_IDLE)


def lower_process_priority(nice: int = WORKER_NICE) -> None:
    """Nice the whole process (`launcher watch` alone); call it before any thread starts."""
    with contextlib.suppress(OSError, AttributeError):
        current = os.getpriority(os.PRIO_PROCESS, 0)
        if current < nice:
            os.nice(nice - current)
    with contextlib.suppress(Exception):
        import psutil

        if sys.platform.startswith("linux"):
            psutil.Process().ionice(psutil.IOPRIO_CLASS_IDLE)


def _network_fs(path: str) -> str | None:
    """The type of the network filesystem holding path (inotify misses remote changes there)."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            mounts = [line.split()[1:3] for line in f if len(line.split()) > 2]
    except OSError:
        return None
    real = os.path.realpath(path)
    best, fstype = "", ""
    for point, kind in mounts:
        point = point.replace("\\040", " ")
        if inside(real, point) and len(point) > len(best):
            best, fstype = point, kind
    return fstype if fstype in NETWORK_FS else None


def _watched_folders(observer: BaseObserver) -> set[bytes] | None:
    """The folders a native inotify observer really watches; None when that cannot be told."""
    try:
        return {
            path
            for e in observer.emitters
            for path in list(e._inotify._active_callbacks_by_path)  # type: ignore[attr-defined]
        }
    except Exception:  # another platform's observer, or another watchdog version
        return None


def _unwatched_folders(observer: BaseObserver, root: str) -> tuple[int, int] | None:
    """(folders not watched, folders) under root, for an inotify observer; None elsewhere.

    watchdog skips the subfolders it cannot watch without saying so (the inotify watch limit)."""
    watched = _watched_folders(observer)
    if watched is None:
        return None
    folders = [os.fsencode(d) for d, _, _ in os.walk(root)]
    missed = [d for d in folders if d not in watched]
    if missed:
        time.sleep(0.2)  # folders made while we walked get their watch from their own event
        watched = _watched_folders(observer) or set()
        missed = [d for d in missed if d not in watched and os.path.isdir(d)]
    return len(missed), len(folders)


def read_status(index_dir: Path) -> dict[str, Any] | None:
    """What a running watcher last wrote in this index folder; None when no live watcher wrote it."""
    try:
        data = json.loads((Path(index_dir) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pid = data.get("pid") if isinstance(data, dict) else None
    if not isinstance(pid, int) or data.get("state") == "stopped" or not _alive(pid, data.get("pid_started")):
        return None
    return data  # type: ignore[no-any-return]


def _alive(pid: int, started: float | None) -> bool:
    try:
        import psutil

        proc = psutil.Process(pid)
        # A reused pid belongs to a process that started later than the one that wrote the file.
        return started is None or abs(proc.create_time() - float(started)) < 2.0
    except ImportError:  # pragma: no cover - psutil is a dependency
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    except Exception:  # no such process, or it cannot be inspected
        return False


def _process_started() -> float | None:
    try:
        import psutil

        return float(psutil.Process().create_time())
    except Exception:
        return None


class _Handler(FileSystemEventHandler):
    """Hands every watchdog event to the change queue (on the observer's thread)."""

    def __init__(self, queue: ChangeQueue) -> None:
        self.queue = queue

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self.queue.on_event(event)
        except Exception:  # one odd event must not kill the observer thread
            log.exception("cannot handle %s event for %r", event.event_type, event.src_path)


class _OverflowListener(logging.Handler):
    """watchdog only logs when the kernel's event queue overflowed: turn that into a reconcile."""

    def __init__(self, watcher: Watcher) -> None:
        super().__init__(logging.WARNING)
        self.watcher = watcher

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.watcher.request_reconcile("the kernel dropped file events (inotify queue overflow)")


class Watcher:
    """Keeps one index in step with its folders: observers feed a queue, one worker applies it."""

    def __init__(
        self,
        index_dir: Path,
        roots: Sequence[str | Path],
        embedder: Embedder,
        options: IndexOptions,
        *,
        settle_s: float = 2.0,
        reconcile_interval_s: float = 600.0,
        force_polling: bool = False,
        on_progress: Callable[[Progress], None] | None = None,
        poll_interval_s: float = POLL_INTERVAL_S,
        nice: int = WORKER_NICE,
        embed_unit: int = EMBED_UNIT,
        root_options: Mapping[str, ScanOptions] | None = None,
    ) -> None:
        self.index_dir = Path(index_dir).expanduser()
        self.roots = unique_paths([str(Path(r).expanduser().resolve()) for r in roots])
        if not self.roots:
            raise ValueError("no folders to watch")
        # Each root is scanned with the options given for it, else those the index remembers.
        stored = Stored.read(self.index_dir)  # the manifest alone: the file table is read by the writer
        remembered = stored.root_options() if stored is not None else {}
        self.root_options = {**remembered, **(root_options or {})}
        self.options = options
        self.settle_s = settle_s
        self.reconcile_interval_s = reconcile_interval_s
        self.force_polling = force_polling
        self.poll_interval_s = poll_interval_s
        self.nice = nice
        self.embed_unit = embed_unit
        self._on_progress_cb = on_progress
        self._embed = options.embed
        # Reading and embedding are separate steps here, so that embedding can give way.
        self._indexer = Indexer(
            self.index_dir, embedder, replace(options, embed=False), root_options=root_options
        )
        # A watched folder inside a root filters its events with that root's options.
        filters = {r: self._indexer.options_for(r, self.root_options) for r in self.roots}
        self._tick = max(0.05, min(0.25, settle_s / 4))

        self._lock = threading.Lock()  # guards the status fields below
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._idle_fg = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._observers: dict[str, BaseObserver] = {}
        self._root_status = {r: RootStatus(r, "none", "not started") for r in self.roots}
        self._overflow = _OverflowListener(self)
        self._queue = ChangeQueue(
            self.roots,
            settle_s=settle_s,
            index_dir=self.index_dir,
            include_hidden=options.include_hidden,
            excludes=options.excludes,
            per_root={r: (o.include_hidden, o.excludes) for r, o in filters.items()},
            wake=self._wake.set,
        )
        self._paused = False
        self._foreground = 0
        self._busy = False
        self._reconcile_due = True
        self._reconcile_why = "start"
        self._reconciled_once = False
        self._next_reconcile = 0.0
        self._retry_at = 0.0
        self._next_health = 0.0
        self._clocks = (time.monotonic(), time.time())
        self._embed_needed = True

        self._state = "starting"
        self._message: str | None = None
        self.error: str | None = None  # set when the watcher gave up writing (see status())
        self._progress: Progress | None = None
        self._pending_pieces: int | None = None
        self._last_reconcile: float | None = None
        self._batches = 0
        self._reconciles = 0
        self._totals = {"new": 0, "changed": 0, "moved": 0, "removed": 0, "pieces_embedded": 0, "failed": 0}
        self._started = time.time()
        self._pid_started = _process_started()
        self._status_written = 0.0
        self._status_revision = 0  # the queue's revision the status file shows

    # -- the public surface ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker, which starts the observers and then reconciles; returns at once."""
        if self._thread is not None:
            raise RuntimeError("the watcher is already started")
        self.index_dir.mkdir(parents=True, exist_ok=True)
        logging.getLogger("watchdog.observers.inotify").addHandler(self._overflow)
        self._thread = threading.Thread(target=self._work, name="launcher-watch", daemon=True)
        self._thread.start()
        self._write_status(force=True)

    def stop(self, timeout: float = 10) -> None:
        """Stop observing, finish the current unit of work, commit and release the index."""
        self._stopping.set()
        self._indexer.stop()
        self._wake.set()
        with self._lock:
            self._idle_fg.notify_all()
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(max(0.1, deadline - time.monotonic()))
        # The worker starts and replaces observers, so they are stopped after it.
        for obs in list(self._observers.values()):
            obs.stop()
        for obs in list(self._observers.values()):
            obs.join(max(0.1, deadline - time.monotonic()))
        self._observers.clear()
        logging.getLogger("watchdog.observers.inotify").removeHandler(self._overflow)
        self._set_state("stopped")

    def pause(self) -> None:
        """Stop reading and embedding (at the next unit); renames and deletions still apply."""
        with self._lock:
            self._paused = True
        self._wake.set()
        self._write_status(force=True)

    def resume(self) -> None:
        """Carry on after pause()."""
        with self._lock:
            self._paused = False
        self._wake.set()
        self._write_status(force=True)

    @property
    def paused(self) -> bool:
        """Paused by pause() or by the pause file in the index folder."""
        return self._paused or (self.index_dir / PAUSE_FILE).exists()

    @contextlib.contextmanager
    def foreground(self) -> Iterator[None]:
        """Hold while answering a query: the watcher waits between model calls until it is done."""
        with self._lock:
            self._foreground += 1
        try:
            yield
        finally:
            with self._lock:
                self._foreground -= 1
                self._idle_fg.notify_all()

    def request_reconcile(self, why: str = "requested") -> None:
        """Walk the roots again soon (events may have been lost)."""
        with self._lock:
            self._reconcile_due = True
            self._reconcile_why = why
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """What the watcher is doing: the same content as the status file."""
        with self._lock:
            p = self._progress
            return {
                "pid": os.getpid(),
                "pid_started": self._pid_started,
                "state": "paused" if self._state == "watching" and self.paused else self._state,
                "message": self._message,
                "paused": self.paused,
                "roots": [self._root_status[r].to_dict() for r in self.roots],
                "queue": len(self._queue),
                "pending_pieces": self._pending_pieces,
                "progress": None
                if p is None
                else {"phase": p.phase, "done": p.done, "total": p.total, "eta_s": p.eta_s, "path": p.path},
                "last_event": _iso(self._queue.last_event),
                "last_reconcile": _iso(self._last_reconcile),
                "batches": self._batches,
                "reconciles": self._reconciles,
                "totals": dict(self._totals),
                "settle_s": self.settle_s,
                "reconcile_interval_s": self.reconcile_interval_s,
                "started": _iso(self._started),
                "updated": _iso(time.time()),
            }

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued, running or left to embed (for tests); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._idle():
                return True
            time.sleep(0.05)
        return self._idle()

    def _idle(self) -> bool:
        with self._lock:
            return (
                self._reconciled_once
                and not self._reconcile_due
                and not len(self._queue)
                and not self._busy
                and not (self._embed and self._embed_needed)
            )

    # -- observers ---------------------------------------------------------------------------------

    def _watch(self, root: str) -> None:
        """Observe one root: natively where possible, else by polling, saying why."""
        if not os.path.isdir(root):
            self._root_status[root] = RootStatus(
                root, "none", "no such folder; looked for again at each reconcile"
            )
            return
        reason = "forced (--poll)" if self.force_polling else None
        fstype = None if reason else _network_fs(root)
        if fstype:
            reason = f"network filesystem ({fstype}): changes made elsewhere send no events"
        if reason is None:
            try:
                obs = self._native_observer(root)
            except OSError as exc:
                reason = _why_native_failed(exc)
            else:
                missed = _unwatched_folders(obs, root)
                if missed is not None and missed[0]:
                    obs.stop()
                    reason = f"inotify watch limit reached ({missed[0]} of {missed[1]} folders not watched)"
                else:
                    self._observers[root] = obs
                    self._root_status[root] = RootStatus(root, "native")
                    return
        try:
            obs = PollingObserver(timeout=self.poll_interval_s)
            obs.start()
            obs.schedule(_Handler(self._queue), root, recursive=True)
        except OSError as exc:
            self._root_status[root] = RootStatus(root, "none", f"cannot watch: {exc.strerror or exc}".lower())
            return
        log.warning("watching %s by polling every %gs: %s", root, self.poll_interval_s, reason)
        self._observers[root] = obs
        self._root_status[root] = RootStatus(root, "polling", reason)

    def _native_observer(self, root: str) -> BaseObserver:
        # Started before scheduling, so that a failure to watch (the inotify limit) is raised here.
        obs: BaseObserver
        if sys.platform.startswith("linux"):
            from watchdog.observers.inotify import InotifyObserver

            # Full events: a rename whose other half is not seen is reported as a move, not a delete.
            obs = InotifyObserver(generate_full_events=True)
        else:
            obs = Observer()
        obs.start()
        try:
            obs.schedule(_Handler(self._queue), root, recursive=True)
        except BaseException:
            obs.stop()
            raise
        return obs

    def _check_observers(self) -> None:
        """Replace observers that died (the root was removed or remounted), watch roots that returned."""
        for root in self.roots:
            obs = self._observers.get(root)
            if obs is not None and obs.is_alive() and all(e.is_alive() for e in obs.emitters):
                continue
            if obs is not None:
                obs.stop()
                del self._observers[root]
            if not os.path.isdir(root) or self._stopping.is_set():
                if obs is not None:
                    self._root_status[root] = RootStatus(root, "none", "the folder is gone")
                continue
            self._watch(root)
            if root in self._observers:  # watched again: what changed meanwhile is unknown
                self.request_reconcile(f"watching {root} again")

    # -- the worker --------------------------------------------------------------------------------

    def _work(self) -> None:
        # Threads inherit the nice value: the observers and the extraction look-ahead started from
        # here run at low priority too.
        lower_thread_priority(self.nice)
        for root in self.roots:
            self._watch(root)
        while not self._stopping.is_set():
            try:
                self._step()
            except StoreLocked as exc:
                self._retry_at = time.monotonic() + RETRY_S
                self._set_state("waiting", f"{exc}; trying again in {RETRY_S:g}s")
            except ModelMismatch as exc:
                # Someone re-indexed with another model: writing ours would throw their work away.
                self.error = f"{exc}; restart the watcher to follow the new model"
                self._set_state("error", self.error)
                log.error("%s", self.error)
                return
            except (StoreError, OSError) as exc:
                if self._stopping.is_set():
                    break  # cut short by stop(): what was committed stays, the rest is pending
                self._retry_at = time.monotonic() + RETRY_S
                self._set_state("error", str(exc).lower())
                log.error("watcher: %s", exc)
            except Exception as exc:  # a bug must not end watching silently
                if self._stopping.is_set():
                    break  # stop() closed the model under the step: not a failure to report
                log.exception("watcher step failed")
                self._retry_at = time.monotonic() + RETRY_S
                self._set_state("error", f"{type(exc).__name__}: {exc}")
            finally:
                with self._lock:
                    self._busy = False
                self._after_step()
            self._wake.wait(self._tick)
            self._wake.clear()

    def _step(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._busy = True
        self._notice_sleep(now)
        if now >= self._next_health:
            self._next_health = now + HEALTH_EVERY_S
            self._check_observers()
        if now < self._retry_at:
            return
        # Renames and deletions first: cheap, and search should stop showing what is gone.
        self._apply_moves_and_removals()
        if self.paused:
            self._set_state("paused")
            return
        with self._lock:
            due = self._reconcile_due or now >= self._next_reconcile
        if due:
            self._reconcile()
        ready = self._queue.take_settled()
        if ready:
            self._apply_batch(ready)
        if self._embed and self._embed_needed and not self.paused and not self._stopping.is_set():
            self._embed_slice()
        self._set_state("paused" if self.paused else "watching")

    def _after_step(self) -> None:
        if self._queue.revision != self._status_revision:
            self._write_status()  # throttled: a later tick writes what this one skipped

    def _notice_sleep(self, now: float) -> None:
        mono, wall = self._clocks
        self._clocks = (now, time.time())
        if (self._clocks[1] - wall) - (now - mono) > SLEEP_GAP_S:
            self.request_reconcile("the machine resumed from sleep")

    def _reconcile(self) -> None:
        with self._lock:
            self._reconcile_due = False
            why = self._reconcile_why
            self._reconcile_why = "interval"
        self._check_observers()
        roots = [r for r in self.roots if os.path.isdir(r)]  # an unmounted drive keeps its entries
        if not roots:
            self._next_reconcile = time.monotonic() + self.reconcile_interval_s
            self._set_state("watching", "no watched folder exists")
            with self._lock:
                self._reconciled_once = True
            return
        self._set_state("reconciling", why)
        try:
            if not self._reconciled_once and len(roots) == len(self.roots):
                # At start, exactly `launcher index`: it records the roots, and another model means
                # a fresh index.
                report = self._indexer.run(
                    roots, self._progress_cb, checkpoint=self._checkpoint, defer=self._queue.too_recent
                )
            else:
                # The same walk and diff, root by root, leaving the recorded roots (and the entries of a
                # root that is not mounted now) alone, and never resetting the index.
                report = self._indexer.update(
                    changed=roots,
                    roots=self.roots,
                    progress=self._progress_cb,
                    checkpoint=self._checkpoint,
                    defer=self._queue.too_recent,
                )
        except BaseException:
            with self._lock:
                self._reconcile_due = True
            raise
        self._account(report)
        self._queue.requeue(report.deferred)
        with self._lock:
            self._embed_needed = True
            self._reconciled_once = True
            if report.interrupted:
                self._reconcile_due = True
            else:
                self._reconciles += 1
                self._last_reconcile = time.time()
                self._next_reconcile = time.monotonic() + self.reconcile_interval_s
        log.info("reconciled (%s): %s", why, _summary(report))

    def _apply_batch(self, paths: list[str]) -> None:
        self._set_state("reading", f"{len(paths)} changed paths")
        try:
            report = self._indexer.update(
                changed=paths,
                roots=self.roots,
                progress=self._progress_cb,
                checkpoint=self._checkpoint,
                defer=self._queue.too_recent,
            )
        except BaseException:
            self._queue.requeue(paths, ready=True)
            raise
        with self._lock:
            self._batches += 1
            self._embed_needed = True
        self._account(report)
        self._queue.requeue(report.deferred)
        log.info("batch of %d paths: %s", len(paths), _summary(report))

    def _apply_moves_and_removals(self) -> None:
        removed, moves = self._queue.take_moves_and_removals()
        gone = take_gone(self.index_dir)  # files search found missing: events for them were lost
        removed = [*removed, *gone]
        if not (removed or moves):
            return
        try:
            report = self._indexer.update(removed=removed, moves=moves, roots=self.roots)
        except BaseException:
            self._queue.put_back(removed, moves)
            raise
        self._account(report)
        if report.moved or report.removed:
            log.info("%d moved, %d removed", report.moved, report.removed)

    def _embed_slice(self) -> None:
        self._set_state("embedding")
        report = self._indexer.embed_pending(
            self._progress_cb, checkpoint=self._checkpoint, unit=self.embed_unit
        )
        self._account(report)
        if not report.interrupted:
            with self._lock:
                self._embed_needed = False
                self._progress = None

    def _checkpoint(self, phase: str) -> bool:
        """Between files and model calls: give way to queries; True stops the pass here."""
        with self._lock:
            while self._foreground and not self._stopping.is_set():
                self._idle_fg.wait(0.1)
        if self._stopping.is_set() or self.paused:
            return True
        if phase != "embed":
            return False
        time.sleep(YIELD_S)  # a query blocked on the shared model's lock takes it now
        with self._lock:
            due = self._reconcile_due or time.monotonic() >= self._next_reconcile
        return due or self._queue.ready()

    def _account(self, report: IndexReport) -> None:
        with self._lock:
            for key in ("new", "changed", "moved", "removed", "pieces_embedded"):
                self._totals[key] += getattr(report, key)
            self._totals["failed"] += len(report.failed)
            self._pending_pieces = report.pieces_pending
        self._write_status(force=True)

    # -- status ------------------------------------------------------------------------------------

    def _progress_cb(self, ev: Progress) -> None:
        with self._lock:
            self._progress = ev
        self._write_status()
        if self._on_progress_cb is not None:
            try:
                self._on_progress_cb(ev)
            except Exception:  # the window's callback must not stop indexing
                log.exception("progress callback failed")

    def _set_state(self, state: str, message: str | None = None) -> None:
        with self._lock:
            if self._state == "stopped":
                return  # a worker that outlived stop()'s timeout does not say otherwise
            changed = (state, message) != (self._state, self._message)
            self._state, self._message = state, message
        if changed:
            self._write_status(force=True)

    def _write_status(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._status_written < STATUS_EVERY_S:
            return
        self._status_written = now
        self._status_revision = self._queue.revision
        path = self.index_dir / STATUS_FILE
        try:
            atomic_write_json(path, self.status(), indent=1)
        except OSError as exc:  # a full disk must not stop the watcher; status is informational
            log.debug("cannot write %s: %s", path, exc)


def _why_native_failed(exc: OSError) -> str:
    import errno

    if exc.errno == errno.ENOSPC:
        return "inotify watch limit reached (raise fs.inotify.max_user_watches)"
    if exc.errno == errno.EMFILE:
        return "inotify instance limit reached (raise fs.inotify.max_user_instances)"
    return f"native watching failed: {exc.strerror or exc}".lower()


def _summary(r: IndexReport) -> str:
    return (
        f"{r.new} new, {r.changed} changed, {r.moved} moved, {r.removed} removed, "
        f"{len(r.failed)} failed, {r.pieces_embedded} pieces embedded, {r.pieces_pending} pending"
    )
