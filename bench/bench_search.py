"""Search latency and recall over synthetic indexes: p50/p95 per size, width and storage dtype.

    python bench/bench_search.py                      # 10k and 100k pieces; dims 256, 1024, 2048
    python bench/bench_search.py --million            # adds 1M pieces (1M x 2048 float32 is 8 GB)
    python bench/bench_search.py --sizes 10000 --dims 256 --dtypes int8 --probes 8,32

Each index is built through the real Writer (10 pieces per file, short texts from a Zipf-ish
vocabulary), so a large one is partitioned at commit exactly as `launcher index` does it. The
vectors are SYNTHETIC but shaped like text embeddings, because recall means nothing on
structureless random vectors: every row is a weighted mix of two of 4096 "topics" (drawn with
Zipf popularity), a shared direction (real embeddings are anisotropic: unrelated pairs sit at
cosine ~0.2, not 0) and Gaussian noise; queries are drawn from the same mix. Real Qwen3-VL
vectors cannot be had offline; recall on them will differ, so both exact search (probe 0) and
the probe are user settings.

Columns (ms unless said):
  open       Store.open (manifest, file table, memory maps)
  warm       search.warm: maps every vector page (the resident process runs it in the background)
  first      the first query after that (builds the other per-snapshot caches)
  vector     search(vector, "") with the default probe, p50/p95
  exact      search(vector, "", probe=0): every row scored, p50/p95
  hybrid     search(vector, "two words") (+ BM25 + file names), default probe, p50/p95
  keyword    search(None, "two words"), p50/p95
  f32 brute  anchor: plain NumPy, in-RAM float32 matrix @ query + argpartition, p50/p95
  faiss      anchor: faiss IndexFlatIP (exact, float32, its own threads), p50/p95 (pip install faiss-cpu)
  R@10       recall of the default search's top 10 files against the exact search's top 10 on
             the same index (what the partition costs); R@10 f32: against float32 brute force
             (the partition and the float16/int8 storage together)
A probe sweep (--probes) on partitioned indexes gives p50 and both recalls per probe.
Results are printed as tables and written to bench/results/search-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launcher.core.records import FileRecord, Piece  # noqa: E402
from launcher.index.store import Store  # noqa: E402
from launcher.query.retrieve import DEFAULT_PROBE, THREADS, search, warm  # noqa: E402

PIECES_PER_FILE = 10
WORDS = [f"w{i}" for i in range(5000)]  # a Zipf-ish vocabulary of made-up words
TOPICS = 4096
CHUNK = 50_000  # vectors are generated (and committed) this many at a time
K = 10


class Embeddings:
    """Deterministic embedding-shaped unit vectors: rows [a, a + n) are always the same."""

    def __init__(self, dims: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.dims = dims
        self.topics = rng.standard_normal((TOPICS, dims), dtype=np.float32)
        self.topics /= np.linalg.norm(self.topics, axis=1, keepdims=True)
        self.shared = rng.standard_normal(dims).astype(np.float32)
        self.shared /= np.linalg.norm(self.shared)
        p = 1.0 / np.arange(1, TOPICS + 1) ** 0.8
        self.popularity = p / p.sum()

    def rows(self, start: int, n: int, stream: int = 0) -> np.ndarray:
        rng = np.random.default_rng([stream, start])
        t = rng.choice(TOPICS, size=(n, 2), p=self.popularity)
        w = rng.uniform(0.55, 1.0, size=(n, 1)).astype(np.float32)
        v = w * self.topics[t[:, 0]] + (1 - w) * self.topics[t[:, 1]] + 0.45 * self.shared
        v += rng.standard_normal((n, self.dims), dtype=np.float32) * np.float32(0.55 / np.sqrt(self.dims))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v.astype(np.float32)

    def queries(self, n: int) -> np.ndarray:
        return self.rows(0, n, stream=1)


def build(index: Path, n: int, emb: Embeddings, dtype: str, seed: int = 0) -> float:
    """An index of n pieces through the real Writer; returns seconds taken."""
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    ranks = np.minimum(rng.zipf(1.3, size=(n, 8)) - 1, len(WORDS) - 1)
    commit_every = 100_000
    with Store.open_writer(index, {"model": "synthetic-bench"}, dims=emb.dims, dtype=dtype) as w:  # type: ignore[arg-type]
        for f in range(n // PIECES_PER_FILE):
            base = f * PIECES_PER_FILE
            parts = [Piece(text=" ".join(WORDS[k] for k in ranks[base + j])) for j in range(PIECES_PER_FILE)]
            path = f"/bench/dir{f % 100}/file_{f}_w{ranks[base, 0]}.txt"
            w.add_file(FileRecord(path, 1, f, "text"), f"h{f}", parts)
            if (base + PIECES_PER_FILE) % commit_every == 0:
                w.commit()
        pending = w.pending_pieces()
        for a in range(0, len(pending), CHUNK):
            ids = pending[a : a + CHUNK]
            w.set_vectors(ids, emb.rows(a, len(ids)))
            if (a + CHUNK) % commit_every == 0:
                w.commit()
    return time.perf_counter() - t0


def timed(fn, repeats: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """p50 and p95 in ms."""
    ts = []
    for i in range(repeats):
        t = time.perf_counter()
        fn(i)
        ts.append((time.perf_counter() - t) * 1e3)
    return float(np.percentile(ts, 50)), float(np.percentile(ts, 95))


def matrix(n: int, emb: Embeddings) -> np.ndarray:
    m = np.empty((n, emb.dims), dtype=np.float32)
    for a in range(0, n, CHUNK):
        m[a : a + CHUNK] = emb.rows(a, min(CHUNK, n - a))
    return m


def true_files(mat: np.ndarray, queries: np.ndarray) -> list[set[int]]:
    """The top-K files by float32 cosine (a file scores as its best piece; pieces in file order)."""
    out = []
    for q in queries:
        per_file = (mat @ q).reshape(-1, PIECES_PER_FILE).max(axis=1)
        out.append(set(np.argpartition(per_file, len(per_file) - K)[len(per_file) - K :].tolist()))
    return out


def file_number(path: str) -> int:
    return int(path.rsplit("/", 1)[1].split("_")[1])


def recall(got: list[list[int]], truth: list[set[int]]) -> float:
    return float(np.mean([len(set(g) & t) / len(t) for g, t in zip(got, truth, strict=True)]))


def anchors(mat: np.ndarray, queries: np.ndarray, repeats: int) -> dict[str, Any]:
    n = len(mat)

    def brute(i: int) -> None:
        scores = mat @ queries[i]
        top = np.argpartition(scores, n - K)[n - K :]
        top[np.argsort(-scores[top])]

    out: dict[str, Any] = {"f32_brute": timed(brute, repeats)}
    try:
        import faiss  # type: ignore[import-not-found]
    except ImportError:
        out["faiss"] = None
        return out
    flat = faiss.IndexFlatIP(mat.shape[1])
    flat.add(mat)
    out["faiss"] = timed(lambda i: flat.search(queries[i : i + 1], K), repeats)
    flat.reset()
    return out


def run_one(root: Path, n: int, dims: int, dtype: str, repeats: int, probes: list[int]) -> dict[str, Any]:
    index = root / f"{n}-{dims}-{dtype}"
    emb = Embeddings(dims)
    build_s = build(index, n, emb, dtype)
    t = time.perf_counter()
    store = Store.open(index)
    open_ms = (time.perf_counter() - t) * 1e3
    part = store.manifest.get("partition")
    t = time.perf_counter()
    warm(store)  # as the resident process does in the background after each open
    warm_ms = (time.perf_counter() - t) * 1e3
    rng = np.random.default_rng(1)
    queries = emb.queries(repeats)
    texts = [
        f"{WORDS[int(rng.integers(0, 50))]} {WORDS[int(rng.integers(50, 2000))]}" for _ in range(repeats)
    ]
    t = time.perf_counter()
    search(store, queries[0], texts[0])
    first_ms = (time.perf_counter() - t) * 1e3

    def files(probe: int | None) -> list[list[int]]:
        return [
            [file_number(h.path) for h in search(store, q, "", top_k=K, min_score=-1, probe=probe)]
            for q in queries
        ]

    vec = timed(lambda i: search(store, queries[i], ""), repeats)
    exact = timed(lambda i: search(store, queries[i], "", probe=0), repeats)
    hybrid = timed(lambda i: search(store, queries[i], texts[i]), repeats)
    keyword = timed(lambda i: search(store, None, texts[i]), repeats)
    mat = matrix(n, emb)
    truth_f32 = true_files(mat, queries)
    exact_files = [set(f) for f in files(0)]
    default_files = files(None)
    sweep = []
    if part:
        for p in probes:
            sweep.append(
                {
                    "probe": p,
                    "p50_p95": timed(lambda i, p=p: search(store, queries[i], "", probe=p), repeats),
                    "recall_vs_exact": recall(files(p), exact_files),
                    "recall_vs_f32": recall(files(p), truth_f32),
                }
            )
    base = anchors(mat, queries, repeats)
    del mat
    shutil.rmtree(index)
    return {
        "pieces": n,
        "dims": dims,
        "dtype": dtype,
        "partition_lists": part["lists"] if part else 0,
        "build_s": round(build_s, 1),
        "open_ms": open_ms,
        "warm_ms": warm_ms,
        "first_ms": first_ms,
        "vector": vec,
        "exact": exact,
        "hybrid": hybrid,
        "keyword": keyword,
        "recall_vs_exact": recall(default_files, exact_files),
        "recall_vs_f32": recall(default_files, truth_f32),
        "exact_recall_vs_f32": recall([list(f) for f in exact_files], truth_f32),
        "probe_sweep": sweep,
        **base,
    }


def fmt(pair: tuple[float, float] | None) -> str:
    return "-" if pair is None else f"{pair[0]:.1f}/{pair[1]:.1f}"


def main() -> None:
    """Build, time, print, save."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated piece counts")
    ap.add_argument(
        "--million", action="store_true", help="also 1,000,000 pieces (needs ~12 GB RAM, ~30 min)"
    )
    ap.add_argument("--dims", default="256,1024,2048")
    ap.add_argument("--dtypes", default="float16,int8")
    ap.add_argument("--probes", default="8,16,32,64,128", help="probe sweep on partitioned indexes")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--workdir", default=None, help="where to build the indexes (default: a temp dir)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] + ([1_000_000] if args.million else [])
    probes = [int(p) for p in args.probes.split(",") if p]
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench-search-"))
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    print(
        f"search threads {THREADS}, default probe {DEFAULT_PROBE}; ms p50/p95; recall@{K} of files\n\n"
        "| pieces | dims | dtype | lists | open | warm | first | vector | exact | hybrid | keyword | f32 brute | faiss flat "
        "| R@10 vs exact | R@10 vs f32 | exact R@10 vs f32 |\n|" + "---|" * 16,
        flush=True,
    )
    for n in sizes:
        for dims in (int(d) for d in args.dims.split(",")):
            for dtype in args.dtypes.split(","):
                r = run_one(root, n, dims, dtype, args.repeats, probes)
                rows.append(r)
                print(
                    f"| {n:,} | {dims} | {dtype} | {r['partition_lists']} | {r['open_ms']:.1f} | {r['warm_ms']:.1f} | {r['first_ms']:.1f} "
                    f"| {fmt(r['vector'])} | {fmt(r['exact'])} | {fmt(r['hybrid'])} | {fmt(r['keyword'])} "
                    f"| {fmt(r['f32_brute'])} | {fmt(r['faiss'])} | {r['recall_vs_exact']:.3f} "
                    f"| {r['recall_vs_f32']:.3f} | {r['exact_recall_vs_f32']:.3f} |",
                    flush=True,
                )
    swept = [r for r in rows if r["probe_sweep"]]
    if swept:
        print(
            "\nprobe sweep (partitioned indexes)\n\n| pieces | dims | dtype | probe | p50/p95 | R@10 vs exact | R@10 vs f32 |"
        )
        print("|" + "---|" * 7)
        for r in swept:
            for s in r["probe_sweep"]:
                print(
                    f"| {r['pieces']:,} | {r['dims']} | {r['dtype']} | {s['probe']} | {fmt(s['p50_p95'])} "
                    f"| {s['recall_vs_exact']:.3f} | {s['recall_vs_f32']:.3f} |"
                )
    out = Path(__file__).resolve().parent / "results" / time.strftime("search-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpus": os.cpu_count(),
        "search_threads": THREADS,
        "default_probe": DEFAULT_PROBE,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "load_average": os.getloadavg(),
    }
    out.write_text(json.dumps({"machine": machine, "results": rows}, indent=1))
    print(f"\nwritten to {out}")
    if not args.workdir:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
