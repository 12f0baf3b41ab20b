"""The Qwen3-VL-Embedding input format, kept in one place.

Mirrors the official embedder (`format_model_input` + the Qwen3-VL chat template with
`add_generation_prompt=True`): the instruction is the system message, the user message holds
videos, then images, then texts, and the prompt ends with the assistant header. The embedding is
the last hidden state of that final token.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

DEFAULT_INSTRUCTION = "Represent the user's input."
# Instructions used by the product when none is given on the command line. Queries and documents
# may differ; the official examples use a task description for queries and the default for docs.
QUERY_INSTRUCTION = "Retrieve files, images and documents relevant to the user's query."
DOCUMENT_INSTRUCTION = DEFAULT_INSTRUCTION

IMAGE_TOKENS = "<|vision_start|><|image_pad|><|vision_end|>"
EMPTY_INPUT = "NULL"


def as_utf8(text: str) -> str:
    """The text as the tokenizer sees it: what UTF-8 cannot encode (a lone surrogate from an
    undecodable file name or a JSON escape) becomes '?'."""
    return text.encode("utf-8", errors="replace").decode("utf-8")


def normalize_instruction(instruction: str | None) -> str:
    """Strip, and end with punctuation the way the official embedder does; empty means default."""
    if instruction:
        instruction = instruction.strip()
        if instruction and not unicodedata.category(instruction[-1]).startswith("P"):
            instruction += "."
    return instruction or DEFAULT_INSTRUCTION


def build_prompt(
    texts: Sequence[str],
    n_images: int,
    instruction: str | None,
    *,
    image_placeholder: str = IMAGE_TOKENS,
) -> str:
    """The templated prompt for one input, NFC-normalised as the reference tokenizer does."""
    parts: list[str] = [image_placeholder] * n_images
    parts.extend(texts)
    if not parts:
        parts = [EMPTY_INPUT]
    prompt = (
        f"<|im_start|>system\n{normalize_instruction(instruction)}<|im_end|>\n"
        f"<|im_start|>user\n{''.join(parts)}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # The HF tokenizer normalises to NFC before splitting; llama.cpp does not. Without this, NFD
    # names (macOS) tokenize differently and the cosine drops to about 0.94.
    return unicodedata.normalize("NFC", prompt)
