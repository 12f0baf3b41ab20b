"""The query lane: a second, small llama.cpp context on the same weights, so that a text query
arriving while the main context is busy (the resident process embedding in the background) is
answered at once, with the vector the main context gives. Real llama.cpp on the tiny Qwen3-VL and
the bundled MiniLM; "busy" is the main context's decode lock held, as a background decode holds it."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from launcher.index.store import Store
from launcher.ingest.pipeline import Indexer, IndexOptions, embed_spans
from launcher.models.embed import QUERY_INSTRUCTION, EmbedInput, load_embedder
from launcher.models.runtime import LlamaOptions
from launcher.watch.watcher import Watcher
from tests.conftest import MINILM, TINY_F16, TINY_MMPROJ

QUERY = "where did I put the invoice for the blue bicycle"
LIVENESS_S = 60  # generous: a liveness bound on a shared machine, not a latency measurement


def _opts(**kw: Any) -> LlamaOptions:
    return LlamaOptions(n_threads=min(2, os.cpu_count() or 1), **kw)


@pytest.fixture(params=["tiny-qwen3vl", "minilm"], scope="module")
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Any]]:
    """The same model loaded twice: without a lane, and with a 64-token lane."""
    model, mmproj = (TINY_F16, TINY_MMPROJ) if request.param == "tiny-qwen3vl" else (MINILM, None)
    with (
        load_embedder(model, mmproj, _opts()) as plain,
        load_embedder(model, mmproj, _opts(query_ctx=64)) as laned,
    ):
        yield plain, laned


def _in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def _query(emb: Any, text: str = QUERY) -> np.ndarray:
    return emb.embed([EmbedInput(texts=[text], instruction=QUERY_INSTRUCTION)])


def test_busy_main_context_answers_on_the_lane_with_the_same_vector(pair: tuple[Any, Any]) -> None:
    plain, laned = pair
    assert plain.query_lane_tokens == 0 and laned.query_lane_tokens == 64
    want = _query(plain)
    calls = laned.lane_calls
    with laned._lock:  # the main context is busy, as while the watcher decodes
        t, box = _in_thread(lambda: _query(laned))
        t.join(LIVENESS_S)
        assert not t.is_alive(), "the query waited for the busy main context"
    assert "error" not in box, box.get("error")
    assert laned.lane_calls == calls + 1
    np.testing.assert_allclose(box["value"], want, rtol=0, atol=1e-6)
    # With the main context free, queries use it, as before.
    np.testing.assert_allclose(_query(laned), want, rtol=0, atol=1e-6)
    assert laned.lane_calls == calls + 1


def test_an_input_too_long_for_the_lane_waits_for_the_main_context(pair: tuple[Any, Any]) -> None:
    plain, laned = pair
    long_text = " ".join(f"word{i}" for i in range(120))  # well over the 64-token lane
    want = _query(plain, long_text)
    gate = threading.Event()
    with laned._lock:
        t, box = _in_thread(lambda: (gate.set(), _query(laned, long_text))[1])
        assert gate.wait(LIVENESS_S)
        t.join(0.5)
        assert t.is_alive() and not box, "a query longer than the lane must not be cut to fit it"
    t.join(LIVENESS_S)
    assert not t.is_alive() and "error" not in box
    np.testing.assert_allclose(box["value"], want, rtol=0, atol=1e-6)


def test_pictures_wait_for_the_main_context(tmp_path: Path) -> None:
    """mtmd's vision encoder belongs to the main context: a picture query waits its turn."""
    with load_embedder(TINY_F16, TINY_MMPROJ, _opts(query_ctx=64)) as laned:
        img = Image.new("RGB", (64, 48), (200, 30, 30))
        gate = threading.Event()
        with laned._lock:
            t, box = _in_thread(lambda: (gate.set(), laned.embed([EmbedInput(images=[img])]))[1])
            assert gate.wait(LIVENESS_S)
            t.join(0.5)
            assert t.is_alive() and not box
        t.join(LIVENESS_S)
        assert "error" not in box and box["value"].shape == (1, laned.dims)
        assert laned.lane_calls == 0


