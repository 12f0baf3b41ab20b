"""Answering queries: open the index, load the model that built it (once), embed the query, search.

Shared by the CLI, the resident process and the window, so every front end searches the same way.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from launcher.engine import QUERY_INSTRUCTION, Embedder, EmbedInput, load_embedder
from launcher.errors import InputError, LauncherError, ModelError, StoreError
from launcher.models import ResolvedModel, resolve_model
from launcher.records import Hit, Locator
from launcher.store import Store

log = logging.getLogger("launcher.searcher")

MODEL_HINT = "model.json"  # beside the manifest: which files built this index (informational)


def write_model_hint(index_dir: Path, model: ResolvedModel) -> None:
    """Remember which model files built the index, so search can load the same ones."""
    hint = {
        "name": model.name,
        "model": str(model.path),
        "mmproj": str(model.mmproj) if model.mmproj else None,
    }
    tmp = index_dir / (MODEL_HINT + ".tmp")
    tmp.write_text(json.dumps(hint, indent=2), encoding="utf-8")
    tmp.replace(index_dir / MODEL_HINT)


def read_model_hint(index_dir: Path) -> dict[str, Any] | None:
    """The model files recorded by the last `launcher index`, if any."""
    try:
        return json.loads((index_dir / MODEL_HINT).read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


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


def open_store(index_dir: Path) -> Store:
    """The committed index, or a clear error when there is none."""
    if not Store.exists(index_dir):
        raise StoreError(f"no index at {index_dir}: run `launcher index PATH` first (or pass --index-dir)")
    return Store.open(index_dir)


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
        from launcher import config

        self.index_dir = Path(index_dir)
        # Partition lists searched per query (search.DEFAULT_PROBE when unset; 0: exact).
        self.probe = probe if probe is not None else config.resolve("search_probe")
        chosen = config.resolve("min_score")  # a user's setting wins over the model's floor
        self._min_score: float | None = float(chosen) if chosen is not None else None
        self.store = open_store(self.index_dir)
        self.warm_in_background()
        self._model_arg = model
        self._mmproj_arg = mmproj
        self._engine_options = engine_options
        self.query_instruction = query_instruction or QUERY_INSTRUCTION
        self._embedder: Embedder | None = embedder  # given: shared with a watcher, not owned
        self._owns_embedder = embedder is None
        self.model_loads = 0  # how often this searcher loaded a model (the resident process reports it)
        self._lock = threading.Lock()

    def _resolve(self) -> ResolvedModel:
        if self._model_arg:
            return resolve_model(self._model_arg, self._mmproj_arg)
        hint = read_model_hint(self.index_dir)
        if hint and Path(hint["model"]).is_file():
            return ResolvedModel(
                hint["name"],
                Path(hint["model"]),
                Path(hint["mmproj"]) if hint.get("mmproj") else None,
                bool(hint.get("mmproj")),
            )
        return resolve_model(None, self._mmproj_arg)

    def floor(self, asked: float | None) -> float:
        """The score floor: the query's, else the user's setting, else the index's model's
        (launcher.models.min_score_for)."""
        from launcher.models import min_score_for

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

    def warm_in_background(self) -> threading.Thread:
        """Map the snapshot's vectors in a background thread (search.warm)."""
        from launcher.search import warm

        thread = threading.Thread(target=warm, args=(self.store,), name="launcher-warm", daemon=True)
        thread.start()
        return thread

    def search(self, query: Query) -> list[Hit]:
        """The best files for the query, best first."""
        from launcher.search import search

        if query.like is not None:
            return self._more_like(query)
        if not query.text.strip() and query.image is None:
            raise InputError("empty query: give text, --image FILE, or both")
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
        return search(
            self.store,
            vector,
            query.text,
            top_k=query.top_k,
            kinds=query.kinds or None,
            under=query.under,
            modified_after=query.after,
            modified_before=query.before,
            min_score=self.floor(query.min_score),
            probe=self.probe,
        )

    def _more_like(self, query: Query) -> list[Hit]:
        """Files like one piece, found with its stored vector (no model call); the piece's own file left out."""
        from launcher.search import search

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
        hits = search(
            store,
            vector,
            "",
            top_k=query.top_k + 1,
            kinds=query.kinds or None,
            under=query.under,
            modified_after=query.after,
            modified_before=query.before,
            min_score=self.floor(query.min_score),
            probe=self.probe,
        )
        return [h for h in hits if h.file_id != piece.file_id][: query.top_k]

    def close(self) -> None:
        """Free the model (unless it was lent to this searcher)."""
        if self._embedder is not None and self._owns_embedder:
            self._embedder.close()
        self._embedder = None


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
    )


__all__ = [
    "Query",
    "Searcher",
    "hit_from_json",
    "hit_to_json",
    "open_store",
    "read_model_hint",
    "write_model_hint",
    "LauncherError",
]
