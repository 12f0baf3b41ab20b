"""Stage 9, the search window: a Gradio page, keyboard-first, a thin shell over LauncherService.

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
from typing import TYPE_CHECKING, Any

import gradio as gr

from launcher.desktop import WINDOW_TITLE, display_path
from launcher.errors import InputError, LauncherError
from launcher.records import Hit
from launcher.searcher import Query
from launcher.when import Parsed
from launcher.when import now as clock

if TYPE_CHECKING:
    from launcher.serve import LauncherService

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
    """The words of a query worth highlighting (not "the", "for"...)."""
    return sorted({w for w in re.findall(r"\w+", text.lower()) if len(w) >= 3 and w not in STOPWORDS})


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
    service: LauncherService,
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

LIKE_JS = """
element.addEventListener('click', (e) => {
  const b = e.target.closest('[data-act="like"], [data-act="unlike"], [data-act="undate"]');
  if (!b) return;
  e.preventDefault(); e.stopPropagation();
  const hit = b.closest('.hit');
  if (b.dataset.act === 'like' && hit) trigger('click', {like: hit.dataset.piece, name: hit.dataset.name});
  else if (b.dataset.act === 'undate') trigger('click', {undate: b.dataset.expr});
  else trigger('click', {unlike: true});
});
"""

HEAD_JS = """<script>
(() => {
  const DEBOUNCE = DEBOUNCE_MS;
  const $ = (s) => document.querySelector(s);
  const query = () => $('#q textarea, #q input');
  const hits = () => Array.from(document.querySelectorAll('#results .hit'));
  const current = () => Math.max(0, hits().findIndex((h) => h.classList.contains('sel')));
  function select(i) {
    const hs = hits();
    if (!hs.length) return;
    i = Math.max(0, Math.min(i, hs.length - 1));
    hs.forEach((h, j) => h.classList.toggle('sel', j === i));
    hs[i].scrollIntoView({block: 'nearest'});
  }
  function toast(text, bad) {
    let t = $('#toast');
    if (!t) { t = document.createElement('div'); t.id = 'toast'; t.setAttribute('role', 'status'); document.body.appendChild(t); }
    t.textContent = text;
    t.className = bad ? 'show bad' : 'show';
    clearTimeout(t._h); t._h = setTimeout(() => { t.className = ''; }, 2600);
  }
  async function copyText(text) {
    try { await navigator.clipboard.writeText(text); return; } catch (e) {}
    const ta = document.createElement('textarea');
    ta.value = text; document.body.appendChild(ta); ta.select();
    document.execCommand('copy'); ta.remove(); query() && query().focus();
  }
  async function act(action, hit) {
    hit = hit || hits()[current()];
    if (!hit) return;
    let r, data = {};
    try {
      r = await fetch('/api/open', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                    body: JSON.stringify({file_id: hit.dataset.file, action})});
      data = await r.json();
    } catch (e) { toast('the launcher is not answering', true); return; }
    if (!r.ok) { toast(data.error || ('error ' + r.status), true); return; }
    if (action === 'copy') { await copyText(data.path); toast('Copied ' + data.path); }
    else toast((action === 'open' ? 'Opening ' : 'Showing in folder: ') + data.name);
  }
  window.launcherAct = act;
  let timer = null;
  document.addEventListener('input', (e) => {
    if (!e.target.closest || !e.target.closest('#q')) return;
    clearTimeout(timer);
    timer = setTimeout(() => { const go = $('#go'); go && go.click(); }, DEBOUNCE);
  }, true);
  const inFilters = (el) => el && el.closest && el.closest('#filters');
  document.addEventListener('keydown', (e) => {
    const k = e.key;
    if ((k === 'ArrowDown' || k === 'ArrowUp') && !inFilters(e.target)) {
      if (!hits().length) return;
      e.preventDefault();
      select(current() + (k === 'ArrowDown' ? 1 : -1));
    } else if (k === 'Enter' && !e.isComposing && !inFilters(e.target)) {
      if (!hits().length) return;
      e.preventDefault(); e.stopPropagation();
      act(e.ctrlKey || e.metaKey ? 'reveal' : e.altKey ? 'copy' : 'open');
    } else if ((e.ctrlKey || e.metaKey) && e.shiftKey && (k === 'C' || k === 'c')) {
      e.preventDefault(); act('copy');
    } else if (e.altKey && !e.ctrlKey && (k === 'r' || k === 'R' || e.code === 'KeyR')) {
      e.preventDefault();
      const c = $('#f-rerank input'); c && c.click();
    } else if ((e.ctrlKey || e.metaKey) && (k === 'm' || k === 'M')) {
      e.preventDefault();
      const b = hits()[current()] && hits()[current()].querySelector('[data-act="like"]');
      b && b.click();
    } else if (k === 'Escape') {
      const q = query();
      if (q && q.value) {
        e.preventDefault();
        q.value = ''; q.dispatchEvent(new Event('input', {bubbles: true}));
      } else {
        window.close();
      }
    } else if (k === '/' && document.activeElement && !['TEXTAREA', 'INPUT'].includes(document.activeElement.tagName)) {
      e.preventDefault(); query() && query().focus();
    }
  }, true);
  document.addEventListener('click', (e) => {
    const w = e.target.closest('[data-watch]');
    if (w) {
      fetch('/api/watch', {method: 'POST', headers: {'Content-Type': 'application/json'},
                           body: JSON.stringify({paused: w.dataset.watch === 'pause'})});
      return;
    }
    const b = e.target.closest('#results [data-act]');
    if (b) { e.preventDefault(); act(b.dataset.act, b.closest('.hit')); return; }
    const h = e.target.closest('#results .hit');
    if (h) select(hits().indexOf(h));
  });
  document.addEventListener('dblclick', (e) => {
    const h = e.target.closest('#results .hit');
    if (h && !e.target.closest('button')) act('open', h);
  });
  function setImage(file) {
    const put = () => {
      const input = $('#img input[type=file]');
      if (!input) return false;
      const dt = new DataTransfer(); dt.items.add(file);
      input.files = dt.files;
      input.dispatchEvent(new Event('change', {bubbles: true}));
      return true;
    };
    if (put()) return;
    const clear = document.querySelector('#img button[aria-label="Clear"], #img button[title="Clear"]');
    clear && clear.click();
    setTimeout(put, 150);
  }
  const imageOf = (list) => Array.from(list || []).find((f) => f.type && f.type.startsWith('image/'));
  document.addEventListener('paste', (e) => {
    const f = imageOf(e.clipboardData && e.clipboardData.files);
    if (!f) return;
    e.preventDefault(); setImage(f);
  });
  document.addEventListener('dragover', (e) => { if (!e.target.closest('#img')) e.preventDefault(); });
  document.addEventListener('drop', (e) => {
    if (e.target.closest('#img')) return;
    const f = imageOf(e.dataTransfer && e.dataTransfer.files);
    if (!f) return;
    e.preventDefault(); setImage(f);
  });
  function focusQuery() {
    window.focus();
    const q = query();
    if (q) { q.focus(); q.select(); }
    document.body.classList.remove('flash'); void document.body.offsetWidth; document.body.classList.add('flash');
  }
  function listen() {
    const es = new EventSource('/api/events');
    es.onopen = () => { document.documentElement.dataset.live = '1'; };
    es.addEventListener('focus', focusQuery);
    es.onerror = () => {
      if (es.readyState === 2) {
        document.body.classList.add('gone');
        toast('The launcher stopped. Start it again and press the hotkey.', true);
      }
    };
  }
  listen();  // the process counts this window as open while the stream lasts
  window.addEventListener('load', () => {
    const wait = setInterval(() => { const q = query(); if (q) { clearInterval(wait); q.focus(); } }, 50);
  });
})();
</script>""".replace("DEBOUNCE_MS", str(DEBOUNCE_MS))

CSS = """
footer, .footer { display: none !important; }
html { overflow-y: scroll; }
.gradio-container { width: 100% !important; max-width: 820px !important; margin: 0 auto !important; padding: 14px 16px 56px !important; }
.gradio-container .main, .gradio-container .wrap { gap: 10px; }
#bar { gap: 10px; align-items: stretch; flex-wrap: nowrap; }
#q { flex-grow: 1; }
#q textarea, #q input {
  font-size: 19px !important; padding: 13px 14px 13px 44px !important; border-radius: 12px !important;
  background-color: var(--input-background-fill);
  background-image: url("data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='20' height='20' viewBox='0 0 24 24' fill='none' stroke='%238b93a7' stroke-width='2.2' stroke-linecap='round'%3E%3Ccircle cx='11' cy='11' r='7'/%3E%3Cpath d='m20 20-3.5-3.5'/%3E%3C/svg%3E");
  background-repeat: no-repeat; background-position: 14px center;
  box-shadow: 0 1px 2px rgba(16, 24, 40, .06), 0 0 0 1px var(--border-color-primary) !important; border: none !important;
}
#q textarea:focus, #q input:focus { box-shadow: 0 0 0 2px var(--color-accent) !important; }
#img { max-width: 118px !important; min-width: 118px !important; border-radius: 12px !important; overflow: hidden; }
#img .upload-container, #img .image-container { min-height: 0 !important; }
#img > div { height: 54px !important; }
#img .wrap { font-size: 11px !important; line-height: 1.2; padding: 4px !important; gap: 0 !important; }
#img .icon-wrap { width: 16px !important; height: 16px !important; margin-bottom: 2px !important; }
#img .or, #img .wrap > span:not(:first-child) { display: none !important; }
#img .source-selection { display: none !important; }
#img .image-container { position: relative; height: 100% !important; }
#img .upload-container.reduced-height, #img .image-frame { position: absolute !important; inset: 0;
  width: 100% !important; height: 100% !important; }
