"""The embedder interface: one method to implement, batching and Matryoshka written once here."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from launcher.core.errors import InputError
from launcher.core.records import Matrix, Vector

ImageSource = Any  # PIL.Image.Image | str | Path; kept loose so records need not import PIL

# Tokens an input needs beside its piece of text or its picture: the instruction, the chat template
# and the file-name header (a longer header is shortened to fit, see ingest.extract.base).
PROMPT_ROOM = 256


def context_needed(piece_tokens: int, image_tokens: int = 0) -> int:
    """The context that holds a piece of `piece_tokens` or a picture of `image_tokens` with its
    prompt, rounded up to 256 (768 for 512-token pieces and the CPU's 256-token pictures)."""
    need = max(piece_tokens, image_tokens) + PROMPT_ROOM
    return -(-need // 256) * 256


@dataclass
class EmbedInput:
    """One input to embed: any number of texts and images, embedded together as one vector."""

    texts: list[str] = field(default_factory=list)
    images: list[ImageSource] = field(default_factory=list)
    instruction: str | None = None

    @property
    def has_images(self) -> bool:
        """True when the input needs the vision encoder."""
        return bool(self.images)


def truncate_dims(vectors: Matrix, dims: int | None) -> Matrix:
    """Matryoshka truncation to the first `dims` components, renormalised to unit length."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if dims is None or dims >= vectors.shape[-1]:
        return l2_normalize(vectors)
    if dims < 1:
        raise InputError(f"--dims must be at least 1, got {dims}")
    return l2_normalize(vectors[..., :dims])


def l2_normalize(vectors: Matrix) -> Matrix:
    """Unit-length rows (a zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


class Embedder(ABC):
    """Turns inputs into unit vectors. Subclasses implement `embed_batch` and set the flags."""

    name: str = "embedder"
    dims: int = 0  # native dimensionality
    supports_images: bool = False
    max_tokens: int = 0  # longest input accepted, in tokens (the whole prompt)
    chunk_tokens: int = 256  # text tokens a document piece aims at (see the guide's measurements)
    image_tokens: int = 0  # visual tokens of the largest picture it takes (0: no pictures)
    batch_size: int = 16  # inputs handed to embed_batch at once

    @abstractmethod
    def embed_batch(self, inputs: Sequence[EmbedInput]) -> Matrix:
        """Embed a batch; one unit-length float32 row per input, in order."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens a text costs inside an input's body (no template, no special tokens around it)."""

    @abstractmethod
    def input_tokens(self, item: EmbedInput) -> int:
        """Tokens of the whole input the model sees for a text-only input (template included)."""

    def embed(self, inputs: Iterable[EmbedInput], *, dims: int | None = None) -> Matrix:
        """Embed any number of inputs in batches, truncated to `dims` if given."""
        rows = [block for block in self.iter_embed(inputs, dims=dims)]
        if not rows:
            return np.zeros((0, dims or self.dims), dtype=np.float32)
        return np.concatenate(rows, axis=0)

    def iter_embed(self, inputs: Iterable[EmbedInput], *, dims: int | None = None) -> Iterator[Matrix]:
        """Stream embeddings batch by batch (keeps memory flat for long runs)."""
        batch: list[EmbedInput] = []
        for item in inputs:
            if item.has_images and not self.supports_images:
                raise InputError(
                    f"model {self.name} cannot embed images: use a Qwen3-VL-Embedding model with its "
                    "mmproj (--mmproj), see `launcher models list`"
                )
            batch.append(item)
            if len(batch) >= self.batch_size:
                yield truncate_dims(self.embed_batch(batch), dims)
                batch = []
        if batch:
            yield truncate_dims(self.embed_batch(batch), dims)

    def embed_one(self, item: EmbedInput, *, dims: int | None = None) -> Vector:
        """Embed a single input."""
        return self.embed([item], dims=dims)[0]

    def embed_text(self, text: str, *, instruction: str | None = None, dims: int | None = None) -> Vector:
        """Embed one text."""
        return self.embed_one(EmbedInput(texts=[text], instruction=instruction), dims=dims)

    def embed_image(
        self, image: ImageSource | Path, *, instruction: str | None = None, dims: int | None = None
    ) -> Vector:
        """Embed one image."""
        return self.embed_one(EmbedInput(images=[image], instruction=instruction), dims=dims)

    def fit_image(self, image: Any) -> Any:
        """The picture as this model will see it, made ahead of the model call (so a full-size decode
        need not wait in memory for its turn); embedding the result gives the same vector."""
        return image

    def identity(self) -> dict[str, Any]:
        """What the vectors depend on, stamped into an index so models are never mixed."""
        return {"name": self.name, "dims": self.dims}

    def close(self) -> None:  # noqa: B027 - optional hook, most embedders hold no native resources
        """Free native resources; safe to call twice."""

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
