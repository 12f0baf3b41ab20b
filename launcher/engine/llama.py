"""The llama.cpp backend: the only module in launcher that imports llama_cpp.

Text goes through the low-level llama API (our own prompt, tokenized with special tokens parsed,
several sequences per decode); images go through mtmd with pixels we resized ourselves.
Every native resource is owned here and freed in reverse order by `close()`.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp as lc  # noqa: E402  (kept after our imports: loading it starts the native library)
import numpy as np
from llama_cpp import mtmd_cpp as mt  # noqa: E402
from PIL import Image

from launcher.engine import gguf_meta
from launcher.engine.base import Embedder, EmbedInput, l2_normalize
from launcher.engine.imageprep import FACTOR, MAX_PIXELS, MIN_PIXELS, prepare_image, smart_resize
from launcher.engine.prompt import IMAGE_TOKENS, as_utf8, build_prompt
from launcher.errors import InputError, InputTooLong, LauncherError, ModelError
from launcher.records import Matrix

log = logging.getLogger("launcher.llama")

CHAT_ARCHITECTURES = {"qwen3vl", "qwen3vlmoe"}
ENCODER_CHUNK_TOKENS = 256  # target piece size for BERT-style encoders such as the bundled MiniLM
# Where an image goes in a prompt handed to mtmd. mtmd's own media marker (`<__media__>`) is never
# used: a file name or a document holding that text would become a marker without a picture and
# fail the input. A lone surrogate cannot be in any text we tokenize (`as_utf8` replaces them first,
# as the UTF-8 encoding of the prompt would), so this slot is only ever ours.
IMAGE_SLOT = "\ud800"


def mtmd_tokenize_prompt(mctx: Any, prompt: str, bitmaps: Sequence[Any]) -> Any:
    """mtmd input chunks for a prompt whose images sit at IMAGE_SLOTs, one bitmap each, in order.

    The text around the images is tokenized with special tokens parsed (the chat markers, as the
    reference tokenizer does); the caller frees the chunks (mtmd_input_chunks_free)."""
    segments = prompt.split(IMAGE_SLOT)
    if len(segments) != len(bitmaps) + 1:
        raise LauncherError(f"prompt has {len(segments) - 1} image slots for {len(bitmaps)} images")
    keep: list[Any] = []  # the ctypes objects must outlive the call
    parts: list[Any] = []
    for i, segment in enumerate(segments):
        if segment:
            data = segment.encode("utf-8")
            text = mt.mtmd_input_text()
            text.text, text.text_len, text.add_special, text.parse_special = data, len(data), False, True
            keep += [data, text]
            parts.append(mt.mtmd_input_part(ctypes.pointer(text), None))
        if i < len(bitmaps):
            parts.append(mt.mtmd_input_part(None, bitmaps[i]))
    array = (ctypes.POINTER(mt.mtmd_input_part) * len(parts))(*(ctypes.pointer(p) for p in parts))
    chunks = mt.mtmd_input_chunks_init()
    rc = mt.mtmd_tokenize_from_parts(mctx, chunks, array, len(parts), False)
    del keep
    if rc != 0:
        mt.mtmd_input_chunks_free(chunks)
        raise LauncherError(f"mtmd could not tokenize the input (code {rc})")
    return chunks


@lc.llama_log_callback
def _route_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    # llama.cpp and mtmd print through this hook (`verbose=False` alone still lets warnings out).
    # Their errors come with our own one-line exception, so they are detail: debug level.
    message = text.decode("utf-8", errors="replace").rstrip()
    if message:
        log.debug("%s", message)


def _load_ggml_base() -> Any:
    from llama_cpp import _ctypes_extensions

    lib = _ctypes_extensions.load_shared_library("ggml-base", Path(lc.__file__).parent / "lib")
    lib.ggml_get_name.argtypes = [ctypes.c_void_p]
    lib.ggml_get_name.restype = ctypes.c_char_p
    lib.ggml_nrows.argtypes = [ctypes.c_void_p]
    lib.ggml_nrows.restype = ctypes.c_int64
    lib.ggml_nbytes.argtypes = [ctypes.c_void_p]
    lib.ggml_nbytes.restype = ctypes.c_size_t
    lib.ggml_backend_tensor_get.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_size_t,
    ]
    lib.ggml_backend_tensor_get.restype = None
    return lib


class _NormCapture:
    """A cb_eval hook that copies the `result_norm` tensor (the final RMS norm) out of each decode.

    With embeddings off and only the last token of each sequence marked as an output, that tensor
    holds exactly the rows last-token pooling would return, and the output layer runs on those
    few rows only.
    """

    TENSOR = b"result_norm"

    def __init__(self, n_embd: int):
        self.n_embd = n_embd
        self.rows: list[np.ndarray] = []
        self._ggml = _load_ggml_base()
        self.callback = lc.ggml_backend_sched_eval_callback(self._on_tensor)  # keep a reference

    def _on_tensor(self, tensor: int, ask: bool, _user_data: int) -> bool:
        name = self._ggml.ggml_get_name(tensor)
        if name != self.TENSOR:
            return not ask
        if ask:
            return True
        nrows = int(self._ggml.ggml_nrows(tensor))
        if nrows > 0:
            nbytes = int(self._ggml.ggml_nbytes(tensor))
            if nbytes != nrows * self.n_embd * 4:  # not float32 [n_embd, rows]: refuse, loudly
                self.rows.append(np.full((nrows, self.n_embd), np.nan, dtype=np.float32))
                return True
            out = np.empty((nrows, self.n_embd), dtype=np.float32)
            self._ggml.ggml_backend_tensor_get(tensor, out.ctypes.data, 0, nbytes)
            self.rows.append(out)
        return True

    def take_last(self, n: int) -> np.ndarray:
        """The rows of the last decode that produced outputs; checks there are n of them."""
        if not self.rows or self.rows[-1].shape[0] != n:
            got = self.rows[-1].shape[0] if self.rows else 0
            raise LauncherError(f"captured {got} output rows from llama.cpp, expected {n}")
        rows = self.rows[-1]
        self.rows.clear()
        if not np.isfinite(rows).all():
            raise LauncherError("llama.cpp returned a non-float32 or non-finite final norm")
        return rows


_backend_lock = threading.Lock()
_backend_ready = False


def _init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if _backend_ready:
            return
        lc.llama_log_set(_route_log, ctypes.c_void_p())
        mt.mtmd_helper_log_set(_route_log, ctypes.c_void_p())
        lc.llama_backend_init()
        _backend_ready = True


def gpu_offload_supported() -> bool:
    """True when this llama.cpp build can offload layers to a GPU (CUDA, Metal, Vulkan...)."""
    _init_backend()
    return bool(lc.llama_supports_gpu_offload())


def system_info() -> str:
    """llama.cpp's own summary of the CPU features and backends it was built with."""
    _init_backend()
    return bytes(lc.llama_print_system_info()).decode("utf-8", errors="replace")


