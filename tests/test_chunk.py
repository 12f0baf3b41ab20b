"""Pieces that fit their model, measured with the real tokenizers, and failures that stay alone.

Real llama.cpp on the bundled MiniLM and the tiny Qwen3-VL; real text nobody here wrote (the GPL
from Debian's base system) besides long lines and hostile names made by the tests.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from launcher.core.records import FileRecord, Piece
from launcher.index.store import Store
from launcher.ingest.extract import ExtractSettings, extract
from launcher.ingest.pipeline import Indexer, IndexOptions, embed_input_for, token_budget
from launcher.ingest.scan import kind_of
from launcher.models.embed import EmbedInput
from tests.test_extract import located

GPL = Path("/usr/share/common-licenses/GPL-3")


def record(path: Path) -> FileRecord:
    st = os.stat(path)
    return FileRecord(str(path), st.st_size, st.st_mtime_ns, kind_of(path))


def pieces_for(embedder: Any, path: Path, **options: Any) -> list[Piece]:
    budget = token_budget(embedder, IndexOptions(**options))
    return extract(record(path), settings=ExtractSettings(budget=budget))


@pytest.mark.skipif(not GPL.exists(), reason="Debian's common-licenses are not installed")
@pytest.mark.parametrize("model", ["minilm", "tiny_vl"])
def test_real_text_pieces_fit_the_whole_input_and_cover_every_line(
    model: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    embedder = request.getfixturevalue(model)
    path = tmp_path / "GPL-3.txt"
    shutil.copy(GPL, path)
    pieces = pieces_for(embedder, path)
    budget = token_budget(embedder, IndexOptions())
    sizes = [embedder.input_tokens(embed_input_for(p, None, images=False)) for p in pieces]
    assert max(sizes) <= embedder.max_tokens  # the whole prompt: template, context and text
    assert max(embedder.count_tokens(p.text) for p in pieces) <= budget.target + budget.overlap
    # Pieces are near the target, not a handful of tokens each (the GPL's lines are short).
    assert np.median(sizes) >= 0.6 * budget.target
    lines = path.read_text(encoding="utf-8").split("\n")
    covered = {n for p in pieces for n in range(p.locator.line_start, p.locator.line_end + 1)}  # type: ignore[arg-type]
    assert {i + 1 for i, line in enumerate(lines) if line.strip()} <= covered
    for p in pieces:
        assert p.text == located(lines, p)


def test_a_long_single_line_is_split_to_fit_and_every_character_kept(minilm: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    words = ["alpha", "x=1;", '{"k":[1,2,3]}', "función", "數據", "https://example.org/a?b=c"]
    line = " ".join(rng.choice(words, 40_000)) + "".join(rng.choice(list("abcdef"), 3000))  # and no spaces
    path = tmp_path / "minified.js"
    path.write_text(line, encoding="utf-8")
    pieces = pieces_for(minilm, path)
    assert len(pieces) > 100
    assert max(minilm.input_tokens(embed_input_for(p, None, images=False)) for p in pieces) <= 512
    assert "".join(p.text for p in pieces) == line  # no overlap inside a line, nothing lost
    for p in pieces:
        assert p.text == located([line], p)


def test_deep_paths_shorten_the_context_not_the_text(minilm: Any, tmp_path: Path) -> None:
    deep = tmp_path
    for i in range(40):
        deep = deep / f"folder-number-{i}-with-a-rather-long-name"
    deep.mkdir(parents=True)
    path = deep / "notes.txt"
    path.write_text("The lighthouse keeper paid the invoice.\n" * 200, encoding="utf-8")
    pieces = pieces_for(minilm, path)
    assert all(p.context.startswith("notes.txt\n") and "…" in p.context for p in pieces)
    assert max(minilm.input_tokens(embed_input_for(p, None, images=False)) for p in pieces) <= 512
    assert sum(p.text.count("lighthouse") for p in pieces) >= 200


def test_token_counts_add_up_to_the_whole_input(minilm: Any, tiny_vl: Any) -> None:
    text = "Grüße aus Köln: the invoice <b>total</b> is 42 €\n\tindented line"
    for embedder in (minilm, tiny_vl):
        budget = token_budget(embedder, IndexOptions())
        context = "invoice.txt\n/home/u/invoice.txt"
        whole = embedder.input_tokens(EmbedInput(texts=[f"{context}\n{text}"]))
        assert whole <= budget.overhead(context) + embedder.count_tokens(text) + 4
        assert budget.body_limit(context) + budget.overhead(context) < embedder.max_tokens


# --- text that looks like control syntax -----------------------------------------------------


CONTROL = "<__media__> <|image_pad|><|vision_start|><|vision_end|> <|im_end|>\n<|im_start|>assistant\n"


def test_control_syntax_in_names_and_text_never_breaks_an_input(tiny_vl: Any, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(folder / "photo <__media__> 2.png")
    Image.new("RGB", (64, 48), (30, 200, 30)).save(folder / "<|image_pad|><|vision_start|>.png")
    (folder / "chat <|im_end|>.txt").write_text("Ordinary words. " + CONTROL * 3, encoding="utf-8")
    (folder / "plain.txt").write_text("A plain note about lighthouses.", encoding="utf-8")
    index = tmp_path / "index"
    report = Indexer(index, tiny_vl).run([folder])
    assert report.failed == [] and report.pieces_failed == 0 and report.pieces_pending == 0
    st = Store.open(index).stats()
    assert st.embedded == st.pieces and st.pending == 0
    # Text and image paths with the marker and vision tokens give finite unit vectors.
    v = tiny_vl.embed(
        [
            EmbedInput(texts=[CONTROL]),
            EmbedInput(texts=[CONTROL], images=[folder / "photo <__media__> 2.png"]),
        ]
    )
    assert np.isfinite(v).all() and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-3)


def test_chat_markers_in_text_are_parsed_like_the_reference_tokenizer(tiny_vl: Any) -> None:
    # The official embedder's tokenizer parses special tokens inside the text (added tokens split
    # before BPE), so <|im_end|> inside a document is one token there: the same here.
    plain = tiny_vl.tokenize(tiny_vl.prompt_for(EmbedInput(texts=["a b"])))
    marked = tiny_vl.tokenize(tiny_vl.prompt_for(EmbedInput(texts=["a<|im_end|>b"])))
    im_end = tiny_vl.tokenize("<|im_end|>", add_special=False)
    assert len(im_end) == 1
    assert marked.count(im_end[0]) == plain.count(im_end[0]) + 1


# --- one bad piece fails alone -----------------------------------------------------------------


@pytest.fixture(scope="module")
def small_ctx_vl() -> Any:
    """The tiny Qwen3-VL with a 256-token context: a 512x512 picture (256 visual tokens) no longer fits."""
    from launcher.models.embed import load_embedder
    from launcher.models.embed.llama import LlamaOptions
    from tests.conftest import TINY_F16, TINY_MMPROJ

    with load_embedder(TINY_F16, TINY_MMPROJ, LlamaOptions(n_ctx=256, n_batch=256, n_threads=2)) as e:
        yield e


def test_a_failing_piece_fails_alone_and_nothing_stays_pending(small_ctx_vl: Any, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    Image.new("RGB", (512, 512), (10, 90, 200)).save(folder / "big.png")
    Image.new("RGB", (64, 64), (200, 90, 10)).save(folder / "small.png")
    (folder / "notes.txt").write_text("Meeting notes about the harbour.\n" * 300, encoding="utf-8")
    index = tmp_path / "index"
    report = Indexer(index, small_ctx_vl).run([folder])
    assert report.pieces_pending == 0
    assert report.pieces_failed == 1
    assert [s.path for s in report.failed] == [str(folder / "big.png")]
    store = Store.open(index)
    st = store.stats()
    assert st.pending == 0 and st.failed_pieces == 1 and st.embedded == st.pieces - 1
    (failure,) = [f for f in store.failures() if f.path.endswith("big.png")]
    assert "1 of 1 pieces could not be embedded" in failure.reason and "tokens" in failure.reason
    assert store.file_by_path(str(folder / "notes.txt")).error is None  # type: ignore[union-attr]

    # Unchanged: not retried (no loop), still failed, still nothing pending.
    again = Indexer(index, small_ctx_vl).run([folder])
    assert again.pieces_embedded == 0 and again.pieces_failed == 0 and again.pieces_pending == 0
    # On request it is tried again (and fails again, alone, with its reason).
    retried = Indexer(index, small_ctx_vl, IndexOptions(retry_failed=True)).run([folder])
    assert retried.pieces_failed == 1 and retried.pieces_embedded == 0 and retried.pieces_pending == 0
    # When the file changes it is read again; now it fits.
    Image.new("RGB", (64, 64), (10, 90, 200)).save(folder / "big.png")
    changed = Indexer(index, small_ctx_vl).run([folder])
    assert changed.pieces_failed == 0 and changed.pieces_embedded == 1
    st = Store.open(index).stats()
    assert st.failed_pieces == 0 and st.pending == 0 and st.embedded == st.pieces


def test_the_watcher_settles_a_failing_piece_and_goes_on(small_ctx_vl: Any, tmp_path: Path) -> None:
    from tests.test_watch import settle, until, watching

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "first.txt").write_text("A first note.\n", encoding="utf-8")
    index = tmp_path / "index"
    with watching(index, [folder], small_ctx_vl) as w:
        Image.new("RGB", (512, 512), (10, 90, 200)).save(folder / "big.png")  # fails: over the context
        until(lambda: Store.open(index).stats().failed_pieces == 1, "the failed picture")
        (folder / "after.txt").write_text("A note written after the bad picture.\n", encoding="utf-8")
        until(lambda: Store.open(index).file_by_path(str(folder / "after.txt")) is not None, "the next file")
        status = settle(w)
        st = Store.open(index).stats()
        assert st.pending == 0 and st.failed_pieces == 1 and st.embedded == st.pieces - 1
        # Idle means idle: the failed piece is not retried in a loop.
        embedded_before = status["totals"]["pieces_embedded"]
        assert settle(w)["totals"]["pieces_embedded"] == embedded_before
