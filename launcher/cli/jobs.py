"""The commands' bodies, as library calls: run an indexing job with a progress bar, build the
status and doctor reports. The CLI only parses flags and prints."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from launcher.core import config
from launcher.core.errors import LauncherError, StoreError
from launcher.index.roots import ScanFlags, ScanOptions, chosen_options
from launcher.index.store import Store, Stored
from launcher.ingest.extract import ExtractSettings
from launcher.ingest.pipeline import (
    Indexer,
    IndexOptions,
    IndexReport,
    Progress,
    document_instruction,
    kept_chunk_tokens,
)
from launcher.models import catalogue
from launcher.models.catalogue import read_model_hint, write_model_hint
from launcher.models.embed import load_embedder


def _err(msg: str) -> None:
    sys.stderr.write(msg + "\n")


def run_index(
    paths: Sequence[Path],
    *,
    index_dir: Path,
    model: str | None,
    mmproj: str | None,
    excludes: list[str] | None,
    dims: int | None,
    storage: str | None,
    max_file_mb: int | None,
    max_image_mp: int | None,
    include_hidden: bool | None,
    follow_symlinks: bool | None,
    embed: bool,
    engine_options: Any,
    as_json: bool,
    retry_failed: bool = False,
    chunk_tokens: int | None = None,
) -> IndexReport:
    """`launcher index`: check the paths, load the model, run the job with progress, print a summary.

    The paths join the index's roots; no paths refreshes every root. Scan options left None keep
    what each root remembers (the defaults for a new root). `storage` None: the existing index's
    own (a changed default never rebuilds an index), else the default."""
    for p in paths:
        if not Path(p).expanduser().exists():
            raise LauncherError(f"no such file or folder: {p}")
    existing = Stored.read(index_dir)  # the manifest: the writer reads the file table once
    if not paths and not (existing and existing.roots):
        raise LauncherError(f"no folders to index: the index at {index_dir} has no roots yet; give PATH")
    if storage is None:
        storage = existing.dtype if existing else str(config.resolve("storage"))
    flags = scan_flags(excludes, max_file_mb, max_image_mp, include_hidden, follow_symlinks)
    options = index_options(  # checks --storage before the model is resolved
        excludes=[],
        dims=dims,
        storage=storage,
        max_file_mb=None,
        max_image_mp=None,
        include_hidden=False,
        follow_symlinks=False,
        embed=embed,
        chunk_tokens=chunk_tokens,
    )
    options.retry_failed = retry_failed
    # A `document_instruction` setting or --chunk-tokens changes vectors: the identity records them,
    # and a change re-embeds (with a note). Unset, the index keeps its own: a refresh never rebuilds.
    options.instruction = document_instruction(existing.identity if existing else None)
    if chunk_tokens is None:
        options.chunk_tokens = kept_chunk_tokens(existing.identity if existing else None)
    folders = [str(Path(p).expanduser().resolve()) for p in paths]
    root_options = chosen_options(
        existing.root_options() if existing else {}, folders or (existing.roots if existing else []), flags
    )
    nested = [f for f in folders if f not in root_options]
    if nested and flags.any():
        _err(
            f"note: {nested[0]} is inside a root of the index: it is read with that root's options; "
            "to change them, give the flags with the root's own path"
        )
    resolved = catalogue.resolve_model(model, mmproj)
    if not model and not resolved.multimodal:
        _note_text_model()
    index_dir.mkdir(parents=True, exist_ok=True)
    with (
        _sigterm_unwinds(),
        load_embedder(
            resolved.path, resolved.mmproj, engine_options, chunk_tokens=options.chunk_tokens
        ) as embedder,
    ):
        if dims is not None and dims > embedder.dims:
            raise LauncherError(f"--dims {dims} is more than the model's {embedder.dims} dimensions")
        indexer = Indexer(index_dir, embedder, options, root_options=root_options)
        show = not as_json and sys.stderr.isatty()
        # Written first, so that search works on the committed part of an interrupted job.
        write_model_hint(index_dir, resolved)
        report = _run_with_progress(indexer, folders or None, show)
    if report.reset_reason:
        _err(f"note: the index was rebuilt from scratch ({report.reset_reason})")
    for note in indexer.notes:
        _err(f"note: {note}")
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=True) + "\n")
    else:
        print(format_summary(report))
    return report


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM stops like Ctrl+C: the job unwinds (extraction thread joined, model freed after its
    last call) and the process exits 143, instead of dying wherever the signal found it."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _note_text_model() -> None:
    _err(
        "note: using the bundled text model: images and scanned pages match by file name only; "
        "for the multimodal model run `launcher models pull qwen3-vl-embedding-2b`"
    )


def index_options(
    *,
    excludes: list[str],
    dims: int | None,
    storage: str,
    max_file_mb: int | None,
    max_image_mp: int | None,
    include_hidden: bool,
    follow_symlinks: bool,
    embed: bool = True,
    chunk_tokens: int | None = None,
) -> IndexOptions:
    """IndexOptions from the flags `launcher index` and `launcher watch` share (their scan options
    are those of a root nothing else chose options for)."""
    if storage not in ("float16", "int8", "float32"):
        raise LauncherError(f"--storage must be float16, int8 or float32, not {storage!r}")
    default = ScanOptions()
    return IndexOptions(
        excludes=excludes,
        max_file_bytes=max_file_mb * 1024 * 1024 if max_file_mb else default.max_file_bytes,
        include_hidden=include_hidden,
        follow_symlinks=follow_symlinks,
        dims=dims,
        storage=storage,
        extract=replace(
            ExtractSettings(),
            max_image_pixels=max_image_mp * 1_000_000 if max_image_mp else default.max_image_pixels,
        ),
        embed=embed,
        chunk_tokens=chunk_tokens,
    )


def scan_flags(
    excludes: list[str] | None,
    max_file_mb: int | None,
    max_image_mp: int | None,
    include_hidden: bool | None,
    follow_symlinks: bool | None,
) -> ScanFlags:
    """The scan options a command line gave (None: not given; no --exclude is not an empty list)."""
    return ScanFlags(
        excludes=list(excludes) if excludes else None,
        include_hidden=include_hidden,
        follow_symlinks=follow_symlinks,
        max_file_bytes=max_file_mb * 1024 * 1024 if max_file_mb is not None else None,
        max_image_pixels=max_image_mp * 1_000_000 if max_image_mp is not None else None,
    )


def run_forget(index_dir: Path, path: Path) -> int:
    """`launcher forget PATH`: drop a root and every file under it; returns how many files went."""
    store = Stored.read(index_dir)  # the manifest: the writer below reads the file table
    if store is None:
        raise LauncherError(f"no index at {index_dir}: nothing to forget")
    folder = (
        str(path.expanduser().resolve()) if path.expanduser().exists() else os.path.abspath(path.expanduser())
    )
    if folder not in store.roots:
        roots = ", ".join(store.roots) or "none"
        raise LauncherError(f"{path} is not a root of the index at {index_dir} (roots: {roots})")
    from launcher.watch.watcher import read_status

    watcher = read_status(index_dir)
    watched = [r.get("path") for r in (watcher or {}).get("roots", []) if isinstance(r, dict)]
    if watcher is not None and folder in watched:
        # It would put the folder back at its next reconcile.
        raise LauncherError(
            f"{path} is being watched by pid {watcher.get('pid')}: stop that watcher first, then forget it"
        )
    with Store.open_writer(
        index_dir,
        store.identity,
        dims=store.dims,
        dtype=store.dtype,  # type: ignore[arg-type]
    ) as writer:
        count = writer.forget_root(folder)
    return count


def run_watch(
    paths: Sequence[Path],
    *,
    index_dir: Path,
    model: str | None,
    mmproj: str | None,
    excludes: list[str] | None,
    dims: int | None,
    storage: str | None,
    max_file_mb: int | None,
    max_image_mp: int | None,
    include_hidden: bool | None,
    follow_symlinks: bool | None,
    engine_options: Any,
    force_polling: bool,
    interval_s: float,
    settle_s: float,
) -> None:
    """`launcher watch`: keep the index in step with the folders until SIGTERM or Ctrl+C.

    SIGUSR1 pauses, SIGUSR2 resumes (so does removing the pause file). The model, dims and
    storage default to the index's own, so that a watcher never rebuilds an index by accident."""
    import signal

    from launcher.watch.watcher import PAUSE_FILE, Watcher, lower_process_priority

    # Before the model loads and any thread starts: every thread inherits it.
    lower_process_priority()
    # A niced process is often descheduled: llama.cpp's OpenMP threads then spin at their barriers
    # while the others wait for a core (measured 9x slower on a busy 2-core machine). Sleeping at
    # the barrier instead keeps background embedding close to full speed and frees the cores.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when llama.cpp loads, just below
    logging.getLogger("launcher.watch").setLevel(logging.INFO)  # one line per batch, for the journal
    existing = Stored.read(index_dir)  # the manifest: the writer reads the file table once
    roots = [Path(p).expanduser() for p in paths] or [Path(r) for r in (existing.roots if existing else [])]
    if not roots:
        raise LauncherError("no folders to watch: give PATH, or run `launcher index PATH` first")
    missing = [p for p in roots if not p.exists()]
    if len(missing) == len(roots):
        raise LauncherError(f"no such file or folder: {missing[0]}")
    for p in missing:  # an unmounted drive, a folder still to be made
        _err(f"note: {p} does not exist yet; it is watched once it appears")
    resolved = catalogue.resolve_index_model(index_dir, model, mmproj)
    if not model and not resolved.multimodal and existing is None:
        _note_text_model()
    options = index_options(
        excludes=[],
        dims=dims,
        storage=storage or (existing.dtype if existing else str(config.resolve("storage"))),
        max_file_mb=None,
        max_image_mp=None,
        include_hidden=False,
        follow_symlinks=False,
    )
    # Without settings, the watcher keeps the index's instruction and piece size: never a rebuild.
    options.instruction = document_instruction(existing.identity if existing else None)
    options.chunk_tokens = config.resolve("chunk_tokens") or kept_chunk_tokens(
        existing.identity if existing else None
    )
    flags = scan_flags(excludes, max_file_mb, max_image_mp, include_hidden, follow_symlinks)
    root_options = chosen_options(
        existing.root_options() if existing else {}, [str(r.resolve()) for r in roots], flags
    )
    index_dir.mkdir(parents=True, exist_ok=True)
    with load_embedder(
        resolved.path, resolved.mmproj, engine_options, chunk_tokens=options.chunk_tokens
    ) as embedder:
        if dims is not None and dims > embedder.dims:
            raise LauncherError(f"--dims {dims} is more than the model's {embedder.dims} dimensions")
        if dims is None and existing is not None and existing.dims < embedder.dims:
            options = replace(options, dims=existing.dims)  # the index keeps its Matryoshka truncation
        write_model_hint(index_dir, resolved)
        watcher = Watcher(
            index_dir,
            roots,
            embedder,
            options,
            settle_s=settle_s,
            reconcile_interval_s=interval_s,
            force_polling=force_polling,
            root_options=root_options,
        )
        done = threading.Event()
        handlers: dict[int, Any] = {
            signal.SIGTERM: lambda *_: done.set(),
            signal.SIGINT: lambda *_: done.set(),
        }
        handlers[signal.SIGUSR1] = lambda *_: watcher.pause()
        handlers[signal.SIGUSR2] = lambda *_: watcher.resume()
        previous = {sig: signal.signal(sig, h) for sig, h in handlers.items()}
        pid = os.getpid()
        _err(
            f"watching {', '.join(str(r) for r in roots)} (pid {pid}): pause with `kill -USR1 {pid}` "
            f"or `touch {index_dir / PAUSE_FILE}`, resume with `kill -USR2 {pid}`; stop with Ctrl+C"
        )
        try:
            watcher.start()
            while not done.wait(1.0) and watcher.error is None:
                pass
        finally:
            watcher.stop()
            for sig, h in previous.items():
                signal.signal(sig, h)
    if watcher.error is not None:
        raise StoreError(watcher.error)


