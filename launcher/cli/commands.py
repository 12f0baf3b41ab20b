"""The `launcher` command: a thin shell over the library. Errors become one line and an exit code."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from launcher.core import config
from launcher.core.errors import LauncherError

if TYPE_CHECKING:  # imported lazily at run time, so that `launcher --help` starts fast
    from launcher.core.records import Hit
    from launcher.query.rerank import RerankedHits
    from launcher.query.session import Query

app = typer.Typer(
    name="launcher",
    help="Find your files by describing them: a local semantic file launcher (Qwen3-VL-Embedding via llama.cpp).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="List and download GGUF models.", no_args_is_help=True)
app.add_typer(models_app, name="models")

# Shared options, so that every command spells them the same way.
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Catalogue name (see `launcher models list`), 'minilm', or a .gguf path. (env LAUNCHER_MODEL)",
    ),
]
MmprojOpt = Annotated[
    Path | None,
    typer.Option(
        "--mmproj", help="The vision projector .gguf that goes with a Qwen3-VL model. (env LAUNCHER_MMPROJ)"
    ),
]
DimsOpt = Annotated[
    int | None,
    typer.Option(
        "--dims",
        min=1,
        help="Matryoshka truncation: keep the first N dimensions (renormalised). (env LAUNCHER_DIMS)",
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option("--threads", min=1, help="CPU threads (default: physical cores). (env LAUNCHER_THREADS)"),
]
GpuOpt = Annotated[
    int | None,
    typer.Option(
        "--gpu-layers",
        help="Layers to offload to the GPU (-1: all) when llama.cpp was built with CUDA/Metal. (env LAUNCHER_GPU_LAYERS)",
    ),
]
RerankTopOpt = Annotated[
    int | None,
    typer.Option(
        "--rerank-top",
        min=1,
        max=config.RERANK_TOP_MAX,
        help="How many of the top hits the reranker judges (default 10). (env LAUNCHER_RERANK_TOP)",
    ),
]
RerankerOpt = Annotated[
    str | None,
    typer.Option(
        "--reranker",
        help="Reranker: a catalogue name, a .gguf path or a Hugging Face folder (default: the pulled one). (env LAUNCHER_RERANKER)",
    ),
]
# The scan and storage flags `launcher index` and `launcher watch` share.
# The scan flags default to None: an unset flag keeps what each root remembers.
ExcludeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude",
        help="Glob of paths to leave out (repeatable), e.g. '*.log' or 'build/'; replaces the root's remembered ones.",
    ),
]
StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        help="Vector storage of a new index: int8 (default), float16 or float32; "
        "an existing index keeps its own unless this is given. (env LAUNCHER_STORAGE)",
    ),
]
MaxFileMbOpt = Annotated[
    int | None,
    typer.Option(
        "--max-file-mb", min=1, help="Skip files larger than this (MB; default 1024, then remembered)."
    ),
]
MaxImageMpOpt = Annotated[
    int | None,
    typer.Option(
        "--max-image-mp",
        min=1,
        help="Skip images with more megapixels than this (decompression bombs; default 64, then remembered).",
    ),
]
IncludeHiddenOpt = Annotated[
    bool | None,
    typer.Option(
        "--include-hidden/--no-include-hidden",
        help="Also index hidden files and folders (remembered per root).",
    ),
]
FollowSymlinksOpt = Annotated[
    bool | None,
    typer.Option(
        "--follow-symlinks/--no-follow-symlinks",
        help="Follow symlinked folders, loops detected (remembered per root).",
    ),
]
CtxOpt = Annotated[
    int | None,
    typer.Option(
        "--ctx",
        min=16,
        help="Longest input in tokens (default: what pieces and pictures need, 768 on the CPU). "
        "(env LAUNCHER_CTX)",
    ),
]


def _engine_options(threads: int | None, gpu_layers: int | None, ctx: int | None):  # type: ignore[no-untyped-def]
    from launcher.models.embed.llama import LlamaOptions
    from launcher.models.imageprep import FACTOR

    n_gpu_layers = config.resolve("gpu_layers", gpu_layers)
    image_tokens = config.resolve("image_max_tokens")
    if image_tokens is None:  # chosen from bench_engine.py's image timings; see config.py
        image_tokens = config.IMAGE_TOKENS_GPU if n_gpu_layers else config.IMAGE_TOKENS_CPU
    return LlamaOptions(
        n_ctx=config.resolve("ctx", ctx),
        n_batch=config.resolve("batch"),
        n_threads=config.resolve("threads", threads),
        n_gpu_layers=n_gpu_layers,
        image_max_pixels=image_tokens * FACTOR * FACTOR,
        flash_attn=config.resolve("flash_attn"),
    )


@app.command()
def embed(
    model: ModelOpt = None,
    mmproj: MmprojOpt = None,
    text: Annotated[
        list[str] | None,
        typer.Option("--text", help="Text to embed; repeat to add more texts to the same input."),
    ] = None,
    image: Annotated[
        list[Path] | None,
        typer.Option("--image", help="Image file; repeat for several images in the same input."),
    ] = None,
    instruction: Annotated[
        str | None,
        typer.Option(
            "--instruction",
            help='The task instruction (system message). Default: "Represent the user\'s input."',
        ),
    ] = None,
    dims: DimsOpt = None,
    threads: ThreadsOpt = None,
    gpu_layers: GpuOpt = None,
    ctx: CtxOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"embedding": [...]} as JSON.')] = False,
) -> None:
    """Embed ONE input made of all the given texts and images (images first, as the reference orders them)."""
    from launcher.models.catalogue import resolve_model
    from launcher.models.embed import EmbedInput, load_embedder

    resolved = resolve_model(
        config.resolve("model", model),
        str(config.resolve("mmproj", mmproj)) if config.resolve("mmproj", mmproj) else None,
    )
    item = EmbedInput(texts=list(text or []), images=[str(p) for p in image or []], instruction=instruction)
    with load_embedder(resolved.path, resolved.mmproj, _engine_options(threads, gpu_layers, ctx)) as embedder:
        vector = embedder.embed_one(item, dims=config.resolve("dims", dims))
    if as_json:
        sys.stdout.write(json.dumps({"embedding": [float(x) for x in vector]}) + "\n")
    else:
        head = ", ".join(f"{x:+.4f}" for x in vector[:6])
        typer.echo(
            f"{resolved.name}: {vector.shape[0]} dims, norm {float((vector**2).sum() ** 0.5):.4f}: [{head}, ...]"
        )


IndexDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--index-dir",
        help="Where the index lives (default: <LAUNCHER_HOME>/index). (env LAUNCHER_INDEX_DIR)",
    ),
]


def _index_dir(flag: Path | None) -> Path:
    value = config.resolve("index_dir", str(flag) if flag else None)
    return Path(value).expanduser() if value else config.default_index_dir()


def _parse_date(value: str | None, flag: str):  # type: ignore[no-untyped-def]
    from datetime import datetime

    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a date like 2023-04-30 or 2023-04-30T12:00", param_hint=flag
        ) from None


@app.command()
def index(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Folders (or files) to add to the index's roots (default: refresh every root)."),
    ] = None,
    index_dir: IndexDirOpt = None,
    model: ModelOpt = None,
    mmproj: MmprojOpt = None,
    exclude: ExcludeOpt = None,
    dims: DimsOpt = None,
    storage: StorageOpt = None,
    max_file_mb: MaxFileMbOpt = None,
    max_image_mp: MaxImageMpOpt = None,
    include_hidden: IncludeHiddenOpt = None,
    follow_symlinks: FollowSymlinksOpt = None,
    no_embed: Annotated[
        bool,
        typer.Option("--no-embed", help="Only read files (names and text become searchable); embed later."),
    ] = False,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed",
            help="Read failed files again and embed failed pieces again (else: when they change).",
        ),
    ] = False,
    chunk_tokens: Annotated[
        int | None,
        typer.Option(
            "--chunk-tokens",
            min=16,
            help="Model tokens a text piece aims at (default: the model's own, see the guide).",
        ),
    ] = None,
    threads: ThreadsOpt = None,
    gpu_layers: GpuOpt = None,
    ctx: CtxOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Add folders to the index and refresh them, or refresh every root: scan, read, then embed."""
    from launcher.cli.jobs import run_index

    run_index(
        list(paths or []),
        index_dir=_index_dir(index_dir),
        model=config.resolve("model", model),
        mmproj=config.resolve("mmproj", str(mmproj) if mmproj else None),
        excludes=exclude,
        dims=config.resolve("dims", dims),
        storage=config.explicit("storage", storage),
        max_file_mb=max_file_mb,
        max_image_mp=max_image_mp,
        include_hidden=include_hidden,
        follow_symlinks=follow_symlinks,
        embed=not no_embed,
        retry_failed=retry_failed,
        chunk_tokens=config.resolve("chunk_tokens", chunk_tokens),
        engine_options=_engine_options(threads, gpu_layers, ctx),
        as_json=as_json,
    )


