"""Query latency under OpenMP's two wait policies, idle and while the watcher embeds in the background.

    python bench/bench_wait_policy.py [--model PATH] [--rounds 5] [--queries 40]

`launcher watch` and `launcher launch --watch` set OMP_WAIT_POLICY=PASSIVE before llama.cpp loads:
llama.cpp's OpenMP threads then sleep at their barriers instead of spinning, so a niced background
worker does not hold both cores while it waits. The resident process also answers queries through
the same threads, so this measures what the setting costs a query.

Each round starts one fresh process per policy (the policy is read once, when the OpenMP runtime
loads), alternating, so that the noise of a shared machine falls on both alike. In each process:
`idle` embeds the queries one at a time with nothing else running; `busy` does the same, each
query held in `Watcher.foreground()` as the resident process holds it, while a real Watcher embeds
--folder into a scratch index (niced worker, EMBED_UNIT pieces per model call: a query waits for
the call under way). Medians over rounds
of each process's p50/p95, in ms. Written to bench/results/wait-policy-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHILD = r"""
import json, statistics, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from launcher.ingest.pipeline import IndexOptions
from launcher.models import catalogue as models
from launcher.models.embed import QUERY_INSTRUCTION, EmbedInput, load_embedder
from launcher.watch.watcher import Watcher

model, n, folder = sys.argv[2] or None, int(sys.argv[3]), Path(sys.argv[4])
resolved = models.resolve_model(model, None)
emb = load_embedder(resolved.path, resolved.mmproj)
queries = [f"how do I configure the network interface number {i} at boot" for i in range(n)]

def timed(hold):
    out = []
    for q in queries:
        t = time.perf_counter()
        with hold():
            emb.embed([EmbedInput(texts=[q], instruction=QUERY_INSTRUCTION)])
        out.append((time.perf_counter() - t) * 1000)
        time.sleep(0.05)
    out.sort()
    return {"p50": statistics.median(out), "p95": out[int(0.95 * (len(out) - 1))]}

from contextlib import nullcontext
emb.embed([EmbedInput(texts=[queries[0]])])  # warm-up
result = {"idle": timed(nullcontext)}
with tempfile.TemporaryDirectory() as home:
    watcher = Watcher(Path(home) / "index", [folder], emb, IndexOptions())
    watcher.start()
    deadline = time.monotonic() + 120
    while (watcher.status().get("progress") or {}).get("phase") != "embed":
        if time.monotonic() > deadline:
            raise SystemExit("the watcher never started embedding")
        time.sleep(0.2)
    result["busy"] = timed(watcher.foreground)
    result["watcher"] = watcher.status().get("progress")
    watcher.stop()
print(json.dumps(result))
"""
POLICIES = {"default (unset)": None, "PASSIVE": "PASSIVE"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="", help="GGUF to measure (default: the resolved default model)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument(
        "--folder",
        type=Path,
        default=HERE / "data" / "docs-corpus",
        help="what the watcher indexes meanwhile (default: the retrieval corpus, bench/retrieval/corpus.py)",
    )
    args = ap.parse_args()
    runs: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in POLICIES}
    for r in range(args.rounds):
        for name, policy in POLICIES.items():
            env = dict(os.environ)
            env.pop("OMP_WAIT_POLICY", None)
            if policy:
                env["OMP_WAIT_POLICY"] = policy
            done = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    str(HERE.parent),
                    args.model,
                    str(args.queries),
                    str(args.folder),
                ],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}/{args.rounds} {name}: {runs[name][-1]}", file=sys.stderr)
    print("| OMP_WAIT_POLICY | idle p50 | idle p95 | during background embedding p50 | p95 |")
    print("|---|---|---|---|---|")
    summary = {}
    for name, rs in runs.items():
        m = {
            f"{state} {q}": statistics.median(x[state][q] for x in rs)
            for state in ("idle", "busy")
            for q in ("p50", "p95")
        }
        summary[name] = m
        print(
            f"| {name} | {m['idle p50']:.1f} | {m['idle p95']:.1f} | {m['busy p50']:.1f} | {m['busy p95']:.1f} |"
        )
    out = HERE / "results" / f"wait-policy-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"rounds": args.rounds, "queries": args.queries, "summary": summary, "runs": runs})
    )
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