def _run_with_progress(indexer: Indexer, roots: list[str] | None, show: bool) -> IndexReport:
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
        f"{r.unchanged} unchanged; {r.pieces_embedded} pieces embedded, {r.pieces_failed} failed, "
        f"{r.pieces_pending} pending",
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
    """`launcher status`: what the index holds, and what a running watcher is doing."""
    from launcher.watch.watcher import read_status

    watcher = read_status(index_dir)
    if not Store.exists(index_dir):
        return {"index_dir": str(index_dir), "exists": False, "watcher": watcher}
    store = Store.open(index_dir)
    st = store.stats()
    hint = read_model_hint(index_dir) or {}
    failures = store.failures()
    return {
        "index_dir": str(index_dir),
        "exists": True,
        "roots": store.roots,
        "scan_options": {r: o.to_json() for r, o in store.root_options().items()},
        "files": st.files,
        "files_by_kind": st.files_by_kind,
        "pieces": st.pieces,
        "embedded": st.embedded,
        "pending": st.pending,
        "failed_pieces": st.failed_pieces,
        # Settled pieces (embedded, or failed with a reason) out of all: 1.0 means nothing is waiting.
        "embedding_progress": round((st.embedded + st.failed_pieces) / st.pieces, 4) if st.pieces else 1.0,
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
        "watcher": watcher,
    }


