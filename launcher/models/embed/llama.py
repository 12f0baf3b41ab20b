"""The embedder through llama.cpp: prompts, pooling and batching of embedding inputs.

Text goes through the low-level llama API (our own prompt, tokenized with special tokens parsed,
several sequences per decode); images go through mtmd with pixels we resized ourselves. The
native side (model, context, batch, mtmd) is `launcher.models.runtime`, shared with the reranker.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from launcher.core.errors import InputError, InputTooLong, LauncherError, ModelError
from launcher.core.records import Matrix
from launcher.models import gguf_meta
from launcher.models.embed.base import Embedder, EmbedInput, context_needed, l2_normalize
from launcher.models.embed.prompt import IMAGE_TOKENS, as_utf8, build_prompt
from launcher.models.imageprep import FACTOR, prepare_image, smart_resize, visual_tokens
from launcher.models.runtime import (
    CHAT_ARCHITECTURES,
    IMAGE_SLOT,
    LlamaOptions,
    LlamaRuntime,
    default_threads,
    file_fingerprint,
)

__all__ = ["LlamaEmbedder", "LlamaOptions"]

ENCODER_CHUNK_TOKENS = 256  # target piece size for BERT-style encoders such as the bundled MiniLM


class LlamaEmbedder(Embedder):
    """Embeddings from a GGUF model through llama.cpp, with an optional mmproj for images."""

    def __init__(
        self,
        model_path: str | Path,
        mmproj_path: str | Path | None = None,
        options: LlamaOptions | None = None,
    ):
        self.options = options or LlamaOptions()
        self.model_path = Path(model_path).expanduser()
        self.mmproj_path = Path(mmproj_path).expanduser() if mmproj_path else None
        self._runtime: LlamaRuntime | None = None
        self._lock = threading.Lock()  # one decode at a time: the context holds one batch's state
        # The query lane (LlamaOptions.query_ctx): a text input that finds the main context busy
        # is embedded on it at once instead of waiting for the decode under way.
        self._lane: LlamaRuntime | None = None
        self._lane_lock = threading.Lock()
        self.query_lane_tokens = 0  # the lane's context, 0 without one
        self.lane_calls = 0  # calls the lane answered (the resident process reports it)
        # Calls under way (tokenizing runs outside the decode lock); close() waits for them to end,
        # so that no thread is ever inside llama.cpp when the model is freed.
        self._users = 0
        self._closed = False
        self._idle = threading.Condition()

        self._header = gguf_meta.model_header(self.model_path, pass_mmproj_as="--mmproj")
        meta = self._header.meta
        self.architecture = gguf_meta.architecture(meta)
        self.chat_format = self.architecture in CHAT_ARCHITECTURES
        self.name = str(meta.get("general.name") or self.model_path.stem)
        if self.mmproj_path is not None:
            gguf_meta.check_mmproj(self.mmproj_path)
            if not self.chat_format:
                raise ModelError(
                    f"model {self.model_path.name} ({self.architecture}) is text-only and cannot use an mmproj; "
                    "images need a Qwen3-VL-Embedding model"
                )
        self.n_threads = self.options.n_threads or default_threads()
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    # -- loading -----------------------------------------------------------------------------

    def _load(self) -> None:
        opts = self.options
        rt = self._runtime = LlamaRuntime(self.model_path, opts, self.n_threads, self._header)
        self.n_ctx_train = rt.n_ctx_train
        causal = self.chat_format
        # The text a document piece aims at, in tokens (bench/bench_retrieval.py, the guide's table):
        # small encoders (MiniLM was trained on 128-256-token inputs) retrieve best with short
        # pieces; Qwen3-VL-Embedding is trained on long inputs, and 512 keeps a detail deep in a long
        # page findable while an A4 page of prose fits in about two pieces.
        own_chunk = 512 if causal else ENCODER_CHUNK_TOKENS
        # Unset, the context is what the pieces and pictures need, not more: the KV cache and the
        # compute buffers grow with it (LAUNCHER_README, Memory).
        pictures = visual_tokens(opts.image_max_pixels) if self.mmproj_path is not None else 0
        n_ctx = opts.n_ctx or context_needed(opts.chunk_tokens or own_chunk, pictures)
        if self.n_ctx_train > 0:
            n_ctx = min(n_ctx, self.n_ctx_train)
        # Non-causal (BERT-like) models need a whole input in one micro-batch.
        n_batch = min(opts.n_batch, n_ctx) if causal else n_ctx
        self.dims = rt.n_embd

        # The CPU flash-attention kernel drifts on long inputs (cosine 0.99976 against the reference
        # for an 1800-token image, 0.9999998 without it), but needs far less memory: an option.
        def open_context(on: LlamaRuntime, n_ctx: int, n_batch: int) -> None:
            # The lane is opened the same way as the main context: the same vectors.
            on.open_context(
                n_ctx,
                n_batch,
                flash_attn=opts.flash_attn,
                capture=self.chat_format and opts.last_token_capture,
                pooling="last" if self.chat_format else None,
            )

        open_context(rt, n_ctx, n_batch)
        if rt.capture is None and not rt.pools():
            raise ModelError(f"model {self.model_path.name} has no pooling: it is not an embedding model")
        self.n_ctx = rt.n_ctx
        self.n_batch = n_batch
        self.max_tokens = self.n_ctx
        self.chunk_tokens = own_chunk if causal else min(own_chunk, self.n_ctx // 2)
        self.batch_size = opts.n_seq_max
        if self.mmproj_path is not None:
            rt.open_mtmd(self.mmproj_path, published_with="model")
        self.supports_images = rt.mctx is not None
        self.image_tokens = pictures if self.supports_images else 0
        if opts.query_ctx > 0:
            lane_ctx = min(opts.query_ctx, self.n_ctx)
            self._lane = rt.sibling()
            open_context(self._lane, lane_ctx, min(n_batch, lane_ctx) if causal else lane_ctx)
            self.query_lane_tokens = self._lane.n_ctx

    def identity(self) -> dict[str, Any]:
        """Model file, mmproj and format: what the vectors depend on."""
        ident: dict[str, Any] = {
            "name": self.name,
            "architecture": self.architecture,
            "model_file": self.model_path.name,
            "model_fingerprint": file_fingerprint(self.model_path),
            "dims": self.dims,
        }
        if self.mmproj_path is not None:
            ident["mmproj_fingerprint"] = file_fingerprint(self.mmproj_path)
        return ident

    @contextlib.contextmanager
    def _in_use(self) -> Any:
        """Hold while calling into llama.cpp: close() waits for every holder to leave."""
        with self._idle:
            if self._closed:
                raise LauncherError("the embedder is closed")
            self._users += 1
        try:
            yield
        finally:
            with self._idle:
                self._users -= 1
                self._idle.notify_all()

    def close(self) -> None:
        """Refuse new calls, wait for the ones under way, then free mtmd, batch, context and model."""
        idle = getattr(self, "_idle", None)
        if idle is not None:
            with idle:
                self._closed = True
                while self._users:
                    idle.wait()
        lane = getattr(self, "_lane", None)
        if lane is not None:  # before the runtime that owns the weights it runs on
            lane.close()
            self._lane = None
        runtime = getattr(self, "_runtime", None)
        if runtime is not None:
            runtime.close()
            self._runtime = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- embedding ---------------------------------------------------------------------------

    def prompt_for(self, item: EmbedInput, *, image_slots: bool = False) -> str:
        """The exact text handed to the tokenizer for this input (with IMAGE_SLOTs for mtmd)."""
        texts = [as_utf8(t) for t in item.texts]
        if self.chat_format:
            placeholder = IMAGE_SLOT if image_slots else IMAGE_TOKENS
            return build_prompt(texts, len(item.images), item.instruction, image_placeholder=placeholder)
        # Plain embedding models (BERT, ...) have no chat template and no instructions.
        import unicodedata

        return unicodedata.normalize("NFC", " ".join(texts))

    def count_tokens(self, text: str) -> int:
        """Tokens of a text inside an input's body, as this model counts them."""
        import unicodedata

        return len(self.tokenize(unicodedata.normalize("NFC", text), add_special=False))

    def input_tokens(self, item: EmbedInput) -> int:
        """Tokens of the whole prompt of a text-only input."""
        return len(self.tokenize(self.prompt_for(item)))

    def tokenize(self, text: str, *, add_special: bool | None = None) -> list[int]:
        """Token ids as this model sees them (special tokens parsed for chat-format models)."""
        # File names that are not valid UTF-8 reach us as surrogate escapes; the model sees U+FFFD.
        data = text.encode("utf-8", errors="replace")
        if add_special is None:
            add_special = not self.chat_format  # BERT wants [CLS]/[SEP]; Qwen adds nothing
        parse_special = self.chat_format
        with self._in_use():
            return self._rt.tokenize(data, add_special=add_special, parse_special=parse_special)

    def embed_batch(self, inputs: Sequence[EmbedInput]) -> Matrix:
        """Text-only inputs share decodes; inputs with images go through mtmd one at a time."""
        with self._in_use():
            if self._lane is not None and inputs and not any(i.has_images for i in inputs):
                if not self._lock.acquire(blocking=False):
                    lane = self._on_lane(inputs)
                    if lane is not None:
                        return lane
                    self._lock.acquire()  # too long for the lane: wait for the main context
            else:
                self._lock.acquire()
            try:
                return self._embed_locked(inputs)
            finally:
                self._lock.release()

    def _on_lane(self, inputs: Sequence[EmbedInput]) -> Matrix | None:
        """Text inputs embedded on the query lane while the main context is busy; None when one of
        them does not fit the lane's context."""
        assert self._lane is not None
        seqs = [self.tokenize(self.prompt_for(item)) for item in inputs]
        if max(len(s) for s in seqs) > self._lane.n_ctx:
            return None
        with self._lane_lock:
            self.lane_calls += 1
            return l2_normalize(self._embed_token_seqs(seqs, self._lane))

    def _embed_locked(self, inputs: Sequence[EmbedInput]) -> Matrix:
        out = np.empty((len(inputs), self.dims), dtype=np.float32)
        text_rows: list[int] = []
        token_seqs: list[list[int]] = []
        for row, item in enumerate(inputs):
            if item.has_images:
                if not self.supports_images:
                    raise InputError(
                        f"model {self.name} cannot embed images: "
                        + ("pass its mmproj with --mmproj" if self.chat_format else "it is a text-only model")
                    )
                out[row] = self._embed_multimodal(item)
            else:
                tokens = self.tokenize(self.prompt_for(item))
                self._check_length(len(tokens))
                text_rows.append(row)
                token_seqs.append(tokens)
        if token_seqs:
            out[text_rows] = self._embed_token_seqs(token_seqs, self._rt)
        return l2_normalize(out)

    def _check_length(self, n_tokens: int) -> None:
        if n_tokens > self.n_ctx:
            hint = (
                f"raise --ctx (this model supports up to {self.n_ctx_train})"
                if self.n_ctx < self.n_ctx_train
                else "split the input"
            )
            raise InputTooLong(
                f"input is {n_tokens} tokens, over the limit of {self.n_ctx} tokens; {hint} (never truncated)"
            )

    @property
    def _rt(self) -> LlamaRuntime:
        if self._runtime is None:
            raise LauncherError("the embedder is closed")
        return self._runtime

    def _embed_token_seqs(self, seqs: list[list[int]], rt: LlamaRuntime) -> Matrix:
        """Whole sequences packed into shared decodes by the runtime, read at their last token."""
        out = np.empty((len(seqs), self.dims), dtype=np.float32)
        for group in rt.decode_packed(seqs):
            out[group] = self._last_vectors(rt, len(group))
        return out

    def _last_vectors(self, rt: LlamaRuntime, n: int) -> Matrix:
        """The vectors of the last decode's n sequences (ids 0..n-1): the captured final norm, or
        llama.cpp's pooled embeddings."""
        if rt.capture is not None:
            return rt.capture.take_last(n)
        return np.stack([rt.pooled(seq_id, self.dims, "pooled embedding") for seq_id in range(n)])

    def _embed_multimodal(self, item: EmbedInput) -> np.ndarray:
        opts = self.options
        prepared = [
            prepare_image(img, min_pixels=opts.image_min_pixels, max_pixels=opts.image_max_pixels)
            for img in item.images
        ]
        prompt = self.prompt_for(item, image_slots=True)
        rt = self._rt
        with rt.image_chunks(prompt, prepared) as chunks:
            self._check_length(rt.chunk_tokens(chunks))
            rt.clear_memory()
            rt.eval_chunks(chunks)
            return self._last_vectors(rt, 1)[0]

    def fit_image(self, image: Any) -> Any:
        """Converted and resized exactly as _embed_multimodal would do it, so the model's own
        preparation finds nothing left to change (same pixels, same vector)."""
        opts = self.options
        prepared = prepare_image(image, min_pixels=opts.image_min_pixels, max_pixels=opts.image_max_pixels)
        size = (prepared.height, prepared.width)
        if smart_resize(*size, FACTOR, opts.image_min_pixels, opts.image_max_pixels) != size:
            return image  # the rare extreme aspect ratio that would be resized again: leave it whole
        return Image.fromarray(prepared.pixels, "RGB")

    def count_image_tokens(self, image: Any) -> int:
        """Visual tokens one image costs under the current pixel budget."""
        return prepare_image(
            image, min_pixels=self.options.image_min_pixels, max_pixels=self.options.image_max_pixels
        ).n_tokens
