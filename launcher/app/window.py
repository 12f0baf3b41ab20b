"""Stage 9, the search window: a Gradio page, keyboard-first, a thin shell over the resident
process (what it asks of it is WindowService).

Results are HTML built here, every file name, path and snippet passed through `esc` (html.escape
after making undecodable names printable). The page's own script (HEAD_JS) does the keyboard
work: debounced search as you type, Up/Down, Enter to open, Ctrl+Enter to reveal, Alt+Enter or
Ctrl+Shift+C to copy the path, Ctrl+M for "more like this", Escape to clear or close; image drop
and paste anywhere; and the event stream through which the process asks the window to focus.
"""

from __future__ import annotations

import html
import itertools
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from importlib import resources
from typing import Any, Protocol

import gradio as gr

from launcher.app.desktop import WINDOW_TITLE, display_path
from launcher.core.errors import InputError, LauncherError
from launcher.core.records import Hit
from launcher.index.keywords import has_cjk
from launcher.query.dates import Parsed
from launcher.query.dates import now as clock
from launcher.query.rerank import RerankedHits
from launcher.query.session import Query


class _Switches(Protocol):
    rerank: bool  # where the window's rerank switch starts


class WindowService(Protocol):
    """What the window asks of the resident process (launcher.app.service.LauncherService provides it).

    Declared here, on the window's side, so that the window never imports the process that
    mounts it."""

    @property
    def options(self) -> _Switches: ...

    def status(self) -> dict[str, Any]: ...

    def roots(self) -> list[str]: ...

    def search(
        self, query: Query, rerank: bool | None = None, *, still_wanted: Callable[[], bool] | None = None
    ) -> RerankedHits: ...


TOP_K = 12
STATUS_EVERY_S = 3.0
DEBOUNCE_MS = 120
SNIPPET_CHARS = 180
KIND_LABELS = {
    "text": "Text",
    "code": "Code",
    "html": "Web page",
    "markdown": "Markdown",
    "pdf": "PDF",
    "image": "Image",
    "video": "Video",
    "office": "Office",
    "ebook": "E-book",
    "other": "Other",
}
# The kind filter offers groups a person thinks in, each a set of the index's kinds.
KIND_GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "all": ("All kinds", ()),
    "docs": ("Documents", ("text", "markdown", "pdf", "office", "ebook", "html")),
    "pdf": ("PDFs", ("pdf",)),
    "image": ("Images", ("image",)),
    "video": ("Videos", ("video",)),
    "code": ("Code", ("code",)),
    "notes": ("Notes and text", ("text", "markdown")),
    "office": ("Office files", ("office",)),
    "ebook": ("E-books", ("ebook",)),
    "html": ("Web pages", ("html",)),
}
WHEN = {"any": None, "day": 1, "week": 7, "month": 31, "year": 365}
WHEN_LABELS = [
    ("Any time", "any"),
    ("Past day", "day"),
    ("Past week", "week"),
    ("Past month", "month"),
    ("Past year", "year"),
]
ANYWHERE = "Everywhere"
PATH_CHARS = 72
_renders = itertools.count(1)  # each rendering is numbered: a page (or a test) can tell a fresh one


def esc(text: object) -> str:
    """Text made safe for HTML: undecodable bytes shown as U+FFFD, then html.escape (quotes too)."""
    s = str(text).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return html.escape(s, quote=True)


# --- rendering ---------------------------------------------------------------------------------