@app.command()
def watch(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Folders to watch (default: the folders the index covers)."),
    ] = None,
    index_dir: IndexDirOpt = None,
    model: ModelOpt = None,
    mmproj: MmprojOpt = None,
    exclude: ExcludeOpt = None,
    dims: DimsOpt = None,
    storage: StorageOpt = None,
    max_file_mb: MaxFileMbOpt = None,
    max_image_mp: MaxImageMpOpt = None,
    include_hidden: IncludeHiddenOpt = None,
    follow_symlinks: FollowSymlinksOpt = None,
    poll: Annotated[
        bool,
        typer.Option(
            "--poll", help="Poll for changes instead of using OS events (network drives, odd mounts)."
        ),
    ] = False,
    interval: Annotated[
        float,
        typer.Option(
            "--interval",
            min=1.0,
            help="Seconds between reconcile passes, the full stat walk that catches missed events.",
        ),
    ] = 600.0,
    settle: Annotated[
        float,
        typer.Option(
            "--settle", min=0.0, help="Seconds a changed file must stay unchanged before it is read."
        ),
    ] = 2.0,
    threads: ThreadsOpt = None,
    gpu_layers: GpuOpt = None,
    ctx: CtxOpt = None,
) -> None:
    """Keep the index fresh as files change, at low priority, until stopped (Ctrl+C or SIGTERM)."""
    from launcher.cli.jobs import run_watch

    run_watch(
        list(paths or []),
        index_dir=_index_dir(index_dir),
        model=config.resolve("model", model),
        mmproj=config.resolve("mmproj", str(mmproj) if mmproj else None),
        excludes=exclude,
        dims=config.resolve("dims", dims),
        storage=storage,
        max_file_mb=max_file_mb,
        max_image_mp=max_image_mp,
        include_hidden=include_hidden,
        follow_symlinks=follow_symlinks,
        engine_options=_engine_options(threads, gpu_layers, ctx),
        force_polling=poll,
        interval_s=interval,
        settle_s=settle,
    )


