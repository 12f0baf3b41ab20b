"""The resident process (`launcher launch`): model and index loaded once, the search window and a
small JSON API on loopback, the global hotkey, and the background watcher.

Security model:
- one process per user: an exclusive lock and a 0600 run file with a random token (runfile.py);
- bound to 127.0.0.1 unless the user asks for another host (with a warning);
- every request needs the token: `Authorization: Bearer TOKEN` from the CLI, or an HttpOnly,
  SameSite=Strict cookie that the window receives from a one-time URL (`/auth?code=...`) this
  process opens itself; tokens are compared with hmac.compare_digest;
- no secret on a command line (any user reads those in /proc): the browser is given a private
  0600 page in the run folder that forwards to the one-time URL, as notebook servers do;
- every response forbids framing (CSP frame-ancestors 'none', X-Frame-Options DENY), and every API
  field is type-checked: a malformed one is a 400 naming it, never a 500;
- requests naming another host (DNS rebinding) or coming from another origin (another local
  page posting to us) are refused before the token is even looked at;
- the window opens, reveals and copies only files that are in the index.

Window tracking: each open window keeps an event stream (`/api/events`). A hotkey press or
`launcher toggle` asks the open windows to focus themselves (and raises them with xdotool/wmctrl
on X11); with no window open, it opens one.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from fastapi import Request

from launcher import config, desktop
from launcher.errors import InputError, LauncherError, NotIndexed, ServerError, StoreError
from launcher.reranking import DEFAULT_RERANK_TOP, RerankedHits, ResidentReranker
from launcher.runfile import Instance, RunInfo, new_token, same_secret
from launcher.searcher import Query, Searcher, hit_to_json, write_model_hint
from launcher.store import FileInfo, Store

log = logging.getLogger("launcher.serve")

COOKIE = "launcher_token"
CODE_TTL_S = 120.0  # a one-time window URL is good for this long
OPENING_GRACE_S = 8.0  # a window being opened counts as open this long (browser start-up)
THUMB_PX = 160
PING_S = 15.0
LOOPBACK = ("127.0.0.1", "::1", "localhost")
# At shutdown, how long queries still running get to finish before the model is freed. Past it the
# engine itself waits for the call inside llama.cpp: the model is never freed under a running query.
CALLS_GRACE_S = 30.0


def _err(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


# --- window tracking ---------------------------------------------------------------------------


class WindowTracker:
    """The open search windows (one event stream each) and the one-time codes that open new ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._streams: dict[int, asyncio.Queue[str | None]] = {}
        self._next = 0
        self._codes: dict[str, float] = {}  # code -> expiry (monotonic)
        self._pages: dict[str, Path] = {}  # code -> the login page that carries it
        self._opening_until = 0.0

    @property
    def count(self) -> int:
        """How many windows are connected now."""
        with self._lock:
            return len(self._streams)

    def connect(self) -> tuple[int, asyncio.Queue[str | None]]:
        """A window opened its event stream (called on the event loop)."""
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._next += 1
            self._streams[self._next] = queue
            self._opening_until = 0.0
            return self._next, queue

    def disconnect(self, wid: int) -> None:
        """A window closed (or lost) its event stream."""
        with self._lock:
            self._streams.pop(wid, None)

    def send(self, event: str | None) -> int:
        """Push an event to every open window from any thread; how many got it."""
        with self._lock:
            loop, queues = self._loop, list(self._streams.values())
        if loop is None or loop.is_closed():
            return 0
        for q in queues:
            loop.call_soon_threadsafe(q.put_nowait, event)
        return len(queues)

    def mint_code(self) -> str:
        """A one-time code for the URL that logs a new window in."""
        code = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            self._codes = {c: t for c, t in self._codes.items() if t > now}
            self._codes[code] = now + CODE_TTL_S
            self._opening_until = now + OPENING_GRACE_S
        return code

    def attach_page(self, code: str, page: Path) -> None:
        """The login page that carries this code: deleted when the code is used."""
        with self._lock:
            self._pages[code] = page

    def redeem(self, code: str | None) -> bool:
        """True once for a valid, unexpired code; its login page is deleted."""
        if not code:
            return False
        now = time.monotonic()
        with self._lock:
            for known, expiry in list(self._codes.items()):
                if same_secret(code, known):
                    del self._codes[known]
                    self._opening_until = 0.0  # the window is here; its event stream follows
                    page = self._pages.pop(known, None)
                    if page is not None:
                        page.unlink(missing_ok=True)
                    return expiry > now
        return False

    def opening(self) -> bool:
        """A window was just asked for and has not connected yet."""
        with self._lock:
            return time.monotonic() < self._opening_until


