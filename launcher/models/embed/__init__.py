"""Stage 4, embed: inputs (texts, images, both) become unit vectors.

The embedder is `launcher.models.embed.llama`, over the one llama.cpp runtime (`launcher.models.runtime`,
shared with the GGUF reranker); the rest of the package sees only the `Embedder` interface and
`load_embedder`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from launcher.models.embed.base import Embedder, EmbedInput, l2_normalize, truncate_dims
from launcher.models.embed.prompt import DEFAULT_INSTRUCTION, DOCUMENT_INSTRUCTION, QUERY_INSTRUCTION

if TYPE_CHECKING:
    from launcher.models.runtime import LlamaOptions

__all__ = [
    "DEFAULT_INSTRUCTION",
    "DOCUMENT_INSTRUCTION",
    "QUERY_INSTRUCTION",
    "EmbedInput",
    "Embedder",
    "l2_normalize",
    "load_embedder",
    "truncate_dims",
]


def load_embedder(
    model: str | Path,
    mmproj: str | Path | None = None,
    options: LlamaOptions | None = None,
    *,
    chunk_tokens: int | None = None,
) -> Embedder:
    """Load a GGUF embedding model (plus its mmproj for images) through llama.cpp.

    `chunk_tokens`: the piece size an index will ask for (--chunk-tokens, or the one it was built
    with); it sizes the context when the options leave that to the embedder."""
    from dataclasses import replace

    from launcher.models.embed.llama import LlamaEmbedder, LlamaOptions

    if chunk_tokens:
        options = replace(options or LlamaOptions(), chunk_tokens=chunk_tokens)
    return LlamaEmbedder(model, mmproj, options)
