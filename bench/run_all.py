"""The whole benchmark suite, one command: builds the shape-true 2B model if missing, then runs the
engine, search, indexing and rerank benchmarks one after another (never in parallel: each uses
every core), printing their tables and writing their JSON to bench/results/.

    python bench/run_all.py             # everything (several hours on 2 cores)
    python bench/run_all.py --quick     # fewer runs and sizes (about an hour)
    python bench/run_all.py --only search,index

Nothing here runs in CI. See bench/README.md for each benchmark and its flags.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL = HERE / "models" / "shape-true-qwen3vl-2b-Q4_K_M.gguf"
RERANKER = HERE / "models" / "shape-true-qwen3vl-2b-reranker-Q4_K_M.gguf"

FULL: dict[str, list[str]] = {
    "engine": ["bench_engine.py"],
    "search": ["bench_search.py", "--million"],
    "index": ["bench_index.py"],
    "rerank": ["bench_rerank.py"],
}
QUICK: dict[str, list[str]] = {
    "engine": ["bench_engine.py", "--runs", "3", "--large-image-runs", "1"],
    "search": ["bench_search.py", "--dims", "1024", "--repeats", "20"],
    "index": ["bench_index.py", "--runs", "3", "--texts", "8", "--images", "3"],
    "rerank": ["bench_rerank.py", "--sizes", "5,10"],
}


def run(args: list[str]) -> int:
    print(f"\n$ python bench/{' '.join(args)}", flush=True)
    t = time.monotonic()
    code = subprocess.call([sys.executable, str(HERE / args[0]), *args[1:]])
    print(f"[run_all] {args[0]}: exit {code} after {time.monotonic() - t:.0f} s", flush=True)
    return code


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer runs and sizes")
    ap.add_argument("--only", default="engine,search,index,rerank", help="benchmarks to run, comma-separated")
    args = ap.parse_args()
    plan = QUICK if args.quick else FULL
    wanted = [name for name in args.only.split(",") if name]
    unknown = [name for name in wanted if name not in plan]
    if unknown:
        ap.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(plan)}")
    if {"engine", "index", "rerank"} & set(wanted) and not MODEL.is_file() and run(["make_shape_true_2b.py"]):
        return 1
    if "rerank" in wanted and not RERANKER.is_file() and run(["make_shape_true_2b_reranker.py"]):
        return 1
    failed = [name for name in wanted if run(plan[name])]
    if failed:
        print(f"[run_all] failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
