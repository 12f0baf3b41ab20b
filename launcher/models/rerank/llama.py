"""The GGUF reranker through llama.cpp, over the runtime it shares with the embedder (models/runtime.py).

The model file is what llama.cpp's converter makes of Qwen3-VL-Reranker: a `qwen3vl` model with
pooling type RANK, classifier labels ["yes", "no"] and a `cls.output.weight` tensor (2 x hidden)
holding the lm_head rows of "yes" and "no". Two ways to run it, same score:

- "capture" (default): embeddings off, only the last token marked as output, its final-norm row
  read through a cb_eval hook and scored here against `w_yes - w_no` taken from the file. The
  output layer then runs on one row per pair instead of every token.
- "rank": llama.cpp's own RANK pooling; `llama_get_embeddings_seq` returns softmax([yes, no]).
  Embedding mode runs the 151,936-wide output layer on every token, which the score never uses.

Text goes through the low-level API (our prompt, NFC, special tokens parsed, several pairs per
decode); images through mtmd with pixels resized by `launcher.models.imageprep`. The native side
(model, context, batch, mtmd) is `launcher.models.runtime`, shared with the embedder.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from launcher.core.errors import InputError, InputTooLong, LauncherError, ModelError
from launcher.models import gguf_meta, runtime
from launcher.models.imageprep import prepare_image
from launcher.models.rerank.base import (
    KEPT_TAIL,
    MAX_LENGTH,
    NO,
    SPECIAL_TOKENS,
    YES,
    Reranker,
    RerankPair,
    build_prompt,
    truncate_ids,
    truncation_mask,
)
from launcher.models.runtime import (
    CHAT_ARCHITECTURES,
    IMAGE_SLOT,
    POOLING_TYPE_RANK,
    LlamaOptions,
    LlamaRuntime,
    default_threads,
    file_fingerprint,
)

log = logging.getLogger("launcher.rerank")

HEAD_TENSOR = "cls.output.weight"
GGML_TYPE_F32 = 0
HEADS = ("capture", "rank")
# The reranker's context when none is set: a query with a long document piece or a picture, under
# the official 8192-token limit (its max_length); a smaller one lowers that limit.
RERANK_CTX = 4096


def _not_a_reranker(path: Path, why: str) -> ModelError:
    return ModelError(
        f"{path.name} is not a qwen3-vl reranker gguf ({why}): use `launcher models pull qwen3-vl-reranker-2b` "
        "or convert Qwen3-VL-Reranker with llama.cpp's convert_hf_to_gguf.py"
    )


def read_head(path: Path, header: gguf_meta.Header) -> tuple[np.ndarray, str]:
    """The (2, hidden) float32 yes/no rows of `cls.output.weight`, dequantized by ggml, and their type."""
    info = header.tensors.get(HEAD_TENSOR)
    if info is None:
        raise _not_a_reranker(path, f"no {HEAD_TENSOR} tensor")
    dims, ggml_type = list(info.dims), info.ggml_type
    if len(dims) != 2 or dims[1] != 2:
        raise _not_a_reranker(path, f"{HEAD_TENSOR} has shape {dims}, expected [hidden, 2]")
    row_bytes = runtime.ggml_row_size(ggml_type, dims[0])
    try:
        with path.open("rb") as f:
            f.seek(header.data_start + info.offset)
            raw = f.read(2 * row_bytes)
    except OSError as exc:
        raise ModelError(f"corrupt gguf model file: {path} ({type(exc).__name__})") from None
    if len(raw) != 2 * row_bytes:
        raise ModelError(f"corrupt gguf model file: {path} (truncated)")
    type_name = runtime.ggml_type_name(ggml_type)
    if ggml_type == GGML_TYPE_F32:
        return np.frombuffer(raw, dtype=np.float32).reshape(2, dims[0]).copy(), type_name
    rows = runtime.dequantize(raw, ggml_type, (2, dims[0]))
    if rows is None:
        raise ModelError(
            f"{path.name}: cannot dequantize its {type_name} classifier head; use llama.cpp's rank pooling "
            "(LlamaOptions(last_token_capture=False))"
        )
    return rows, type_name


def sigmoid(x: float) -> float:
    """1 / (1 + e^-x) without overflow."""
    return 0.5 * (1.0 + math.tanh(0.5 * x))


class LlamaReranker(Reranker):
    """Qwen3-VL-Reranker scores from a GGUF model through llama.cpp, with an optional mmproj for images."""

    backend = "gguf"

    def __init__(
        self,
        model_path: str | Path,
        mmproj_path: str | Path | None = None,
        options: LlamaOptions | None = None,
        *,
        max_length: int = MAX_LENGTH,
        head: str | None = None,
    ):
        self.options = options or LlamaOptions()
        # LlamaOptions.last_token_capture picks the head, as it picks the embedder's pooling path.
        head = head or ("capture" if self.options.last_token_capture else "rank")
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.head = head
        self.model_path = Path(model_path).expanduser()
        self.mmproj_path = Path(mmproj_path).expanduser() if mmproj_path else None
        self._runtime: LlamaRuntime | None = None
        self._lock = threading.Lock()

        self._header = gguf_meta.model_header(self.model_path, pass_mmproj_as="the mmproj")
        meta = self._header.meta
        self.architecture = gguf_meta.architecture(meta)
        if self.architecture not in CHAT_ARCHITECTURES:
            raise _not_a_reranker(self.model_path, f"architecture {self.architecture!r}")
        if meta.get(f"{self.architecture}.pooling_type") != POOLING_TYPE_RANK:
            raise _not_a_reranker(
                self.model_path, "its pooling type is not rank: an embedding or chat model?"
            )
        self._head_rows, self.head_type = read_head(self.model_path, self._header)
        # The official head: one linear row, lm_head[yes] - lm_head[no].
        self._head_diff = self._head_rows[0].astype(np.float64) - self._head_rows[1].astype(np.float64)
        self.name = str(meta.get("general.name") or self.model_path.stem)
        if self.mmproj_path is not None:
            gguf_meta.check_mmproj(self.mmproj_path)
        self.n_threads = self.options.n_threads or default_threads()
        self.batch_size = self.options.n_seq_max
        try:
            self._load(max_length)
        except BaseException:
            self.close()
            raise

    # -- loading -----------------------------------------------------------------------------

    def _load(self, max_length: int) -> None:
        opts = self.options
        rt = self._runtime = LlamaRuntime(self.model_path, opts, self.n_threads, self._header)
        labels = rt.classifier_labels()
        if labels != [YES.encode(), NO.encode()]:
            raise _not_a_reranker(self.model_path, f"classifier labels {labels}, expected [yes, no]")
        self.n_ctx_train = rt.n_ctx_train
        self.dims = rt.n_embd
        if self._head_diff.shape != (self.dims,):
            raise _not_a_reranker(
                self.model_path, f"head width {self._head_diff.shape[0]} != hidden size {self.dims}"
            )

        n_ctx = opts.n_ctx or RERANK_CTX
        if self.n_ctx_train > 0:
            n_ctx = min(n_ctx, self.n_ctx_train)
        n_batch = min(opts.n_batch, n_ctx)
        # The CPU flash-attention kernel drifts on long inputs; exact scores matter more here.
        rt.open_context(n_ctx, n_batch, flash_attn=False, capture=self.head == "capture", pooling="rank")
        self._capture = rt.capture
        self.n_ctx = rt.n_ctx
        self.n_batch = n_batch
        # The official limit applies to everything but the last 5 tokens; a smaller context lowers it.
        self.max_length = max(1, min(max_length, self.n_ctx - KEPT_TAIL))
        self._special = {tok for text in SPECIAL_TOKENS for tok in self.tokenize(text)}
        self._image_pad = self.tokenize("<|image_pad|>")[0]
        if self.mmproj_path is not None:
            rt.open_mtmd(self.mmproj_path, published_with="reranker")
        self.supports_images = rt.mctx is not None

    def identity(self) -> dict[str, Any]:
        """Model file, mmproj, head: what the scores depend on."""
        ident: dict[str, Any] = {
            "name": self.name,
            "backend": self.backend,
            "model_file": self.model_path.name,
            "model_fingerprint": file_fingerprint(self.model_path),
            "head": self.head,
            "head_type": self.head_type,
            "max_length": self.max_length,
        }
        if self.mmproj_path is not None:
            ident["mmproj_fingerprint"] = file_fingerprint(self.mmproj_path)
        return ident

    def close(self) -> None:
        """Free mtmd, batch, context and model, in that order."""
        runtime = getattr(self, "_runtime", None)
        if runtime is not None:
            runtime.close()
            self._runtime = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- scoring -----------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """Token ids with special tokens parsed and nothing added (Qwen has no BOS)."""
        return self._rt.tokenize(text.encode("utf-8"), add_special=False, parse_special=True)

    def token_ids(self, pair: RerankPair) -> list[int]:
        """The ids a text-only pair is scored on, truncated like the reference."""
        return truncate_ids(self.tokenize(build_prompt(pair)), self.max_length, self._special.__contains__)

    def score_batch(self, pairs: Sequence[RerankPair]) -> list[float]:
        """Text-only pairs share decodes; pairs with images go through mtmd one at a time."""
        if self._runtime is None:
            raise LauncherError("the reranker is closed")
        logits = np.empty(len(pairs), dtype=np.float64)
        with self._lock:
            text_rows: list[int] = []
            seqs: list[list[int]] = []
            for row, pair in enumerate(pairs):
                if pair.n_images:
                    if not self.supports_images:
                        raise InputError(f"reranker {self.name} cannot score images: pass its mmproj")
                    logits[row] = self._logit_multimodal(pair)
                else:
                    ids = self.token_ids(pair)
                    self._check_length(len(ids))
                    text_rows.append(row)
                    seqs.append(ids)
            if seqs:
                logits[text_rows] = self._logits_token_seqs(seqs)
        return [sigmoid(float(x)) for x in logits]

    def _check_length(self, n_tokens: int) -> None:
        if n_tokens > self.n_ctx:
            raise InputTooLong(
                f"pair is {n_tokens} tokens after truncation (its images alone fill the budget), over the "
                f"context of {self.n_ctx} tokens; raise --ctx or lower the image pixel budget"
            )

    @property
    def _rt(self) -> LlamaRuntime:
        if self._runtime is None:
            raise LauncherError("the reranker is closed")
        return self._runtime

    def _logit_from_rank(self, seq_id: int) -> float:
        p_yes, p_no = self._rt.pooled(seq_id, 2, "rank scores")
        # softmax([yes, no]) -> the logit difference; clamped where float32 saturates at 0 or 1.
        return math.log(max(float(p_yes), 1e-38)) - math.log(max(float(p_no), 1e-38))

    def _logits_from_rows(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(rows, dtype=np.float64) @ self._head_diff

    def _logits_token_seqs(self, seqs: list[list[int]]) -> np.ndarray:
        """Whole pairs packed into shared decodes by the runtime, read at their last token."""
        out = np.empty(len(seqs), dtype=np.float64)
        for group in self._rt.decode_packed(seqs):
            if self._capture is not None:
                out[group] = self._logits_from_rows(self._capture.take_last(len(group)))
            else:
                for seq_id, idx in enumerate(group):
                    out[idx] = self._logit_from_rank(seq_id)
        return out

    def _read_logit(self) -> float:
        if self._capture is not None:
            return float(self._logits_from_rows(self._capture.take_last(1))[0])
        return self._logit_from_rank(0)

    def _logit_multimodal(self, pair: RerankPair) -> float:
        opts = self.options
        images = [*pair.query.images, *pair.document.images]  # their order in the prompt
        prepared = [
            prepare_image(img, min_pixels=opts.image_min_pixels, max_pixels=opts.image_max_pixels)
            for img in images
        ]
        prompt = build_prompt(pair, image_placeholder=IMAGE_SLOT)
        with self._rt.image_chunks(prompt, prepared) as chunks:
            return self._eval_chunks(chunks)

    def _eval_chunks(self, chunks: Any) -> float:
        """Decode text chunks ourselves (so they can be truncated) and image chunks through mtmd."""
        rt = self._rt
        parts = rt.chunk_parts(chunks)  # (chunk, its text tokens or None for an image, token count)
        flat: list[int] = []
        for _, toks, n in parts:
            flat.extend(toks if toks is not None else [self._image_pad] * n)
        keep = truncation_mask(flat, self.max_length, self._special.__contains__)
        self._check_length(sum(keep))
        rt.clear_memory()
        n_past = 0
        at = 0
        last_text = max(i for i, (_, toks, _) in enumerate(parts) if toks is not None)
        for i, (chunk, toks, n) in enumerate(parts):
            if toks is None:
                n_past = rt.eval_image_chunk(chunk, n_past)
                at += n
                continue
            kept = [t for t, k in zip(toks, keep[at : at + len(toks)], strict=True) if k]
            at += len(toks)
            rt.decode_tokens(kept, n_past, i == last_text)
            n_past += len(kept)
        return self._read_logit()
