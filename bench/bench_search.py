"""Search latency over synthetic indexes: p50/p95 per size, width and storage dtype.

    python bench/bench_search.py                      # 10k and 100k pieces, dims 256 and 1024
    python bench/bench_search.py --million            # adds 1M pieces (1M x 1024 float32 is 4 GB)
    python bench/bench_search.py --sizes 10000 --dims 256 --dtypes int8

Each index is built through the real Writer (10 pieces per file, short random texts, SYNTHETIC
random unit vectors: timing does not depend on what the vectors mean). Columns:
  open       Store.open (manifest, file table, memory maps), ms
  first      the first query after opening (builds the per-snapshot caches), ms
  vector     search(vector, "") p50/p95 ms
  hybrid     search(vector, "two words") p50/p95 ms (+ BM25 + file names)
  keyword    search(None, "two words") p50/p95 ms
  f32 brute  baseline: plain NumPy, in-RAM float32 matrix @ query + argpartition, p50/p95 ms
Results are printed as a table and written to bench/results/search-<time>.json.
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launcher.records import FileRecord, Piece  # noqa: E402
from launcher.search import THREADS, search  # noqa: E402
from launcher.store import Store  # noqa: E402

PIECES_PER_FILE = 10
WORDS = [f"w{i}" for i in range(5000)]  # a Zipf-ish vocabulary of made-up words


def unit_rows(rng: np.random.Generator, n: int, dims: int) -> np.ndarray:
    """Synthetic random unit vectors."""
    v = rng.standard_normal((n, dims), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def build(index: Path, n: int, dims: int, dtype: str, seed: int = 0) -> float:
    """An index of n pieces through the real Writer; returns seconds taken."""
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    ranks = np.minimum(rng.zipf(1.3, size=(n, 8)) - 1, len(WORDS) - 1)
    commit_every = 100_000
    with Store.open_writer(index, {"model": "synthetic-bench"}, dims=dims, dtype=dtype) as w:  # type: ignore[arg-type]
        for f in range(n // PIECES_PER_FILE):
            base = f * PIECES_PER_FILE
            parts = [Piece(text=" ".join(WORDS[k] for k in ranks[base + j])) for j in range(PIECES_PER_FILE)]
            path = f"/bench/dir{f % 100}/file_{f}_w{ranks[base, 0]}.txt"
            w.add_file(FileRecord(path, 1, f, "text"), f"h{f}", parts)
            if (base + PIECES_PER_FILE) % commit_every == 0:
                w.commit()
        pending = w.pending_pieces()
        for a in range(0, len(pending), 50_000):
            ids = pending[a : a + 50_000]
            w.set_vectors(ids, unit_rows(rng, len(ids), dims))
            if a % commit_every == 0:
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


def brute_force(n: int, dims: int, queries: np.ndarray, repeats: int) -> tuple[float, float]:
    """Baseline: everything as float32 in RAM, one BLAS GEMV, argpartition for the top 10."""
    matrix = np.empty((n, dims), dtype=np.float32)
    rng = np.random.default_rng(2)
    for a in range(0, n, 100_000):
        matrix[a : a + 100_000] = unit_rows(rng, min(100_000, n - a), dims)

    def brute(i: int) -> None:
        scores = matrix @ queries[i]
        top = np.argpartition(scores, n - 10)[n - 10 :]
        top[np.argsort(-scores[top])]

    return timed(brute, repeats)


def run_one(root: Path, n: int, dims: int, dtype: str, repeats: int) -> dict[str, object]:
    index = root / f"{n}-{dims}-{dtype}"
    build_s = build(index, n, dims, dtype)
    t = time.perf_counter()
    store = Store.open(index)
    open_ms = (time.perf_counter() - t) * 1e3
    rng = np.random.default_rng(1)
    queries = unit_rows(rng, repeats, dims)
    texts = [
        f"{WORDS[int(rng.integers(0, 50))]} {WORDS[int(rng.integers(50, 2000))]}" for _ in range(repeats)
    ]
    t = time.perf_counter()
    search(store, queries[0], texts[0])
    first_ms = (time.perf_counter() - t) * 1e3
    vec = timed(lambda i: search(store, queries[i], ""), repeats)
    hybrid = timed(lambda i: search(store, queries[i], texts[i]), repeats)
    keyword = timed(lambda i: search(store, None, texts[i]), repeats)
    baseline = brute_force(n, dims, queries, repeats)
    shutil.rmtree(index)
    return {
        "pieces": n,
        "dims": dims,
        "dtype": dtype,
        "build_s": round(build_s, 1),
        "open_ms": round(open_ms, 1),
        "first_ms": round(first_ms, 1),
        "vector_p50": round(vec[0], 1),
        "vector_p95": round(vec[1], 1),
        "hybrid_p50": round(hybrid[0], 1),
        "hybrid_p95": round(hybrid[1], 1),
        "keyword_p50": round(keyword[0], 1),
        "keyword_p95": round(keyword[1], 1),
        "f32_brute_p50": round(baseline[0], 1),
        "f32_brute_p95": round(baseline[1], 1),
    }


def main() -> None:
    """Build, time, print, save."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated piece counts")
    ap.add_argument("--million", action="store_true", help="also 1,000,000 pieces (needs ~8 GB RAM, minutes)")
    ap.add_argument("--dims", default="256,1024")
    ap.add_argument("--dtypes", default="float16,int8")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--workdir", default=None, help="where to build the indexes (default: a temp dir)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] + ([1_000_000] if args.million else [])
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench-search-"))
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    head = (
        f"{'pieces':>9} {'dims':>5} {'dtype':>8} {'open':>6} {'first':>6} {'vector p50/p95':>15} "
        f"{'hybrid p50/p95':>15} {'keyword p50/p95':>16} {'f32 brute p50/p95':>18}"
    )
    print(head)
    print("-" * len(head))
    for n in sizes:
        for dims in (int(d) for d in args.dims.split(",")):
            for dtype in args.dtypes.split(","):
                r = run_one(root, n, dims, dtype, args.repeats)
                rows.append(r)
                cells = [f"{n:>9} {dims:>5} {dtype:>8} {r['open_ms']:>6} {r['first_ms']:>6}"]
                for key, width in (("vector", 7), ("hybrid", 7), ("keyword", 8), ("f32_brute", 9)):
                    cells.append(f"{r[key + '_p50']:>{width}}/{r[key + '_p95']:<7}")
                print(" ".join(cells), flush=True)
    out = Path(__file__).resolve().parent / "results" / time.strftime("search-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpus": os.cpu_count(),
        "search_threads": THREADS,
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