def file_fingerprint(path: Path) -> str:
    """A fast content fingerprint: size plus the first and last MiB (models are GBs)."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class LlamaOptions:
    """How to run the model; every field has a sensible default for a laptop CPU."""

    n_ctx: int = 4096  # longest input in tokens (the official embedder stops at 8192)
    n_batch: int = 1024  # tokens per decode; several short texts share one decode
    n_seq_max: int = 16  # texts per decode
    n_threads: int | None = None  # None: the physical cores
    n_gpu_layers: int = 0  # -1: all layers on the GPU
    mmproj_on_gpu: bool = True  # only matters when the build has GPU offload
    image_min_pixels: int = MIN_PIXELS
    image_max_pixels: int = MAX_PIXELS
    # Last-token models: read the final norm of the last token only, instead of letting embedding
    # mode run the 151,936-wide output layer on every token. Same vector, ~20% faster on a 2B model.
    last_token_capture: bool = True
    # llama.cpp's CPU flash-attention kernel: far smaller compute buffers (no n_batch x n_ctx score
    # matrix per head), at a small drift on long inputs (worst cosine 0.99976 on an 1800-token image
    # against 0.9999972 without it; see ENGINE_NOTES and tests/test_engine.py).
    flash_attn: bool = False


def default_threads() -> int:
    """Physical cores: hyper-threads slow llama.cpp's matmuls down."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:  # psutil missing or unable to tell
        n = None
    return max(1, n or os.cpu_count() or 1)


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
        self._model: Any = None
        self._ctx: Any = None
        self._batch: Any = None
        self._mctx: Any = None
        self._lock = threading.Lock()  # one decode at a time: the context holds one batch's state
        # Calls under way (tokenizing runs outside the decode lock); close() waits for them to end,
        # so that no thread is ever inside llama.cpp when the model is freed.
        self._users = 0
        self._closed = False
        self._idle = threading.Condition()

        meta = gguf_meta.read_metadata(self.model_path)
        if gguf_meta.is_mmproj(meta):
            raise ModelError(
                f"{self.model_path} is an mmproj (vision projector), not a model: pass it as --mmproj"
            )
        self.architecture = gguf_meta.architecture(meta)
        self.chat_format = self.architecture in CHAT_ARCHITECTURES
        self.name = str(meta.get("general.name") or self.model_path.stem)
        if self.mmproj_path is not None:
            mmeta = gguf_meta.read_metadata(self.mmproj_path)
            if not gguf_meta.is_mmproj(mmeta):
                raise ModelError(
                    f"{self.mmproj_path} is not an mmproj file (its architecture is {gguf_meta.architecture(mmeta)!r})"
                )
            if not self.chat_format:
                raise ModelError(
                    f"model {self.model_path.name} ({self.architecture}) is text-only and cannot use an mmproj; "
                    "images need a Qwen3-VL-Embedding model"
                )
        self.n_threads = self.options.n_threads or default_threads()
        _init_backend()
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    # -- loading -----------------------------------------------------------------------------

    def _load(self) -> None:
        opts = self.options
        if opts.n_gpu_layers and not lc.llama_supports_gpu_offload():
            log.warning(
                "this llama.cpp build has no gpu offload, running on the cpu "
                "(reinstall llama-cpp-python with CMAKE_ARGS=-DGGML_CUDA=on or -DGGML_METAL=on)"
            )
        mparams = lc.llama_model_default_params()
        mparams.n_gpu_layers = opts.n_gpu_layers
        # The default build's AMX/repacked buffer types segfault on quantized models on CPUs that
        # advertise AMX (ggml_backend_amx_mul_mat); plain CPU buffers are as fast here and safe.
        mparams.use_extra_bufts = False
        self._model = lc.llama_model_load_from_file(str(self.model_path).encode(), mparams)
        if not self._model:
            raise ModelError(
                f"cannot load model {self.model_path}: the file is corrupt or not a supported gguf"
            )
        self.n_ctx_train = int(lc.llama_model_n_ctx_train(self._model))
        self.has_encoder = bool(lc.llama_model_has_encoder(self._model))
        self._vocab = lc.llama_model_get_vocab(self._model)

        n_ctx = min(opts.n_ctx, self.n_ctx_train) if self.n_ctx_train > 0 else opts.n_ctx
        causal = self.chat_format
        # Non-causal (BERT-like) models need a whole input in one micro-batch.
        n_batch = min(opts.n_batch, n_ctx) if causal else n_ctx
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch  # equal sizes: the qwen3vl deepstack graph aborts otherwise
        cparams.n_seq_max = opts.n_seq_max
        cparams.n_threads = self.n_threads
        cparams.n_threads_batch = self.n_threads
        cparams.kv_unified = True  # n_ctx is shared by the sequences of one decode
        # The CPU flash-attention kernel drifts on long inputs (cosine 0.99976 against the reference
        # for an 1800-token image, 0.9999998 without it), but needs far less memory: an option.
        cparams.flash_attn_type = (
            lc.LLAMA_FLASH_ATTN_TYPE_ENABLED if opts.flash_attn else lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        self.dims = int(lc.llama_model_n_embd_out(self._model))
        self._capture: _NormCapture | None = None
        if self.chat_format and opts.last_token_capture:
            self._capture = _NormCapture(self.dims)
            cparams.embeddings = False
            cparams.cb_eval = self._capture.callback
            cparams.cb_eval_user_data = None
        else:
            cparams.embeddings = True
            if self.chat_format:
                cparams.pooling_type = lc.LLAMA_POOLING_TYPE_LAST
        self._ctx = lc.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            raise ModelError(
                f"cannot create a llama.cpp context for {self.model_path} (n_ctx={n_ctx}): out of memory?"
            )
        if self._capture is None and lc.llama_pooling_type(self._ctx) == lc.LLAMA_POOLING_TYPE_NONE:
            raise ModelError(f"model {self.model_path.name} has no pooling: it is not an embedding model")
        # llama.cpp rounds the context up (to a multiple of 256); the limit is what was asked for.
        self.n_ctx = min(n_ctx, int(lc.llama_n_ctx(self._ctx)))
        self.n_batch = n_batch
        self.max_tokens = self.n_ctx
        # The text a document piece aims at, in tokens (bench/bench_retrieval.py, the guide's table):
        # small encoders (MiniLM was trained on 128-256-token inputs) retrieve best with short
        # pieces; Qwen3-VL-Embedding is trained on long inputs, and 512 keeps a detail deep in a long
        # page findable while an A4 page of prose fits in about two pieces.
        self.chunk_tokens = 512 if self.chat_format else min(ENCODER_CHUNK_TOKENS, self.n_ctx // 2)
        self.batch_size = opts.n_seq_max
        self._batch = lc.llama_batch_init(n_batch, 0, 1)

        if self.mmproj_path is not None:
            mparams_mt = mt.mtmd_context_params_default()
            mparams_mt.use_gpu = bool(
                opts.mmproj_on_gpu and opts.n_gpu_layers and lc.llama_supports_gpu_offload()
            )
            mparams_mt.n_threads = self.n_threads  # mtmd's default is hard-coded to 4
            mparams_mt.print_timings = False
            mparams_mt.warmup = False
            # Our bitmaps are already resized to the reference grid; bounds wide enough that mtmd
            # leaves them as they are (its defaults, 8..4096 tokens, would resize some again).
            mparams_mt.image_min_tokens = max(1, opts.image_min_pixels // (FACTOR * FACTOR))
            mparams_mt.image_max_tokens = max(1, opts.image_max_pixels // (FACTOR * FACTOR))
            self._mctx = mt.mtmd_init_from_file(str(self.mmproj_path).encode(), self._model, mparams_mt)
            if not self._mctx:
                raise ModelError(
                    f"mmproj {self.mmproj_path.name} does not match model {self.model_path.name} "
                    "(or is corrupt): use the mmproj file published with this model"
                )
            if not mt.mtmd_support_vision(self._mctx):
                raise ModelError(f"mmproj {self.mmproj_path.name} has no vision encoder")
        self.supports_images = self._mctx is not None

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
        cap = len(data) + 16
        buf = (lc.llama_token * cap)()
        with self._in_use():
            n = lc.llama_tokenize(self._vocab, data, len(data), buf, cap, add_special, parse_special)
            if n < 0:
                cap = -n
                buf = (lc.llama_token * cap)()
                n = lc.llama_tokenize(self._vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            raise LauncherError(f"tokenization failed for an input of {len(data)} bytes")
        return list(buf[:n])

    def embed_batch(self, inputs: Sequence[EmbedInput]) -> Matrix:
        """Text-only inputs share decodes; inputs with images go through mtmd one at a time."""
        out = np.empty((len(inputs), self.dims), dtype=np.float32)
        with self._in_use(), self._lock:
            text_rows: list[int] = []
            token_seqs: list[list[int]] = []
            for row, item in enumerate(inputs):
                if item.has_images:
                    if not self.supports_images:
                        raise InputError(
                            f"model {self.name} cannot embed images: "
                            + (
                                "pass its mmproj with --mmproj"
                                if self.chat_format
                                else "it is a text-only model"
                            )
                        )
                    out[row] = self._embed_multimodal(item)
                else:
                    tokens = self.tokenize(self.prompt_for(item))
                    self._check_length(len(tokens))
                    text_rows.append(row)
                    token_seqs.append(tokens)
            if token_seqs:
                out[text_rows] = self._embed_token_seqs(token_seqs)
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

    def _clear_memory(self) -> None:
        lc.llama_memory_clear(lc.llama_get_memory(self._ctx), True)
        if self._capture is not None:
            self._capture.rows.clear()

    def _read_seq(self, seq_id: int) -> np.ndarray:
        ptr = lc.llama_get_embeddings_seq(self._ctx, seq_id)
        if not ptr:
            raise LauncherError("llama.cpp returned no pooled embedding")
        return np.ctypeslib.as_array(ptr, shape=(self.dims,)).copy()

    def _decode(self, n_tokens: int) -> None:
        self._batch.n_tokens = n_tokens
        rc = lc.llama_decode(self._ctx, self._batch)
        if rc != 0:
            raise LauncherError(f"llama.cpp decode failed (code {rc})")

    def _embed_token_seqs(self, seqs: list[list[int]]) -> Matrix:
        """Pack whole sequences into decodes of at most n_batch tokens and n_seq_max sequences."""
        out = np.empty((len(seqs), self.dims), dtype=np.float32)
        b = self._batch
        i = 0
        while i < len(seqs):
            if len(seqs[i]) > self.n_batch:
                out[i] = self._embed_long(seqs[i])
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
                out[group] = self._capture.take_last(len(group))
            else:
                for seq_id, idx in enumerate(group):
                    out[idx] = self._read_seq(seq_id)
        return out

    def _embed_long(self, tokens: list[int]) -> np.ndarray:
        """One causal sequence longer than a decode: fed in n_batch slices, pooled at its last token."""
        self._clear_memory()
        b = self._batch
        for start in range(0, len(tokens), self.n_batch):
            piece = tokens[start : start + self.n_batch]
            for k, tok in enumerate(piece):
                b.token[k] = tok
                b.pos[k] = start + k
                b.n_seq_id[k] = 1
                b.seq_id[k][0] = 0
                b.logits[k] = start + k == len(tokens) - 1
            self._decode(len(piece))
        if self._capture is not None:
            return self._capture.take_last(1)[0]
        return self._read_seq(0)

    def _embed_multimodal(self, item: EmbedInput) -> np.ndarray:
        opts = self.options
        prepared = [
            prepare_image(img, min_pixels=opts.image_min_pixels, max_pixels=opts.image_max_pixels)
            for img in item.images
        ]
        prompt = self.prompt_for(item, image_slots=True)
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
            self._check_length(int(mt.mtmd_helper_get_n_tokens(chunks)))
            self._clear_memory()
            new_n_past = lc.llama_pos(0)
            rc = mt.mtmd_helper_eval_chunks(
                self._mctx, self._ctx, chunks, 0, 0, self.n_batch, True, ctypes.byref(new_n_past)
            )
            if rc != 0:
                raise LauncherError(f"mtmd could not evaluate the input (code {rc})")
            if self._capture is not None:
                return self._capture.take_last(1)[0]
            return self._read_seq(0)
        finally:
            if chunks:
                mt.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                mt.mtmd_bitmap_free(bitmap)

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