def format_status(r: dict[str, Any]) -> str:
    """Human-readable `launcher status`."""
    if not r.get("exists"):
        lines = [f"no index at {r['index_dir']}: run `launcher index PATH`"]
        return "\n".join(lines + format_watcher(r.get("watcher")))
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(r["files_by_kind"].items()))
    lines = [
        f"index:    {r['index_dir']} ({r['bytes_on_disk'] / 1e6:.1f} MB, updated {r['last_update']})",
        f"roots:    {', '.join(r['roots']) or '-'}",
        *[
            f"          {root}: {ScanOptions.from_json(opts).describe()}"
            for root, opts in r.get("scan_options", {}).items()
        ],
        f"files:    {r['files']} ({kinds})",
        f"pieces:   {r['pieces']}, embedded {r['embedded']}, failed {r['failed_pieces']}, pending {r['pending']} "
        f"({100 * r['embedding_progress']:.0f}% done)",
        f"model:    {r['model']['name']} ({r['dims']} dims, {r['storage']})",
        *format_watcher(r.get("watcher")),
        f"failures: {len(r['failures'])}",
    ]
    lines += [f"  {f['path']}: {f['reason']}" for f in r["failures"][:20]]
    return "\n".join(lines)


def format_watcher(w: dict[str, Any] | None) -> list[str]:
    """Two status lines for a running watcher: what it does, and how each root is watched."""
    if not w:
        return []
    state = str(w.get("state"))
    p = w.get("progress")
    if p and p.get("total") and state in ("reading", "embedding", "reconciling"):
        state += f" {p['done']}/{p['total']}"
    parts = [
        f"watcher:  {state} (pid {w.get('pid')})",
        f"queue {w.get('queue', 0)}",
        f"pending {w.get('pending_pieces') or 0} pieces",
        f"last event {_clock(w.get('last_event'))}",
        f"reconciled {_clock(w.get('last_reconcile'))}",
    ]
    if w.get("message"):
        parts.append(str(w["message"]))
    roots = [
        f"{r['path']} {r['observer']}" + (f" ({r['reason']})" if r.get("reason") else "")
        for r in w.get("roots", [])
    ]
    return [", ".join(parts), "          watching " + "; ".join(roots)]


