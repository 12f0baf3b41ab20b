"""The `launcher` command: a thin shell over the library. Errors become one line and an exit code."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from launcher import config
from launcher.errors import LauncherError

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
    Optional[str],
    typer.Option("--model", help="Catalogue name (see `launcher models list`), 'minilm', or a .gguf path. [env: LAUNCHER_MODEL]"),
]
MmprojOpt = Annotated[
    Optional[Path], typer.Option("--mmproj", help="The vision projector .gguf that goes with a Qwen3-VL model. [env: LAUNCHER_MMPROJ]")
]
DimsOpt = Annotated[
    Optional[int], typer.Option("--dims", min=1, help="Matryoshka truncation: keep the first N dimensions (renormalised). [env: LAUNCHER_DIMS]")
]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads (default: physical cores). [env: LAUNCHER_THREADS]")]
GpuOpt = Annotated[
    Optional[int], typer.Option("--gpu-layers", help="Layers to offload to the GPU (-1: all) when llama.cpp was built with CUDA/Metal. [env: LAUNCHER_GPU_LAYERS]")
]
CtxOpt = Annotated[Optional[int], typer.Option("--ctx", min=16, help="Longest input in tokens (default 4096). [env: LAUNCHER_CTX]")]


def _engine_options(threads: int | None, gpu_layers: int | None, ctx: int | None):  # type: ignore[no-untyped-def]
    from launcher.engine.imageprep import FACTOR
    from launcher.engine.llama import LlamaOptions

    return LlamaOptions(
        n_ctx=config.resolve("ctx", ctx),
        n_batch=config.resolve("batch"),
        n_threads=config.resolve("threads", threads),
        n_gpu_layers=config.resolve("gpu_layers", gpu_layers),
        image_max_pixels=config.resolve("image_max_tokens") * FACTOR * FACTOR,
    )


@app.command()
def embed(
    model: ModelOpt = None,
    mmproj: MmprojOpt = None,
    text: Annotated[Optional[list[str]], typer.Option("--text", help="Text to embed; repeat to add more texts to the same input.")] = None,
    image: Annotated[Optional[list[Path]], typer.Option("--image", help="Image file; repeat for several images in the same input.")] = None,
    instruction: Annotated[
        Optional[str], typer.Option("--instruction", help="The task instruction (system message). Default: \"Represent the user's input.\"")
    ] = None,
    dims: DimsOpt = None,
    threads: ThreadsOpt = None,
    gpu_layers: GpuOpt = None,
    ctx: CtxOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"embedding": [...]} as JSON.')] = False,
) -> None:
    """Embed ONE input made of all the given texts and images (images first, as the reference orders them)."""
    from launcher.engine import EmbedInput, load_embedder
    from launcher.models import resolve_model

    resolved = resolve_model(config.resolve("model", model), str(config.resolve("mmproj", mmproj)) if config.resolve("mmproj", mmproj) else None)
    item = EmbedInput(texts=list(text or []), images=[str(p) for p in image or []], instruction=instruction)
    with load_embedder(resolved.path, resolved.mmproj, _engine_options(threads, gpu_layers, ctx)) as embedder:
        vector = embedder.embed_one(item, dims=config.resolve("dims", dims))
    if as_json:
        sys.stdout.write(json.dumps({"embedding": [float(x) for x in vector]}) + "\n")
    else:
        head = ", ".join(f"{x:+.4f}" for x in vector[:6])
        typer.echo(f"{resolved.name}: {vector.shape[0]} dims, norm {float((vector**2).sum() ** 0.5):.4f}: [{head}, ...]")


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json", help="Print the catalogue as JSON.")] = False) -> None:
    """Known models, whether they are downloaded, and where they are."""
    from launcher import models

    rows = []
    for e in models.CATALOG:
        path, mm = models.pulled_path(e)
        rows.append(
            {
                "name": e.name,
                "role": e.role,
                "size_gb": e.size_gb,
                "downloaded": models.is_pulled(e),
                "path": str(path),
                "mmproj": str(mm) if mm else None,
                "repo": e.repo,
                "description": e.description,
            }
        )
    bundled = models.bundled_text_model()
    rows.append(
        {
            "name": "minilm",
            "role": "embedding",
            "size_gb": round(bundled.stat().st_size / 1e9, 3) if bundled.is_file() else 0.025,
            "downloaded": bundled.is_file(),
            "path": str(bundled),
            "mmproj": None,
            "repo": "bundled",
            "description": "all-MiniLM-L6-v2 Q8_0, 384 dims, text only (bundled, offline default)",
        }
    )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        mark = "*" if r["downloaded"] else " "
        typer.echo(f"{mark} {r['name']:<24} {r['role']:<10} {r['size_gb']:>5.1f} GB  {r['description']}")
    typer.echo("(* = on disk; `launcher models pull NAME` downloads one)")


@models_app.command("pull")
def models_pull(name: Annotated[str, typer.Argument(help="A catalogue name from `launcher models list`.")]) -> None:
    """Download a model and its mmproj from Hugging Face (resumable)."""
    from launcher import models

    path, mm = models.pull(name)
    typer.echo(f"{name}: {path}" + (f" + {mm.name}" if mm else ""))


def main() -> None:
    """Entry point: run the app, turning library errors into one line on stderr and an exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        app()  # standalone: click prints usage errors (naming the bad flag) and exits 2
    except LauncherError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
