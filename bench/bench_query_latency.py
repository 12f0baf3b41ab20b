"""Query latency in the resident process, idle and while its watcher embeds in the background.

    python bench/bench_query_latency.py [--model GGUF --mmproj GGUF] [--threads 2] [--image-tokens 256]
                                        [--configs lane,no-lane,lane-spin,spin] [--rounds 3] [--queries 20]

`launcher launch --watch` answers queries with the model its watcher embeds with. Two settings
decide how long a query waits for it:
- the query lane (LlamaOptions.query_ctx, on in `launch --watch`): a second, small context on the
  same weights, so a text query never waits for the decode or vision encode under way;
- OpenMP's wait policy (PASSIVE in `launch --watch`): llama.cpp's threads sleep at barriers instead
  of spinning, so the niced worker does not hold both cores while it waits.
Configurations: `lane` (both, the default of `launch --watch`), `no-lane` (PASSIVE, no lane: the
watcher's model call under way must end first), `lane-spin` and `spin` (the same with OpenMP's
default policy).

Each round starts one fresh process per configuration, alternating, so that the noise of a shared
machine falls on all alike. In each process `idle` embeds the queries one at a time with nothing
else running; `busy` does the same, each query held in `Watcher.foreground()` as the service holds
it, while a real Watcher (niced worker, EMBED_UNIT pieces per model call) embeds --folder into a
scratch index. With an mmproj the folder is made of pictures of exactly --image-tokens visual tokens
each (random pixels: a transformer's cost depends on the token count, not the content); without
one it is the retrieval corpus. Medians over rounds of each process's p50/p95, in ms; written to
bench/results/query-latency-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from launcher.core import config  # noqa: E402

CHILD = r"""
import faulthandler, json, os, statistics, sys, tempfile, time
from contextlib import nullcontext
faulthandler.enable()
from pathlib import Path
p = json.loads(sys.argv[1])
sys.path.insert(0, p["root"])
from launcher.ingest.pipeline import IndexOptions
from launcher.models import catalogue as models
from launcher.models.embed import QUERY_INSTRUCTION, EmbedInput, load_embedder
from launcher.models.imageprep import FACTOR
from launcher.models.runtime import LlamaOptions
from launcher.watch.watcher import Watcher

resolved = models.resolve_model(p["model"] or None, p["mmproj"] or None)
opts = LlamaOptions(
    n_threads=p["threads"], image_max_pixels=p["image_tokens"] * FACTOR * FACTOR, query_ctx=p["query_ctx"]
)
emb = load_embedder(resolved.path, resolved.mmproj, opts)
queries = [f"the photo of the red bicycle by the lake, taken on holiday number {i}" for i in range(p["queries"])]

def timed(hold):
    out = []
    for q in queries:
        t = time.perf_counter()
        with hold():
            emb.embed([EmbedInput(texts=[q], instruction=QUERY_INSTRUCTION)])
        out.append((time.perf_counter() - t) * 1000)
        time.sleep(0.2)  # a person reads the results before the next query
    out.sort()
    return {"p50": statistics.median(out), "p95": out[min(len(out) - 1, round(0.95 * (len(out) - 1)))],
            "max": out[-1], "all": out}

emb.embed([EmbedInput(texts=[queries[0]], instruction=QUERY_INSTRUCTION)])  # warm-up
result = {"idle": timed(nullcontext)}
with tempfile.TemporaryDirectory() as home:
    watcher = Watcher(Path(home) / "index", [Path(p["folder"])], emb, IndexOptions())
    watcher.start()
    deadline = time.monotonic() + 600
    while (watcher.status().get("progress") or {}).get("phase") != "embed":
        if time.monotonic() > deadline:
            raise SystemExit("the watcher never started embedding")
        time.sleep(0.2)
    t0 = time.perf_counter()
    result["busy"] = timed(watcher.foreground)
    progress = watcher.status().get("progress") or {}
    result["busy_s"] = time.perf_counter() - t0
    result["embedded_meanwhile"] = progress.get("done")
    result["still_embedding"] = progress.get("phase") == "embed"
    watcher.stop()