def _clock(iso: str | None) -> str:
    """'12:03:04' for an ISO time today, the ISO time otherwise, '-' for none."""
    if not iso:
        return "-"
    return iso[11:] if iso[:10] == time.strftime("%Y-%m-%d") else iso


def doctor_report() -> dict[str, Any]:
    """`launcher doctor`: versions, CPU features, GPU offload, models found."""
    from launcher.models import runtime

    info = runtime.system_info()
    features = [part.split("=")[0].strip() for part in info.split("|") if part.strip().endswith("= 1")]
    found: dict[str, str] = {}
    for e in catalogue.CATALOG:
        path, _ = catalogue.pulled_path(e)
        state = catalogue.install_state(e)
        found[e.name] = (
            str(path)
            if state == "installed"
            else {
                "unverified": f"not verified: run `launcher models pull {e.name}` to check {catalogue.folder(e)}",
                "partial": "partly downloaded: `launcher models pull` resumes",
            }.get(state, "not downloaded")
        )
    bundled = catalogue.bundled_text_model()
    found["minilm (bundled)"] = str(bundled) if bundled.is_file() else "missing"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "llama-cpp-python": runtime.llama_version(),
        "cpu_features": " ".join(features),
        "threads_default": runtime.default_threads(),
        "gpu_offload": "yes" if runtime.gpu_offload_supported() else "no (CPU-only build; see README 'GPU')",
        "launcher_home": str(config.home()),
        "default_model": catalogue.resolve_model(None).name,
        "models": found,
    }
