"""The model catalogue: known GGUF files, where they are pulled from, and which one to use.

A model is named either by a catalogue name (`qwen3-vl-embedding-2b`) or by a path to a GGUF
file. The default is the best model found locally: a pulled Qwen3-VL-Embedding (8B before 2B),
else the small text model bundled in `models/`.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from launcher import config
from launcher.errors import LauncherError, ModelError


@dataclass(frozen=True)
class CatalogEntry:
    """A model known by name: its Hugging Face repo and files."""

    name: str
    role: str  # "embedding" or "reranker"
    repo: str
    file: str
    mmproj: str | None
    size_gb: float
    description: str
    multimodal: bool = True


CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        "qwen3-vl-embedding-2b",
        "embedding",
        "Qwen/Qwen3-VL-Embedding-2B-GGUF",
        "Qwen3-VL-Embedding-2B-Q4_K_M.gguf",
        "mmproj-Qwen3-VL-Embedding-2B-f16.gguf",
        1.9,
        "Qwen3-VL-Embedding 2B, Q4_K_M, 2048 dims: text, images, PDF pages, video frames",
    ),
    CatalogEntry(
        "qwen3-vl-embedding-8b",
        "embedding",
        "Qwen/Qwen3-VL-Embedding-8B-GGUF",
        "Qwen3-VL-Embedding-8B-Q4_K_M.gguf",
        "mmproj-Qwen3-VL-Embedding-8B-f16.gguf",
        5.9,
        "Qwen3-VL-Embedding 8B, Q4_K_M, 4096 dims: best quality, about 4x slower than 2B",
    ),
    # Qwen publishes the rerankers as safetensors (Qwen/Qwen3-VL-Reranker-2B, -8B). This is a
    # third-party f16 conversion with the layout launcher.rerank.llama reads: pooling type rank and the
    # yes/no head `cls.output.weight`. The 8B has no entry: give its Hugging Face folder (CUDA GPU) or
    # a GGUF you converted with llama.cpp's convert_hf_to_gguf.py.
    CatalogEntry(
        "qwen3-vl-reranker-2b",
        "reranker",
        "bealore/Qwen3-VL-Reranker-2B-GGUF",
        "Qwen3-VL-Reranker-2B.f16.gguf",
        "Qwen3-VL-Reranker-2B.mmproj-f16.gguf",
        4.2,
        "Qwen3-VL-Reranker 2B, f16 (third-party conversion): reorders the top hits (optional)",
    ),
)

BUNDLED_TEXT_MODEL = "all-MiniLM-L6-v2-Q8_0.gguf"


def entry(name: str) -> CatalogEntry | None:
    """The catalogue entry with this name, if any."""
    for e in CATALOG:
        if e.name == name.lower():
            return e
    return None


@dataclass(frozen=True)
class ResolvedModel:
    """A model file (and its mmproj) found on disk."""

    name: str
    path: Path
    mmproj: Path | None
    multimodal: bool


def pulled_path(e: CatalogEntry) -> tuple[Path, Path | None]:
    """Where `models pull` puts an entry's files."""
    folder = config.models_dir() / e.name
    return folder / e.file, (folder / e.mmproj if e.mmproj else None)


def is_pulled(e: CatalogEntry) -> bool:
    """True when the entry's model (and mmproj) files are complete on disk."""
    model, mmproj = pulled_path(e)
    return model.is_file() and (mmproj is None or mmproj.is_file())


def bundled_text_model() -> Path:
    """The small text model shipped in models/ (all-MiniLM-L6-v2, Q8_0)."""
    return config.bundled_models_dir() / BUNDLED_TEXT_MODEL


def resolve_model(name_or_path: str | None, mmproj: str | None = None) -> ResolvedModel:
    """Turn --model (a catalogue name, a path, or nothing) into files on disk."""
    if name_or_path:
        e = entry(name_or_path)
        if e is not None:
            if e.role != "embedding":
                raise ModelError(f"{e.name} is a {e.role} model, not an embedding model")
            if not is_pulled(e):
                raise ModelError(f"model {e.name} is not downloaded: run `launcher models pull {e.name}`")
            model, mm = pulled_path(e)
            return ResolvedModel(e.name, model, Path(mmproj) if mmproj else mm, True)
        if name_or_path == "minilm" or name_or_path == "bundled":
            return ResolvedModel("all-minilm-l6-v2", bundled_text_model(), None, False)
        path = Path(name_or_path).expanduser()
        if path.is_file() and path.resolve() == bundled_text_model().resolve():
            return ResolvedModel("all-minilm-l6-v2", path, None, False)
        if not path.exists():
            known = ", ".join(e.name for e in CATALOG if e.role == "embedding")
            raise ModelError(
                f"model not found: {name_or_path} (give a .gguf path or one of: {known}, minilm)"
            )
        return ResolvedModel(
            path.stem, path, Path(mmproj).expanduser() if mmproj else None, mmproj is not None
        )
    for name in ("qwen3-vl-embedding-8b", "qwen3-vl-embedding-2b"):
        e = entry(name)
        if e is not None and is_pulled(e):
            model, mm = pulled_path(e)
            return ResolvedModel(e.name, model, Path(mmproj) if mmproj else mm, True)
    bundled = bundled_text_model()
    if not bundled.is_file():
        raise ModelError(
            f"no model found: the bundled text model {bundled} is missing; run `launcher models pull qwen3-vl-embedding-2b`"
        )
    return ResolvedModel("all-minilm-l6-v2", bundled, None, False)


def _check_online(e: CatalogEntry, folder: Path) -> None:
    """Fail fast, in one line, when the hub cannot be reached (instead of minutes of retries)."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if not offline:
        try:
            socket.getaddrinfo(host, 443)
        except OSError:
            offline = True
    if offline:
        raise LauncherError(
            f"cannot reach {host} to download {e.repo}: you seem to be offline; retry when online, "
            f"or copy {e.file}" + (f" and {e.mmproj}" if e.mmproj else "") + f" into {folder} by hand"
        )


def pull(name: str, *, progress: bool = True) -> tuple[Path, Path | None]:
    """Download an entry's files with huggingface_hub (resumable); clear message when offline."""
    e = entry(name)
    if e is None:
        known = ", ".join(x.name for x in CATALOG)
        raise LauncherError(f"unknown model {name!r}: known models are {known}")
    model, mm = pulled_path(e)
    model.parent.mkdir(parents=True, exist_ok=True)
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
    except ImportError:
        raise LauncherError("huggingface_hub is not installed: pip install huggingface-hub") from None
    (enable_progress_bars if progress else disable_progress_bars)()
    _check_online(e, model.parent)
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # its retry chatter, one per second
    for filename in [e.file] + ([e.mmproj] if e.mmproj else []):
        try:
            hf_hub_download(repo_id=e.repo, filename=filename, local_dir=str(model.parent))
        except Exception as exc:  # the hub raises many types; all mean "could not download"
            kind = type(exc).__name__
            if "Connect" in kind or "Offline" in kind or "LocalEntryNotFound" in kind or "Timeout" in kind:
                raise LauncherError(
                    f"cannot reach huggingface.co to download {e.repo}/{filename}: you seem to be offline; "
                    f"copy the file into {model.parent} by hand or retry when online"
                ) from None
            raise LauncherError(
                f"download of {e.repo}/{filename} failed: {kind}: {exc}".splitlines()[0]
            ) from None
    return model, mm