LOGIN_PREFIX = "login-"


def write_login_page(url: str) -> Path:
    """A private (0600) page that forwards the browser to `url`; pages older than a code's life
    are removed first (a window that never came)."""
    import html

    folder = config.run_dir()
    cutoff = time.time() - CODE_TTL_S
    for old in folder.glob(f"{LOGIN_PREFIX}*.html"):
        with contextlib.suppress(OSError):
            if old.stat().st_mtime < cutoff:
                old.unlink()
    # A name of its own: the browser's command line shows it, so it must not be the code.
    page = folder / f"{LOGIN_PREFIX}{secrets.token_hex(8)}.html"
    target = html.escape(url, quote=True)
    body = (
        '<!doctype html><html><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="0;url={target}">'
        '<meta name="referrer" content="no-referrer">'
        f'<title>Launcher search</title></head><body><a href="{target}">Open the launcher</a></body></html>'
    )
    fd = os.open(page, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(body)
    return page


# --- the service -------------------------------------------------------------------------------


@dataclass
class LaunchOptions:
    """What `launcher launch` was asked for (already resolved from flags, env and config)."""

    index_dir: Path
    model: str | None = None
    mmproj: str | None = None
    engine_options: Any = None
    host: str = "127.0.0.1"
    port: int = 0
    hotkey: str | None = "ctrl+alt+space"  # None: no global hotkey
    watch: Sequence[Path] = ()
    open_browser: bool = True
    watch_options: Any = None  # IndexOptions for the watcher; None: defaults matching the index
    scan_flags: Any = None  # roots.ScanFlags the command line gave; None: every root keeps its own
    rerank: bool = False  # the window's switch starts here; an API request without "rerank" gets it
    rerank_top: int = DEFAULT_RERANK_TOP
    reranker: str | None = None  # the --reranker flag; None: the `reranker` setting, read at each use


@dataclass
class HotkeyState:
    """The global hotkey as the status reports it."""

    combo: str | None
    active: bool = False
    error: str | None = None
    presses: int = 0


@dataclass
class Counters:
    """What the process has done since it started."""

    searches: int = 0
    toggles: int = 0
    windows_opened: int = 0
    last_progress: dict[str, Any] = field(default_factory=dict)


class LauncherService:
    """Holds the model, the index, the watcher and the hotkey; every front end calls its methods."""

    def __init__(self, options: LaunchOptions):
        self.options = options
        self.index_dir = Path(options.index_dir)
        self.token = new_token()
        self.windows = WindowTracker()
        self.counters = Counters()
        self.hotkey = HotkeyState(options.hotkey)
        self.started = time.time()
        self.instance = Instance()
        self.searcher: Searcher | None = None
        self.embedder: Any = None
        self.model_file = ""
        self._own_model_loads = 0
        self._searcher_lock = threading.Lock()
        self._closing = False
        self._calls = 0  # queries under way (they use the model); close() waits for them
        self._calls_done = threading.Condition()
        # Loaded at the first reranked search, not before: most searches never need it.
        self.reranker = ResidentReranker(
            lambda: config.resolve("reranker", options.reranker), options.engine_options
        )
        self.watcher: Any = None
        self._hotkey_listener: Any = None
        self.sock: socket.socket | None = None
        self.port = 0
        self._server: Any = None

    # lifecycle

    def start(self) -> None:
        """Become the user's one process, load model and index, bind the port, publish the run file."""
        self.instance.acquire()
        try:
            self._load()
            self.sock = self._bind()
            self.port = self.sock.getsockname()[1]
            self.instance.publish(
                RunInfo(
                    pid=os.getpid(),
                    host=self.options.host,
                    port=self.port,
                    token=self.token,
                    index_dir=str(self.index_dir),
                    model=self.model_file,
                    started=self.started,
                )
            )
            self._start_watcher()
            self._start_hotkey()
        except BaseException:
            self.close()
            raise

    def _load(self) -> None:
        from launcher.engine import load_embedder
        from launcher.models import resolve_model

        o = self.options
        if o.watch:
            # The watcher embeds in the background through the same llama.cpp threads as the queries;
            # spinning OpenMP threads would hold both cores while they wait at barriers behind the
            # niced worker (see `launcher watch`). Read when llama.cpp loads, just below; queries
            # pay nothing measurable for it (LAUNCHER_README, Search).
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if Store.exists(self.index_dir):
            self.searcher = Searcher(
                self.index_dir, model=o.model, mmproj=o.mmproj, engine_options=o.engine_options
            )
            self.embedder = self.searcher.embedder  # loaded now, so the first search is fast
            path = getattr(self.embedder, "model_path", None) or self._hint_model()
            self.model_file = str(Path(path).resolve()) if path else ""
            return
        if not o.watch:
            raise StoreError(
                f"no index at {self.index_dir}: run `launcher index PATH` first, or pass --watch PATH"
            )
        resolved = resolve_model(o.model, o.mmproj)
        self.embedder = load_embedder(resolved.path, resolved.mmproj, o.engine_options)
        self._own_model_loads += 1
        self.model_file = str(Path(resolved.path).resolve())
        self.index_dir.mkdir(parents=True, exist_ok=True)
        write_model_hint(self.index_dir, resolved)

    def _hint_model(self) -> str:
        from launcher.searcher import read_model_hint

        return str((read_model_hint(self.index_dir) or {}).get("model") or "")

    def _bind(self) -> socket.socket:
        host, port = self.options.host, self.options.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        if os.name == "posix":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            if port:
                raise ServerError(
                    f"cannot listen on {host}:{port} ({exc.strerror}): pick another --port"
                ) from None
            raise ServerError(f"cannot listen on {host} ({exc.strerror}): check --host") from None
        sock.listen(64)
        sock.set_inheritable(False)
        return sock

    def _start_watcher(self) -> None:
        if not self.options.watch:
            return
        from launcher.roots import ScanFlags, chosen_options
        from launcher.watch import Watcher  # the watcher is optional: imported only for --watch

        options = self.options.watch_options or self._watch_options()
        remembered = Store.open(self.index_dir).root_options() if Store.exists(self.index_dir) else {}
        folders = [str(Path(p).resolve()) for p in self.options.watch]
        self.watcher = Watcher(
            self.index_dir,
            [Path(p) for p in self.options.watch],
            self.embedder,
            options,
            on_progress=self._on_progress,
            root_options=chosen_options(remembered, folders, self.options.scan_flags or ScanFlags()),
        )
        self.watcher.start()

    def _watch_options(self) -> Any:
        from launcher.indexer import IndexOptions, document_instruction, kept_chunk_tokens

        storage = config.resolve("storage")
        dims = config.resolve("dims")
        identity = None
        if Store.exists(self.index_dir):  # keep the index's own shape: a watcher never resets it
            store = Store.open(self.index_dir)
            storage = store.dtype
            dims = store.dims if store.dims != getattr(self.embedder, "dims", store.dims) else None
            identity = store.identity
        return IndexOptions(
            dims=dims,
            storage=storage,
            instruction=document_instruction(identity),
            chunk_tokens=config.resolve("chunk_tokens") or kept_chunk_tokens(identity),
        )

    def _on_progress(self, ev: Any) -> None:
        self.counters.last_progress = {
            "phase": getattr(ev, "phase", None),
            "done": getattr(ev, "done", None),
            "total": getattr(ev, "total", None),
            "eta_s": getattr(ev, "eta_s", None),
            "path": getattr(ev, "path", None),
            "at": time.time(),
        }

    def _start_hotkey(self) -> None:
        if not self.options.hotkey:
            return
        from launcher.hotkey import HotkeyListener

        try:
            listener = HotkeyListener(self.options.hotkey, self._on_hotkey)
            listener.start()
        except LauncherError as exc:
            self.hotkey.error = str(exc)
            _err(f"note: {exc}; bind `launcher toggle` in your desktop's keyboard shortcuts instead")
            return
        self._hotkey_listener = listener
        self.hotkey.active = True

    def _on_hotkey(self) -> None:
        self.hotkey.presses += 1
        self.toggle()

    def serve_forever(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve the window and the API until SIGINT/SIGTERM, then shut everything down."""
        import uvicorn

        app = build_app(self)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=2,
                lifespan="on",
            )
        )
        self._server = server

        def when_started() -> None:
            while not server.started and not server.should_exit:
                time.sleep(0.05)
            if server.started and on_ready is not None:
                on_ready()

        threading.Thread(target=when_started, name="ready", daemon=True).start()
        # uvicorn re-raises SIGTERM after its graceful shutdown; with the default action that would
        # kill us before the run file is removed, so turn it into a normal exit.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            assert self.sock is not None
            server.run(sockets=[self.sock])
        finally:
            self.close()

    def stop(self) -> None:
        """Ask the server loop to finish (from any thread)."""
        if self._server is not None:
            self._server.should_exit = True

    @contextlib.contextmanager
    def _call(self) -> Iterator[None]:
        """Hold while a query uses the model; refused once shutdown has begun."""
        with self._calls_done:
            if self._closing:
                raise ServerError("launcher is shutting down: try again once it is restarted")
            self._calls += 1
        try:
            yield
        finally:
            with self._calls_done:
                self._calls -= 1
                self._calls_done.notify_all()

    def close(self) -> None:
        """Refuse new queries, stop the hotkey and the watcher, let running queries finish, then free
        the models and remove the run file (in that order: nothing uses a model once it is freed)."""
        with self._calls_done:
            self._closing = True
        self.windows.send(None)
        if self._hotkey_listener is not None:
            self._hotkey_listener.stop()
            self._hotkey_listener = None
        if self.watcher is not None:
            try:
                self.watcher.stop()
            except Exception:
                log.exception("stopping the watcher failed")
            self.watcher = None
        with self._calls_done:
            if not self._calls_done.wait_for(lambda: self._calls == 0, timeout=CALLS_GRACE_S):
                log.warning("%d queries still running at shutdown; the model waits for them", self._calls)
        self.reranker.close()
        if self.searcher is not None:
            self.searcher.close()
            self.searcher = None
        if self.embedder is not None and self._own_model_loads:
            self.embedder.close()
        self.embedder = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.instance.release()

    # what the front ends call

    @property
    def url(self) -> str:
        """Where the window and API are served."""
        host = self.options.host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def get_searcher(self) -> Searcher:
        """The searcher; with --watch on a new index it appears at the watcher's first commit."""
        with self._searcher_lock:
            if self._closing:
                raise ServerError("launcher is shutting down: try again once it is restarted")
            if self.searcher is None:
                if not Store.exists(self.index_dir):
                    raise StoreError("the index is not built yet: the watcher is reading your files")
                self.searcher = Searcher(self.index_dir, embedder=self.embedder)
            return self.searcher

    def search(
        self,
        query: Query,
        rerank: bool | None = None,
        *,
        rerank_top: int | None = None,
        reranker_file: str | None = None,
        still_wanted: Callable[[], bool] | None = None,
    ) -> RerankedHits:
        """Search the index (the same code as `launcher search` in-process), reranked when asked.

        rerank None: the `rerank` setting. A reranker problem (no model, a broken file) leaves the
        hits as retrieved, with the reason in `rerank_error`. "More like this" is never reranked: it
        has no query for the reranker to read.
        """
        with self._call():
            return self._search(query, rerank, rerank_top, reranker_file, still_wanted)

    def _search(
        self,
        query: Query,
        rerank: bool | None,
        rerank_top: int | None,
        reranker_file: str | None,
        still_wanted: Callable[[], bool] | None,
    ) -> RerankedHits:
        searcher = self.get_searcher()
        watcher = self.watcher
        # The watcher shares the model: it waits between its model calls while a query runs.
        with watcher.foreground() if watcher is not None else contextlib.nullcontext():
            answer = searcher.answer(query)
            hits, parsed = answer.hits, answer.parsed
            store = searcher.store
        self.counters.searches += 1
        wanted = self.options.rerank if rerank is None else rerank
        if not wanted or query.like is not None or not hits or not (parsed.text.strip() or query.image):
            # A date-only query lists files newest first: there is nothing for a reranker to read.
            return RerankedHits(hits, parsed=parsed)
        # The reranker is the heaviest model call of all: the watcher waits for it too.
        with watcher.foreground() if watcher is not None else contextlib.nullcontext():
            result = self.reranker.rerank(
                store,
                parsed.text,
                query.image,
                hits,
                rerank_top or self.options.rerank_top,
                only_file=reranker_file,
                still_wanted=still_wanted,
            )
        return replace(result, parsed=parsed)

    def toggle(self) -> str:
        """Show the search window: focus the open one, else open one. Says which it did."""
        self.counters.toggles += 1
        if self.windows.send("focus"):
            desktop.raise_window()
            return "focused"
        if self.windows.opening():
            return "opening"
        self.open_window()
        return "opened"

    def open_window(self) -> str:
        """Open a new search window logged in through a one-time URL, handed to the browser in a
        private file (a URL on its command line could be read by any user in /proc)."""
        code = self.windows.mint_code()
        page = write_login_page(f"{self.url}/auth?code={code}")
        self.windows.attach_page(code, page)
        how = desktop.open_window(page.as_uri())
        self.counters.windows_opened += 1
        return how

    def indexed_file(self, file_id: str | None = None, path: str | None = None) -> FileInfo:
        """The indexed file with this id or exact path; NotIndexed for anything else."""
        searcher = self.get_searcher()
        searcher.refresh()
        store = searcher.store
        info: FileInfo | None = None
        if file_id:
            try:
                info = store.file(file_id)
            except KeyError:
                info = None
        elif path:
            info = store.file_by_path(path)
        if info is None:
            what = path if path else f"file id {file_id!r}"
            raise NotIndexed(f"refused: {what} is not in the index (the window opens only indexed files)")
        return info

    def act(self, action: str, file_id: str | None = None, path: str | None = None) -> dict[str, Any]:
        """Open, reveal or copy the path of an indexed file."""
        if action not in ("open", "reveal", "copy"):
            raise InputError(f"unknown action {action!r}: use open, reveal or copy")
        info = self.indexed_file(file_id, path)
        if action != "copy" and not os.path.exists(info.path):
            raise LauncherError(f"{info.path} is no longer on disk (the index will catch up)")
        if action == "open":
            desktop.open_file(info.path)
        elif action == "reveal":
            desktop.reveal_file(info.path)
        return {"ok": True, "action": action, "path": info.path, "name": os.path.basename(info.path)}

    def thumbnail(self, file_id: str) -> bytes | None:
        """A small JPEG of an indexed image file, None for other kinds or unreadable images."""
        try:
            info = self.indexed_file(file_id=file_id)
        except NotIndexed:
            return None
        if info.kind != "image":
            return None
        return _thumbnail(info.path, info.mtime_ns)

    def roots(self) -> list[str]:
        """The folders the index covers (and the watched ones)."""
        roots: list[str] = []
        if Store.exists(self.index_dir):
            try:
                roots = list(self.get_searcher().store.roots)
            except LauncherError:
                roots = []
        for p in self.options.watch:
            s = str(Path(p).expanduser().resolve())
            if s not in roots:
                roots.append(s)
        return roots

    def status(self) -> dict[str, Any]:
        """What the process holds and does: for /api/status, `launcher toggle` and the window."""
        index: dict[str, Any] = {"index_dir": str(self.index_dir), "exists": Store.exists(self.index_dir)}
        if index["exists"]:
            try:
                searcher = self.get_searcher()
                searcher.refresh()
                st = searcher.store.stats()
                index.update(
                    files=st.files,
                    files_by_kind=st.files_by_kind,
                    pieces=st.pieces,
                    embedded=st.embedded,
                    pending=st.pending,
                    embedding_progress=round(st.embedded / st.pieces, 4) if st.pieces else 1.0,
                    dims=st.dims,
                    generation=st.generation,
                    roots=searcher.store.roots,
                    last_update=datetime.fromtimestamp(st.committed_at).isoformat(timespec="seconds")
                    if st.committed_at
                    else None,
                )
            except LauncherError as exc:
                index["error"] = str(exc)
        watcher: dict[str, Any] | None = None
        if self.options.watch:
            watcher = {
                "roots": [str(p) for p in self.options.watch],
                "status": self._watcher_status(),
                "progress": self.counters.last_progress or None,
            }
        loads = self._own_model_loads + (self.searcher.model_loads if self.searcher else 0)
        return {
            "pid": os.getpid(),
            "url": self.url,
            "started": datetime.fromtimestamp(self.started).isoformat(timespec="seconds"),
            "uptime_s": round(time.time() - self.started, 1),
            "model": {
                "name": getattr(self.embedder, "name", None),
                "file": self.model_file,
                "images": bool(getattr(self.embedder, "supports_images", False)),
            },
            "model_loads": loads,
            "searches": self.counters.searches,
            "toggles": self.counters.toggles,
            "windows": self.windows.count,
            "windows_opened": self.counters.windows_opened,
            "hotkey": {
                "combo": self.hotkey.combo,
                "active": self.hotkey.active,
                "error": self.hotkey.error,
                "presses": self.hotkey.presses,
            },
            "index": index,
            "watcher": watcher,
            "reranker": {
                "default": self.options.rerank,
                "top": self.options.rerank_top,
                "loaded": self.reranker.loaded,
                "loads": self.reranker.loads,
                "reranks": self.reranker.reranks,
                "error": self.reranker.last_error,
            },
        }

    def _watcher_status(self) -> dict[str, Any] | None:
        if self.watcher is None:
            return None
        try:
            return dict(self.watcher.status())
        except Exception as exc:  # the status of a background thread must never break the window
            return {"error": str(exc)}

    def set_watching(self, paused: bool) -> None:
        """Pause or resume the background watcher."""
        if self.watcher is None:
            raise InputError("no watcher: start with `launcher launch --watch PATH`")
        if paused:
            self.watcher.pause()
        else:
            self.watcher.resume()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


@lru_cache(maxsize=512)
def _thumbnail(path: str, mtime_ns: int) -> bytes | None:
    from PIL import Image, ImageOps

    from launcher.extract.base import ExtractSettings
    from launcher.extract.image import HEIF_EXTENSIONS, load_image

    try:
        if path.lower().endswith(HEIF_EXTENSIONS):
            image = load_image(path, ExtractSettings().max_image_pixels)
        else:
            with Image.open(path) as opened:
                if opened.width * opened.height > ExtractSettings().max_image_pixels:
                    return None
                opened.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))  # JPEG: decode at a fraction of the size
                image = ImageOps.exif_transpose(opened) or opened
                image.load()
        image.thumbnail((THUMB_PX, THUMB_PX))
        if image.mode not in ("RGB", "L"):
            flat = Image.new("RGB", image.size, (255, 255, 255))
            rgba = image.convert("RGBA")
            flat.paste(rgba, mask=rgba.getchannel("A"))
            image = flat
        out = io.BytesIO()
        image.save(out, "JPEG", quality=82)
        return out.getvalue()
    except Exception:  # a broken image has no thumbnail; the kind icon stands in
        return None


