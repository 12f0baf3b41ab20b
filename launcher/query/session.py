"""Answering queries: open the index, load the model that built it (once), embed the query, search.

Shared by the CLI, the resident process and the window, so every front end searches the same way.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from launcher.core.errors import InputError, LauncherError, ModelError, StoreError
from launcher.core.records import Hit, Locator
from launcher.index.gone import queue_gone
from launcher.index.store import Store
from launcher.models.catalogue import ResolvedModel, resolve_index_model
from launcher.models.embed import QUERY_INSTRUCTION, Embedder, EmbedInput, load_embedder
from launcher.query.dates import Parsed, narrowed, parse, unparsed

log = logging.getLogger("launcher.searcher")

# How much a weak time expression ("tax form from 2023", "last summer") lifts the files in its
# range: score = 1 - (1 - score)(1 - DATE_WEIGHT), a noisy-OR like the other signals. Enough to
# put an in-range file ahead of a slightly better out-of-range one (0.60 -> 0.68), not ahead of a
# clearly better one (0.80), and it admits nothing below the score floor.
DATE_WEIGHT = 0.2


@dataclass
class Query:
    """A search request: text, an image, or both, with filters."""

    text: str = ""
    image: str | Path | None = None
    top_k: int = 10
    kinds: list[str] = field(default_factory=list)
    under: str | None = None
    after: datetime | None = None
    before: datetime | None = None
    min_score: float | None = None
    like: str | None = None  # a piece id: "more like this", searched with that piece's stored vector
    dates: bool | None = None  # read time expressions in the text (None: the `dates` setting)


@dataclass
class Answer:
    """The hits for a query, and what was read from its text (launcher.query.dates)."""

    hits: list[Hit]
    parsed: Parsed


def open_store(index_dir: Path) -> Store:
    """The committed index, or a clear error when there is none."""
    if not Store.exists(index_dir):
        raise StoreError(f"no index at {index_dir}: run `launcher index PATH` first (or pass --index-dir)")
    return Store.open(index_dir)


class Warmer:
    """One background thread that maps the newest snapshot's pages (search.warm): a newer snapshot
    cancels the warming of an older one, so a watcher committing every few seconds never piles up
    threads, each paging in the whole index."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._wanted: Store | None = None
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._warmed: weakref.ref[Store] | None = None  # weak: an old snapshot's maps are let go
        self.completed = 0  # snapshots warmed to the end
        self.cancelled = 0  # snapshots given up for a newer one (or for close())

    def submit(self, store: Store) -> None:
        """Warm this snapshot next, giving up the one being warmed."""
        with self._cond:
            if self._closed:
                return
            self._wanted = store
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="launcher-warm", daemon=True)
                self._thread.start()

    def warmed(self) -> Store | None:
        """The last snapshot warmed to the end, while it is still in use."""
        return self._warmed() if self._warmed is not None else None

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is left to warm; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._busy and self._wanted is None, timeout)

    def close(self) -> None:
        """Stop warming and join the thread."""
        with self._cond:
            self._closed = True
            self._wanted = None
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _stale(self) -> bool:
        return self._closed or self._wanted is not None

    def _run(self) -> None:
        from launcher.query.retrieve import warm

        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._wanted is not None)
                if self._closed:
                    return
                store, self._wanted, self._busy = self._wanted, None, True
            assert store is not None  # the wait ends on a wanted snapshot or on close()
            try:
                done = warm(store, self._stale)
            except Exception:  # a snapshot removed under us: the next search maps what it needs
                log.debug("warming the index failed", exc_info=True)
                done = False
            with self._cond:
                if done:
                    self.completed += 1
                    self._warmed = weakref.ref(store)
                else:
                    self.cancelled += 1
                self._busy = False
                self._cond.notify_all()
            del store