#img .image-frame img { width: 100% !important; height: 100% !important; object-fit: cover !important; }
#img .icon-button-wrapper { z-index: 2; }
#filters { gap: 8px; flex-wrap: nowrap; }
#filters > div { min-width: 0 !important; }
#filters > #f-when { flex: 0 0 150px !important; }
#filters > #f-rerank { flex: 0 0 auto !important; width: auto !important; align-self: stretch; display: flex;
  align-items: center; padding: 0 12px !important; background: var(--input-background-fill);
  border: 1px solid var(--border-color-primary) !important; border-radius: var(--radius-md); }
#f-rerank label { gap: 8px; white-space: nowrap; cursor: pointer; }
#f-rerank .label-text { font-size: 13px !important; }
#filters .wrap, #filters input { font-size: 13px !important; }
#filters label > span, #filters .block-title { font-size: 11px !important; }
#go { display: none !important; }
.results { font-size: 14px; }
.rhead { display: flex; gap: 10px; align-items: center; color: var(--body-text-color-subdued); font-size: 12px; margin: 2px 4px 6px; min-height: 24px; }
.rhead .count { font-weight: 600; }
.chip { display: inline-flex; gap: 6px; align-items: center; background: var(--color-accent-soft); color: var(--body-text-color);
  border-radius: 999px; padding: 2px 4px 2px 10px; font-size: 12px; }
