"""Indexing benchmarks: pipeline overhead over pure embedding, and rescanning an unchanged tree.

    python bench/bench_index.py [--model PATH] [--files 100000] [--runs 5]

1. End-to-end indexing of a mixed folder against the sum of its embedding calls: extraction,
   hashing and commits overlap with inference (a bounded look-ahead thread), so the pipeline should
   add under 10% to the embedding time. Use a realistic model (bench/models/*2b*Q4_K_M.gguf from
   make_shape_true_2b.py) so that embedding dominates as it does for users.
2. Rescanning an unchanged tree of N files (`launcher index` with nothing to do) against `find`
   over the same tree (target: <= 2x).

Prints tables (medians of --runs) and writes JSON to bench/results/index-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from launcher.core.records import Matrix  # noqa: E402
from launcher.index.store import Store  # noqa: E402
from launcher.ingest.pipeline import Indexer, IndexOptions  # noqa: E402
from launcher.ingest.scan import Files, scan_files  # noqa: E402
from launcher.models.embed import Embedder, EmbedInput, load_embedder  # noqa: E402
from launcher.models.embed.llama import LlamaOptions  # noqa: E402
from launcher.query.retrieve import search, warm  # noqa: E402


class TimedEmbedder(Embedder):
    """Wraps an embedder and adds up the wall time spent inside it."""

    def __init__(self, inner: Embedder):
        self.inner = inner
        self.name, self.dims, self.supports_images = inner.name, inner.dims, inner.supports_images
        self.max_tokens, self.batch_size = inner.max_tokens, inner.batch_size
        self.seconds = 0.0

    def embed_batch(self, inputs: Sequence[EmbedInput]) -> Matrix:
        """Time the inner call."""
        t = time.perf_counter()
        try:
            return self.inner.embed_batch(inputs)
        finally:
            self.seconds += time.perf_counter() - t

    def identity(self) -> dict[str, Any]:
        """The inner model's identity."""
        return self.inner.identity()


def make_mixed_folder(root: Path, n_text: int, n_images: int) -> None:
    """Text notes, code, Markdown and images of several sizes."""
    rng = np.random.default_rng(0)
    words = [
        "the",
        "report",
        "budget",
        "travel",
        "passport",
        "invoice",
        "meeting",
        "garden",
        "recipe",
        "engine",
        "cluster",
        "photo",
    ]
    for i in range(n_text):
        lines = [" ".join(rng.choice(words, 12)) for _ in range(60)]
        ext = (".txt", ".md", ".py")[i % 3]
        (root / f"note{i:04d}{ext}").write_text("\n".join(lines), encoding="utf-8")
    for i in range(n_images):
        side = (256, 384, 512)[i % 3]
        arr = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / f"photo{i:03d}.png")


def bench_pipeline(model: Path, mmproj: Path | None, runs: int, n_text: int, n_images: int) -> dict[str, Any]:
    """Total indexing time vs time inside the model, over several fresh indexes."""
    rows = []
    for r in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            docs = Path(tmp) / "docs"
            docs.mkdir()
            make_mixed_folder(docs, n_text, n_images if mmproj else 0)
            with load_embedder(model, mmproj, LlamaOptions()) as inner:
                emb = TimedEmbedder(inner)
                t = time.perf_counter()
                report = Indexer(Path(tmp) / "index", emb, IndexOptions()).run([docs])
                total = time.perf_counter() - t
            rows.append({"total_s": total, "embed_s": emb.seconds, "pieces": report.pieces_embedded})
            print(f"  run {r + 1}: total {total:.2f}s, inside the model {emb.seconds:.2f}s", flush=True)
    total = statistics.median(x["total_s"] for x in rows)
    embed = statistics.median(x["embed_s"] for x in rows)
    files = model.stat().st_size + (mmproj.stat().st_size if mmproj else 0)
    return {
        "runs": rows,
        "total_s": total,
        "embed_s": embed,
        "overhead": total / embed - 1,
        "peak_rss_mb": peak_rss_mb(),
        "model_files_mb": files / 2**20,
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux VmHWM), MB: the whole benchmark, an upper bound."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_tree(root: Path, n: int) -> None:
    """n small files in a realistic nesting (100 per folder, 3 levels)."""
    for i in range(n):
        d = root / f"a{i // 10000:02d}" / f"b{i // 100 % 100:02d}"
        if i % 100 == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"file{i:06d}.txt").write_bytes(b"x")