class Searcher:
    """Holds the index snapshot and the query model; safe to call from several threads."""

    def __init__(
        self,
        index_dir: Path,
        *,
        model: str | None = None,
        mmproj: str | None = None,
        engine_options: Any = None,
        query_instruction: str | None = None,
        embedder: Embedder | None = None,
        probe: int | None = None,
    ):
        from launcher.core import config

        self.index_dir = Path(index_dir)
        # Partition lists searched per query (search.DEFAULT_PROBE when unset; 0: exact).
        self.probe = probe if probe is not None else config.resolve("search_probe")
        chosen = config.resolve("min_score")  # a user's setting wins over the model's floor
        self._min_score: float | None = float(chosen) if chosen is not None else None
        self.store = open_store(self.index_dir)
        self.warmer = Warmer()
        self.warm_in_background()
        self._model_arg = model
        self._mmproj_arg = mmproj
        self._engine_options = engine_options
        # The `query_instruction` setting (flag > env > config) replaces the default task line.
        self.query_instruction = query_instruction or config.resolve("query_instruction") or QUERY_INSTRUCTION
        self._embedder: Embedder | None = embedder  # given: shared with a watcher, not owned
        self._owns_embedder = embedder is None
        self.model_loads = 0  # how often this searcher loaded a model (the resident process reports it)
        self._lock = threading.Lock()
        self._closed = False

    def _resolve(self) -> ResolvedModel:
        return resolve_index_model(self.index_dir, self._model_arg, self._mmproj_arg)

    def floor(self, asked: float | None) -> float:
        """The score floor: the query's, else the user's setting, else the index's model's
        (launcher.models.catalogue.min_score_for)."""
        from launcher.models.catalogue import min_score_for

        if asked is not None:
            return asked
        if self._min_score is not None:
            return self._min_score
        ident = self.store.identity
        dims = ident.get("dims")
        return min_score_for(
            str(ident.get("model_file", "")),
            str(ident.get("architecture", "")),
            int(dims) if isinstance(dims, int) else None,
        )

    @property
    def embedder(self) -> Embedder:
        """The model that built the index, loaded on first use and kept."""
        with self._lock:
            if self._closed:  # shutting down: a late query must not load the model again
                raise LauncherError("the searcher is closed")
            if self._embedder is None:
                resolved = self._resolve()
                embedder = load_embedder(resolved.path, resolved.mmproj, self._engine_options)
                want = self.store.identity.get("model_fingerprint")
                have = embedder.identity().get("model_fingerprint")
                if want and have != want:
                    embedder.close()
                    raise ModelError(
                        f"the index at {self.index_dir} was built with {self.store.identity.get('model_file')}, "
                        f"not {resolved.path.name}: pass that model with --model, or re-index"
                    )
                self._embedder = embedder
                self.model_loads += 1
            return self._embedder

    def refresh(self) -> None:
        """Pick up commits made since the snapshot was taken (cheap when nothing changed)."""
        old, self.store = self.store, self.store.refresh()
        if self.store is not old:
            self.warm_in_background()

    def warm_in_background(self) -> None:
        """Map the snapshot's vectors in the background (search.warm), giving up an older one's."""
        self.warmer.submit(self.store)

    def search(self, query: Query) -> list[Hit]:
        """The best files for the query, best first."""
        return self.answer(query).hits

    def parse(self, query: Query) -> Parsed:
        """The query's text with its time expression read out, unless date parsing is off."""
        from launcher.core import config

        on = query.dates if query.dates is not None else config.resolve("dates")
        if not on or query.like is not None:
            return unparsed(query.text)
        return parse(query.text)

    def answer(self, query: Query) -> Answer:
        """The best files for the query, and how its text was read.

        A time expression becomes a filter (strict) or a preference (weak: files in its range are
        lifted by DATE_WEIGHT, the others still shown); a query that is only a time lists that
        range's files, newest first."""
        from launcher.query.retrieve import exact_name_files, newest

        parsed = self.parse(query)
        if query.like is not None:
            return Answer(self._more_like(query), parsed)
        if not query.text.strip() and query.image is None:
            raise InputError("empty query: give text, --image FILE, or both")
        if not parsed.found:
            return Answer(self._search(query, self._vector(query)), parsed)
        rng = narrowed(parsed, query.after, query.before)
        if not parsed.text.strip() and query.image is None:
            self.refresh()
            store = self.store

            def listed(k: int) -> list[Hit]:
                return newest(
                    store,
                    top_k=k,
                    kinds=query.kinds or None,
                    under=query.under,
                    after=rng.after,
                    before=rng.before,
                )

            return Answer(present_hits(self.index_dir, listed, query.top_k), parsed)
        plain = replace(query, text=parsed.text)
        vector = self._vector(plain)
        inside = self._search(replace(plain, after=rng.after, before=rng.before), vector)
        if parsed.strict:
            return Answer(inside, parsed)
        lifted = {
            h.file_id: replace(
                h, score=1.0 - (1.0 - h.score) * (1.0 - DATE_WEIGHT), scores={**h.scores, "date": 1.0}
            )
            for h in inside
        }
        merged = {h.file_id: h for h in self._search(plain, vector)} | lifted
        exact = exact_name_files(self.store, plain.text)  # "tax form 2023" -> tax form 2023.pdf first
        ranked = sorted(merged.values(), key=lambda h: (h.file_id not in exact, -h.score, h.path))
        return Answer(ranked[: query.top_k], parsed)

    def _vector(self, query: Query) -> Any:
        """The query's vector, None when nothing is embedded yet (keyword and name search only)."""
        self.refresh()
        vector = None
        if self.store.stats().embedded > 0 or query.image is not None:
            item = EmbedInput(
                texts=[query.text] if query.text.strip() else [],
                images=[str(query.image)] if query.image is not None else [],
                instruction=self.query_instruction,
            )
            if item.images and not self.embedder.supports_images:
                raise InputError(
                    "image search needs the multimodal model: run `launcher models pull qwen3-vl-embedding-2b` "
                    "and re-index"
                )
            vector = self.embedder.embed_one(item, dims=self.store.dims)
        return vector

    def _search(self, query: Query, vector: Any) -> list[Hit]:
        """The query's best hits whose files are still on disk."""
        if not query.text.strip() and vector is None:
            return []
        store = self.store
        return present_hits(
            self.index_dir, lambda k: self._ranked(store, vector, query.text, query, k), query.top_k
        )

    def _ranked(self, store: Store, vector: Any, text: str, query: Query, k: int) -> list[Hit]:
        """search() on one snapshot with the query's filters, the score floor and the probe."""
        from launcher.query.retrieve import search

        return search(
            store,
            vector,
            text,
            top_k=k,
            kinds=query.kinds or None,
            under=query.under,
            modified_after=query.after,
            modified_before=query.before,
            min_score=self.floor(query.min_score),
            probe=self.probe,
        )

    def _more_like(self, query: Query) -> list[Hit]:
        """Files like one piece, found with its stored vector (no model call); the piece's own file left out."""
        self.refresh()
        store = self.store
        try:
            piece = store.piece(query.like or "")
        except KeyError:
            piece = None
        if piece is None:
            raise InputError(
                f"piece {query.like} is not in the index (it may have been re-indexed): search again"
            )
        try:
            vector = store.vectors_of([piece.piece_id])[0]
        except KeyError:
            raise InputError("that file is not embedded yet: try again when indexing is done") from None

        def top(k: int) -> list[Hit]:
            hits = self._ranked(store, vector, "", query, k + 1)
            return [h for h in hits if h.file_id != piece.file_id][:k]

        return present_hits(self.index_dir, top, query.top_k)

    def close(self) -> None:
        """Free the model (unless it was lent to this searcher); later queries are refused."""
        self.warmer.close()
        with self._lock:
            self._closed = True
            embedder, self._embedder = self._embedder, None
        if embedder is not None and self._owns_embedder:
            embedder.close()  # waits for a query still inside the model