@app.command()
def forget(
    path: Annotated[Path, typer.Argument(help="A root of the index (see `launcher status`).")],
    index_dir: IndexDirOpt = None,
) -> None:
    """Remove a root, and every file under it, from the index."""
    from launcher.cli.jobs import run_forget

    count = run_forget(_index_dir(index_dir), path)
    typer.echo(f"forgot {path}: {count} file{'' if count == 1 else 's'} removed from the index")


@app.command()
def search(
    query: Annotated[str | None, typer.Argument(help="What you are looking for, in your own words.")] = None,
    image: Annotated[
        Path | None, typer.Option("--image", help="Search with an image (alone or with the text).")
    ] = None,
    index_dir: IndexDirOpt = None,
    top: Annotated[int, typer.Option("--top", min=1, max=1000, help="How many files to show.")] = 10,
    kind: Annotated[
        list[str] | None,
        typer.Option(
            "--kind",
            help="Only these kinds (repeatable): text, code, html, markdown, pdf, image, video, office, ebook, other.",
        ),
    ] = None,
    under: Annotated[Path | None, typer.Option("--under", help="Only files under this folder.")] = None,
    after: Annotated[
        str | None, typer.Option("--after", help="Only files modified on or after this date (YYYY-MM-DD).")
    ] = None,
    before: Annotated[
        str | None, typer.Option("--before", help="Only files modified before this date (YYYY-MM-DD).")
    ] = None,
    min_score: Annotated[
        float | None,
        typer.Option("--min-score", help="Hide hits scoring below this. (env LAUNCHER_MIN_SCORE)"),
    ] = None,
    model: ModelOpt = None,
    mmproj: MmprojOpt = None,
    threads: ThreadsOpt = None,
    rerank: Annotated[
        bool | None,
        typer.Option(
            "--rerank/--no-rerank",
            help="Reorder the top hits with the Qwen3-VL-Reranker (optional model; see `launcher models list`). (env LAUNCHER_RERANK)",
        ),
    ] = None,
    rerank_top: RerankTopOpt = None,
    reranker: RerankerOpt = None,
    dates: Annotated[
        bool | None,
        typer.Option(
            "--dates/--no-dates",
            help='Read a time in the query ("notes from last week") as a date filter; --no-dates embeds every word. (env LAUNCHER_DATES)',
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help='Print {"parsed": {"text", "after", "before", ...}, "hits": [...]} as JSON.'
        ),
    ] = False,
) -> None:
    """Search the index from the shell (through a running `launcher launch` when there is one: no model reload)."""
    from dataclasses import replace

    from launcher.core.records import KINDS
    from launcher.query.dates import parse, unparsed
    from launcher.query.session import Query, Searcher, hit_to_json

    for k in kind or []:
        if k not in KINDS:
            raise typer.BadParameter(f"{k!r} is not one of {', '.join(KINDS)}", param_hint="--kind")
    if image is not None and not image.is_file():
        raise typer.BadParameter(f"no such file: {image}", param_hint="--image")
    q = Query(
        text=query or "",
        image=image,
        top_k=top,
        kinds=list(kind or []),
        under=str(under.expanduser().resolve()) if under else None,
        after=_parse_date(after, "--after"),
        before=_parse_date(before, "--before"),
        min_score=config.resolve("min_score", min_score),
        dates=config.resolve("dates", dates),
    )
    model_name = config.resolve("model", model)
    mmproj_path = config.resolve("mmproj", str(mmproj) if mmproj else None)
    want_rerank = config.resolve("rerank", rerank)
    top_n = config.resolve("rerank_top", rerank_top)
    reranker_choice = config.resolve("reranker", reranker)
    reranker_file = _reranker_file(reranker_choice) if want_rerank else None
    reranked = False
    answer = _through_server(_index_dir(index_dir), q, model_name, mmproj_path, reranker_file, top_n)
    if answer is not None:
        hits, reranked = answer.hits, answer.reranked
        # A process started before dates were read says nothing: read them the same way here.
        parsed = answer.parsed or (parse(q.text) if q.dates else unparsed(q.text))
    else:
        searcher = Searcher(
            _index_dir(index_dir),
            model=model_name,
            mmproj=mmproj_path,
            engine_options=_engine_options(threads, None, None),
        )
        try:
            found = searcher.answer(q)
        finally:
            searcher.close()
        hits, parsed = found.hits, found.parsed
    listing = parsed.found and not parsed.text.strip() and image is None  # "yesterday": newest first
    if want_rerank and hits and not reranked and not listing:
        hits = _rerank(
            _index_dir(index_dir), replace(q, text=parsed.text), hits, reranker_choice, top_n, threads
        )
    if as_json:
        out = {"parsed": parsed.to_json(), "hits": [hit_to_json(h) for h in hits]}
        sys.stdout.write(json.dumps(out, ensure_ascii=True) + "\n")
        return
    if parsed.found:
        typer.echo(
            f"{parsed.chip()}: {parsed.span()}" + (f'; searching "{parsed.text}"' if parsed.text else "")
        )
    if not hits:
        typer.echo("no matches")
        return
    for i, h in enumerate(hits, 1):
        where = h.locator.describe()
        both = f" (retrieval {h.scores['retrieval']:.3f})" if "rerank" in h.scores else ""
        first = _day(h.date) if listing else f"{h.score:.3f}{both}"
        typer.echo(f"{i:>2}. {first}  {h.path}" + (f"  ({where})" if where else ""))
        if h.snippet:
            typer.echo("      " + " ".join(h.snippet.split())[:160])


