"""The commands' bodies, as library calls: run an indexing job with a progress bar, build the
status and doctor reports. The CLI only parses flags and prints."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from launcher import config, models
from launcher.engine import load_embedder
from launcher.errors import LauncherError
from launcher.extract import ExtractSettings
from launcher.indexer import Indexer, IndexOptions, IndexReport, Progress
from launcher.searcher import read_model_hint, write_model_hint
from launcher.store import Store


def _err(msg: str) -> None:
    sys.stderr.write(msg + "\n")


def run_index(
    paths: Sequence[Path],
    *,
    index_dir: Path,
    model: str | None,
    mmproj: str | None,
    excludes: list[str],
    dims: int | None,
    storage: str,
    max_file_mb: int,
    max_image_mp: int,
    include_hidden: bool,
    follow_symlinks: bool,
    embed: bool,
    engine_options: Any,
    as_json: bool,
) -> IndexReport:
    """`launcher index`: check the paths, load the model, run the job with progress, print a summary."""
    for p in paths:
        if not Path(p).expanduser().exists():
            raise LauncherError(f"no such file or folder: {p}")
    if storage not in ("float16", "int8", "float32"):
        raise LauncherError(f"--storage must be float16, int8 or float32, not {storage!r}")
    resolved = models.resolve_model(model, mmproj)
    if not model and not resolved.multimodal:
        _err(
            "note: using the bundled text model: images and scanned pages match by file name only; "
            "for the multimodal model run `launcher models pull qwen3-vl-embedding-2b`"
        )
    options = IndexOptions(
        excludes=excludes,
        max_file_bytes=max_file_mb * 1024 * 1024,
        include_hidden=include_hidden,
        follow_symlinks=follow_symlinks,
        dims=dims,
        storage=storage,
        extract=replace(ExtractSettings(), max_image_pixels=max_image_mp * 1_000_000),
        embed=embed,
    )
    index_dir.mkdir(parents=True, exist_ok=True)
    with load_embedder(resolved.path, resolved.mmproj, engine_options) as embedder:
        if dims is not None and dims > embedder.dims:
            raise LauncherError(f"--dims {dims} is more than the model's {embedder.dims} dimensions")
        indexer = Indexer(index_dir, embedder, options)
        show = not as_json and sys.stderr.isatty()
        # Written first, so that search works on the committed part of an interrupted job.
        write_model_hint(index_dir, resolved)
        report = _run_with_progress(indexer, [str(p) for p in paths], show)
    if report.reset_reason:
        _err(f"note: the index was rebuilt from scratch ({report.reset_reason})")
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=True) + "\n")
    else:
        print(format_summary(report))
    return report


def _run_with_progress(indexer: Indexer, roots: list[str], show: bool) -> IndexReport:
    if not show:
        return indexer.run(roots)
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as Bar

    with Bar(
        TextColumn("{task.description:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[path]}", style="dim"),
        transient=False,
    ) as bar:
        tasks: dict[str, Any] = {}

        def on_progress(ev: Progress) -> None:
            if ev.phase not in tasks:
                tasks[ev.phase] = bar.add_task(ev.phase, total=ev.total or None, path="")
            name = os.path.basename(ev.path or "")[:40]
            bar.update(tasks[ev.phase], completed=ev.done, total=ev.total or None, path=name)

        return indexer.run(roots, progress=on_progress)


def format_summary(r: IndexReport) -> str:
    """The closing lines of `launcher index`."""
    lines = [
        f"indexed in {r.seconds:.1f}s: {r.new} new, {r.changed} changed, {r.moved} moved, {r.removed} removed, "
        f"{r.unchanged} unchanged; {r.pieces_embedded} pieces embedded, {r.pieces_pending} pending",
    ]
    if r.skipped:
        lines.append(f"skipped {len(r.skipped)}:")
        lines += [f"  {s.path}: {s.reason}" for s in r.skipped[:20]]
        if len(r.skipped) > 20:
            lines.append(f"  ... and {len(r.skipped) - 20} more (launcher status --json lists all)")
    if r.failed:
        lines.append(f"failed {len(r.failed)}:")
        lines += [f"  {s.path}: {s.reason}" for s in r.failed[:20]]
        if len(r.failed) > 20:
            lines.append(f"  ... and {len(r.failed) - 20} more (launcher status --json lists all)")
    return "\n".join(lines)


def status_report(index_dir: Path) -> dict[str, Any]:
    """`launcher status`: what the index holds."""
    if not Store.exists(index_dir):
        return {"index_dir": str(index_dir), "exists": False}
    store = Store.open(index_dir)
    st = store.stats()
    hint = read_model_hint(index_dir) or {}
    failures = store.failures()
    return {
        "index_dir": str(index_dir),
        "exists": True,
        "roots": store.roots,
        "files": st.files,
        "files_by_kind": st.files_by_kind,
        "pieces": st.pieces,
        "embedded": st.embedded,
        "pending": st.pending,
        "embedding_progress": round(st.embedded / st.pieces, 4) if st.pieces else 1.0,
        "model": {
            "name": hint.get("name") or st.identity.get("name"),
            "file": hint.get("model"),
            "mmproj": hint.get("mmproj"),
        },
        "dims": st.dims,
        "storage": st.dtype,
        "bytes_on_disk": st.bytes_on_disk,
        "last_update": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(st.committed_at))
        if st.committed_at
        else None,
        "generation": st.generation,
        "failures": [{"path": f.path, "reason": f.reason} for f in failures],
    }


def format_status(r: dict[str, Any]) -> str:
    """Human-readable `launcher status`."""
    if not r.get("exists"):
        return f"no index at {r['index_dir']}: run `launcher index PATH`"
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(r["files_by_kind"].items()))
    lines = [
        f"index:    {r['index_dir']} ({r['bytes_on_disk'] / 1e6:.1f} MB, updated {r['last_update']})",
        f"roots:    {', '.join(r['roots']) or '-'}",
        f"files:    {r['files']} ({kinds})",
        f"pieces:   {r['pieces']}, embedded {r['embedded']} ({100 * r['embedding_progress']:.0f}%), pending {r['pending']}",
        f"model:    {r['model']['name']} ({r['dims']} dims, {r['storage']})",
        f"failures: {len(r['failures'])}",
    ]
    lines += [f"  {f['path']}: {f['reason']}" for f in r["failures"][:20]]
    return "\n".join(lines)


def doctor_report() -> dict[str, Any]:
    """`launcher doctor`: versions, CPU features, GPU offload, models found."""
    from launcher.engine import llama as engine_llama

    try:
        import llama_cpp

        llama_version = getattr(llama_cpp, "__version__", "?")
    except ImportError:  # pragma: no cover - a broken install
        llama_version = "not installed"
    info = engine_llama.system_info()
    features = [part.split("=")[0].strip() for part in info.split("|") if part.strip().endswith("= 1")]
    found: dict[str, str] = {}
    for e in models.CATALOG:
        path, _ = models.pulled_path(e)
        found[e.name] = str(path) if models.is_pulled(e) else "not downloaded"
    bundled = models.bundled_text_model()
    found["minilm (bundled)"] = str(bundled) if bundled.is_file() else "missing"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "llama-cpp-python": llama_version,
        "cpu_features": " ".join(features),
        "threads_default": engine_llama.default_threads(),
        "gpu_offload": "yes"
        if engine_llama.gpu_offload_supported()
        else "no (CPU-only build; see README 'GPU')",
        "launcher_home": str(config.home()),
        "default_model": models.resolve_model(None).name,
        "models": found,
    }