def present_hits(index_dir: Path, top: Callable[[int], list[Hit]], k: int, *, rounds: int = 4) -> list[Hit]:
    """The best k hits whose files are still on disk: `top(n)` gives the best n; a file found gone is
    dropped and queued for removal (launcher.index.store.queue_gone), and more hits are asked for instead."""
    gone: list[str] = []
    want = k
    hits: list[Hit] = []
    for _ in range(rounds):
        found = top(want)
        hits = [h for h in found if h.path not in gone]
        missing = [h.path for h in hits if not os.path.lexists(h.path)]
        gone += missing
        hits = [h for h in hits if h.path not in missing]
        if len(hits) >= k or len(found) < want or not missing:
            break
        want += len(gone)
    if gone:
        log.info("%d hit(s) gone from disk, queued for removal", len(gone))
        try:
            queue_gone(index_dir, gone)
        except OSError as exc:  # a read-only index still answers; the next full scan removes them
            log.warning("cannot queue gone files in %s: %s", index_dir, exc)
    return hits[:k]


def hit_to_json(hit: Hit) -> dict[str, Any]:
    """The `--json` shape of one hit."""
    return {
        "path": hit.path,
        "score": round(float(hit.score), 6),
        "kind": hit.kind,
        "locator": hit.locator.to_dict(),
        "snippet": hit.snippet,
        "scores": {k: round(float(v), 6) for k, v in hit.scores.items()},
        "file_id": hit.file_id,
        # The date the date filters use (a picture's taken time, else the mtime), local, to the second.
        "date": (
            datetime.fromtimestamp(hit.date).astimezone().isoformat(timespec="seconds")
            if hit.date is not None
            else None
        ),
    }


def hit_from_json(data: dict[str, Any]) -> Hit:
    """Inverse of hit_to_json (plus the piece id the resident process adds), for loopback results."""
    return Hit(
        path=data["path"],
        score=float(data["score"]),
        kind=data["kind"],
        locator=Locator.from_dict(data.get("locator")),
        snippet=data.get("snippet") or "",
        file_id=data.get("file_id") or "",
        piece_id=data.get("piece_id") or "",
        scores={k: float(v) for k, v in (data.get("scores") or {}).items()},
        date=datetime.fromisoformat(data["date"]).timestamp() if data.get("date") else None,
    )


__all__ = [
    "Answer",
    "Query",
    "Searcher",
    "hit_from_json",
    "hit_to_json",
    "open_store",
    "present_hits",
    "LauncherError",
]
