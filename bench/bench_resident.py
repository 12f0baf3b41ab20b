"""The resident process as a user runs it: `launcher launch --watch PICTURES`, measured from outside.

    python bench/bench_resident.py --model GGUF --mmproj GGUF [--variants default,no-lane]
                                   [--pictures 8] [--image-tokens 256] [--queries 10] [--threads 2]

For each variant a real `launcher launch --watch` process (its own LAUNCHER_HOME, no hotkey) starts
on a folder of pictures of exactly --image-tokens visual tokens each (random pixels: the cost of a
transformer depends on the token count, not on the content) and:
- `busy`: while its watcher embeds the pictures, --queries searches go through the HTTP API
  (`POST /api/search`, as the window and `launcher search` send them), one every 0.2 s after the
  previous answer; each is timed from request to answer (model, retrieval, HTTP);
- `idle`: the same queries once nothing is left to embed;
- memory: the process's peak resident memory (Linux VmHWM, read from /proc before it is stopped),
  against model + mmproj file sizes; the target is files + 500 MB;
- the process is stopped with SIGTERM and must exit 0.
Variants set the engine through the environment as a user would (LAUNCHER_CTX, LAUNCHER_BATCH,
LAUNCHER_FLASH_ATTN). Written to bench/results/resident-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_query_latency import make_pictures  # noqa: E402

VARIANTS: dict[str, dict[str, str]] = {
    # The context sized to need (768 on the CPU), a 256-token query lane, exact attention.
    "default": {},
    # Without the query lane: what the lane costs, and what searches wait without it.
    "no-lane": {"LAUNCHER_QUERY_LANE": "0"},
    # The defaults before 2026-12-03: a 4096-token context and a 512-token lane.
    "ctx-4096": {"LAUNCHER_CTX": "4096", "LAUNCHER_QUERY_LANE": "512"},
    # llama.cpp's flash-attention kernel (smaller compute buffers, vectors drift slightly).
    "flash": {"LAUNCHER_FLASH_ATTN": "1"},
}
SLACK = 500 * 1000**2
QUERY = "a photo of the red bicycle by the lake, taken on holiday"


def vm(pid: int, key: str) -> int:
    """A /proc/PID/status memory field in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise SystemExit(f"no {key} for pid {pid}")


def client_for(home: Path, proc: subprocess.Popen[bytes], timeout: float = 300) -> Any:
    """A client of the process once its run file is written."""
    os.environ["LAUNCHER_HOME"] = str(home)
    from launcher.app.client import running

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"launcher launch exited with {proc.returncode}")
        c = running()
        if c is not None:
            return c
        time.sleep(0.2)
    raise SystemExit("launcher launch did not start in time")


def timed_queries(c: Any, n: int) -> list[float]:
    from launcher.query.session import Query

    out = []
    for i in range(n):
        t = time.perf_counter()
        c.search(Query(text=f"{QUERY} {i}", top_k=10))
        out.append((time.perf_counter() - t) * 1000)
        time.sleep(0.2)
    return out


def summary(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    return {"p50": statistics.median(s), "p95": s[min(len(s) - 1, round(0.95 * (len(s) - 1)))], "max": s[-1]}


def run_variant(name: str, args: argparse.Namespace, pictures: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        env = dict(os.environ, LAUNCHER_HOME=str(home), LAUNCHER_THREADS=str(args.threads))
        env.update(VARIANTS[name])
        cmd = [sys.executable, "-m", "launcher", "launch", "--hotkey", "none", "--watch", str(pictures)]
        cmd += ["--model", args.model, "--mmproj", args.mmproj]
        log = open(Path(tmp) / "launch.log", "wb")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            c = client_for(home, proc)
            t0 = time.monotonic()
            while True:  # until the watcher is embedding pictures
                st = c.status()
                prog = st["watcher"]["status"].get("progress") or {}
                if prog.get("phase") == "embed":
                    break
                if time.monotonic() - t0 > 600:
                    raise SystemExit("the watcher never started embedding")
                time.sleep(0.2)
            busy = timed_queries(c, args.queries)
            st = c.status()
            still = (st["watcher"]["status"].get("progress") or {}).get("phase") == "embed"
            while c.status()["watcher"]["status"]["pending_pieces"] or c.status()["watcher"]["status"][
                "state"
            ] not in ("watching",):
                if time.monotonic() - t0 > 3600:
                    raise SystemExit("the watcher did not finish")
                time.sleep(1)
            idle = timed_queries(c, args.queries)
            st = c.status()
            peak, rss = vm(proc.pid, "VmHWM"), vm(proc.pid, "VmRSS")
            # What the resident memory is at the end: private (heap, llama.cpp buffers) or file pages
            # (the mmapped weights, shared libraries).
            anon, file_pages = vm(proc.pid, "RssAnon"), vm(proc.pid, "RssFile")
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(300)
            log.close()
        files = Path(args.model).stat().st_size + Path(args.mmproj).stat().st_size
        return {
            "variant": name,
            "env": VARIANTS[name],
            "busy": summary(busy),
            "busy_all": busy,
            "still_embedding_after_busy": still,
            "idle": summary(idle),
            "idle_all": idle,
            "peak_bytes": peak,
            "rss_end_bytes": rss,
            "rss_end_anon_bytes": anon,
            "rss_end_file_bytes": file_pages,
            "files_bytes": files,
            "over_files_bytes": peak - files,
            "meets_target": peak <= files + SLACK,
            "query_lane": st["model"]["query_lane"],
            "exit_code": code,
            "totals": st["watcher"]["status"].get("totals"),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--mmproj", required=True)
    ap.add_argument("--variants", default="default,no-lane", help="comma-separated: " + ", ".join(VARIANTS))
    ap.add_argument("--pictures", type=int, default=8)
    ap.add_argument("--image-tokens", type=int, default=256)
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    names = [v for v in args.variants.split(",") if v]
    for v in names:
        if v not in VARIANTS:
            ap.error(f"--variants: unknown variant {v!r} (choose from {', '.join(VARIANTS)})")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pictures = Path(tmp) / "pictures"
        make_pictures(pictures, args.pictures, args.image_tokens)
        for name in names:
            r = run_variant(name, args, pictures)
            rows.append(r)
            print(json.dumps({k: v for k, v in r.items() if not k.endswith("_all")}), file=sys.stderr)
    mb = 1000**2
    print(
        f"`launcher launch --watch` on {args.pictures} pictures of {args.image_tokens} visual tokens, "
        f"{args.threads} threads, {Path(args.model).name} + {Path(args.mmproj).name}"
    )
    print(
        "| variant | settings | search while embedding p50 / p95 / max | idle p50 / p95 | peak RSS | "
        "peak - files | exit |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        b, i = r["busy"], r["idle"]
        settings = ", ".join(f"{k}={v}" for k, v in r["env"].items()) or "defaults"
        print(
            f"| {r['variant']} | {settings} | {b['p50']:.0f} / {b['p95']:.0f} / {b['max']:.0f} ms | "
            f"{i['p50']:.0f} / {i['p95']:.0f} ms | {r['peak_bytes'] / mb:,.0f} MB | "
            f"+{r['over_files_bytes'] / mb:,.0f} MB | {r['exit_code']} |"
        )
    out = HERE / "results" / f"resident-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