def _day(epoch: float | None) -> str:
    """A file's date as the listing of a date-only query shows it: 2026-11-24 14:03."""
    from datetime import datetime

    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M") if epoch is not None else "-"


def _rerank(
    index_dir: Path, q: Query, hits: list[Hit], reranker: str | None, top_n: int, threads: int | None
) -> list[Hit]:
    """The top hits reordered by the reranker; each keeps its retrieval score beside the rerank score."""
    from launcher.models.rerank import load_reranker
    from launcher.query.rerank import rerank_hits
    from launcher.query.session import open_store

    store = open_store(index_dir)
    with load_reranker(reranker, options=_engine_options(threads, None, None)) as rr:
        return rerank_hits(store, rr, q.text, q.image, hits, top_n=top_n)


def _reranker_file(choice: str | None) -> Path | None:
    """The reranker model file these settings name, None when there is none (`_rerank` says why)."""
    from launcher.models.rerank import resolve_reranker

    try:
        return resolve_reranker(choice)[0].resolve()
    except LauncherError:
        return None


def _through_server(
    index_dir: Path,
    q: Query,
    model: str | None,
    mmproj: str | None,
    reranker_file: Path | None,
    rerank_top: int,
) -> RerankedHits | None:
    """Hits from a running `launcher launch` serving this index (and this --model), else None.

    With a reranker file, the process reranks them too when it uses that same reranker (loaded once
    there); otherwise they come back as retrieved and this command reranks them itself."""
    from launcher.app.client import search_through_server
    from launcher.models.catalogue import resolve_model

    model_file = None
    if model:
        try:
            model_file = resolve_model(model, mmproj).path
        except LauncherError:
            return None  # in-process says what is wrong with --model
    return search_through_server(index_dir, q, model_file, reranker_file, rerank_top)


