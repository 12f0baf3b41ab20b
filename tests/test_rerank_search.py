"""Reranking real search hits with the real (tiny, random-weight) GGUF reranker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher.ingest.pipeline import Indexer, IndexOptions
from launcher.models.embed import load_embedder
from launcher.models.rerank import load_reranker
from launcher.query.rerank import rerank_hits
from launcher.query.session import Query, Searcher
from tests.conftest import FIXTURES, MINILM, _options

RERANKER = FIXTURES / "tiny-reranker" / "tiny-qwen3vl-reranker-f16.gguf"
RERANKER_MMPROJ = FIXTURES / "tiny-reranker" / "mmproj-tiny-qwen3vl-reranker-f16.gguf"


@pytest.fixture(scope="module")
def searcher(tmp_path_factory: pytest.TempPathFactory) -> Searcher:
    root = tmp_path_factory.mktemp("rr")
    docs = root / "docs"
    docs.mkdir()
    for i, text in enumerate(
        [
            "passport renewal form",
            "renew your passport at the consulate",
            "passport photo sizes",
            "cake recipe",
        ]
    ):
        (docs / f"d{i}.txt").write_text(text + "\n", encoding="utf-8")
    with load_embedder(MINILM, None, _options()) as emb:
        Indexer(root / "index", emb, IndexOptions()).run([docs])
    return Searcher(root / "index", model=str(MINILM), engine_options=_options())


def test_rerank_reorders_by_reranker_scores_and_keeps_both(searcher: Searcher) -> None:
    hits = searcher.search(Query(text="passport", top_k=10, min_score=-1))
    assert len(hits) == 4
    with load_reranker(RERANKER, RERANKER_MMPROJ, "gguf", options=_options()) as rr:
        reranked = rerank_hits(searcher.store, rr, "passport", None, hits, top_n=3)
        direct = rr.rerank(
            "passport", [f"{Path(h.path).name}\n{searcher.store.piece(h.piece_id).text}" for h in hits[:3]]
        )
    assert len(reranked) == 4
    head = reranked[:3]
    assert [h.scores["rerank"] for h in head] == sorted((h.scores["rerank"] for h in head), reverse=True)
    assert {h.path for h in head} == {h.path for h in hits[:3]}
    assert reranked[3].path == hits[3].path and "rerank" not in reranked[3].scores
    by_path = {h.path: h for h in hits}
    for h in head:
        assert h.score == h.scores["rerank"]
        assert h.scores["retrieval"] == pytest.approx(by_path[h.path].score)
    # The scores are the reranker's own, pair by pair.
    assert sorted(s for _, s in direct) == pytest.approx(sorted(h.scores["rerank"] for h in head), abs=1e-6)


def test_cli_search_rerank_shows_both_scores(tmp_path: Path) -> None:
    from tests.test_index_cli import cli, index_json, ok

    docs = tmp_path / "docs"
    docs.mkdir()
    for i, text in enumerate(["passport renewal form", "renew a passport abroad", "cake recipe"]):
        (docs / f"d{i}.txt").write_text(text + "\n", encoding="utf-8")
    home = tmp_path / "home"
    index_json(home, str(docs), "--model", str(MINILM))
    proc = ok(
        cli(
            home, "search", "passport", "--rerank", "--reranker", str(RERANKER), "--rerank-top", "2", "--json"
        )
    )
    hits = json.loads(proc.stdout)["hits"]
    assert len(hits) >= 2
    head = hits[:2]
    assert all({"rerank", "retrieval"} <= set(h["scores"]) for h in head)
    assert head[0]["scores"]["rerank"] >= head[1]["scores"]["rerank"]
    assert all(h["score"] == h["scores"]["rerank"] for h in head)
    text = ok(cli(home, "search", "passport", "--rerank", "--reranker", str(RERANKER))).stdout
    assert "(retrieval " in text
    # No reranker model: one clear line, and plain search still works.
    proc = cli(home, "search", "passport", "--rerank")
    assert (
        proc.returncode == 3 and "no reranker model" in proc.stderr and proc.stderr.strip().count("\n") == 0
    )
    ok(cli(home, "search", "passport"))