.chip.plain { padding: 2px 10px; }
.chip.when { background: rgba(48, 164, 108, .16); }
.chip button { border: none; background: transparent; cursor: pointer; font-size: 15px; line-height: 1; padding: 0 6px; color: inherit; }
.note { margin: 0 4px 8px; padding: 6px 10px; border-radius: 8px; font-size: 12.5px; color: var(--body-text-color);
  background: rgba(245, 165, 36, .14); border: 1px solid rgba(245, 165, 36, .35); }
.note code { font-size: 12px; white-space: nowrap; }
.list { display: flex; flex-direction: column; gap: 2px; }
.hit { display: grid; grid-template-columns: 52px minmax(0, 1fr) auto; gap: 12px; align-items: center; padding: 8px 10px;
  border-radius: 10px; cursor: default; border-left: 3px solid transparent; }
.hit:hover { background: var(--background-fill-secondary); }
.hit.sel { background: var(--color-accent-soft); border-left-color: var(--color-accent); }
.thumb { width: 52px; height: 52px; border-radius: 8px; overflow: hidden; display: grid; place-items: center;
  background: var(--background-fill-secondary); }
.thumb img { width: 100%; height: 100%; object-fit: cover; margin: 0 !important; }
.badge { font: 700 11px/1 ui-monospace, SFMono-Regular, Menlo, monospace; letter-spacing: .04em; color: #fff;
  width: 40px; height: 48px; border-radius: 6px; display: grid; place-items: end center; padding-bottom: 8px;
  background: #7c8599; box-shadow: inset 0 10px 0 rgba(255,255,255,.18); }
.badge.k-pdf { background: #e5484d; } .badge.k-text { background: #6e7891; } .badge.k-markdown { background: #3e63dd; }
.badge.k-code { background: #12a594; } .badge.k-html { background: #f76b15; } .badge.k-office { background: #2b6cb0; }
.badge.k-video { background: #8e4ec6; } .badge.k-ebook { background: #ad7f58; } .badge.k-image { background: #30a46c; }
.body { min-width: 0; }
.name { display: flex; gap: 8px; align-items: baseline; min-width: 0; }
.fname { font-weight: 600; font-size: 15px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; color: var(--body-text-color); }
.where { flex: none; font-size: 11px; color: var(--color-accent); background: var(--color-accent-soft); border-radius: 5px; padding: 1px 6px; }
.path { font-size: 12px; color: var(--body-text-color-subdued); white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.snip { font-size: 12.5px; color: var(--body-text-color-subdued); margin-top: 2px; display: -webkit-box; -webkit-line-clamp: 2;
  -webkit-box-orient: vertical; overflow: hidden; }
.snip mark { background: rgba(255, 208, 0, .35); color: inherit; border-radius: 2px; padding: 0 1px; }
.side { display: flex; flex-direction: column; align-items: flex-end; gap: 3px; min-width: 84px; }
.score { font: 600 12px/1 ui-monospace, SFMono-Regular, Menlo, monospace; color: var(--body-text-color-subdued); white-space: nowrap; }
.score.rr { font-size: 11px; }
.kind { font-size: 11px; color: var(--body-text-color-subdued); }
.acts { display: none; gap: 4px; }
.hit.sel .acts, .hit:hover .acts { display: flex; }
.hit.sel .kind, .hit:hover .kind { display: none; }
.acts button { font-size: 11px; border: 1px solid var(--border-color-primary); background: var(--background-fill-primary);
  color: var(--body-text-color); border-radius: 6px; padding: 2px 7px; cursor: pointer; }
.acts button:hover { border-color: var(--color-accent); }
.empty, .msg { padding: 28px 12px; text-align: center; color: var(--body-text-color-subdued); }
.msg { color: var(--error-text-color, #c0392b); }
.welcome { padding: 26px 18px; color: var(--body-text-color-subdued); text-align: center; }
.welcome p { margin: 4px 0; }
.welcome b { color: var(--body-text-color); }
.welcome code { white-space: nowrap; font-size: 12px; }
.keys { list-style: none; padding: 0; margin: 18px auto 0; display: grid; grid-template-columns: repeat(3, auto); gap: 10px 22px; justify-content: center; }
.keys li { display: flex; gap: 8px; align-items: center; font-size: 12.5px; }
kbd { font: 600 11px/1 ui-monospace, SFMono-Regular, Menlo, monospace; border: 1px solid var(--border-color-primary); border-bottom-width: 2px;
  border-radius: 5px; padding: 3px 6px; background: var(--background-fill-primary); color: var(--body-text-color); margin-right: 2px; }
#status { position: fixed; left: 0; right: 0; bottom: 0; z-index: 10; background: var(--background-fill-primary);
  border-top: 1px solid var(--border-color-primary); }
.status { max-width: 820px; margin: 0 auto; padding: 7px 18px; display: flex; gap: 10px; align-items: center; font-size: 12px; color: var(--body-text-color-subdued); }
.status .st { flex: 1; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.status .dot { width: 8px; height: 8px; border-radius: 50%; background: #30a46c; flex: none; }
.status .dot.busy { background: #f5a524; } .status .dot.bad { background: #e5484d; }
.status .keys-hint { display: flex; gap: 12px; flex: none; }
.status .keys-hint .k { display: inline-flex; gap: 5px; align-items: center; }
.status .keys-hint kbd { font-size: 10px; padding: 2px 5px; }
.status .hot kbd { font-size: 10px; padding: 2px 5px; }
.status .link { border: none; background: none; color: var(--color-accent); cursor: pointer; font-size: 12px; padding: 0; }
#toast { position: fixed; left: 50%; bottom: 44px; transform: translate(-50%, 20px); opacity: 0; transition: all .18s ease;
  background: #1f2430; color: #fff; padding: 8px 14px; border-radius: 8px; font-size: 13px; pointer-events: none; z-index: 20;
  max-width: 90vw; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
#toast.show { opacity: .96; transform: translate(-50%, 0); }
#toast.bad { background: #b42318; }
body.flash #q textarea, body.flash #q input { animation: flash .5s ease; }
@keyframes flash { from { box-shadow: 0 0 0 4px var(--color-accent); } }
body.gone .gradio-container { opacity: .5; }
"""


def theme() -> Any:
    """System fonts only: the page never fetches anything from the internet."""
    return gr.themes.Base(
        primary_hue="indigo",
        neutral_hue="slate",
        radius_size="md",
        font=["system-ui", "-apple-system", "Segoe UI", "Roboto", "Ubuntu", "Cantarell", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "DejaVu Sans Mono", "monospace"],
    )


def build(service: LauncherService) -> Any:
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


def mount(app: Any, service: LauncherService) -> Any:
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
