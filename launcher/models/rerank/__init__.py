"""Stage 7, rerank (optional): Qwen3-VL-Reranker scores (query, candidate) pairs to reorder top hits.

Two backends behind `Reranker`: a GGUF model through llama.cpp (`launcher.models.rerank.llama`, CPU or GPU
offload, the default) and the full model through transformers on a CUDA GPU
(`launcher.models.rerank.hf`, the `rerank-gpu` extra). Neither is imported until `load_reranker` needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from launcher.core.errors import ModelError, RerankerUnavailable
from launcher.models import catalogue
from launcher.models.rerank.base import (
    DEFAULT_INSTRUCTION,
    MAX_LENGTH,
    Reranker,
    RerankInput,
    RerankPair,
    build_prompt,
)

if TYPE_CHECKING:
    from launcher.models.runtime import LlamaOptions

__all__ = [
    "DEFAULT_INSTRUCTION",
    "MAX_LENGTH",
    "BACKENDS",
    "Reranker",
    "RerankInput",
    "RerankPair",
    "build_prompt",
    "load_reranker",
    "resolve_reranker",
]

BACKENDS = ("auto", "gguf", "transformers")
# CPU reranking runs the whole model once per candidate: the 2B model first, it is about 4x faster.
DEFAULT_ORDER = ("qwen3-vl-reranker-2b", "qwen3-vl-reranker-8b")
PULL_HINT = "run `launcher models pull qwen3-vl-reranker-2b`"


def resolve_reranker(model: str | Path | None, mmproj: str | Path | None = None) -> tuple[Path, Path | None]:
    """Turn a catalogue name, a path (.gguf file or Hugging Face folder) or None into files on disk."""
    if model is None or str(model) == "":
        for name in DEFAULT_ORDER:
            e = catalogue.entry(name)
            if e is not None and catalogue.is_pulled(e):
                path, mm = catalogue.pulled_path(e)
                return path, Path(mmproj).expanduser() if mmproj else mm
            if e is not None and catalogue.install_state(e) == "unverified":
                raise ModelError(catalogue.unverified_note(e))
        raise ModelError(
            f"no reranker model: {PULL_HINT} (or give a reranker .gguf file or a Hugging Face folder)"
        )
    e = catalogue.entry(str(model))
    if e is not None:
        if e.role != "reranker":
            raise ModelError(f"{e.name} is an {e.role} model, not a reranker: {PULL_HINT}")
        if catalogue.install_state(e) == "unverified":
            raise ModelError(catalogue.unverified_note(e))
        if not catalogue.is_pulled(e):
            raise ModelError(
                f"no reranker model: {e.name} is not downloaded; run `launcher models pull {e.name}`"
            )
        path, mm = catalogue.pulled_path(e)
        return path, Path(mmproj).expanduser() if mmproj else mm
    path = Path(model).expanduser()
    if not path.exists():
        raise ModelError(
            f"no reranker model at {path}: {PULL_HINT} (or give a .gguf file or a Hugging Face folder)"
        )
    return path, Path(mmproj).expanduser() if mmproj else None


def load_reranker(
    model: str | Path | None = None,
    mmproj: str | Path | None = None,
    backend: str = "auto",
    *,
    options: LlamaOptions | None = None,
    device: str | None = None,
    max_length: int = MAX_LENGTH,
) -> Reranker:
    """Load a reranker: a .gguf (+ mmproj) through llama.cpp, or a Hugging Face folder on a CUDA GPU.

    backend "auto" picks transformers for a Hugging Face folder when CUDA is available, else the
    GGUF path. `device` only concerns transformers: None means CUDA (the product's rule); "cpu" is
    allowed explicitly for parity checks. `options` only concerns the GGUF backend.
    """
    if backend not in BACKENDS:
        raise ModelError(f"unknown reranker backend {backend!r}: use one of {', '.join(BACKENDS)}")
    path, mm = resolve_reranker(model, mmproj)
    if path.is_dir():
        from launcher.models.rerank.hf import NO_GPU, cuda_available, is_hf_folder

        if not is_hf_folder(path):
            raise ModelError(
                f"no reranker model at {path}: the folder has no config.json (give a .gguf file instead)"
            )
        if backend == "gguf":
            raise ModelError(
                f"{path} is a Hugging Face folder, not a gguf file: use backend transformers or a .gguf"
            )
        if backend == "auto" and device is None and not cuda_available():
            raise RerankerUnavailable(NO_GPU)
        from launcher.models.rerank.hf import TransformersReranker

        return TransformersReranker(path, device=device, max_length=max_length)
    if backend == "transformers":
        raise ModelError(f"the transformers reranker needs a Hugging Face model folder, not {path.name}")
    from launcher.models.rerank.llama import LlamaReranker

    return LlamaReranker(path, mm, options, max_length=max_length)
