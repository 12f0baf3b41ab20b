"""The GGUF reranker through llama.cpp: the only rerank module that imports llama_cpp.

The model file is what llama.cpp's converter makes of Qwen3-VL-Reranker: a `qwen3vl` model with
pooling type RANK, classifier labels ["yes", "no"] and a `cls.output.weight` tensor (2 x hidden)
holding the lm_head rows of "yes" and "no". Two ways to run it, same score:

- "capture" (default): embeddings off, only the last token marked as output, its final-norm row
  read through a cb_eval hook and scored here against `w_yes - w_no` taken from the file. The
  output layer then runs on one row per pair instead of every token.
- "rank": llama.cpp's own RANK pooling; `llama_get_embeddings_seq` returns softmax([yes, no]).
  Embedding mode runs the 151,936-wide output layer on every token, which the score never uses.

Text goes through the low-level API (our prompt, NFC, special tokens parsed, several pairs per
decode); images through mtmd with pixels resized by `launcher.engine.imageprep`.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llama_cpp as lc
import numpy as np
from llama_cpp import mtmd_cpp as mt

from launcher.engine import gguf_meta
from launcher.engine.imageprep import FACTOR, prepare_image
from launcher.engine.llama import (
    CHAT_ARCHITECTURES,
    IMAGE_SLOT,
    LlamaOptions,
    _init_backend,
    _load_ggml_base,
    _NormCapture,
    default_threads,
    file_fingerprint,
    mtmd_tokenize_prompt,
)
from launcher.errors import InputError, InputTooLong, LauncherError, ModelError
from launcher.rerank.base import (
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

log = logging.getLogger("launcher.rerank")

HEAD_TENSOR = "cls.output.weight"
GGML_TYPE_F32 = 0
HEADS = ("capture", "rank")


def _not_a_reranker(path: Path, why: str) -> ModelError:
    return ModelError(
        f"{path.name} is not a qwen3-vl reranker gguf ({why}): use `launcher models pull qwen3-vl-reranker-2b` "
        "or convert Qwen3-VL-Reranker with llama.cpp's convert_hf_to_gguf.py"
    )


def read_head(path: Path) -> tuple[np.ndarray, str]:
    """The (2, hidden) float32 yes/no rows of `cls.output.weight`, dequantized by ggml, and their type."""
    header = gguf_meta.read_header(path)
    info = header.tensors.get(HEAD_TENSOR)
    if info is None:
        raise _not_a_reranker(path, f"no {HEAD_TENSOR} tensor")
    dims, ggml_type = list(info.dims), info.ggml_type
    if len(dims) != 2 or dims[1] != 2:
        raise _not_a_reranker(path, f"{HEAD_TENSOR} has shape {dims}, expected [hidden, 2]")
    ggml = _ggml_dequant()
    row_bytes = int(ggml.ggml_row_size(ggml_type, dims[0]))
    try:
        with path.open("rb") as f:
            f.seek(header.data_start + info.offset)
            raw = f.read(2 * row_bytes)
    except OSError as exc:
        raise ModelError(f"corrupt gguf model file: {path} ({type(exc).__name__})") from None
    if len(raw) != 2 * row_bytes:
        raise ModelError(f"corrupt gguf model file: {path} (truncated)")
    traits = ggml.ggml_get_type_traits(ggml_type).contents
    type_name = (traits.type_name or b"?").decode()
    if ggml_type == GGML_TYPE_F32:
        return np.frombuffer(raw, dtype=np.float32).reshape(2, dims[0]).copy(), type_name
    if not traits.to_float:
        raise ModelError(
            f"{path.name}: cannot dequantize its {type_name} classifier head; use llama.cpp's rank pooling "
            "(LlamaOptions(last_token_capture=False))"
        )
    rows = np.empty((2, dims[0]), dtype=np.float32)
    to_float = _TO_FLOAT(traits.to_float)
    src = ctypes.create_string_buffer(raw, len(raw))
    to_float(src, rows.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), 2 * dims[0])
    return rows, type_name


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_int64)


class _TypeTraits(ctypes.Structure):
    # struct ggml_type_traits in ggml.h
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


_ggml_lib: Any = None


def _ggml_dequant() -> Any:
    """ggml-base with the type-traits entry points declared (ggml's own dequantization)."""
    global _ggml_lib
    if _ggml_lib is None:
        lib = _load_ggml_base()
        lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
        lib.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
        lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
        lib.ggml_row_size.restype = ctypes.c_size_t
        _ggml_lib = lib
    return _ggml_lib


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
        self._model: Any = None
        self._ctx: Any = None
        self._batch: Any = None
        self._mctx: Any = None
        self._lock = threading.Lock()

        meta = gguf_meta.read_metadata(self.model_path)
        if gguf_meta.is_mmproj(meta):
            raise ModelError(
                f"{self.model_path} is an mmproj (vision projector), not a model: pass it as the mmproj"
            )
        self.architecture = gguf_meta.architecture(meta)
        if self.architecture not in CHAT_ARCHITECTURES:
            raise _not_a_reranker(self.model_path, f"architecture {self.architecture!r}")
        if meta.get(f"{self.architecture}.pooling_type") != lc.LLAMA_POOLING_TYPE_RANK:
            raise _not_a_reranker(
                self.model_path, "its pooling type is not rank: an embedding or chat model?"
            )
        self._head_rows, self.head_type = read_head(self.model_path)
        # The official head: one linear row, lm_head[yes] - lm_head[no].
        self._head_diff = self._head_rows[0].astype(np.float64) - self._head_rows[1].astype(np.float64)
        self.name = str(meta.get("general.name") or self.model_path.stem)
        if self.mmproj_path is not None:
            mmeta = gguf_meta.read_metadata(self.mmproj_path)
            if not gguf_meta.is_mmproj(mmeta):
                raise ModelError(
                    f"{self.mmproj_path} is not an mmproj file (its architecture is {gguf_meta.architecture(mmeta)!r})"
                )
        self.n_threads = self.options.n_threads or default_threads()
        self.batch_size = self.options.n_seq_max
        _init_backend()
        try:
            self._load(max_length)
        except BaseException:
            self.close()
            raise

    # -- loading -----------------------------------------------------------------------------

    def _load(self, max_length: int) -> None:
        opts = self.options
        if opts.n_gpu_layers and not lc.llama_supports_gpu_offload():
            log.warning(
                "this llama.cpp build has no gpu offload, running on the cpu "
                "(reinstall llama-cpp-python with CMAKE_ARGS=-DGGML_CUDA=on or -DGGML_METAL=on)"
            )
        mparams = lc.llama_model_default_params()
        mparams.n_gpu_layers = opts.n_gpu_layers
        # The AMX/repacked buffer types segfault on quantized models on CPUs that advertise AMX.
        mparams.use_extra_bufts = False
        self._model = lc.llama_model_load_from_file(str(self.model_path).encode(), mparams)
        if not self._model:
            raise ModelError(
                f"cannot load model {self.model_path}: the file is corrupt or not a supported gguf"
            )
        labels = [
            lc.llama_model_cls_label(self._model, i) for i in range(lc.llama_model_n_cls_out(self._model))
        ]
        if labels != [YES.encode(), NO.encode()]:
            raise _not_a_reranker(self.model_path, f"classifier labels {labels}, expected [yes, no]")
        self._vocab = lc.llama_model_get_vocab(self._model)
        self.n_ctx_train = int(lc.llama_model_n_ctx_train(self._model))
        self.dims = int(lc.llama_model_n_embd_out(self._model))
        if self._head_diff.shape != (self.dims,):
            raise _not_a_reranker(
                self.model_path, f"head width {self._head_diff.shape[0]} != hidden size {self.dims}"
            )

        n_ctx = min(opts.n_ctx, self.n_ctx_train) if self.n_ctx_train > 0 else opts.n_ctx
        n_batch = min(opts.n_batch, n_ctx)
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch  # equal sizes: the qwen3vl deepstack graph aborts otherwise
        cparams.n_seq_max = opts.n_seq_max
        cparams.n_threads = self.n_threads
        cparams.n_threads_batch = self.n_threads
        cparams.kv_unified = True
        # The CPU flash-attention kernel drifts on long inputs; exact scores matter more here.
        cparams.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self._capture: _NormCapture | None = None
        if self.head == "capture":
            self._capture = _NormCapture(self.dims)
            cparams.embeddings = False
            cparams.cb_eval = self._capture.callback
            cparams.cb_eval_user_data = None
        else:
            cparams.embeddings = True
            cparams.pooling_type = lc.LLAMA_POOLING_TYPE_RANK
        self._ctx = lc.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            raise ModelError(
                f"cannot create a llama.cpp context for {self.model_path} (n_ctx={n_ctx}): out of memory?"
            )
        self.n_ctx = min(n_ctx, int(lc.llama_n_ctx(self._ctx)))
        self.n_batch = n_batch
        # The official limit applies to everything but the last 5 tokens; a smaller context lowers it.
        self.max_length = max(1, min(max_length, self.n_ctx - KEPT_TAIL))
        self._batch = lc.llama_batch_init(n_batch, 0, 1)
        self._special = {tok for text in SPECIAL_TOKENS for tok in self.tokenize(text)}
        self._image_pad = self.tokenize("<|image_pad|>")[0]

        if self.mmproj_path is not None:
            mparams_mt = mt.mtmd_context_params_default()
            mparams_mt.use_gpu = bool(
                opts.mmproj_on_gpu and opts.n_gpu_layers and lc.llama_supports_gpu_offload()
            )
            mparams_mt.n_threads = self.n_threads  # mtmd's default is hard-coded to 4
            mparams_mt.print_timings = False
            mparams_mt.warmup = False
            # Our bitmaps are already resized to the reference grid; bounds wide enough that mtmd keeps them.
            mparams_mt.image_min_tokens = max(1, opts.image_min_pixels // (FACTOR * FACTOR))
            mparams_mt.image_max_tokens = max(1, opts.image_max_pixels // (FACTOR * FACTOR))
            self._mctx = mt.mtmd_init_from_file(str(self.mmproj_path).encode(), self._model, mparams_mt)
            if not self._mctx:
                raise ModelError(
                    f"mmproj {self.mmproj_path.name} does not match model {self.model_path.name} "
                    "(or is corrupt): use the mmproj file published with this reranker"
                )
            if not mt.mtmd_support_vision(self._mctx):
                raise ModelError(f"mmproj {self.mmproj_path.name} has no vision encoder")
        self.supports_images = self._mctx is not None

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
        if getattr(self, "_mctx", None):
            mt.mtmd_free(self._mctx)
            self._mctx = None
        if getattr(self, "_batch", None) is not None:
            lc.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "_ctx", None):
            lc.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            lc.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- scoring -----------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """Token ids with special tokens parsed and nothing added (Qwen has no BOS)."""
        data = text.encode("utf-8")
        cap = len(data) + 16
        buf = (lc.llama_token * cap)()
        n = lc.llama_tokenize(self._vocab, data, len(data), buf, cap, False, True)
        if n < 0:
            cap = -n
            buf = (lc.llama_token * cap)()
            n = lc.llama_tokenize(self._vocab, data, len(data), buf, cap, False, True)
        if n < 0:
            raise LauncherError(f"tokenization failed for an input of {len(data)} bytes")
        return list(buf[:n])

    def token_ids(self, pair: RerankPair) -> list[int]:
        """The ids a text-only pair is scored on, truncated like the reference."""
        return truncate_ids(self.tokenize(build_prompt(pair)), self.max_length, self._special.__contains__)

    def score_batch(self, pairs: Sequence[RerankPair]) -> list[float]:
        """Text-only pairs share decodes; pairs with images go through mtmd one at a time."""
        if self._ctx is None:
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

    def _clear_memory(self) -> None:
        lc.llama_memory_clear(lc.llama_get_memory(self._ctx), True)
        if self._capture is not None:
            self._capture.rows.clear()

    def _decode(self, n_tokens: int) -> None:
        self._batch.n_tokens = n_tokens
        rc = lc.llama_decode(self._ctx, self._batch)
        if rc != 0:
            raise LauncherError(f"llama.cpp decode failed (code {rc})")

    def _logit_from_rank(self, seq_id: int) -> float:
        ptr = lc.llama_get_embeddings_seq(self._ctx, seq_id)
        if not ptr:
            raise LauncherError("llama.cpp returned no rank scores")
        p_yes, p_no = float(ptr[0]), float(ptr[1])
        # softmax([yes, no]) -> the logit difference; clamped where float32 saturates at 0 or 1.
        return math.log(max(p_yes, 1e-38)) - math.log(max(p_no, 1e-38))

    def _logits_from_rows(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(rows, dtype=np.float64) @ self._head_diff

    def _logits_token_seqs(self, seqs: list[list[int]]) -> np.ndarray:
        """Pack whole pairs into decodes of at most n_batch tokens and n_seq_max sequences."""
        out = np.empty(len(seqs), dtype=np.float64)
        b = self._batch
        i = 0
        while i < len(seqs):
            if len(seqs[i]) > self.n_batch:
                out[i] = self._logit_long(seqs[i])
                i += 1
                continue
            group: list[int] = []
            total = 0
            while (
                i < len(seqs) and len(group) < self.options.n_seq_max and total + len(seqs[i]) <= self.n_batch
            ):
                group.append(i)
                total += len(seqs[i])
                i += 1
            self._clear_memory()
            k = 0
            for seq_id, idx in enumerate(group):
                toks = seqs[idx]
                for pos, tok in enumerate(toks):
                    b.token[k] = tok
                    b.pos[k] = pos
                    b.n_seq_id[k] = 1
                    b.seq_id[k][0] = seq_id
                    b.logits[k] = pos == len(toks) - 1
                    k += 1
            self._decode(k)
            if self._capture is not None:
                out[group] = self._logits_from_rows(self._capture.take_last(len(group)))
            else:
                for seq_id, idx in enumerate(group):
                    out[idx] = self._logit_from_rank(seq_id)
        return out

    def _decode_tokens(self, tokens: Sequence[int], start: int, last_is_output: bool) -> None:
        """Feed tokens of sequence 0 at positions start.. in n_batch slices."""
        b = self._batch
        for offset in range(0, len(tokens), self.n_batch):
            piece = tokens[offset : offset + self.n_batch]
            for k, tok in enumerate(piece):
                b.token[k] = tok
                b.pos[k] = start + offset + k
                b.n_seq_id[k] = 1
                b.seq_id[k][0] = 0
                b.logits[k] = last_is_output and offset + k == len(tokens) - 1
            self._decode(len(piece))

    def _read_logit(self) -> float:
        if self._capture is not None:
            return float(self._logits_from_rows(self._capture.take_last(1))[0])
        return self._logit_from_rank(0)

    def _logit_long(self, tokens: list[int]) -> float:
        """One text pair longer than a decode."""
        self._clear_memory()
        self._decode_tokens(tokens, 0, True)
        return self._read_logit()

    def _logit_multimodal(self, pair: RerankPair) -> float:
        opts = self.options
        images = [*pair.query.images, *pair.document.images]  # their order in the prompt
        prepared = [
            prepare_image(img, min_pixels=opts.image_min_pixels, max_pixels=opts.image_max_pixels)
            for img in images
        ]
        prompt = build_prompt(pair, image_placeholder=IMAGE_SLOT)
        bitmaps: list[Any] = []
        chunks = None
        try:
            for p in prepared:
                buf = (ctypes.c_uint8 * p.pixels.size).from_buffer_copy(p.pixels.tobytes())
                bitmap = mt.mtmd_bitmap_init(p.width, p.height, buf)
                if not bitmap:
                    raise LauncherError("mtmd could not allocate an image bitmap")
                bitmaps.append(bitmap)
            chunks = mtmd_tokenize_prompt(self._mctx, prompt, bitmaps)
            return self._eval_chunks(chunks)
        finally:
            if chunks:
                mt.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                mt.mtmd_bitmap_free(bitmap)

    def _eval_chunks(self, chunks: Any) -> float:
        """Decode text chunks ourselves (so they can be truncated) and image chunks through mtmd."""
        parts: list[tuple[Any, list[int] | None]] = []  # (chunk, its text tokens or None for an image)
        flat: list[int] = []
        for i in range(mt.mtmd_input_chunks_size(chunks)):
            chunk = mt.mtmd_input_chunks_get(chunks, i)
            if mt.mtmd_input_chunk_get_type(chunk) == mt.MTMD_INPUT_CHUNK_TYPE_TEXT:
                size = ctypes.c_size_t(0)
                ptr = mt.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(size))
                text_tokens = [int(ptr[j]) for j in range(size.value)]
                parts.append((chunk, text_tokens))
                flat.extend(text_tokens)
            else:
                parts.append((chunk, None))
                flat.extend([self._image_pad] * int(mt.mtmd_input_chunk_get_n_tokens(chunk)))
        keep = truncation_mask(flat, self.max_length, self._special.__contains__)
        self._check_length(sum(keep))
        self._clear_memory()
        n_past = 0
        at = 0
        last_text = max(i for i, (_, toks) in enumerate(parts) if toks is not None)
        for i, (chunk, toks) in enumerate(parts):
            if toks is None:
                new_n_past = lc.llama_pos(n_past)
                n = int(mt.mtmd_input_chunk_get_n_tokens(chunk))
                rc = mt.mtmd_helper_eval_chunk_single(
                    self._mctx, self._ctx, chunk, n_past, 0, self.n_batch, False, ctypes.byref(new_n_past)
                )
                if rc != 0:
                    raise LauncherError(f"mtmd could not evaluate an image (code {rc})")
                n_past = int(new_n_past.value)
                at += n
                continue
            kept = [t for t, k in zip(toks, keep[at : at + len(toks)], strict=True) if k]
            at += len(toks)
            self._decode_tokens(kept, n_past, i == last_text)
            n_past += len(kept)
        return self._read_logit()