result["lane_calls"] = emb.lane_calls
print(json.dumps(result), flush=True)
# The watcher's model call may still be under way (up to EMBED_UNIT pictures): a normal exit would
# tear down ggml's statics under that thread (a segfault), and emb.close() would wait for the call.
os._exit(0)
"""
LANE = int(config.SETTINGS["query_lane"].default)  # the lane `launch --watch` opens (256 tokens)
CONFIGS = {
    # name: (OMP_WAIT_POLICY or None for unset, query lane tokens)
    "lane": ("PASSIVE", LANE),
    "no-lane": ("PASSIVE", 0),
    "lane-spin": (None, LANE),
    "spin": (None, 0),
}


def make_pictures(folder: Path, n: int, tokens: int) -> None:
    """n pictures of exactly `tokens` visual tokens each (a square grid of 32-pixel cells)."""
    import numpy as np
    from PIL import Image

    side = int(math.isqrt(tokens)) * 32
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), "RGB").save(
            folder / f"picture-{i:03d}.png"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="", help="GGUF to measure (default: the resolved default model)")
    ap.add_argument("--mmproj", default="", help="its mmproj: the watcher then embeds pictures")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image-tokens", type=int, default=256, help="visual tokens of each background picture")
    ap.add_argument("--pictures", type=int, default=400, help="pictures in the background folder")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated: " + ", ".join(CONFIGS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--folder", type=Path, default=None, help="what the watcher embeds meanwhile")
    args = ap.parse_args()
    configs = [c for c in args.configs.split(",") if c]
    for c in configs:
        if c not in CONFIGS:
            ap.error(f"--configs: unknown configuration {c!r} (choose from {', '.join(CONFIGS)})")
    scratch = tempfile.TemporaryDirectory()
    folder = args.folder
    if folder is None:
        if args.mmproj:
            folder = Path(scratch.name) / "pictures"
            make_pictures(folder, args.pictures, args.image_tokens)
        else:
            folder = HERE / "data" / "docs-corpus"
    runs: dict[str, list[dict[str, object]]] = {name: [] for name in configs}
    for r in range(args.rounds):
        for name in configs:
            policy, lane = CONFIGS[name]
            env = dict(os.environ)
            env.pop("OMP_WAIT_POLICY", None)
            if policy:
                env["OMP_WAIT_POLICY"] = policy
            params = {
                "root": str(HERE.parent),
                "model": args.model,
                "mmproj": args.mmproj,
                "threads": args.threads,
                "image_tokens": args.image_tokens,
                "query_ctx": lane,
                "queries": args.queries,
                "folder": str(folder),
            }
            done = subprocess.run(
                [sys.executable, "-c", CHILD, json.dumps(params)],
                env=env,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise SystemExit(
                    f"{name}: the measuring process failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
                )
            run = json.loads(done.stdout.strip().splitlines()[-1])
            runs[name].append(run)
            short = {k: v for k, v in run.items() if k not in ("idle", "busy")}
            busy, idle = run["busy"], run["idle"]
            print(
                f"round {r + 1}/{args.rounds} {name}: idle p50 {idle['p50']:.0f} ms, "
                f"busy p50 {busy['p50']:.0f} p95 {busy['p95']:.0f} max {busy['max']:.0f} ms {short}",
                file=sys.stderr,
            )
    print(f"threads {args.threads}, model {args.model or 'default'}, background: {folder}")
    print("| configuration | idle p50 | idle p95 | while embedding p50 | p95 | max | answered on the lane |")
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for name, rs in runs.items():
        m = {
            f"{state} {q}": statistics.median(float(x[state][q]) for x in rs)  # type: ignore[index]
            for state in ("idle", "busy")
            for q in ("p50", "p95", "max")
        }
        m["lane_calls"] = statistics.median(float(x["lane_calls"]) for x in rs)  # type: ignore[arg-type]
        summary[name] = m
        print(
            f"| {name} | {m['idle p50']:.0f} ms | {m['idle p95']:.0f} ms | {m['busy p50']:.0f} ms | "
            f"{m['busy p95']:.0f} ms | {m['busy max']:.0f} ms | {m['lane_calls']:.0f} of {args.queries} |"
        )
    out = HERE / "results" / f"query-latency-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "summary": summary, "runs": runs})
    )
    print(f"\nwritten to {out}")
    scratch.cleanup()


if __name__ == "__main__":
    main()