# --- HTTP --------------------------------------------------------------------------------------


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


class TokenGate:
    """ASGI middleware in front of everything (API and Gradio): host, origin, then the token."""

    def __init__(self, app: Any, service: LauncherService):
        self.app = app
        self.service = service

    def _allowed_hosts(self) -> set[str]:
        port = self.service.port
        return {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http":
            send = _unframeable(send)
        headers = _headers(scope)
        loopback = self.service.options.host in LOOPBACK
        hosts = self._allowed_hosts()
        if loopback and headers.get("host", "") not in hosts:
            await _deny(
                scope, send, 403, "refused: wrong Host header (the launcher answers only on loopback)"
            )
            return
        origin = headers.get("origin")
        own = hosts if loopback else {headers.get("host", "")}
        if origin is not None and origin.removeprefix("http://") not in own:
            await _deny(scope, send, 403, "refused: cross-origin request")
            return
        if scope["path"] == "/auth":
            await self.app(scope, receive, send)
            return
        given = _presented_token(headers)
        if given is None:
            await _deny(
                scope, send, 401, "not authorized: no launcher token (open the window with `launcher toggle`)"
            )
            return
        if not same_secret(given, self.service.token):
            await _deny(scope, send, 403, "not authorized: wrong launcher token")
            return
        await self.app(scope, receive, send)


FRAME_HEADERS = [
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
]


def _unframeable(send: Any) -> Any:
    """`send` with the headers that stop any page (another local service's too) from framing ours."""

    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            names = {k.lower() for k, _ in message.get("headers", [])}
            extra = [(k, v) for k, v in FRAME_HEADERS if k not in names]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped


def _presented_token(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if "cookie" in headers:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(headers["cookie"])
        except Exception:
            return None
        if COOKIE in jar:
            return jar[COOKIE].value
    return None


EXPIRED_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Launcher search</title>
<style>body{font:15px system-ui,sans-serif;color:#334;background:#f6f7fb;display:grid;place-items:center;
height:100vh;margin:0}div{max-width:28em;text-align:center}code{background:#e8eaf2;padding:2px 6px;
border-radius:4px}</style></head><body><div><h2>This window has expired</h2><p>{msg}</p>
<p>Press the launcher hotkey or run <code>launcher toggle</code> to open a fresh one.</p></div></body></html>"""


async def _deny(scope: dict[str, Any], send: Any, status: int, message: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    accept = _headers(scope).get("accept", "")
    if scope["path"].startswith("/api/") or "text/html" not in accept:
        body = json.dumps({"error": message, "exit_code": ServerError.exit_code}).encode()
        ctype = b"application/json"
    else:
        import html

        body = EXPIRED_PAGE.replace("{msg}", html.escape(message)).encode()
        ctype = b"text/html; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _show(value: Any) -> str:
    """A malformed value as an error line quotes it: JSON, cut short."""
    text = json.dumps(value, ensure_ascii=True, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _text(data: dict[str, Any], key: str) -> str | None:
    """A string field; None when absent or null."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or "\x00" in value:
        raise InputError(f"{key}: {_show(value)} is not a string")
    return value


def _whole(data: dict[str, Any], key: str, low: int, high: int) -> int | None:
    """A whole-number field within [low, high]; None when absent or null."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"{key}: {_show(value)} is not a whole number from {low} to {high}")
    return value


def _flag(data: dict[str, Any], key: str) -> bool | None:
    """A true/false field (JSON booleans, or the words config.boolean reads); None when absent."""
    value = data.get(key)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return config.boolean(value)
    raise InputError(f"{key}: {_show(value)} is not true or false")


def _number(data: dict[str, Any], key: str) -> float | None:
    """A finite number field; None when absent or null."""
    import math

    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{key}: {_show(value)} is not a number")
    return float(value)


def query_from_json(data: dict[str, Any], upload_dir: Path) -> tuple[Query, Path | None]:
    """A Query from the API's JSON body, every field checked (InputError names a malformed one); an
    inline image is written to a private temp file."""
    from launcher.records import KINDS

    text = _text(data, "text") or ""
    top_k = _whole(data, "top_k", 1, 1000)
    kinds = data.get("kinds")
    if kinds is not None and (
        not isinstance(kinds, list) or not all(isinstance(k, str) and k in KINDS for k in kinds)
    ):
        raise InputError(f"kinds: {_show(kinds)} is not a list of {', '.join(KINDS)}")
    under = _text(data, "under")
    like = _text(data, "like")
    min_score = _number(data, "min_score")

    def date(key: str) -> datetime | None:
        v = _text(data, key)
        if not v:
            return None
        try:
            return datetime.fromisoformat(v)
        except ValueError:
            raise InputError(f"{key}: {v!r} is not a date like 2023-04-30") from None

    after, before = date("after"), date("before")
    image_name = _text(data, "image_name")
    image_b64 = _text(data, "image_b64")
    image: Path | None = None
    if image_b64:
        import base64
        import binascii

        try:
            raw = base64.b64decode(image_b64, validate=True)
        except (ValueError, binascii.Error):
            raise InputError("image_b64: the image is not valid base64") from None
        suffix = Path(image_name or "image.png").suffix.lower()[:8] or ".png"
        if not suffix[1:].isalnum():
            suffix = ".png"
        upload_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        image = upload_dir / f"query-{secrets.token_hex(8)}{suffix}"
        with os.fdopen(os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(raw)
    query = Query(
        text=text,
        image=image,
        top_k=top_k or 10,
        kinds=list(kinds or []),
        under=under or None,
        after=after,
        before=before,
        min_score=min_score,
        like=like or None,
        dates=_flag(data, "dates"),
    )
    return query, image


@dataclass
class RerankRequest:
    """The reranking part of a search request."""

    wanted: bool | None = None  # None: the process's `rerank` setting
    top: int | None = None  # None: the process's `rerank_top` setting
    only_file: str | None = None  # rerank only with this model file (the CLI's own choice)


def rerank_from_json(data: dict[str, Any]) -> RerankRequest:
    """`rerank`, `rerank_top` and `reranker_file` of a search request."""
    wanted = _flag(data, "rerank")
    top = _whole(data, "rerank_top", 1, config.RERANK_TOP_MAX)
    only = _text(data, "reranker_file")
    return RerankRequest(wanted, top, only or None)


def open_from_json(data: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """`action`, `file_id` and `path` of an open request."""
    action = _text(data, "action") or "open"
    if action not in ("open", "reveal", "copy"):
        raise InputError(f"action: {_show(action)} is not open, reveal or copy")
    return action, _text(data, "file_id") or None, _text(data, "path") or None


def _error_response(exc: LauncherError) -> Any:
    from fastapi.responses import JSONResponse

    # 503: the process is shutting down (ServerError), a client may try again once it is back.
    status = 403 if isinstance(exc, NotIndexed) else 503 if isinstance(exc, ServerError) else 400
    return JSONResponse({"error": str(exc), "exit_code": exc.exit_code}, status_code=status)


def build_app(service: LauncherService) -> Any:
    """The FastAPI app: the JSON API, the window login, and the Gradio window mounted at /."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    upload_dir = config.run_dir() / "uploads"
    shutil.rmtree(upload_dir, ignore_errors=True)
    upload_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Images dropped into the window land here, private to the user, not in a shared /tmp/gradio.
    os.environ["GRADIO_TEMP_DIR"] = str(upload_dir / "window")

    warnings.filterwarnings("ignore", module="gradio")
    warnings.filterwarnings("ignore", message=".*HTTP_422_UNPROCESSABLE_ENTITY.*")
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response, StreamingResponse

    from launcher import ui

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/auth")
    def auth(code: str = "") -> Any:
        if not service.windows.redeem(code):
            from fastapi.responses import HTMLResponse

            page = EXPIRED_PAGE.replace("{msg}", "This link was already used or is too old.")
            return HTMLResponse(page, status_code=403)
        # A page that forwards itself, not a redirect: the browser came here from the login file,
        # a cross-site start, and would not send a SameSite=Strict cookie along a redirect chain
        # begun there; the page's own navigation to / is same-site, so the cookie goes with it.
        from fastapi.responses import HTMLResponse

        resp = HTMLResponse(
            '<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url=/">'
            "<title>Launcher search</title></head><body></body></html>",
            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
        )
        resp.set_cookie(COOKIE, service.token, httponly=True, samesite="strict", path="/")
        return resp

    @app.get("/api/status")
    def status() -> Any:
        return service.status()

    @app.post("/api/search")
    async def search(request: Request) -> Any:
        try:
            data = await _json(request)
        except LauncherError as exc:
            return _error_response(exc)
        return await asyncio.to_thread(_search, data)

    def _search(data: dict[str, Any]) -> Any:
        image: Path | None = None
        try:
            rerank = rerank_from_json(data)
            query, image = query_from_json(data, upload_dir)
            result = service.search(
                query, rerank.wanted, rerank_top=rerank.top, reranker_file=rerank.only_file
            )
        except LauncherError as exc:
            return _error_response(exc)
        finally:
            if image is not None:
                image.unlink(missing_ok=True)
        return {
            "parsed": result.parsed.to_json() if result.parsed else None,
            "hits": [{**hit_to_json(h), "piece_id": h.piece_id} for h in result.hits],
            "reranked": result.reranked,
            "rerank_error": result.rerank_error,
        }

    @app.post("/api/toggle")
    def toggle() -> Any:
        try:
            return {"action": service.toggle(), "windows": service.windows.count}
        except LauncherError as exc:
            return _error_response(exc)

    @app.post("/api/open")
    async def open_(request: Request) -> Any:
        try:
            action, file_id, path = open_from_json(await _json(request))
            return service.act(action, file_id=file_id, path=path)
        except LauncherError as exc:
            return _error_response(exc)

    @app.post("/api/watch")
    async def watch(request: Request) -> Any:
        try:
            paused = bool(_flag(await _json(request), "paused"))
            service.set_watching(paused)
        except LauncherError as exc:
            return _error_response(exc)
        return {"ok": True, "paused": paused}

    @app.get("/api/thumb/{file_id}")
    def thumb(file_id: str) -> Any:
        data = service.thumbnail(file_id)
        if data is None:
            return JSONResponse({"error": "no thumbnail"}, status_code=404)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/events")
    async def events() -> Any:
        wid, queue = service.windows.connect()

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\nevent: hello\ndata: {}\n\n"
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), PING_S)
                    except asyncio.TimeoutError:
                        yield ": ping\n\n"
                        continue
                    if event is None:
                        return
                    yield f"event: {event}\ndata: {{}}\n\n"
            finally:
                service.windows.disconnect(wid)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    app = ui.mount(app, service)
    return TokenGate(app, service)


