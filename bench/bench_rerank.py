"""Reranking latency: N candidates scored against one query, text pairs and image pairs.

    python bench/bench_rerank.py                          # tiny GGUF; the shape-true 2B if present
    python bench/bench_rerank.py --models 2b --sizes 5,10 --kinds text --heads capture,rank
    python bench/bench_rerank.py --image-cap 50           # also the slow 2B image rows (minutes)

Models:
  tiny  tests/fixtures/tiny-reranker (hidden 64, 3 layers): overheads, not model compute
  2b    bench/models/shape-true-qwen3vl-2b-reranker-Q4_K_M.gguf + the f16 mmproj: real Qwen3-VL-2B
        shapes with random weights (make it with bench/make_shape_true_2b_reranker.py)
Candidates: text passages of about 100 tokens (a pair is about 170 tokens with the system prompt
and instruction), or 512 x 512 images (256 visual tokens each). Heads: `capture` (final-norm row of
the last token, the default) and `rank` (llama.cpp's RANK pooling, output layer on every token).
Columns: total seconds for the N pairs (median of --repeat runs), ms per pair, pairs per second.
Results are printed as a table and written to bench/results/rerank-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from launcher.models.rerank import RerankInput, RerankPair, load_reranker  # noqa: E402
from launcher.models.rerank.llama import LlamaReranker  # noqa: E402
from launcher.models.runtime import LlamaOptions, default_threads, system_info  # noqa: E402

MODELS = {
    "tiny": (
        ROOT / "tests/fixtures/tiny-reranker/tiny-qwen3vl-reranker-f16.gguf",
        ROOT / "tests/fixtures/tiny-reranker/mmproj-tiny-qwen3vl-reranker-f16.gguf",
    ),
    "2b": (
        ROOT / "bench/models/shape-true-qwen3vl-2b-reranker-Q4_K_M.gguf",
        ROOT / "bench/models/mmproj-shape-true-qwen3vl-2b-f16.gguf",
    ),
}
QUERY = "the signed lease agreement for the flat in Lisbon"
_PASSAGE = (
    "the launcher indexes every document photo and note on this computer so that a short query typed after "
    "the hotkey finds the right file even when its name says nothing about its content quarterly budget "
    "spreadsheets holiday photos scanned lease agreement draft of the conference talk meeting minutes invoices "
    "recipes sourdough ramen lemon tart contract blue letterhead slides approximate nearest neighbours"
)
WORDS = _PASSAGE.split()


def text_candidates(n: int, reranker: LlamaReranker, target_tokens: int = 100) -> list[RerankInput]:
    """n different passages of about target_tokens tokens each."""
    rng = np.random.default_rng(7)
    out = []
    for _ in range(n):
        words: list[str] = []
        while len(reranker.tokenize(" ".join(words))) < target_tokens:
            words.append(str(rng.choice(WORDS)))
        out.append(RerankInput(texts=[" ".join(words)]))
    return out


def image_candidates(n: int) -> list[RerankInput]:
    """n different 512 x 512 images: 256 visual tokens each after the 32 x 32 merge."""
    ys, xs = np.mgrid[0:512, 0:512]
    out = []
    for i in range(n):
        rgb = np.stack(
            [(xs * (i + 1) + ys) % 256, (ys * 3 + i * 40) % 256, ((xs ^ ys) * (i + 2)) % 256], axis=-1
        )
        out.append(RerankInput(images=[Image.fromarray(rgb.astype(np.uint8), "RGB")]))
    return out


def pair_tokens(reranker: LlamaReranker, candidate: RerankInput) -> int:
    """Tokens of one (query, candidate) pair, images counted as their visual tokens."""
    pair = RerankPair(RerankInput(texts=[QUERY]), RerankInput(texts=candidate.texts or [""]))
    # each image: <|vision_start|>, its visual tokens, <|vision_end|>
    return len(reranker.token_ids(pair)) + (256 + 2) * len(candidate.images)


def run(args: argparse.Namespace, save: Any) -> list[dict[str, Any]]:
    """Time every (model, head, kind, N) combination asked for; `save(rows)` after each row."""
    rows: list[dict[str, Any]] = []
    for model_name in args.models:
        model, mmproj = MODELS[model_name]
        if not model.is_file():
            print(f"skipping {model_name}: {model.relative_to(ROOT)} is missing", file=sys.stderr)
            continue
        repeat = args.repeat if args.repeat else (3 if model_name == "tiny" else 1)
        for head in args.heads:
            opts = LlamaOptions(n_threads=args.threads, last_token_capture=head == "capture")
            t0 = time.perf_counter()
            with load_reranker(model, mmproj if "image" in args.kinds else None, options=opts) as reranker:
                assert isinstance(reranker, LlamaReranker)
                load_s = time.perf_counter() - t0
                for kind in args.kinds:
                    sizes = [
                        n for n in args.sizes if kind == "text" or model_name == "tiny" or n <= args.image_cap
                    ]
                    pool = (text_candidates if kind == "text" else lambda n, _r: image_candidates(n))(
                        max(sizes or [1]), reranker
                    )
                    reranker.rerank(QUERY, pool[:1])  # warm-up: first decode allocates the graph
                    tokens = statistics.mean(pair_tokens(reranker, c) for c in pool[: min(5, len(pool))])
                    for n in sizes:
                        times = []
                        for _ in range(repeat):
                            t = time.perf_counter()
                            reranker.rerank(QUERY, pool[:n])
                            times.append(time.perf_counter() - t)
                        total = statistics.median(times)
                        row = {
                            "model": model_name,
                            "head": head,
                            "kind": kind,
                            "n": n,
                            "pair_tokens": round(tokens),
                            "total_s": round(total, 3),
                            "ms_per_pair": round(1000 * total / n, 1),
                            "pairs_per_s": round(n / total, 2),
                            "repeat": repeat,
                            "load_s": round(load_s, 2),
                        }
                        rows.append(row)
                        print_row(row)
                        save(rows)  # a long run cut short keeps what it measured
                    skipped = [n for n in args.sizes if n not in sizes]
                    if skipped:
                        print(f"  ({model_name} {kind}: N={skipped} skipped; raise --image-cap to run them)")
    return rows


HEADER = (
    f"{'model':<6}{'head':<9}{'kind':<7}{'N':>4}{'tok/pair':>10}{'total s':>10}{'ms/pair':>10}{'pairs/s':>9}"
)


def print_row(row: dict[str, Any]) -> None:
    """One table line."""
    print(
        f"{row['model']:<6}{row['head']:<9}{row['kind']:<7}{row['n']:>4}{row['pair_tokens']:>10}"
        f"{row['total_s']:>10.2f}{row['ms_per_pair']:>10.1f}{row['pairs_per_s']:>9.2f}",
        flush=True,
    )


def main() -> int:
    """Parse flags, run, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", default="tiny,2b", help="comma list of tiny, 2b (default: %(default)s)")
    parser.add_argument("--sizes", default="5,10,20,50", help="candidate counts (default: %(default)s)")
    parser.add_argument("--kinds", default="text,image", help="text, image (default: %(default)s)")
    parser.add_argument("--heads", default="capture", help="capture, rank (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=default_threads(), help="llama.cpp threads")
    parser.add_argument(
        "--repeat", type=int, default=0, help="runs per row, median kept (default: 3 tiny, 1 2b)"
    )
    parser.add_argument(
        "--image-cap",
        type=int,
        default=10,
        help="largest N for 2B image rows, ~6 s a pair on 2 cores (default: %(default)s)",
    )
    args = parser.parse_args()
    args.models = args.models.split(",")
    args.sizes = [int(x) for x in args.sizes.split(",")]
    args.kinds = args.kinds.split(",")
    args.heads = args.heads.split(",")
    load = os.getloadavg()[0]  # the machine may be shared: read ratios, not absolutes, when this is high
    print(
        f"threads {args.threads}, {platform.machine()}, {os.cpu_count()} logical cpus, load average {load:.1f}"
    )
    print(HEADER)
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"rerank-{time.strftime('%Y%m%d-%H%M%S')}.json"
    meta = {
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "llama_system_info": system_info(),
        "query": QUERY,
        "load_average_before": load,
    }

    def save(rows: list[dict[str, Any]]) -> None:
        meta["load_average_now"] = os.getloadavg()[0]
        out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n", encoding="utf-8")

    save(run(args, save))
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