def bench_rescan(n: int, runs: int, model: Path) -> dict[str, Any]:
    """`launcher index` over an unchanged tree vs `find` (both with a warm page cache)."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        make_tree(tree, n)
        index_dir = Path(tmp) / "index"
        with load_embedder(model, None, LlamaOptions()) as emb:
            Indexer(index_dir, emb, IndexOptions(embed=False)).run([tree])  # names only: fast to build
            finds, finds_stat, rescans, scans, floors, firsts, residents, warmed = (
                [],
                [],
                [],
                [],
                [],
                [],
                [],
                [],
            )
            # The watcher's reconcile: one Indexer kept, its next writer built on the last one's
            # snapshot (only the file-table deltas since are read).
            resident = Indexer(index_dir, emb, IndexOptions(embed=False))
            resident.run([tree])
            for _ in range(runs):
                t = time.perf_counter()
                subprocess.run(["find", str(tree), "-type", "f"], stdout=subprocess.DEVNULL, check=True)
                finds.append(time.perf_counter() - t)
                # find that also stats every file (size and mtime), as an unchanged-check must
                t = time.perf_counter()
                cmd = ["find", str(tree), "-type", "f", "-printf", "%s %T@ %p\\n"]
                subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
                finds_stat.append(time.perf_counter() - t)
                t = time.perf_counter()
                report = Indexer(index_dir, emb, IndexOptions(embed=False)).run([tree])
                rescans.append(time.perf_counter() - t)
                assert report.unchanged == n and report.new == 0
                t = time.perf_counter()
                report = resident.run([tree])
                residents.append(time.perf_counter() - t)
                assert report.unchanged == n and report.new == 0
                # Where the time goes: the walk alone (same rules), and the least any Python walk
                # costs (one scandir per folder, one stat per file, no rules, no records).
                t = time.perf_counter()
                assert sum(len(f.paths) for f in scan_files([tree]) if isinstance(f, Files)) == n
                scans.append(time.perf_counter() - t)
                t = time.perf_counter()
                assert python_floor(tree) == n
                floors.append(time.perf_counter() - t)
                # The first query on a fresh snapshot of this index (as after each watcher commit):
                # it builds the per-snapshot name lookups. Names only (the index has no vectors).
                store = Store.open(index_dir)
                t = time.perf_counter()
                assert search(store, None, f"file{n // 2:06d}.txt")[0].path.endswith(f"file{n // 2:06d}.txt")
                firsts.append(time.perf_counter() - t)
                # The same once the resident process's warm thread has seen the snapshot.
                store = Store.open(index_dir)
                warm(store)
                t = time.perf_counter()
                assert search(store, None, f"file{n // 2:06d}.txt")[0].path.endswith(f"file{n // 2:06d}.txt")
                warmed.append(time.perf_counter() - t)
    f, fs, r = statistics.median(finds), statistics.median(finds_stat), statistics.median(rescans)
    return {
        "files": n,
        "find_s": f,
        "find_stat_s": fs,
        "rescan_s": r,
        "resident_rescan_s": statistics.median(residents),
        "ratio_resident_vs_find_stat": statistics.median(residents) / fs,
        "scan_s": statistics.median(scans),
        "python_floor_s": statistics.median(floors),
        "first_search_s": statistics.median(firsts),
        "first_search_warmed_s": statistics.median(warmed),
        "ratio": r / f,
        "ratio_vs_find_stat": r / fs,
        "find_runs": finds,
        "find_stat_runs": finds_stat,
        "rescan_runs": rescans,
        "resident_rescan_runs": residents,
        "scan_runs": scans,
        "python_floor_runs": floors,
        "first_search_runs": firsts,
        "first_search_warmed_runs": warmed,
    }


def python_floor(tree: Path) -> int:
    """Files under tree by the plainest Python walk: os.scandir per folder, DirEntry.stat per file."""
    count, stack = 0, [str(tree)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    entry.stat()
                    count += 1
    return count


def main() -> None:
    """Run both benchmarks and print tables."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    candidates = (
        sorted((ROOT / "bench" / "models").glob("*2b*Q4_K_M*.gguf"))
        if (ROOT / "bench" / "models").is_dir()
        else []
    )
    ap.add_argument(
        "--model",
        type=Path,
        default=candidates[0] if candidates else ROOT / "models" / "all-MiniLM-L6-v2-Q8_0.gguf",
    )
    mmprojs = sorted((ROOT / "bench" / "models").glob("mmproj-*2b*f16.gguf")) if candidates else []
    ap.add_argument("--mmproj", type=Path, default=mmprojs[0] if mmprojs else None)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--texts", type=int, default=40)
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--skip-pipeline", action="store_true")
    ap.add_argument("--skip-rescan", action="store_true")
    args = ap.parse_args()
    out: dict[str, Any] = {
        "model": str(args.model),
        "mmproj": str(args.mmproj) if args.mmproj else None,
        "cpus": os.cpu_count(),
    }
    if not args.skip_pipeline:
        print(
            f"pipeline overhead: {args.texts} texts, {args.images if args.mmproj else 0} images, model {args.model.name}"
        )
        p = bench_pipeline(args.model, args.mmproj, args.runs, args.texts, args.images)
        out["pipeline"] = p
        print(
            "\n| total (s) | inside the model (s) | pipeline overhead | peak RSS (MB) | model + mmproj files (MB) |"
            "\n|---|---|---|---|---|"
        )
        print(
            f"| {p['total_s']:.2f} | {p['embed_s']:.2f} | {100 * p['overhead']:.1f}% "
            f"| {p['peak_rss_mb']:.0f} | {p['model_files_mb']:.0f} |\n"
        )
    if not args.skip_rescan:
        print(f"rescan of an unchanged tree of {args.files} files")
        r = bench_rescan(args.files, args.runs, ROOT / "models" / "all-MiniLM-L6-v2-Q8_0.gguf")
        out["rescan"] = r
        print(
            "\n| files | find (s) | find -printf size+mtime (s) | launcher index, unchanged (s) "
            "| vs find -printf | resident (watcher) rescan (s) | vs find -printf | scan alone (s) "
            "| plainest Python walk (s) | first search, fresh snapshot (s) | the same, warmed (s) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        print(
            f"| {r['files']} | {r['find_s']:.3f} | {r['find_stat_s']:.3f} | {r['rescan_s']:.3f} "
            f"| {r['ratio_vs_find_stat']:.2f}x | {r['resident_rescan_s']:.3f} "
            f"| {r['ratio_resident_vs_find_stat']:.2f}x | {r['scan_s']:.3f} | {r['python_floor_s']:.3f} "
            f"| {r['first_search_s']:.3f} | {r['first_search_warmed_s']:.3f} |\n"
        )
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"index-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=2), encoding="utf-8")
    print(f"wrote {path}")
    shutil.rmtree(Path(tempfile.gettempdir()) / "launcher-bench", ignore_errors=True)


if __name__ == "__main__":
    main()
