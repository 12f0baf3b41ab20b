"""Retrieval quality on real documentation nobody here wrote, with the bundled text model.

    python bench/bench_retrieval.py [--sizes 96,128,192,256] [--skip-baselines] [--skip-cli]

The corpus is the Rust book, the Rust Reference, the Debian Reference and bash's examples from
Debian packages (bench/retrieval/corpus.py builds it, 367 files); the 60 questions in
bench/retrieval/questions.jsonl were written by hand, each labelled with the one file that answers
it, in three kinds: paraphrased needs, exact API names, details deep inside long pages.

Rows:
- baselines, embedded here with the same model: one vector per file (its text up to the model's
  input limit), BM25 over whole files, chunks of 200 words with 50 overlap (best chunk per file), and
  reciprocal-rank fusion of BM25 and chunked dense;
- launcher, in-process (launcher.ingest.pipeline + launcher.query.retrieve, as `launcher search` runs without a
  resident process) at each target piece size, and each fusion the search module offers;
- launcher through its CLI (`launcher index DIR && launcher search "..." --json`), the way a user runs it.

Metrics: R@1, R@5 (the answer among the first 1 / 5 files) and MRR@10. Also indexing time, tokens
embedded per second, and the model's raw throughput on the same pieces (one decode per batch, no
pipeline). Indexes are kept under bench/results/retrieval/ and reused when their settings match.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE / "retrieval"))

import corpus as main_corpus  # noqa: E402

from launcher.index import keywords  # noqa: E402
from launcher.index.store import Store  # noqa: E402
from launcher.ingest.extract import ExtractError, man  # noqa: E402
from launcher.ingest.extract.html import html_to_text, meta_charset  # noqa: E402
from launcher.ingest.extract.text import decode, looks_like_text  # noqa: E402
from launcher.ingest.pipeline import Indexer, IndexOptions  # noqa: E402
from launcher.ingest.scan import scan  # noqa: E402
from launcher.models import catalogue as models  # noqa: E402
from launcher.models.embed import QUERY_INSTRUCTION, EmbedInput, load_embedder  # noqa: E402
from launcher.query import retrieve as search  # noqa: E402

QUESTIONS = HERE / "retrieval" / "questions.jsonl"
WORK = HERE / "results" / "retrieval"
Ranking = list[str]  # corpus-relative paths, best first


def question_set(name: str) -> tuple[Path, Callable[[Path], Path], Path]:
    """(questions file, corpus builder, default corpus folder) of the main or the held-out set.

    The held-out set (git's manual and Linux man2 pages, bench/retrieval/heldout/) is for checking
    that a ranking change generalises, never for tuning on."""
    if name == "main":
        return QUESTIONS, main_corpus.build, main_corpus.DEFAULT_DEST
    if name == "heldout":
        spec = importlib.util.spec_from_file_location(
            "heldout_corpus", HERE / "retrieval" / "heldout" / "corpus.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return HERE / "retrieval" / "heldout" / "questions.jsonl", module.build, module.DEFAULT_DEST
    raise SystemExit(f"unknown question set {name!r}; use main or heldout")


def load_questions(path: Path = QUESTIONS) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def metrics(rankings: Sequence[Ranking], questions: Sequence[dict[str, str]]) -> dict[str, float]:
    """R@1, R@5, MRR@10 over all questions, and per kind."""

    def score(subset: list[int]) -> dict[str, float]:
        r1 = r5 = rr = 0.0
        for i in subset:
            ranks = rankings[i][:10]
            answer = questions[i]["answer"]
            if answer in ranks:
                pos = ranks.index(answer)
                r1 += pos == 0
                r5 += pos < 5
                rr += 1.0 / (pos + 1)
        n = max(len(subset), 1)
        return {"R@1": r1 / n, "R@5": r5 / n, "MRR@10": rr / n}

    out = score(list(range(len(questions))))
    for kind in sorted({q["kind"] for q in questions}):
        sub = score([i for i, q in enumerate(questions) if q["kind"] == kind])
        out.update({f"{kind} {k}": v for k, v in sub.items()})
    return out


# --- the corpus as plain text, for the baselines ------------------------------------------------


def file_texts(corpus: Path) -> dict[str, str]:
    """Corpus-relative path -> the file's extracted text (the same extractors the launcher uses)."""
    out: dict[str, str] = {}
    for rec in scan([str(corpus)]):
        if not hasattr(rec, "kind"):
            continue
        rel = os.path.relpath(rec.path, corpus)
        data = Path(rec.path).read_bytes()
        try:
            if rec.kind == "html":
                out[rel] = html_to_text(decode(data, declared=meta_charset(data)))
            elif rec.kind == "other" and (man.is_gzip_name(rec.path) or man.is_man_name(rec.path)):
                raw = man.read_maybe_gzipped(rec.path, 8 * 2**20)
                out[rel] = man.render(decode(raw)).text if man.troff_like(raw) else decode(raw)
            elif rec.kind in ("text", "code", "markdown") or (
                rec.kind == "other" and looks_like_text(rec.path)
            ):
                out[rel] = decode(data)
            else:
                out[rel] = ""
        except ExtractError:
            out[rel] = ""
        out[rel] = f"{os.path.basename(rel)}\n{out[rel]}"
    return out


def bm25_rank(docs: dict[str, str], queries: Sequence[str]) -> list[Ranking]:
    """Plain BM25 (k1 1.2, b 0.75) over whole files, with the launcher's tokenizer."""
    names = list(docs)
    tokens = [keywords.tokenize(docs[n]) for n in names]
    dl = np.array([len(t) for t in tokens], dtype=np.float64)
    avg = dl.mean()
    tf: list[dict[str, int]] = []
    df: dict[str, int] = {}
    for toks in tokens:
        counts: dict[str, int] = {}
        for t in toks:
            counts[t] = counts.get(t, 0) + 1
        tf.append(counts)
        for t in counts:
            df[t] = df.get(t, 0) + 1
    out = []
    for q in queries:
        s = np.zeros(len(names))
        for t in keywords.query_terms(q):
            if t not in df:
                continue
            idf = keywords.bm25_idf(len(names), df[t])
            f = np.array([c.get(t, 0) for c in tf], dtype=np.float64)
            s += idf * f * 2.2 / (f + 1.2 * (0.25 + 0.75 * dl / avg))
        out.append([names[i] for i in np.argsort(-s, kind="stable")[:10]])
    return out


def fts5_rank(docs: dict[str, str], queries: Sequence[str], tokenizer: str) -> list[Ranking]:
    """SQLite FTS5's own BM25 over whole files (a kept keyword engine, for comparison): the query's
    words OR-ed, ranked by bm25()."""
    import sqlite3

    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE VIRTUAL TABLE docs USING fts5(path UNINDEXED, body, tokenize={tokenizer!r})")
    db.executemany("INSERT INTO docs VALUES (?, ?)", list(docs.items()))
    out = []
    for q in queries:
        words = keywords.query_terms(q)
        if tokenizer == "trigram":
            words = [w for w in words if len(w) >= 3]
        match = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
        rows = (
            db.execute(
                "SELECT path FROM docs WHERE docs MATCH ? ORDER BY bm25(docs) LIMIT 10", (match,)
            ).fetchall()
            if match
            else []
        )
        out.append([r[0] for r in rows])
    return out


def dense_rank(
    units: list[tuple[str, str]], qvecs: np.ndarray, embed: Callable[[list[str]], np.ndarray]
) -> list[Ranking]:
    """Embed (file, text) units; each file scores as its best unit."""
    vecs = embed([t for _, t in units])
    files = [f for f, _ in units]
    out = []
    for q in qvecs:
        sims = vecs @ q
        best: dict[str, float] = {}
        for f, s in zip(files, sims.tolist(), strict=True):
            if s > best.get(f, -9):
                best[f] = s
        out.append(sorted(best, key=lambda f: -best[f])[:10])
    return out


def rrf(rankings: Sequence[Sequence[Ranking]], k: int = 60) -> list[Ranking]:
    out = []
    for per_query in zip(*rankings, strict=True):
        score: dict[str, float] = {}
        for ranking in per_query:
            for pos, f in enumerate(ranking):
                score[f] = score.get(f, 0.0) + 1.0 / (k + pos + 1)
        out.append(sorted(score, key=lambda f: -score[f])[:10])
    return out


def word_chunks(text: str, size: int = 200, overlap: int = 50) -> list[str]:
    words = text.split()
    step = size - overlap
    return [" ".join(words[i : i + size]) for i in range(0, max(len(words) - overlap, 1), step)] or [""]


# --- the launcher -------------------------------------------------------------------------------


def build_index(corpus: Path, embedder, size: int, work: Path = WORK) -> dict[str, float]:
    """Index the corpus at one target piece size (reused when already built); returns timings."""
    index_dir = work / f"index-{size}"
    stamp = index_dir / "bench.json"
    if stamp.exists() and Store.exists(index_dir):
        info = json.loads(stamp.read_text())
        if "tokens_approx" not in info:
            store = Store.open(index_dir)
            info["tokens_approx"] = sum(
                embedder.input_tokens(EmbedInput(texts=[p.text])) for p in _all_pieces(store)
            )
        return info
    started = time.perf_counter()
    report = Indexer(index_dir, embedder, IndexOptions(chunk_tokens=size)).run([str(corpus)])
    seconds = time.perf_counter() - started
    store = Store.open(index_dir)
    tokens = sum(embedder.input_tokens(EmbedInput(texts=[f"{p.text}"])) for p in _all_pieces(store))
    info = {
        "seconds": seconds,
        "pieces": report.pieces_embedded,
        "failed": report.pieces_failed,
        "pending": report.pieces_pending,
        "files_failed": len(report.failed),
        "tokens_approx": tokens,
    }
    stamp.write_text(json.dumps(info))
    return info


def _all_pieces(store: Store):
    for f in store.files():
        for pid in store.pieces_of(f.file_id):
            info = store.piece(pid)
            if info is not None:
                yield info


def launcher_rank(
    store: Store, corpus: Path, qvecs: np.ndarray, questions: Sequence[dict[str, str]], **kwargs
) -> list[Ranking]:
    out = []
    for q, v in zip(questions, qvecs, strict=True):
        hits = search.search(store, v, q["query"], top_k=10, min_score=0.0, **kwargs)
        out.append([os.path.relpath(h.path, corpus) for h in hits])
    return out


def cli_rank(
    corpus: Path, questions: Sequence[dict[str, str]], home: Path
) -> tuple[list[Ranking], float, dict]:
    """`launcher index DIR && launcher search "..." --json`, in a private LAUNCHER_HOME."""
    env = dict(os.environ, LAUNCHER_HOME=str(home))
    started = time.perf_counter()
    done = subprocess.run(
        ["launcher", "index", str(corpus), "--json"], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"launcher index failed: {done.stderr.strip()}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    out = []
    for q in questions:
        res = subprocess.run(
            ["launcher", "search", q["query"], "--json", "--top", "10"],
            env=env,
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            raise SystemExit(f"launcher search failed: {res.stderr.strip()}")
        hits = json.loads(res.stdout)["hits"]  # {"parsed": ..., "hits": [...]}
        out.append([os.path.relpath(h["path"], corpus) for h in hits])
    return out, seconds, summary


def raw_throughput(embedder, texts: list[str], runs: int = 3) -> float:
    """Tokens per second of the model alone on these texts (batched decodes, no pipeline)."""
    tokens = sum(embedder.input_tokens(EmbedInput(texts=[t])) for t in texts)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        embedder.embed([EmbedInput(texts=[t]) for t in texts])
        times.append(time.perf_counter() - started)
    return tokens / statistics.median(times)


def table(rows: list[tuple[str, dict[str, float]]], extra: dict[str, str] | None = None) -> str:
    lines = [
        "| | R@1 | R@5 | MRR@10 | paraphrase R@1 / R@5 | api R@1 / R@5 | deep R@1 / R@5 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in rows:
        kinds = " | ".join(
            f"{m[f'{k} R@1']:.2f} / {m[f'{k} R@5']:.2f}" for k in ("paraphrase", "api", "deep")
        )
        lines.append(f"| {name} | {m['R@1']:.2f} | {m['R@5']:.2f} | {m['MRR@10']:.2f} | {kinds} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", default="main", choices=("main", "heldout"), help="question set and its corpus")
    ap.add_argument("--corpus", type=Path, default=None, help="where the set's corpus is (built if missing)")
    ap.add_argument("--sizes", default="128,256", help="target piece sizes in tokens to index and compare")
    ap.add_argument("--skip-baselines", action="store_true")
    ap.add_argument(
        "--skip-chunked", action="store_true", help="leave out the chunked dense baseline (the slow one)"
    )
    ap.add_argument("--skip-cli", action="store_true")
    ap.add_argument("--cli-home", type=Path, default=None, help="LAUNCHER_HOME of the CLI run")
    ap.add_argument("--fusions", default="", help="comma-separated fusion names to compare (search.FUSIONS)")
    ap.add_argument(
        "--keyword-weights",
        default="",
        help="comma-separated keyword weights to compare on the same index; `auto` weighs by the query's "
        "length as search does by default (search.keyword_weight_for; default: auto)",
    )
    args = ap.parse_args()
    questions_file, build, default_corpus = question_set(args.set)
    work = WORK if args.set == "main" else WORK / args.set
    corpus_dir = args.corpus or default_corpus
    if not corpus_dir.exists():
        build(corpus_dir)
    corpus = corpus_dir.resolve()
    questions = load_questions(questions_file)
    work.mkdir(parents=True, exist_ok=True)
    resolved = models.resolve_model(None, None)
    embedder = load_embedder(resolved.path, resolved.mmproj)
    qvecs = embedder.embed([EmbedInput(texts=[q["query"]], instruction=QUERY_INSTRUCTION) for q in questions])
    results: dict[str, object] = {"set": args.set, "model": resolved.name, "questions": len(questions)}
    rows: list[tuple[str, dict[str, float]]] = []

    if not args.skip_baselines:
        texts = file_texts(corpus)
        limit = embedder.max_tokens - 2

        def fit(t: str) -> str:
            # The model refuses longer inputs: cut at its limit (a baseline, not the launcher).
            t = t[:5000]
            while embedder.input_tokens(EmbedInput(texts=[t])) > limit:
                t = t[: int(len(t) * 0.9)]
            return t

        def embed(ts: list[str]) -> np.ndarray:
            return embedder.embed([EmbedInput(texts=[t]) for t in ts])

        base_bm25 = bm25_rank(texts, [q["query"] for q in questions])
        for tokenizer in ("unicode61", "porter unicode61", "trigram"):
            ranking = fts5_rank(texts, [q["query"] for q in questions], tokenizer)
            rows.append(
                (f"SQLite FTS5 bm25() over whole files, tokenizer {tokenizer}", metrics(ranking, questions))
            )
        per_file = dense_rank([(f, fit(t)) for f, t in texts.items()], qvecs, embed)
        rows += [
            (
                "one vector per file (first 5,000 characters, cut to the model's limit)",
                metrics(per_file, questions),
            ),
            ("BM25 over whole files", metrics(base_bm25, questions)),
        ]
        chunks = [(f, fit(c)) for f, t in texts.items() for c in word_chunks(t)]
        if not args.skip_chunked:
            chunked = dense_rank(chunks, qvecs, embed)
            rows += [
                ("chunks of 200 words, 50 overlap, best chunk per file", metrics(chunked, questions)),
                ("reciprocal-rank fusion of the two above", metrics(rrf([base_bm25, chunked]), questions)),
            ]
        sample = [t for _, t in chunks[:: max(1, len(chunks) // 64)]][:64]
        results["raw_tokens_per_s"] = raw_throughput(embedder, sample)

    fusions = [f for f in args.fusions.split(",") if f] or [search.DEFAULT_FUSION]
    weights = [None if w == "auto" else float(w) for w in args.keyword_weights.split(",") if w] or [None]
    builds = {}
    for size in [int(s) for s in args.sizes.split(",") if s]:
        builds[size] = build_index(corpus, embedder, size, work)
        store = Store.open(work / f"index-{size}")
        for fusion in fusions:
            for weight in weights:
                ranking = launcher_rank(store, corpus, qvecs, questions, fusion=fusion, keyword_weight=weight)
                rows.append(
                    (
                        f"launcher, in-process, {size}-token pieces, fusion {fusion}, keyword weight "
                        + (f"{weight}" if weight is not None else "by query length (the default)"),
                        metrics(ranking, questions),
                    )
                )
    results["builds"] = builds

    if not args.skip_cli:
        ranking, seconds, summary = cli_rank(corpus, questions, args.cli_home or work / "cli-home")
        rows.append(
            (
                "launcher CLI (`launcher index` + `launcher search --json`, defaults)",
                metrics(ranking, questions),
            )
        )
        results["cli"] = {"index_seconds": seconds, "summary": summary}

    results["rows"] = {name: m for name, m in rows}
    print(table(rows))
    print()
    print("| index | pieces | failed | pending | seconds | tokens/s (approx.) |")
    print("|---|---|---|---|---|---|")
    for size, b in builds.items():
        print(
            f"| {size} tokens | {b['pieces']} | {b['failed']} | {b['pending']} | {b['seconds']:.0f} | "
            f"{b['tokens_approx'] / b['seconds']:.0f} |"
        )
    if "raw_tokens_per_s" in results:
        print(f"\nmodel alone: {results['raw_tokens_per_s']:.0f} tokens/s")
    out = HERE / "results" / f"retrieval-{args.set}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