async def _json(request: Any) -> dict[str, Any]:
    """The request's JSON object; an empty body is an empty object, anything else not an object a
    one-line InputError."""
    body = await request.body()
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to be a real request
        raise InputError("the request body is not JSON: send a JSON object") from None
    if not isinstance(data, dict):
        raise InputError(f"the request body must be a JSON object, not {_show(data)}")
    return data


def run_launch(options: LaunchOptions) -> None:
    """`launcher launch`: start, say where, open the window, serve until stopped."""
    if options.hotkey:
        from launcher.hotkey import parse_combo

        parse_combo(options.hotkey)  # a bad combo fails before anything is loaded
    if options.host not in LOOPBACK:
        _err(
            f"warning: serving on {options.host}: other machines can reach this port; "
            "every request still needs your token, but traffic is not encrypted"
        )
    service = LauncherService(options)
    service.start()
    hot = f"press {options.hotkey} or run" if service.hotkey.active else "run"
    _err(f"launcher is running at {service.url} (pid {os.getpid()}): {hot} `launcher toggle` to search")

    def ready() -> None:
        if options.open_browser:
            try:
                service.open_window()
            except LauncherError as exc:
                _err(f"note: {exc}")

    service.serve_forever(on_ready=ready)


__all__ = [
    "LaunchOptions",
    "LauncherService",
    "TokenGate",
    "WindowTracker",
    "build_app",
    "query_from_json",
    "rerank_from_json",
    "run_launch",
]
