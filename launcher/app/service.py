"""The resident process (`launcher launch`): model and index loaded once, the search window and a
small JSON API on loopback, the global hotkey, and the background watcher. This module is the
service itself; launcher/app/http.py serves it (the token gate, the API, the window mounted at /)
and launcher/app/launch.py starts both.

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
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from launcher.app import desktop
from launcher.app.runfile import Instance, RunInfo, new_token, same_secret
from launcher.core import config
from launcher.core.errors import InputError, LauncherError, NotIndexed, ServerError, StoreError
from launcher.index.info import FileInfo
from launcher.index.store import Store, Stored
from launcher.models.catalogue import write_model_hint
from launcher.query.rerank import DEFAULT_RERANK_TOP, RerankedHits, ResidentReranker
from launcher.query.session import Query, Searcher

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
        from launcher.models.catalogue import resolve_model
        from launcher.models.embed import load_embedder
        from launcher.models.runtime import LlamaOptions

        o = self.options
        if o.watch:
            # The watcher embeds in the background through the same llama.cpp threads as the queries;
            # spinning OpenMP threads would hold both cores while they wait at barriers behind the
            # niced worker (see `launcher watch`). Read when llama.cpp loads, just below; an idle
            # query pays about 5 ms for it on MiniLM (LAUNCHER_README, Priority).
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            # Queries get a small context of their own on the same weights, so that a search never
            # waits for the picture the watcher is encoding (LAUNCHER_README, Priority).
            engine = o.engine_options or LlamaOptions()
            lane = config.resolve("query_lane")
            if not engine.query_ctx and lane:
                engine = replace(engine, query_ctx=lane)
            # The watcher's pieces size the context (their size: a setting, or the index's own).
            engine = replace(engine, chunk_tokens=self._watch_chunk_tokens())
            o = replace(o, engine_options=engine)
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
        from launcher.models.catalogue import read_model_hint

        return str((read_model_hint(self.index_dir) or {}).get("model") or "")

    def _bind(self) -> socket.socket:
        host, port = self.options.host, self.options.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
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
        from launcher.index.roots import ScanFlags, chosen_options
        from launcher.watch.watcher import Watcher  # the watcher is optional: imported only for --watch

        options = self.options.watch_options or self._watch_options()
        stored = Stored.read(self.index_dir)  # the manifest alone: the watcher's writer reads the table
        remembered = stored.root_options() if stored is not None else {}
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

    def _watch_chunk_tokens(self) -> int | None:
        """The piece size the watcher will ask for: its options', the setting, or the index's own
        (read from the manifest alone: this runs before the model loads)."""
        from launcher.ingest.pipeline import kept_chunk_tokens

        if self.options.watch_options is not None:
            return self.options.watch_options.chunk_tokens  # type: ignore[no-any-return]
        stored = Stored.read(self.index_dir)
        return config.resolve("chunk_tokens") or kept_chunk_tokens(stored.identity if stored else None)

    def _watch_options(self) -> Any:
        from launcher.ingest.pipeline import IndexOptions, document_instruction

        storage = config.resolve("storage")
        dims = config.resolve("dims")
        identity = None
        store = Stored.read(self.index_dir)
        if store is not None:  # keep the index's own shape: a watcher never resets it
            storage = store.dtype
            dims = store.dims if store.dims != getattr(self.embedder, "dims", store.dims) else None
            identity = store.identity
        return IndexOptions(
            dims=dims,
            storage=storage,
            instruction=document_instruction(identity),
            chunk_tokens=self._watch_chunk_tokens(),
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
        from launcher.app.hotkey import HotkeyListener

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

    def serve_forever(self, app: Any, on_ready: Callable[[], None] | None = None) -> None:
        """Serve the app (launcher.app.http.build_app) until SIGINT/SIGTERM, then shut everything down."""
        import uvicorn

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
                "query_lane": {
                    "tokens": getattr(self.embedder, "query_lane_tokens", 0),
                    "calls": getattr(self.embedder, "lane_calls", 0),
                },
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

    from launcher.ingest.extract.base import ExtractSettings
    from launcher.ingest.extract.image import HEIF_EXTENSIONS, check_pixels, load_image

    try:
        if path.lower().endswith(HEIF_EXTENSIONS):
            image = load_image(path, ExtractSettings().max_image_pixels)
        else:
            with Image.open(path) as opened:
                check_pixels(*opened.size, ExtractSettings().max_image_pixels)  # too large: no thumbnail
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


__all__ = [
    "LaunchOptions",
    "LauncherService",
    "WindowTracker",
]
