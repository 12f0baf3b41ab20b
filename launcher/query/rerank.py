"""Reranking search hits: the reranker judges (query, best piece) pairs and reorders the top hits.

Each hit keeps both scores: `scores["retrieval"]` (the fused search score it had) and
`scores["rerank"]` (the reranker's P(yes)); its `score` becomes the rerank score.

`ResidentReranker` is the long-running process's reranker (`launcher launch`): loaded on first use
and kept, one lock around it, and every failure turned into a message beside unreranked hits, so
that asking for reranking never breaks a search.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from launcher.core import config
from launcher.core.errors import LauncherError, ModelError
from launcher.core.records import Hit
from launcher.index.store import Store
from launcher.models.rerank import Reranker, RerankInput, load_reranker, resolve_reranker
from launcher.query.dates import Parsed

log = logging.getLogger("launcher.reranking")

DEFAULT_RERANK_TOP: int = config.SETTINGS["rerank_top"].default
IMAGE_KINDS = {"image"}


def candidate_for(store: Store, hit: Hit, images: bool = True) -> RerankInput:
    """What the reranker sees for a hit: the file name and its best piece's text, or the image.

    A reranker without its mmproj (images=False) judges a picture by its name and snippet.
    """
    name = os.path.basename(hit.path)
    piece = None
    try:
        piece = store.piece(hit.piece_id)
    except KeyError:
        piece = None
    text = piece.text if piece is not None and piece.text else hit.snippet
    if images and hit.kind in IMAGE_KINDS and Path(hit.path).is_file():
        return RerankInput(texts=[name], images=[hit.path])
    return RerankInput(texts=[f"{name}\n{text}" if text else name])


def rerank_hits(
    store: Store,
    reranker: Reranker,
    query_text: str,
    query_image: str | Path | None,
    hits: list[Hit],
    top_n: int = DEFAULT_RERANK_TOP,
) -> list[Hit]:
    """The first `top_n` hits reordered by the reranker, followed by the rest unchanged."""
    head, tail = hits[:top_n], hits[top_n:]
    if not head:
        return hits
    query = RerankInput(
        texts=[query_text] if query_text.strip() else [],
        images=[str(query_image)] if query_image is not None else [],
    )
    candidates = [candidate_for(store, h, images=reranker.supports_images) for h in head]
    order = reranker.rerank(query, candidates)
    out: list[Hit] = []
    for i, score in order:
        h = head[i]
        scores = dict(h.scores)
        scores["retrieval"] = float(h.score)
        scores["rerank"] = float(score)
        out.append(replace(h, score=float(score), scores=scores))
    for h in tail:
        out.append(replace(h, scores={**h.scores, "retrieval": float(h.score)}))
    return out


@dataclass
class RerankedHits:
    """Hits as a front end shows them: reordered when `reranked`, else as retrieved.

    `rerank_error` says in one line why reranking was asked for and not done (no model, a broken
    model file, a reranker that cannot read the query's image...).
    """

    hits: list[Hit]
    reranked: bool = False
    rerank_error: str | None = None
    parsed: Parsed | None = None  # how the query's text was read (launcher.query.dates); None: not said


def _file_key(path: Path, mmproj: Path | None) -> tuple[Any, ...]:
    """What a loaded reranker depends on: the files and their size and time (a re-pull reloads)."""

    def stamp(p: Path | None) -> tuple[Any, ...]:
        if p is None:
            return (None,)
        try:
            st = p.stat()
        except OSError:
            return (str(p), None)
        return (str(p.resolve()), st.st_size, st.st_mtime_ns)

    return stamp(path) + stamp(mmproj)


class ResidentReranker:
    """One reranker for a long-running process: found and loaded on first use, kept, one lock.

    `choice` gives the `reranker` setting (a catalogue name, a path, or None for the pulled one); it
    is asked again at each use, so a model pulled or configured while the process runs is found at
    the next reranked search without a restart. A file that failed to load is not retried until it
    changes on disk.
    """

    def __init__(self, choice: Callable[[], str | None], options: Any = None):
        self._choice = choice
        self._options = options
        self._lock = threading.Lock()
        self._reranker: Reranker | None = None
        self._key: tuple[Any, ...] | None = None
        self._failed: tuple[tuple[Any, ...], str] | None = None
        self.loads = 0
        self.reranks = 0  # searches reranked
        self.last_error: str | None = None

    @property
    def loaded(self) -> str | None:
        """The loaded reranker's file, if one is loaded."""
        rr = self._reranker
        return str(getattr(rr, "model_path", None) or getattr(rr, "name", "")) if rr is not None else None

    def _get(self, path: Path, mmproj: Path | None) -> Reranker:
        """The reranker for these files (called under the lock): the kept one, or a fresh load."""
        key = _file_key(path, mmproj)
        if self._reranker is not None and key == self._key:
            return self._reranker
        if self._failed is not None and self._failed[0] == key:
            raise ModelError(self._failed[1])
        self.close_model()
        try:
            reranker = load_reranker(path, mmproj, options=self._options)
        except LauncherError as exc:
            self._failed = (key, str(exc))
            raise
        self._reranker, self._key, self._failed = reranker, key, None
        self.loads += 1
        return reranker

    def rerank(
        self,
        store: Store,
        query_text: str,
        query_image: str | Path | None,
        hits: list[Hit],
        top_n: int = DEFAULT_RERANK_TOP,
        *,
        only_file: str | Path | None = None,
        still_wanted: Callable[[], bool] | None = None,
    ) -> RerankedHits:
        """The hits reranked, or unchanged with the reason; never raises for a reranker problem.

        `only_file`: rerank only if the reranker in use is this model file (the CLI asks for the one
        its own settings name). `still_wanted`: checked once the lock is held, so that a request
        superseded while it waited costs nothing.
        """
        if not hits:
            return RerankedHits(hits)
        with self._lock:
            if still_wanted is not None and not still_wanted():
                return RerankedHits(hits)
            try:
                path, mmproj = resolve_reranker(self._choice())
                if only_file is not None and Path(only_file).expanduser().resolve() != path.resolve():
                    return RerankedHits(
                        hits, rerank_error=f"this launcher reranks with {path}, not {only_file}"
                    )
                reranker = self._get(path, mmproj)
                out = rerank_hits(store, reranker, query_text, query_image, hits, top_n)
                self.reranks += 1
            except LauncherError as exc:
                return self._failure(hits, str(exc))
            except Exception as exc:  # a reranker bug must not take search down with it
                log.exception("reranking failed")
                return self._failure(hits, f"reranking failed: {type(exc).__name__}: {exc}".splitlines()[0])
        self.last_error = None
        return RerankedHits(out, reranked=True)

    def _failure(self, hits: list[Hit], message: str) -> RerankedHits:
        self.last_error = message
        return RerankedHits(hits, rerank_error=message)

    def close_model(self) -> None:
        """Free the loaded reranker (the next use loads it again)."""
        if self._reranker is not None:
            self._reranker.close()
        self._reranker, self._key = None, None

    def close(self) -> None:
        """Free the reranker; waits for a rerank in progress."""
        with self._lock:
            self.close_model()
