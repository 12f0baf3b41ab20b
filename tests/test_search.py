"""Search over a real index built from real files in tmp_path.

The vectors are SYNTHETIC: hand-made unit vectors with known cosines to the query (no model runs
here), so every expected ranking below follows from arithmetic, not from a model's judgement.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from launcher.core.records import FileRecord, Locator, Piece
from launcher.index.keywords import tokenize
from launcher.index.store import Store
from launcher.query.retrieve import DEFAULT_MIN_SCORE, keyword_weight_for, search, snippet_of

DIMS = 32
IDENTITY = {"model": "synthetic"}
DAY = 86400


def axis(i: int) -> np.ndarray:
    v = np.zeros(DIMS, dtype=np.float32)
    v[i] = 1.0
    return v


def toward(cos: float, other: int) -> np.ndarray:
    """A synthetic unit vector whose cosine with axis(0), the query below, is exactly `cos`."""
    v = np.zeros(DIMS, dtype=np.float32)
    v[0], v[other] = cos, np.sqrt(1.0 - cos * cos)
    return v


QUERY = axis(0)


def build(tmp_path: Path, dtype: str = "float16") -> tuple[Store, Path]:
    """A small tree of real files, indexed with synthetic vectors."""
    docs = tmp_path / "docs"
    corpus: list[tuple[str, str, list[tuple[str, Locator, str, np.ndarray | None]]]] = [
        (
            "report_whales.txt",
            "text",
            [
                (
                    "Blue whales migrate thousands of kilometres each year.",
                    Locator(line_start=1, line_end=9),
                    "text",
                    toward(0.5, 2),
                ),
                (
                    "Whale songs carry across whole ocean basins.",
                    Locator(line_start=10, line_end=20),
                    "text",
                    toward(0.85, 3),
                ),
            ],
        ),
        (
            "budget.txt",
            "text",
            [
                (
                    "Quarterly budget: rent, salaries, coffee.",
                    Locator(line_start=1, line_end=3),
                    "text",
                    toward(0.6, 4),
                )
            ],
        ),
        (
            "tax_form_2023.pdf",
            "pdf",
            [
                ("Form 1040 individual income", Locator(page=1), "text", axis(5)),
                ("Schedule B interest", Locator(page=2), "text", axis(6)),
            ],
        ),
        (
            "zoo/zebra.md",
            "markdown",
            [("The zebra has black and white stripes.", Locator(line_start=1, line_end=1), "text", axis(7))],
        ),
        ("photos/cat.jpg", "image", [("", Locator(), "image", toward(0.7, 8))]),
        (
            "zoo/notes.txt",
            "text",
            [("A platypus lays eggs.", Locator(line_start=1, line_end=1), "text", None)],
        ),
    ]
    index = tmp_path / "index"
    with Store.open_writer(index, IDENTITY, dims=DIMS, dtype=dtype) as w:  # type: ignore[arg-type]
        for age, (rel, kind, parts) in enumerate(corpus):
            path = docs / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(p[0] for p in parts) or "binary")
            mtime = 1_700_000_000 + age * DAY  # one day apart, in corpus order
            os.utime(path, (mtime, mtime))
            st = path.stat()
            _, ids = w.add_file(
                FileRecord(str(path), st.st_size, st.st_mtime_ns, kind),
                f"hash-{rel}",
                [Piece(text=t, locator=loc, modality=mod) for t, loc, mod, _ in parts],  # type: ignore[arg-type]
            )
            with_vec = [(pid, v) for pid, (_, _, _, v) in zip(ids, parts, strict=True) if v is not None]
            if with_vec:
                w.set_vectors([p for p, _ in with_vec], np.stack([v for _, v in with_vec]))
    return Store.open(index), docs


def names(hits: list) -> list[str]:  # type: ignore[type-arg]
    return [os.path.relpath(h.path, h.path.split("/docs/")[0] + "/docs") for h in hits]


def test_vector_ranking_groups_pieces_into_files(tmp_path: Path) -> None:
    s, _ = build(tmp_path)
    hits = search(s, QUERY, "")
    assert names(hits) == ["report_whales.txt", "photos/cat.jpg", "budget.txt"]
    whales = hits[0]
    assert whales.locator == Locator(line_start=10, line_end=20)  # its best piece, not its first
    assert whales.snippet == "Whale songs carry across whole ocean basins."
    assert whales.kind == "text" and whales.file_id.startswith("f") and whales.piece_id.startswith("p")
    assert whales.scores["vector"] == pytest.approx(0.85, abs=1e-3)
    assert whales.scores["keyword"] == 0.0 and whales.scores["name"] == 0.0
    assert hits[1].snippet == "cat.jpg"  # an image piece shows the file name
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_min_score_drops_unrelated_files(tmp_path: Path) -> None:
    s, _ = build(tmp_path)
    # tax form, zebra (cosine 0) and the unembedded notes never pass the default threshold
    assert {"tax_form_2023.pdf", "zoo/zebra.md", "zoo/notes.txt"}.isdisjoint(names(search(s, QUERY, "")))
    assert len(search(s, QUERY, "", min_score=0.0)) == 5  # every file with a vector
    assert names(search(s, QUERY, "", min_score=0.8)) == ["report_whales.txt"]
    assert search(s, QUERY, "", min_score=0.99) == []
    assert DEFAULT_MIN_SCORE > 0.2


def test_keyword_alone_finds_words(tmp_path: Path) -> None:
    s, _ = build(tmp_path)
    (hit,) = search(s, None, "zebra stripes")
    assert names([hit]) == ["zoo/zebra.md"]
    assert 0.3 < hit.scores["keyword"] < 1.0 and hit.scores["vector"] == 0.0
    assert hit.score >= DEFAULT_MIN_SCORE  # no vector yet: judged on its words alone
    assert "zebra" in hit.snippet
    assert search(s, None, "") == [] and search(s, None, "nonexistentword") == []


def one_piece_files(tmp_path: Path, texts: dict[str, str]) -> Store:
    index = tmp_path / "index"
    with Store.open_writer(index, IDENTITY, dims=DIMS) as w:
        for name, text in texts.items():
            path = tmp_path / name
            path.write_text(text)
            w.add_file(FileRecord(str(path), 1, 1, "text"), name, [Piece(text=text)])
    return Store.open(index)


def test_keyword_scores_do_not_saturate(tmp_path: Path) -> None:
    filler = " and some other words about the sea"
    s = one_piece_files(
        tmp_path,
        {
            "a-once.txt": "the lighthouse" + filler,
            "b-twice.txt": "the lighthouse lighthouse" + filler,
            "c-four.txt": "the lighthouse lighthouse lighthouse lighthouse" + filler,
            "d-other.txt": "unrelated words" + filler,
        },
    )
    hits = search(s, None, "lighthouse")
    assert [os.path.basename(h.path) for h in hits] == ["c-four.txt", "b-twice.txt", "a-once.txt"]
    scores = [h.scores["keyword"] for h in hits]
    assert scores[0] > scores[1] > scores[2] > 0 and scores[0] < 1.0


def test_an_exact_file_name_ranks_first(tmp_path: Path) -> None:
    s = one_piece_files(
        tmp_path,
        {
            "latin1-été.txt": "latin1 latin1 txt latin1 encoded text",  # more keyword matches
            "latin1.txt": "some bytes",
            "notes-latin1.txt": "latin1 notes",
        },
    )
    hits = search(s, None, "latin1.txt")
    assert os.path.basename(hits[0].path) == "latin1.txt"
    assert os.path.basename(search(s, None, "LATIN1")[0].path) == "latin1.txt"  # the name without extension
    assert hits[0].scores["name"] == 1.0
    # Without the exact-name tier too: a name the query covers whole beats one with more words.
    by_name = {os.path.basename(h.path): h.scores["name"] for h in search(s, None, "latin1 notes")}
    assert by_name["notes-latin1.txt"] > by_name["latin1.txt"] > 0


def test_a_joined_word_matches_a_name_only_whole(tmp_path: Path) -> None:
    s = one_piece_files(
        tmp_path,
        {
            "bind.2": "bind a name to a socket",
            "mount.2": "mount a filesystem",
            "tax_form_2023.pdf": "form",
            "readFile.md": "read",
            "read.md": "read",
        },
    )

    def names_of(query: str) -> dict[str, float]:
        return {os.path.basename(h.path): h.scores["name"] for h in search(s, None, query, min_score=0.0)}

    # MS_BIND is one name: a file named after one of its parts is no name match.
    assert names_of("MS_BIND").get("bind.2", 0.0) == 0.0
    assert names_of("bind MS_BIND")["bind.2"] > 0  # the part typed on its own still counts
    assert names_of("tax_form_2023")["tax_form_2023.pdf"] == pytest.approx(1.0)  # every part there
    assert names_of("tax_form").get("tax_form_2023.pdf", 0.0) > 0
    # A camelCase word matches a name with the whole word, not one with a part of it.
    by_name = names_of("readFile")
    assert by_name["readFile.md"] == pytest.approx(1.0) and by_name.get("read.md", 0.0) == 0.0


def test_cjk_words_are_found_inside_sentences(tmp_path: Path) -> None:
    # Chinese and Japanese are written without spaces: a sentence is one "word", so a query's word
    # is matched through the overlapping character pairs both share.
    assert tokenize("天気予報") == ["天気予報", "天気", "気予", "予報"]
    assert tokenize("Python入門 日") == ["python入門", "python", "入門", "日"]  # a pair is never doubled
    assert tokenize("검색") == ["검색"]
    s = one_piece_files(
        tmp_path,
        {
            "ls.txt": "ls - ディレクトリの内容をリスト表示する",
            "cp.txt": "cp - ファイルやディレクトリのコピーを行う",
            "weather.txt": "明日の天気予報によると東京は雨が降るでしょう。",
            "天気予報.txt": "notes",
            "english.txt": "directory listing",
        },
    )

    def found(query: str) -> list[str]:
        return [os.path.basename(h.path) for h in search(s, None, query)]

    assert found("内容 表示")[0] == "ls.txt"
    assert found("ディレクトリ コピー")[0] == "cp.txt"
    assert set(found("ディレクトリ")) == {"ls.txt", "cp.txt"}
    assert found("東京 雨")[0] == "weather.txt"
    hits = search(s, None, "天気予報")
    assert os.path.basename(hits[0].path) == "天気予報.txt" and hits[0].scores["name"] > 0.9  # its name
    assert "weather.txt" in found("天気予報")


def test_pieces_without_vectors_are_found_by_keyword(tmp_path: Path) -> None:
    s, _ = build(tmp_path)
    assert s.stats().pending == 1
    hits = search(s, QUERY, "platypus")
    assert "zoo/notes.txt" in names(hits)
    notes = hits[names(hits).index("zoo/notes.txt")]
    assert notes.snippet == "A platypus lays eggs." and notes.locator == Locator(line_start=1, line_end=1)


def test_keyword_lifts_a_vector_match(tmp_path: Path) -> None:
    s, _ = build(tmp_path)
    plain = {names([h])[0]: h.score for h in search(s, QUERY, "")}
    lifted = {names([h])[0]: h for h in search(s, QUERY, "budget salaries")}
    assert lifted["budget.txt"].score > plain["budget.txt"]
    assert lifted["budget.txt"].scores["keyword"] > 0.4  # each word once: about 0.45 of the most


def test_a_short_query_weighs_its_words_more(tmp_path: Path) -> None:
    s, _ = build(tmp_path)

    def budget(query: str) -> Any:
        return next(h for h in search(s, QUERY, query) if names([h])[0] == "budget.txt")

    # The same words, as a lookup and inside a longer question: the keyword score is the same and
    # the fused score follows the noisy-OR with keyword weight 0.6 for the short query, 0.4 for the
    # long one (the name's weight is 0.6 for both).
    short, long = budget("budget salaries"), budget("where is the budget for salaries kept")
    assert keyword_weight_for("budget salaries") == 0.6 and keyword_weight_for("a b c d") == 0.4
    # Japanese without spaces: a word per two characters.
    assert keyword_weight_for("天気予報") == 0.6 and keyword_weight_for("明日の東京の天気はどうですか") == 0.4
    assert short.scores["keyword"] > 0
    for hit, weight in ((short, 0.6), (long, 0.4)):
        v, k, n = hit.scores["vector"], hit.scores["keyword"], hit.scores["name"]
        assert hit.score == pytest.approx(1 - (1 - v) * (1 - weight * k) * (1 - 0.6 * n), abs=1e-6)
    # An explicit weight wins over the length rule.
    explicit = search(s, QUERY, "budget salaries", keyword_weight=0.4)
    assert next(h for h in explicit if names([h])[0] == "budget.txt").score < short.score


def test_file_name_match_surfaces(tmp_path: Path) -> None:
    s, _ = build(tmp_path)
    hits = search(s, QUERY, "tax form 2023")  # the query vector points away from its content
    assert "tax_form_2023.pdf" in names(hits)
    tax = hits[names(hits).index("tax_form_2023.pdf")]
    assert tax.scores["name"] == 1.0 and tax.scores["vector"] == 0.0
    assert tax.score >= 0.6
    assert names(search(s, None, "tax_form_2023.pdf"))[0] == "tax_form_2023.pdf"
    assert names(search(s, None, "TaxForm"))[0] == "tax_form_2023.pdf"  # casefolded, split on case


def test_names_are_unicode_normalised(tmp_path: Path) -> None:
    index = tmp_path / "index"
    nfd = unicodedata.normalize("NFD", "Café menu.txt")
    path = tmp_path / nfd
    path.write_text("x")
    with Store.open_writer(index, IDENTITY, dims=DIMS) as w:
        w.add_file(FileRecord(str(path), 1, 1, "text"), "h", [])
    hits = search(Store.open(index), None, unicodedata.normalize("NFC", "CAFÉ"))
    assert [h.path for h in hits] == [str(path)] and hits[0].piece_id == ""


def test_filters_kind_folder_and_date(tmp_path: Path) -> None:
    s, docs = build(tmp_path)
    assert names(search(s, QUERY, "", kinds=["image", "pdf"], min_score=0)) == [
        "photos/cat.jpg",
        "tax_form_2023.pdf",
    ]
    assert names(search(s, QUERY, "", under=str(docs / "zoo"), min_score=0)) == ["zoo/zebra.md"]
    link = tmp_path / "link-to-zoo"
    link.symlink_to(docs / "zoo")
    assert names(search(s, QUERY, "", under=str(link), min_score=0)) == ["zoo/zebra.md"]
    assert names(search(s, None, "platypus", under=str(docs / "zoo") + "/")) == ["zoo/notes.txt"]
    assert search(s, QUERY, "", under=str(docs / "zo"), min_score=0) == []  # a folder, not a prefix
    # files are one day apart in corpus order: whales, budget, tax form, zebra, cat, notes
    after = 1_700_000_000 + 2 * DAY
    got = names(search(s, QUERY, "", modified_after=after, modified_before=after + 2 * DAY, min_score=0))
    assert sorted(got) == ["tax_form_2023.pdf", "zoo/zebra.md"]
    # the filter is applied before top-k: the best file overall cannot crowd the filtered ones out
    assert names(search(s, QUERY, "", top_k=1, kinds=["text"])) == ["report_whales.txt"]
    assert names(search(s, QUERY, "", top_k=1, kinds=["image"])) == ["photos/cat.jpg"]
    with pytest.raises(ValueError, match="unknown kind 'pdff'"):
        search(s, QUERY, "", kinds=["pdff"])


def test_ties_are_ordered_by_path_and_stable(tmp_path: Path) -> None:
    index = tmp_path / "index"
    with Store.open_writer(index, IDENTITY, dims=DIMS) as w:
        for name in ("b.txt", "c.txt", "a.txt"):
            _, ids = w.add_file(
                FileRecord(str(tmp_path / name), 1, 1, "text"), name, [Piece(text="same words")]
            )
            w.set_vectors(ids, toward(0.5, 1)[None, :])
    s = Store.open(index)
    first = search(s, QUERY, "same")
    assert [os.path.basename(h.path) for h in first] == ["a.txt", "b.txt", "c.txt"]
    assert all(search(s, QUERY, "same") == first for _ in range(3))
    assert [os.path.basename(h.path) for h in search(s, None, "same", top_k=2)] == ["a.txt", "b.txt"]


def test_removed_files_never_come_back(tmp_path: Path) -> None:
    s, docs = build(tmp_path)
    with Store.open_writer(s.root, IDENTITY, dims=DIMS) as w:
        info = w.file_by_path(str(docs / "report_whales.txt"))
        assert info is not None
        w.remove_file(info.file_id)
    s2 = s.refresh()
    assert s2.generation == s.generation + 1
    assert "report_whales.txt" not in names(search(s2, QUERY, "whales songs", min_score=0))
    assert names(search(s, QUERY, ""))[0] == "report_whales.txt"  # the old snapshot is unchanged


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_storage_dtypes_rank_alike(tmp_path: Path, dtype: str) -> None:
    ref, _ = build(tmp_path / "ref")
    other, _ = build(tmp_path / dtype, dtype)
    assert names(search(other, QUERY, "whales")) == names(search(ref, QUERY, "whales"))
    for a, b in zip(search(other, QUERY, "", min_score=0), search(ref, QUERY, "", min_score=0), strict=True):
        assert a.scores["vector"] == pytest.approx(b.scores["vector"], abs=0.01)


def test_query_vector_width(tmp_path: Path) -> None:
    s, _ = build(tmp_path)
    longer = np.concatenate([QUERY, np.ones(32, dtype=np.float32)])  # truncated (Matryoshka), renormalised
    assert names(search(s, longer, "")) == names(search(s, QUERY, ""))
    with pytest.raises(ValueError, match="query vector has 8 dims, the index has 32"):
        search(s, QUERY[:8], "")


def test_snippet_is_a_window_around_the_match() -> None:
    text = ("lorem ipsum " * 40) + "the secret zebra word " + ("dolor sit amet " * 40)
    snip = snippet_of(text, ["zebra"])
    assert "zebra" in snip and snip.startswith("…") and snip.endswith("…")
    assert len(snip) <= 202
    assert snippet_of("short\n\n text", ["x"]) == "short text"


def test_top_rows_is_exact_on_large_inputs() -> None:
    from launcher.query.retrieve import _top_rows

    rng = np.random.default_rng(0)
    scores = rng.standard_normal(200_000).astype(np.float32)
    scores[rng.random(200_000) < 0.5] = -np.inf  # filtered rows
    scores[:50] = 3.0  # ties
    for k in (1, 10, 400, 5000):
        got = np.sort(scores[_top_rows(scores, k)])
        assert np.array_equal(got, np.sort(scores)[-k:])


def test_one_warming_thread_and_a_newer_snapshot_goes_first(tmp_path: Path) -> None:
    """Warming maps pages in one thread for the searcher's life; each commit's snapshot replaces
    the one being warmed (a watcher commits every few seconds), and close() joins the thread."""
    import threading

    from launcher.query.retrieve import warm
    from launcher.query.session import Searcher

    store, docs = build(tmp_path)
    assert warm(store, cancelled=lambda: True) is False  # stops at the first look
    # Even so, the name lookups are built: the first search after a commit does not build them.
    built = {k: v for k, v in store.cache.items() if k in ("names", "exact_names")}
    assert set(built) == {"names", "exact_names"}
    search(store, None, "report.pdf")
    assert all(store.cache[k] is v for k, v in built.items())  # used as they were, not rebuilt
    assert warm(store) is True
    earlier = set(threading.enumerate())  # other tests' searchers may still hold warming threads
    searcher = Searcher(tmp_path / "index")
    seen: list[threading.Thread] = []

    def note_warmers() -> None:
        seen.extend(
            t
            for t in threading.enumerate()
            if t.name == "launcher-warm" and t not in seen and t not in earlier
        )

    try:
        note_warmers()
        for i in range(20):
            path = docs / f"commit{i}.txt"
            path.write_text(f"commit {i}\n", encoding="utf-8")
            st = path.stat()
            with Store.open_writer(tmp_path / "index", IDENTITY, dims=DIMS, dtype="float16") as w:  # type: ignore[arg-type]
                _, ids = w.add_file(
                    FileRecord(str(path), st.st_size, st.st_mtime_ns, "text"),
                    f"hash-{i}",
                    [Piece(text=f"commit {i}", locator=Locator(line_start=1, line_end=1))],
                )
                w.set_vectors(ids, axis(i % DIMS)[None, :])
            before = searcher.store
            searcher.refresh()
            assert searcher.store is not before
            note_warmers()
        assert len(seen) == 1
        assert searcher.warmer.wait_idle(30)
        assert searcher.warmer.warmed() is searcher.store  # the newest snapshot is the one warmed
        assert 1 <= searcher.warmer.completed <= 21
    finally:
        searcher.close()
    assert not seen[0].is_alive()


def test_exact_names_match_whole_names_and_stems_casefolded() -> None:
    """The exact-name lookup (one NUL-separated string per snapshot): whole name or name less its
    last extension, NFC and casefolded, for names with dots, newlines and non-ASCII letters."""
    from types import SimpleNamespace

    from launcher.query.retrieve import _exact_names

    names = ["Report.PDF", "report.pdf.bak", "a.tar.gz", ".bashrc", "STRASSE.txt", "Cafe\u0301.md",
             "new\nline.txt", "x..y", "file.", "latin1.txt", "latin1-été.txt"]  # fmt: skip

    class Columns(list):  # the one part of FileColumns the lookup reads: paths, and their count
        @property
        def paths(self) -> list[str]:
            return self

    cols = Columns(f"/d{i % 3}/{n}" for i, n in enumerate(names))
    store = SimpleNamespace(cache={})

    def found(query: str) -> list[str]:
        return [names[o] for o in _exact_names(store, cols, query)]  # type: ignore[arg-type]

    assert found("report") == ["Report.PDF"]
    assert found("REPORT.pdf") == ["Report.PDF", "report.pdf.bak"]  # a name, and a stem
    assert found("a.tar") == ["a.tar.gz"] and found("a") == []  # too short, and not a stem
    assert found(".bashrc") == [".bashrc"] and found("bashrc") == []
    assert found("straße") == ["STRASSE.txt"]  # casefolded: ß is ss
    assert found("café") == ["Cafe\u0301.md"]  # NFC: the decomposed é is the same letter
    assert found("new\nline") == ["new\nline.txt"] and found("line") == []
    assert found("x..y") == ["x..y"] and found("file") == ["file."]
    assert found("latin1.txt") == ["latin1.txt"] and found("latin1") == ["latin1.txt"]


def test_ties_at_the_cut_are_taken_in_path_order(tmp_path: Path) -> None:
    from launcher.query.retrieve import _path_rank, _Signal, _top

    store, _ = build(tmp_path)
    cols = store.file_columns()
    rank = _path_rank(store, cols)
    assert [cols.paths[i] for i in np.argsort(rank)] == sorted(cols.paths)
    n = len(cols)
    assert n >= 4
    scores = np.full(n, 0.5, dtype=np.float32)
    best = int(np.argmax(rank))  # the last path in path order scores highest
    scores[best] = 0.9
    sig = _Signal(np.arange(n, dtype=np.int32), scores, np.full(n, -1, dtype=np.int64))
    top = _top(sig, 3, lambda: rank)
    others = sorted(p for i, p in enumerate(cols.paths) if i != best)
    assert [cols.paths[o] for o in top.ords] == [cols.paths[best], *others[:2]]
