"""Reranking search hits: the reranker judges (query, best piece) pairs and reorders the top hits.

Each hit keeps both scores: `scores["retrieval"]` (the fused search score it had) and
`scores["rerank"]` (the reranker's P(yes)); its `score` becomes the rerank score.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from launcher.records import Hit
from launcher.rerank import Reranker, RerankInput
from launcher.store import Store

DEFAULT_RERANK_TOP = 10
IMAGE_KINDS = {"image"}


def candidate_for(store: Store, hit: Hit) -> RerankInput:
    """What the reranker sees for a hit: the file name and its best piece's text, or the image."""
    name = os.path.basename(hit.path)
    piece = None
    try:
        piece = store.piece(hit.piece_id)
    except KeyError:
        piece = None
    text = piece.text if piece is not None and piece.text else hit.snippet
    if hit.kind in IMAGE_KINDS and Path(hit.path).is_file():
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
    order = reranker.rerank(query, [candidate_for(store, h) for h in head])
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
