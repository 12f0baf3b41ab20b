"""The reranker interface and the Qwen3-VL-Reranker input format, kept in one place.

Mirrors the official reranker (`Qwen3VLReranker` in QwenLM/Qwen3-VL-Embedding): a fixed system prompt
asking for a yes/no judgement; the user message holds `<Instruct>: {instruction}`, then `<Query>:` and
`\\n<Document>:`, each followed by its images and then its texts (`NULL` when it has neither); the
chat template's assistant header ends the prompt. The score is sigmoid(logit(yes) - logit(no)) at the
last token. Inputs longer than `max_length` are cut the way the official code cuts them.
"""

from __future__ import annotations

import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from launcher.core.errors import InputError
from launcher.models.embed.base import ImageSource
from launcher.models.embed.prompt import as_utf8

SYSTEM_PROMPT = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
DEFAULT_INSTRUCTION = "Given a search query, retrieve relevant candidates that answer the query."
MAX_LENGTH = 10240  # the official default: longer pairs lose the end of their text
IMAGE_TOKENS = "<|vision_start|><|image_pad|><|vision_end|>"
EMPTY_SIDE = "NULL"
# `<|im_end|>`, `\n`, `<|im_start|>`, `assistant`, `\n`: the official truncation never touches them.
KEPT_TAIL = 5
# The reference tokenizer's `all_special_ids` (eos, pad and the additional special tokens of
# Qwen3-VL), which truncation keeps. llama.cpp marks more tokens as control (`<|fim_prefix|>`...),
# so backends map these strings to ids rather than trusting token attributes.
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)  # fmt: skip
YES, NO = "yes", "no"


@dataclass
class RerankInput:
    """A query or a candidate: any number of texts and images (images come first in the prompt)."""

    texts: list[str] = field(default_factory=list)
    images: list[ImageSource] = field(default_factory=list)

    @classmethod
    def coerce(cls, value: RerankInput | str) -> RerankInput:
        """A plain string is a text-only input."""
        return value if isinstance(value, RerankInput) else cls(texts=[value])


@dataclass
class RerankPair:
    """One (query, document) pair to judge, under an instruction (None or empty: the default)."""

    query: RerankInput
    document: RerankInput
    instruction: str | None = None

    @property
    def n_images(self) -> int:
        """Images in query and document together."""
        return len(self.query.images) + len(self.document.images)


def _side(prefix: str, item: RerankInput, image_placeholder: str) -> str:
    parts = [image_placeholder] * len(item.images) + [as_utf8(t) for t in item.texts]
    return prefix + ("".join(parts) if parts else EMPTY_SIDE)


def build_prompt(pair: RerankPair, *, image_placeholder: str = IMAGE_TOKENS) -> str:
    """The templated prompt for one pair, NFC-normalised as the reference tokenizer does."""
    # The official code takes the instruction as given (no punctuation added, unlike the embedder).
    user = (
        f"<Instruct>: {pair.instruction or DEFAULT_INSTRUCTION}"
        + _side("<Query>:", pair.query, image_placeholder)
        + _side("\n<Document>:", pair.document, image_placeholder)
    )
    prompt = (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
        f"<|im_start|>user\n{user}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # The HF tokenizer normalises to NFC before splitting; llama.cpp does not.
    return unicodedata.normalize("NFC", prompt)


def truncation_mask(ids: Sequence[int], max_length: int, is_special: Callable[[int], bool]) -> list[bool]:
    """Which tokens the official truncation keeps: all of them unless the pair is over `max_length`.

    Past the limit, special tokens (chat markers, every image token) and the final 5 tokens stay and
    only the first `max_length - n_special` other tokens do, so a long document loses the end of its
    text and keeps its images. The result can exceed `max_length` by those 5 tokens.
    """
    n_head = max(0, len(ids) - KEPT_TAIL)
    if n_head <= max_length:
        return [True] * len(ids)
    budget = max_length - sum(1 for t in ids[:n_head] if is_special(t))
    keep: list[bool] = []
    for t in ids[:n_head]:
        special = is_special(t)
        keep.append(special or budget > 0)
        if not special and budget > 0:
            budget -= 1
    return keep + [True] * (len(ids) - n_head)


def truncate_ids(ids: Sequence[int], max_length: int, is_special: Callable[[int], bool]) -> list[int]:
    """The ids the official truncation keeps (see `truncation_mask`)."""
    return [t for t, keep in zip(ids, truncation_mask(ids, max_length, is_special), strict=True) if keep]


class Reranker(ABC):
    """Scores (query, document) pairs with Qwen3-VL-Reranker. Subclasses implement `score_batch`."""

    name: str = "reranker"
    backend: str = ""
    supports_images: bool = False
    batch_size: int = 8  # pairs handed to score_batch at once
    max_length: int = MAX_LENGTH

    @abstractmethod
    def score_batch(self, pairs: Sequence[RerankPair]) -> list[float]:
        """Relevance in [0, 1] for each pair, in order: P(yes) at the last token."""

    def score(self, pairs: Iterable[RerankPair]) -> list[float]:
        """Score any number of pairs in batches."""
        scores: list[float] = []
        batch: list[RerankPair] = []
        for pair in pairs:
            if pair.n_images and not self.supports_images:
                raise InputError(
                    f"reranker {self.name} cannot score images: pass its mmproj (the vision projector file "
                    "published with the model)"
                )
            batch.append(pair)
            if len(batch) >= self.batch_size:
                scores.extend(self.score_batch(batch))
                batch = []
        if batch:
            scores.extend(self.score_batch(batch))
        return scores

    def rerank(
        self,
        query: RerankInput | str,
        candidates: Sequence[RerankInput | str],
        top_n: int | None = None,
        *,
        instruction: str | None = None,
    ) -> list[tuple[int, float]]:
        """(candidate index, score) pairs, best first (ties keep the input order), at most top_n."""
        q = RerankInput.coerce(query)
        scores = self.score(RerankPair(q, RerankInput.coerce(c), instruction) for c in candidates)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return [(i, scores[i]) for i in order[: top_n if top_n is not None else len(order)]]

    def identity(self) -> dict[str, Any]:
        """What the scores depend on."""
        return {"name": self.name, "backend": self.backend}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free native or GPU resources; safe to call twice."""

    def __enter__(self) -> Reranker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