@app.command()
def launch(
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            min=0,
            max=65535,
            help="Port on 127.0.0.1 for the window and the API (0: any free port). (env LAUNCHER_PORT)",
        ),
    ] = None,
    hotkey: Annotated[
        str | None,
        typer.Option(
            "--hotkey",
            help="Global hotkey that shows the window, e.g. ctrl+alt+space, '<ctrl>+<alt>+k', super+f2; "
            "'none' for no hotkey. (env LAUNCHER_HOTKEY)",
        ),
    ] = None,
    watch: Annotated[
        list[Path] | None,
        typer.Option("--watch", help="Keep this folder indexed as files change (repeatable)."),
    ] = None,
    no_browser: Annotated[
        bool,
        typer.Option(
            "--no-browser", help="Do not open the window now (the hotkey or `launcher toggle` will)."
        ),
    ] = False,
    host: Annotated[
        str | None,
        typer.Option(
            "--host",
            help="Address to serve on (default 127.0.0.1). Anything else is reachable from other machines. (env LAUNCHER_HOST)",
        ),
    ] = None,
    index_dir: IndexDirOpt = None,
    model: ModelOpt = None,
    mmproj: MmprojOpt = None,
    exclude: ExcludeOpt = None,
    max_file_mb: MaxFileMbOpt = None,
    max_image_mp: MaxImageMpOpt = None,
    include_hidden: IncludeHiddenOpt = None,
    follow_symlinks: FollowSymlinksOpt = None,
    threads: ThreadsOpt = None,
    rerank: Annotated[
        bool | None,
        typer.Option(
            "--rerank/--no-rerank",
            help="Start with the window's Rerank switch on (default off). (env LAUNCHER_RERANK)",
        ),
    ] = None,
    rerank_top: RerankTopOpt = None,
    reranker: RerankerOpt = None,
) -> None:
    """Start the resident process (one per user): model loaded once, search window, global hotkey, watcher."""
    from launcher.app.hotkey import OFF, parse_combo
    from launcher.app.launch import run_launch
    from launcher.app.service import LaunchOptions
    from launcher.cli.jobs import scan_flags

    combo = config.resolve("hotkey", hotkey)
    combo = None if str(combo).strip().lower() in OFF else str(combo)
    if combo:
        parse_combo(combo)  # a bad combo: one line naming --hotkey, exit status 2
    for p in watch or []:
        if not p.expanduser().is_dir():
            raise typer.BadParameter(f"no such folder: {p}", param_hint="--watch")
    flags = scan_flags(exclude, max_file_mb, max_image_mp, include_hidden, follow_symlinks)
    if flags.any() and not watch:
        raise typer.BadParameter(
            "scan options apply to watched folders: add --watch PATH", param_hint="--watch"
        )
    run_launch(
        LaunchOptions(
            index_dir=_index_dir(index_dir),
            model=config.resolve("model", model),
            mmproj=config.resolve("mmproj", str(mmproj) if mmproj else None),
            engine_options=_engine_options(threads, None, None),
            host=config.resolve("host", host),
            port=config.resolve("port", port),
            hotkey=combo,
            watch=[p.expanduser().resolve() for p in watch or []],
            scan_flags=flags,
            open_browser=not no_browser,
            rerank=config.resolve("rerank", rerank),
            rerank_top=config.resolve("rerank_top", rerank_top),
            reranker=reranker,  # the setting itself is read at each use: see ResidentReranker
        )
    )