def test_queries_beside_a_real_watcher_embedding_pictures(tmp_path: Path) -> None:
    """Two contexts decoding at once on shared weights: the watcher embeds pictures on the main
    context while queries run; every query vector equals the idle one, and the pictures' vectors
    equal those of a process that embedded them alone."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for i in range(24):
        pixels = rng.integers(0, 255, size=(96 + 8 * (i % 5), 128, 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / f"photo-{i:02d}.png")
    queries = [f"{QUERY} number {i}" for i in range(12)]
    with load_embedder(TINY_F16, TINY_MMPROJ, _opts()) as plain:
        want_q = [_query(plain, q) for q in queries]
        Indexer(tmp_path / "alone", plain).run([str(folder)])
    with load_embedder(TINY_F16, TINY_MMPROJ, _opts(query_ctx=64)) as laned:
        watcher = Watcher(tmp_path / "index", [folder], laned, IndexOptions(), embed_unit=1)
        watcher.start()
        try:
            got: list[tuple[int, np.ndarray]] = []
            # Queries one after another, as the window sends them, for as long as pictures embed.
            while not watcher.wait_idle(0) or not got:
                i = len(got) % len(queries)
                with watcher.foreground():
                    got.append((i, _query(laned, queries[i])))
                time.sleep(0.01)  # a person types between queries; the watcher moves on meanwhile
            assert watcher.wait_idle(LIVENESS_S)
        finally:
            watcher.stop()
        assert laned.lane_calls > 0, "no query found the main context busy: nothing ran side by side"
    for i, have in got:
        np.testing.assert_allclose(have, want_q[i], rtol=0, atol=1e-6)
    alone, beside = _vectors(tmp_path / "alone"), _vectors(tmp_path / "index")
    assert set(beside) == set(alone) and len(alone) == 24
    for name, vecs in alone.items():
        np.testing.assert_allclose(beside[name], vecs, rtol=0, atol=1e-6)


def _vectors(index_dir: Path) -> dict[str, np.ndarray]:
    """Each file's piece vectors, by file name."""
    store = Store.open(index_dir)
    return {Path(f.path).name: store.vectors_of(store.pieces_of(f.file_id)) for f in store.files()}


def test_embed_spans_give_each_picture_a_call_of_its_own() -> None:
    alone = [False, False, True, False, False, False, True, True]
    assert list(embed_spans(alone, 2)) == [(0, 2), (2, 3), (3, 5), (5, 6), (6, 7), (7, 8)]
    assert list(embed_spans([False] * 5, 8)) == [(0, 5)]
    assert list(embed_spans([], 8)) == []


def test_the_watcher_embeds_one_page_per_model_call(
    tmp_path: Path, tiny_vl: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A picture query waits for the model call under way: the watcher's calls that hold a picture
    or a PDF page hold nothing else, while text pieces still share calls."""
    from tests.test_extract import make_pdf, scanned_page

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "scans.pdf").write_bytes(make_pdf([scanned_page() for _ in range(5)]))
    long_text = "\n\n".join(f"Paragraph {i} about the garden shed and its roof." * 12 for i in range(40))
    (folder / "notes.txt").write_text(long_text, encoding="utf-8")
    calls: list[tuple[int, int]] = []  # (inputs, of which with images)
    real = tiny_vl.embed

    def counting(inputs: Any, **kw: Any) -> Any:
        calls.append((len(inputs), sum(1 for i in inputs if i.has_images)))
        return real(inputs, **kw)

    monkeypatch.setattr(tiny_vl, "embed", counting)
    watcher = Watcher(tmp_path / "index", [folder], tiny_vl, IndexOptions(), embed_unit=8)
    watcher.start()
    try:
        assert watcher.wait_idle(LIVENESS_S)
    finally:
        watcher.stop()
    with_images = [c for c in calls if c[1]]
    assert len(with_images) >= 5 and all(n == 1 for n, _ in with_images)
    assert any(n > 1 for n, imgs in calls if not imgs), "text pieces no longer share calls"
    stats = Store.open(tmp_path / "index").stats()
    assert stats.pending == 0 and stats.embedded == stats.pieces