def _highlight(snippet: str, words: list[str]) -> str:
    """The snippet escaped, with the query's words marked: split first, escape each part."""
    text = " ".join(snippet.split())
    if len(text) > SNIPPET_CHARS:
        text = text[: SNIPPET_CHARS - 1].rstrip() + "…"
    if not words:
        return esc(text)
    pattern = re.compile("|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)), re.IGNORECASE)
    out: list[str] = []
    last = 0
    for m in pattern.finditer(text):
        out.append(esc(text[last : m.start()]))
        out.append(f"<mark>{esc(m.group(0))}</mark>")
        last = m.end()
    out.append(esc(text[last:]))
    return "".join(out)


STOPWORDS = frozenset(
    [
        "the",
        "and",
        "for",
        "with",
        "from",
        "that",
        "this",
        "these",
        "those",
        "are",
        "was",
        "were",
        "has",
        "have",
        "had",
        "how",
        "what",
        "where",
        "when",
        "which",
        "who",
        "whom",
        "why",
        "you",
        "your",
        "yours",
        "our",
        "ours",
        "its",
        "his",
        "her",
        "their",
        "them",
        "they",
        "not",
        "but",
        "all",
        "any",
        "can",
        "will",
        "into",
        "onto",
        "about",
        "over",
        "under",
        "than",
        "then",
        "there",
        "here",
    ]
)


def query_words(text: str) -> list[str]:
    """The words of a query worth highlighting (not "the", "for"...; in Chinese or Japanese, words
    of two characters too)."""
    words = re.findall(r"\w+", text.lower())
    return sorted({w for w in words if (len(w) >= 3 or len(w) == 2 and has_cjk(w)) and w not in STOPWORDS})


def _badge(hit: Hit) -> str:
    ext = os.path.splitext(hit.path)[1].lstrip(".").upper()[:4] or KIND_LABELS.get(hit.kind, "File")[:4]
    return f'<div class="badge k-{esc(hit.kind)}">{esc(ext)}</div>'


def _score(hit: Hit, by_date: bool = False) -> str:
    """The score column: both scores for a reranked hit, the retrieval score for the others; the
    date for a date-only query ("yesterday"), whose files are listed newest first."""
    if by_date:
        day = datetime.fromtimestamp(hit.date).strftime("%Y-%m-%d %H:%M") if hit.date is not None else ""
        return f'<div class="score" title="modified (pictures: taken)">{esc(day)}</div>'
    if "rerank" in hit.scores:
        return (
            '<div class="score rr" title="reranker score · retrieval score">'
            f"rerank {hit.scores['rerank']:.2f} · retrieval {hit.scores['retrieval']:.2f}</div>"
        )
    if "retrieval" in hit.scores:  # in a reranked list, below the hits the reranker judged
        return (
            '<div class="score" title="retrieval score: below the reranked hits">'
            f"retrieval {hit.scores['retrieval']:.2f}</div>"
        )
    return f'<div class="score" title="relevance">{hit.score:.2f}</div>'


def render_hit(hit: Hit, index: int, words: list[str], by_date: bool = False) -> str:
    """One result row: thumbnail or kind badge, name, folder, where it matched, snippet, score."""
    name = os.path.basename(hit.path)
    folder = display_path(os.path.dirname(hit.path))
    if len(folder) > PATH_CHARS:  # keep the end: the nearest folders say most
        folder = "…" + folder[-(PATH_CHARS - 1) :]
    where = hit.locator.describe()
    if hit.kind == "image":
        thumb = f'<img src="/api/thumb/{esc(hit.file_id)}" alt="" loading="lazy">'
    else:
        thumb = _badge(hit)
    snippet = hit.snippet if hit.snippet and hit.snippet.strip() != name else ""
    where_html = f'<span class="where">{esc(where)}</span>' if where else ""
    snippet_html = f'<div class="snip">{_highlight(snippet, words)}</div>' if snippet else ""
    kind = KIND_LABELS.get(hit.kind, hit.kind)
    return (
        f'<div class="hit{" sel" if index == 0 else ""}" role="option" data-file="{esc(hit.file_id)}" '
        f'data-piece="{esc(hit.piece_id)}" data-name="{esc(name)}">'
        f'<div class="thumb">{thumb}</div>'
        f'<div class="body"><div class="name"><span class="fname">{esc(name)}</span>{where_html}</div>'
        f'<div class="path">{esc(folder)}</div>{snippet_html}</div>'
        f'<div class="side">{_score(hit, by_date)}'
        f'<div class="kind">{esc(kind)}</div>'
        '<div class="acts">'
        '<button data-act="open" title="Open (Enter)">Open</button>'
        '<button data-act="reveal" title="Show in folder (Ctrl+Enter)">Folder</button>'
        '<button data-act="copy" title="Copy path (Alt+Enter)">Copy path</button>'
        '<button data-act="like" title="More like this (Ctrl+M)">Similar</button>'
        "</div></div></div>"
    )


def render_results(
    hits: list[Hit],
    *,
    words: list[str],
    like: dict[str, str] | None = None,
    ms: float | None = None,
    query: str = "",
    image: bool = False,
    rerank: str = "off",
    note: str | None = None,
    parsed: Parsed | None = None,
) -> str:
    """The result list with its header line; a time read from the query is a removable chip.

    rerank: "off", "pending" (these hits are being reranked), "done", or "failed" (with the reason
    in `note`, shown above the hits).
    """
    head = []
    if image:
        head.append('<span class="chip plain">Image query</span>')
    if rerank == "pending":
        head.append('<span class="chip plain rr">Reranking…</span>')
    elif rerank == "done":
        head.append(
            '<span class="chip plain rr" title="the top hits, reordered by the reranker">Reranked</span>'
        )
    by_date = False
    if parsed is not None and parsed.found:
        by_date = not parsed.text.strip() and not image
        head.append(
            f'<span class="chip when" title="{esc(parsed.span())}">{esc(parsed.chip())}'
            f'<button data-act="undate" data-expr="{esc(parsed.expression)}" '
            'title="Search without the date: every word as typed">×</button></span>'
        )
    if like:
        head.append(
            f'<span class="chip">Similar to <b>{esc(like.get("name", ""))}</b>'
            '<button data-act="unlike" title="Back to your query">×</button></span>'
        )
    n = len(hits)
    took = f' title="{ms:.0f} ms"' if ms is not None else ""  # a tooltip: screenshots stay identical
    head.append(f'<span class="count"{took}>{n} file{"" if n == 1 else "s"}</span>')
    if not hits:
        body = '<div class="empty">No matching files. Try other words, or widen the filters.</div>'
    else:
        body = "".join(render_hit(h, i, words, by_date) for i, h in enumerate(hits))
    note_html = f'<div class="note" role="status">Not reranked: {_with_code(note)}</div>' if note else ""
    return (
        f'<div class="results" data-seq="{next(_renders)}" data-query="{esc(query)}" data-rerank="{rerank}">'
        f'<div class="rhead">{"".join(head)}</div>{note_html}'
        f'<div class="list" role="listbox">{body}</div></div>'
    )


def _with_code(text: str) -> str:
    """Text escaped, with `backquoted` commands shown as code."""
    return re.sub(r"`([^`<>]+)`", r"<code>\1</code>", esc(text))


def render_message(text: str) -> str:
    """A one-line problem shown where the results go."""
    return f'<div class="results" data-seq="{next(_renders)}"><div class="msg">{esc(text)}</div></div>'


KEYS = [
    ("↑ ↓", "select"),
    ("Enter", "open"),
    ("Ctrl Enter", "show in folder"),
    ("Alt Enter", "copy path"),
    ("Ctrl M", "similar"),
    ("Alt R", "rerank on / off"),
    ("Esc", "clear / close"),
]


FOOTER_KEYS = [("↵", "open"), ("Ctrl ↵", "folder"), ("Alt ↵", "copy"), ("Ctrl M", "similar")]


def _kbd(keys: str) -> str:
    return "".join(f"<kbd>{esc(k)}</kbd>" for k in keys.split())


def render_welcome(status: dict[str, Any]) -> str:
    """What the window shows before a query: what it can do and the keys."""
    index = status.get("index") or {}
    files = index.get("files")
    images = (status.get("model") or {}).get("images")
    what = f"{files:,} files indexed." if isinstance(files, int) else "No index yet."
    drop = (
        "Drop or paste an image to find similar pictures, pages and frames."
        if images
        else "Image search needs the multimodal model:<br><code>launcher models pull qwen3-vl-embedding-2b</code>"
    )
    keys = "".join(f"<li>{_kbd(k)}<span>{esc(v)}</span></li>" for k, v in KEYS)
    return (
        f'<div class="results" data-seq="{next(_renders)}"><div class="welcome">'
        f"<p><b>Describe the file you want.</b> {esc(what)}</p><p>{drop}</p>"
        f'<ul class="keys">{keys}</ul></div></div>'
    )


def render_status(status: dict[str, Any]) -> str:
    """The footer: index size, embedding progress, model, watcher and hotkey state."""
    index = status.get("index") or {}
    parts: list[str] = []
    state = "ok"
    if not index.get("exists"):
        parts.append("no index yet")
        state = "busy"
    elif "error" in index:
        parts.append(index["error"])
        state = "bad"
    else:
        parts.append(f"{index.get('files', 0):,} files")
        progress = float(index.get("embedding_progress", 1.0))
        if progress < 1.0:
            parts.append(f"{100 * progress:.0f}% embedded")
            state = "busy"
    model = (status.get("model") or {}).get("name")
    if model:
        parts.append(str(model))
    watcher = status.get("watcher")
    pause = ""
    if watcher:
        roots = watcher.get("roots") or []
        word = f"watching {len(roots)} folder{'s' if len(roots) != 1 else ''}"
        info = watcher.get("status") or {}
        progress_ev = info.get("progress") or watcher.get("progress") or {}
        paused = bool(info.get("paused"))
        busy = info.get("state") not in (None, "watching", "paused", "stopped")
        if paused:
            word += ", paused"
        elif info.get("state") == "error":
            word += f", stopped: {info.get('message') or 'error'}"
            state = "bad"
        elif busy and progress_ev.get("total") and progress_ev.get("done", 0) < progress_ev["total"]:
            word += f", {progress_ev.get('phase')} {progress_ev.get('done')}/{progress_ev.get('total')}"
            state = "busy"
        elif busy:
            word += f", {info['state']}"
            state = "busy"
        parts.append(word)
        pause = f'<button class="link" data-watch="{"resume" if paused else "pause"}">{"resume" if paused else "pause"}</button>'
    hotkey = status.get("hotkey") or {}
    hot = ""
    if hotkey.get("active") and hotkey.get("combo"):
        hot = f'<span class="hot">{_kbd(str(hotkey["combo"]).replace("<", "").replace(">", "").replace("+", " "))}</span>'
    text = " · ".join(esc(p) for p in parts)
    keys = "".join(f'<span class="k">{_kbd(k)}{esc(v)}</span>' for k, v in FOOTER_KEYS)
    return (
        f'<div class="status"><span class="dot {state}"></span><span class="st">{text}</span>{pause}{hot}'
        f'<span class="keys-hint">{keys}</span></div>'
    )


# --- behaviour ---------------------------------------------------------------------------------


def _under(folder: str | None) -> str | None:
    if not folder or folder == ANYWHERE:
        return None
    path = os.path.abspath(os.path.expanduser(folder))
    if not os.path.isdir(path):
        raise InputError(f"no such folder: {folder}")
    return path


def _after(when: str | None) -> datetime | None:
    days = WHEN.get(when or "any")
    return clock() - timedelta(days=days) if days else None


def rerankable(text: str | None, image: str | None, like: dict[str, str] | None) -> bool:
    """Whether the reranker has a query to read: words or a picture ("more like this" has neither)."""
    return like is None and bool((text or "").strip() or image)


def run_search(
    service: WindowService,
    text: str | None,
    image: str | None,
    kind: str | None,
    folder: str | None,
    when: str | None,
    like: dict[str, str] | None,
    rerank: bool = False,
    *,
    pending: bool = False,
    still_wanted: Callable[[], bool] | None = None,
    dates: bool | None = None,
) -> tuple[str, dict[str, str] | None]:
    """One search from the window: (results HTML, the "more like this" state to keep).

    rerank: have the process rerank the top hits (the slow second step). pending: show the hits as
    retrieved, marked as being reranked (the quick first step). dates: False once the person
    removed the date chip (None: the `dates` setting).
    """
    text = text or ""
    if text.strip() or image:
        like = None  # a new query replaces "more like this"
    if not text.strip() and not image and not like:
        return render_welcome(service.status()), None
    try:
        query = Query(
            text=text,
            image=image or None,
            top_k=TOP_K,
            kinds=list(KIND_GROUPS.get(kind or "all", KIND_GROUPS["all"])[1]),
            under=_under(folder),
            after=_after(when),
            like=like["piece"] if like else None,
            dates=dates,
        )
        t0 = time.perf_counter()
        result = service.search(query, rerank, still_wanted=still_wanted)
        ms = 1000 * (time.perf_counter() - t0)
    except LauncherError as exc:
        return render_message(str(exc)), like
    if result.reranked:
        state = "done"
    elif result.rerank_error:
        state = "failed"
    elif pending and rerankable(_searched(text, result.parsed), image, like) and result.hits:
        state = "pending"
    else:
        state = "off"
    html_ = render_results(
        result.hits,
        words=query_words(_searched(text, result.parsed)),
        like=like,
        ms=ms,
        query=text,
        image=bool(image),
        rerank=state,
        note=result.rerank_error,
        parsed=result.parsed,
    )
    return html_, like


def _searched(text: str, parsed: Parsed | None) -> str:
    """The words that were searched: the query without its time expression."""
    return parsed.text if parsed is not None and parsed.found else text


def dates_on(text: str | None, dismissed: str | None) -> bool | None:
    """None (the setting decides) unless the person removed the chip of a time expression that is
    still in the query: then False, so its words are searched as typed."""
    if dismissed and dismissed in " ".join((text or "").split()).lower():
        return False
    return None


class Tickets:
    """The newest search of each window, so that a slow rerank of an older query is dropped rather
    than shown over the newer one (the reranker can take seconds per hit on a CPU)."""

    KEEP = 256  # windows remembered; the oldest are forgotten first

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = itertools.count(1)
        self._latest: dict[str, list[Any]] = {}  # window -> [ticket, reranked already]

    def issue(self, window: str | None) -> int:
        """A new search in this window: its ticket, which makes every older one stale."""
        with self._lock:
            ticket = next(self._count)
            self._latest.pop(window or "", None)
            self._latest[window or ""] = [ticket, False]
            while len(self._latest) > self.KEEP:
                del self._latest[next(iter(self._latest))]
            return ticket

    def current(self, window: str | None, ticket: int) -> bool:
        """Whether this is still the window's newest search."""
        with self._lock:
            entry = self._latest.get(window or "")
            return entry is not None and entry[0] == ticket

    def claim(self, window: str | None, ticket: int) -> bool:
        """True once for the newest search: it is reranked once, however many steps ask."""
        with self._lock:
            entry = self._latest.get(window or "")
            if entry is None or entry[0] != ticket or entry[1]:
                return False
            entry[1] = True
            return True


# --- the page ----------------------------------------------------------------------------------


def _static(name: str) -> str:
    """A file of the page's own script or style, shipped in launcher/app/static/."""
    return resources.files("launcher.app").joinpath("static", name).read_text(encoding="utf-8")


# The results list's click handler: "more like this", its undo, the time chip's removal.
LIKE_JS = _static("like.js")
# The keyboard, the debounce, the focus requests from `launcher toggle`.
HEAD_JS = "<script>\n" + _static("window.js").replace("DEBOUNCE_MS", str(DEBOUNCE_MS)) + "</script>"
CSS = _static("window.css")


def theme() -> Any:
    """System fonts only: the page never fetches anything from the internet."""
    return gr.themes.Base(
        primary_hue="indigo",
        neutral_hue="slate",
        radius_size="md",
        font=["system-ui", "-apple-system", "Segoe UI", "Roboto", "Ubuntu", "Cantarell", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "DejaVu Sans Mono", "monospace"],
    )


def build(service: WindowService) -> Any:
    """The Gradio Blocks of the window, wired to the service."""
    # Gradio finds gr.EventData parameters by their annotation: gradio is imported at module level.

    def folder_choices() -> list[str]:
        return [ANYWHERE, *[display_path(r) for r in service.roots()]]

    tickets = Tickets()

    # Two steps: the hits as retrieved at once, then (Rerank on) the reranked list replacing them.
    def search(
        text: str,
        image: str | None,
        kind: str,
        folder: str,
        when: str,
        like: dict[str, str] | None,
        rerank: bool,
        undated: str,
        request: gr.Request,
    ) -> tuple[str, dict[str, str] | None, int]:
        ticket = tickets.issue(request.session_hash)
        html_, like_ = run_search(
            service,
            text,
            image,
            kind,
            folder,
            when,
            like,
            pending=bool(rerank),
            dates=dates_on(text, undated),
        )
        return html_, like_, ticket

    def rerank_step(
        text: str,
        image: str | None,
        kind: str,
        folder: str,
        when: str,
        like: dict[str, str] | None,
        rerank: bool,
        undated: str,
        ticket: int,
        request: gr.Request,
    ) -> Any:
        window = request.session_hash
        if not rerank or not rerankable(text, image, like) or not tickets.claim(window, ticket):
            return gr.update()
        html_, _ = run_search(
            service,
            text,
            image,
            kind,
            folder,
            when,
            like,
            rerank=True,
            still_wanted=lambda: tickets.current(window, ticket),
            dates=dates_on(text, undated),
        )
        return html_ if tickets.current(window, ticket) else gr.update()

    def on_click(
        kind: str,
        folder: str,
        when: str,
        text: str,
        image: str | None,
        evt: gr.EventData,
        request: gr.Request,
    ) -> tuple[Any, Any, dict[str, str] | None, str, int, Any]:
        ticket = tickets.issue(request.session_hash)
        data = evt._data or {}
        if data.get("like"):
            like = {"piece": str(data["like"]), "name": str(data.get("name") or "")}
            html_, like_ = run_search(service, "", None, kind, folder, when, like)
            return "", None, like_, html_, ticket, gr.update()
        if data.get("undate"):
            # The chip's ×: the same query with its time words searched as typed, until they change.
            undated = " ".join(str(data["undate"]).split()).lower()
            html_, like_ = run_search(service, text, image, kind, folder, when, None, dates=False)
            return gr.update(), gr.update(), like_, html_, ticket, undated
        html_, _ = run_search(service, "", None, kind, folder, when, None)
        return gr.update(), gr.update(), None, html_, ticket, gr.update()

    with gr.Blocks(title=WINDOW_TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as blocks:
        like = gr.State(None)
        ticket = gr.State(0)
        undated = gr.State("")  # the time expression whose chip was removed
        with gr.Row(elem_id="bar"):
            q = gr.Textbox(
                placeholder="Search your files…",
                show_label=False,
                container=False,
                lines=1,
                max_lines=1,
                autofocus=True,
                elem_id="q",
                scale=8,
            )
            img = gr.Image(
                type="filepath",
                sources=["upload", "clipboard"],
                show_label=False,
                container=True,
                elem_id="img",
                height=54,
                buttons=[],
                placeholder="Drop image",
                min_width=118,
                scale=0,
            )
        with gr.Row(elem_id="filters"):
            kind = gr.Dropdown(
                choices=[(label, key) for key, (label, _) in KIND_GROUPS.items()],
                label="Kind",
                value="all",
                container=False,
                elem_id="f-kind",
                scale=2,
            )
            folder = gr.Dropdown(
                choices=folder_choices(),
                value=ANYWHERE,
                allow_custom_value=True,
                label="Folder",
                container=False,
                elem_id="f-folder",
                scale=3,
            )
            when = gr.Dropdown(
                choices=WHEN_LABELS,
                value="any",
                label="Modified",
                container=False,
                elem_id="f-when",
                scale=1,
                min_width=150,
            )
            rerank = gr.Checkbox(
                value=bool(service.options.rerank),
                label="Rerank",
                container=False,
                elem_id="f-rerank",
                scale=0,
                min_width=96,
            )
        results = gr.HTML(render_welcome(service.status()), elem_id="results", js_on_load=LIKE_JS)
        status = gr.HTML(render_status(service.status()), elem_id="status", js_on_load=None)
        go = gr.Button("search", elem_id="go", visible="hidden")
        timer = gr.Timer(STATUS_EVERY_S)

        inputs = [q, img, kind, folder, when, like, rerank, undated]
        common: dict[str, Any] = {"show_progress": "hidden", "trigger_mode": "always_last"}
        for trigger in (
            go.click,
            q.submit,
            img.change,
            kind.change,
            folder.change,
            when.change,
            rerank.change,
        ):
            trigger(search, inputs, [results, like, ticket], **common).then(
                rerank_step, [*inputs, ticket], results, show_progress="hidden"
            )
        results.click(
            on_click, [kind, folder, when, q, img], [q, img, like, results, ticket, undated], **common
        )
        timer.tick(lambda: render_status(service.status()), None, status, show_progress="hidden")
        blocks.load(lambda: gr.update(choices=folder_choices()), None, folder, show_progress="hidden")
    return blocks


def mount(app: Any, service: WindowService) -> Any:
    """Mount the window at / on the FastAPI app (no share link, no server-side rendering)."""
    return gr.mount_gradio_app(
        app,
        build(service),
        path="",
        ssr_mode=False,
        theme=theme(),
        css=CSS,
        head=HEAD_JS,
        footer_links=[],
        show_error=False,
        pwa=False,
        mcp_server=False,
        enable_monitoring=False,
    )