@app.command()
def toggle(
    as_json: Annotated[bool, typer.Option("--json", help="Print the process's answer as JSON.")] = False,
) -> None:
    """Show the search window of the running `launcher launch` (bind this to a key on Wayland)."""
    from launcher.app.client import Unreachable, require_running

    client = require_running()
    try:
        answer = client.toggle()
    except Unreachable:
        from launcher.core.errors import NotRunning

        raise NotRunning(f"launcher (pid {client.info.pid}) is not answering at {client.info.url}") from None
    if as_json:
        typer.echo(json.dumps(answer))
        return
    said = {
        "focused": "brought the search window forward",
        "opened": "opened the search window",
        "opening": "the search window is opening",
    }
    typer.echo(said.get(answer.get("action", ""), str(answer)))


@app.command()
def status(
    index_dir: IndexDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """What is indexed: roots, counts by kind, model, size on disk, last update, failures."""
    from launcher.cli.jobs import status_report

    report = status_report(_index_dir(index_dir))
    if as_json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=True))
        return
    from launcher.cli.jobs import format_status

    typer.echo(format_status(report))


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
) -> None:
    """What is installed, what the CPU can do, whether GPU offload works, which models are found."""
    from launcher.cli.jobs import doctor_report

    report = doctor_report()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        if isinstance(value, dict):
            typer.echo(f"{key}:")
            for k, v in value.items():
                typer.echo(f"  {k}: {v}")
        else:
            typer.echo(f"{key}: {value}")


@models_app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print the catalogue as JSON.")] = False,
) -> None:
    """Known models, where their files come from, and whether they are installed and verified."""
    from launcher.models import catalogue

    rows = catalogue.catalogue_rows()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        mark = "*" if r["on_disk"] else " "
        state = "" if r["state"] in ("installed", "absent", "bundled") else f" [{r['state']}]"
        typer.echo(
            f"{mark} {r['name']:<26} {r['role']:<10} {r['size_gb']:>5.2f} GB  {r['description']}{state}"
        )
        where = (
            f"{r['repo']} @ {r['revision'][:12]}"
            if r["revision"]
            else f"{r['repo']} (main, checked against the hub)"
        )
        typer.echo(f"  {'':<26} {r['origin']}: {where}" if r["repo"] else f"  {'':<26} {r['origin']}")
    typer.echo("(* = installed and verified; `launcher models pull NAME` downloads and checks one)")


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="A catalogue name from `launcher models list`.")],
) -> None:
    """Download a model and its mmproj from Hugging Face (resumable), check their sha256 and GGUF
    headers, and install them; files copied in by hand are checked the same way."""
    from launcher.models import catalogue

    path, mm = catalogue.pull(name)
    typer.echo(f"{name}: verified and installed: {path}" + (f" + {mm.name}" if mm else ""))


def main() -> None:
    """Entry point: run the app, turning library errors into one line on stderr and an exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from launcher.core.files import keep_private, make_private

    # Everything the launcher writes is private (folders 0700, files 0600), whatever the umask;
    # what an older version left readable under LAUNCHER_HOME is fixed (only its own folders: the
    # home may be set to a folder that holds other things).
    keep_private()
    home = config.home()
    make_private(home)
    for name in ("index", "run", "models", "config.toml"):
        make_private(home / name, recursive=True)
    # File names that are not valid UTF-8 arrive as surrogate escapes: print their original bytes,
    # as ls does. JSON output escapes them (ensure_ascii), so it stays valid and round-trips.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    try:
        app()  # standalone: click prints usage errors (naming the bad flag) and exits 2
    except LauncherError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
