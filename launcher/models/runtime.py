"""The llama.cpp runtime: the only module in launcher that imports llama_cpp.

The embedder (`launcher.models.embed.llama`) and the GGUF reranker (`launcher.models.rerank.llama`) each own one
`LlamaRuntime`: a model, its context, its batch and, for images, an mtmd context, freed in reverse
order by `close()`. Text goes through the low-level llama API (several sequences per decode);
images through mtmd with pixels we resized ourselves. llama.cpp's C logging is routed to the
`launcher.llama` logger, not printed.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp as lc
import numpy as np
from llama_cpp import mtmd_cpp as mt

from launcher.core.errors import LauncherError, ModelError
from launcher.models import gguf_meta
from launcher.models.imageprep import MAX_PIXELS, MIN_PIXELS, PreparedImage, visual_tokens

log = logging.getLogger("launcher.llama")

CHAT_ARCHITECTURES = {"qwen3vl", "qwen3vlmoe"}
POOLING_TYPE_RANK = int(lc.LLAMA_POOLING_TYPE_RANK)
# Where an image goes in a prompt handed to mtmd. mtmd's own media marker (`<__media__>`) is never
# used: a file name or a document holding that text would become a marker without a picture and
# fail the input. A lone surrogate cannot be in any text we tokenize (`as_utf8` replaces them first,
# as the UTF-8 encoding of the prompt would), so this slot is only ever ours.
IMAGE_SLOT = "\ud800"


@dataclass(frozen=True)
class LlamaOptions:
    """How to run the model; every field has a sensible default for a laptop CPU."""

    # Longest input in tokens (the official embedder stops at 8192). None: an embedder sizes it to
    # what its pieces and pictures need (embed.base.context_needed: 768 on the CPU), since the KV
    # cache and compute buffers grow with it; the GGUF reranker takes 4096.
    n_ctx: int | None = None
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
    # A second, small context on the same weights for text queries that arrive while the main
    # context is busy (a resident process embedding in the background): tokens, 0 for none. The
    # weights are shared; the lane costs its own KV cache and compute buffers (LAUNCHER_README,
    # Memory), and a query no longer waits for a background decode to end.
    query_ctx: int = 0
    # The text piece size the index will ask for (None: the model's own): sizes n_ctx when unset.
    chunk_tokens: int | None = None


def default_threads() -> int:
    """Physical cores: hyper-threads slow llama.cpp's matmuls down."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:  # psutil missing or unable to tell
        n = None
    return max(1, n or os.cpu_count() or 1)


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


# --- the native library ------------------------------------------------------------------------


@lc.llama_log_callback
def _route_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    # llama.cpp and mtmd print through this hook (`verbose=False` alone still lets warnings out).
    # Their errors come with our own one-line exception, so they are detail: debug level.
    message = text.decode("utf-8", errors="replace").rstrip()
    if message:
        log.debug("%s", message)


MADV_DONTNEED = 4  # Linux: drop the pages from this process; a file mapping reads them again


def release_token_table(model_path: Path, header: gguf_meta.Header, tensor: str = "token_embd.weight") -> int:
    """Take the token-embedding table's pages out of this process's resident memory (Linux); the
    bytes released.

    llama.cpp maps the whole model file and faults every page in up front (MAP_POPULATE), but a
    decode reads only the rows of the tokens it embeds, and the table is a model's largest tensor
    (255 MB of the 2B Q4_K_M's 1.1 GB, Q6_K). Released, its pages come back from the page cache row
    by row as tokens are used: the same bytes from the same read-only file mapping, so the same
    vectors. Tensors llama.cpp copied elsewhere (GPU layers) are not in the mapping: untouched."""
    info = header.tensors.get(tensor)
    if not sys.platform.startswith("linux") or info is None or len(info.dims) != 2:
        return 0
    st = os.stat(model_path)
    start = header.data_start + info.offset
    end = start + ggml_row_size(info.ggml_type, info.dims[0]) * info.dims[1]
    page = os.sysconf("SC_PAGE_SIZE")
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    real = os.path.realpath(model_path)
    released = 0
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) < 6:
                continue
            major, minor = (int(x, 16) for x in fields[3].split(":"))
            same_inode = int(fields[4]) == st.st_ino and (major, minor) == (
                os.major(st.st_dev),
                os.minor(st.st_dev),
            )
            # On overlay file systems (containers) maps name the layer's device: match the path too.
            if not (same_inode or fields[5].rstrip("\n") == real):
                continue
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            offset = int(fields[2], 16)  # the file offset this mapping starts at
            a = max(start, offset) - offset + lo
            b = min(end, offset + hi - lo) - offset + lo
            a, b = -(-a // page) * page, b // page * page  # whole pages of the table only
            if b > a and madvise(a, b - a, MADV_DONTNEED) == 0:
                released += b - a
    return released


_backend_lock = threading.Lock()
_backend_ready = False


def init_backend() -> None:
    """Route llama.cpp's logging and initialise its backend, once per process."""
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
    init_backend()
    return bool(lc.llama_supports_gpu_offload())


def system_info() -> str:
    """llama.cpp's own summary of the CPU features and backends it was built with."""
    init_backend()
    return bytes(lc.llama_print_system_info()).decode("utf-8", errors="replace")


def llama_version() -> str:
    """The llama-cpp-python version."""
    return str(getattr(lc, "__version__", "?"))


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


def ggml_row_size(ggml_type: int, n: int) -> int:
    """Bytes of one row of n values of a ggml type (quantized blocks included)."""
    return int(_ggml_dequant().ggml_row_size(ggml_type, n))


def ggml_type_name(ggml_type: int) -> str:
    """ggml's name for a tensor type ("f16", "q8_0"...)."""
    return (_ggml_dequant().ggml_get_type_traits(ggml_type).contents.type_name or b"?").decode()


def dequantize(raw: bytes, ggml_type: int, shape: tuple[int, int]) -> np.ndarray | None:
    """Rows of a ggml tensor as float32, converted by ggml itself; None when ggml cannot."""
    traits = _ggml_dequant().ggml_get_type_traits(ggml_type).contents
    if not traits.to_float:
        return None
    rows = np.empty(shape, dtype=np.float32)
    to_float = _TO_FLOAT(traits.to_float)
    src = ctypes.create_string_buffer(raw, len(raw))
    to_float(src, rows.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), shape[0] * shape[1])
    return rows


class NormCapture:
    """A cb_eval hook that copies the `result_norm` tensor (the final RMS norm) out of each decode.

    With embeddings off and only the last token of each sequence marked as an output, that tensor
    holds exactly the rows last-token pooling would return. The hook then stops the graph: the
    output layer after it (151,936 wide, tied to the token table on Qwen3-VL) is never computed, so
    a decode neither spends time on it nor reads the whole token table (see release_token_table).
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
                return False
            out = np.empty((nrows, self.n_embd), dtype=np.float32)
            self._ggml.ggml_backend_tensor_get(tensor, out.ctypes.data, 0, nbytes)
            self.rows.append(out)
        # False: the scheduler skips the rest of this graph split, the output layer; the logits
        # it leaves unset are never read (embeddings come from these rows).
        return False

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


# --- one model and its context -----------------------------------------------------------------


class LlamaRuntime:
    """One GGUF model, its context, its batch and optionally an mtmd context: every native
    resource of one embedder or reranker, freed in reverse order by `close()`."""

    def __init__(self, model_path: Path, options: LlamaOptions, n_threads: int, header: gguf_meta.Header):
        self.model_path = model_path
        self.header = header  # the file's GGUF header, as its owner read it before loading
        self.options = options
        self.n_threads = n_threads
        self.model: Any = None
        self.ctx: Any = None
        self.batch: Any = None
        self.mctx: Any = None
        self.capture: NormCapture | None = None
        self.n_ctx = 0
        self.n_batch = 0
        self.owns_model = True
        init_backend()
        try:
            self._load_model()
        except BaseException:
            self.close()
            raise

    def _load_model(self) -> None:
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
        self.model = lc.llama_model_load_from_file(str(self.model_path).encode(), mparams)
        if not self.model:
            raise ModelError(
                f"cannot load model {self.model_path}: the file is corrupt or not a supported gguf"
            )
        self.vocab = lc.llama_model_get_vocab(self.model)
        try:
            released = release_token_table(self.model_path, self.header)
            log.debug("token table: %d bytes left to be read by rows", released)
        except OSError as exc:  # /proc unreadable: the table stays resident, nothing else changes
            log.warning("could not release the token table's pages (%s)", exc)
        self.n_ctx_train = int(lc.llama_model_n_ctx_train(self.model))
        self.n_embd = int(lc.llama_model_n_embd_out(self.model))

    def sibling(self) -> LlamaRuntime:
        """A runtime on the same loaded weights with no context yet (open_context next): its own
        context and batch, usable from another thread at the same time; close() it first."""
        other = LlamaRuntime.__new__(LlamaRuntime)
        other.model_path, other.options, other.n_threads = self.model_path, self.options, self.n_threads
        other.header = self.header
        other.model, other.vocab = self.model, self.vocab
        other.n_ctx_train, other.n_embd = self.n_ctx_train, self.n_embd
        other.ctx = other.batch = other.mctx = other.capture = None
        other.n_ctx = other.n_batch = 0
        other.owns_model = False
        return other

    def classifier_labels(self) -> list[bytes]:
        """The labels of the model's classifier outputs (a reranker's ["yes", "no"])."""
        return [lc.llama_model_cls_label(self.model, i) for i in range(lc.llama_model_n_cls_out(self.model))]

    def open_context(
        self, n_ctx: int, n_batch: int, *, flash_attn: bool, capture: bool, pooling: str | None = None
    ) -> None:
        """The context and its batch. capture: read the final norm through NormCapture (embeddings
        off); else embedding mode with `pooling` ("last", "rank", or None for the model's own)."""
        opts = self.options
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch  # equal sizes: the qwen3vl deepstack graph aborts otherwise
        cparams.n_seq_max = opts.n_seq_max
        cparams.n_threads = self.n_threads
        cparams.n_threads_batch = self.n_threads
        cparams.kv_unified = True  # n_ctx is shared by the sequences of one decode
        cparams.flash_attn_type = (
            lc.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        if capture:
            self.capture = NormCapture(self.n_embd)
            cparams.embeddings = False
            cparams.cb_eval = self.capture.callback
            cparams.cb_eval_user_data = None
        else:
            cparams.embeddings = True
            if pooling == "last":
                cparams.pooling_type = lc.LLAMA_POOLING_TYPE_LAST
            elif pooling == "rank":
                cparams.pooling_type = lc.LLAMA_POOLING_TYPE_RANK
        self.ctx = lc.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise ModelError(
                f"cannot create a llama.cpp context for {self.model_path} (n_ctx={n_ctx}): out of memory?"
            )
        # llama.cpp rounds the context up (to a multiple of 256); the limit is what was asked for.
        self.n_ctx = min(n_ctx, int(lc.llama_n_ctx(self.ctx)))
        self.n_batch = n_batch
        self.batch = lc.llama_batch_init(n_batch, 0, 1)

    def pools(self) -> bool:
        """Whether the context pools embeddings (a model without pooling is no embedding model)."""
        return bool(lc.llama_pooling_type(self.ctx) != lc.LLAMA_POOLING_TYPE_NONE)

    def open_mtmd(self, mmproj_path: Path, *, published_with: str) -> None:
        """The mtmd context of the model's vision projector."""
        opts = self.options
        params = mt.mtmd_context_params_default()
        params.use_gpu = bool(opts.mmproj_on_gpu and opts.n_gpu_layers and lc.llama_supports_gpu_offload())
        params.n_threads = self.n_threads  # mtmd's default is hard-coded to 4
        params.print_timings = False
        params.warmup = False
        # Our bitmaps are already resized to the reference grid; bounds wide enough that mtmd
        # leaves them as they are (its defaults, 8..4096 tokens, would resize some again).
        params.image_min_tokens = visual_tokens(opts.image_min_pixels)
        params.image_max_tokens = visual_tokens(opts.image_max_pixels)
        self.mctx = mt.mtmd_init_from_file(str(mmproj_path).encode(), self.model, params)
        if not self.mctx:
            raise ModelError(
                f"mmproj {mmproj_path.name} does not match model {self.model_path.name} "
                f"(or is corrupt): use the mmproj file published with this {published_with}"
            )
        if not mt.mtmd_support_vision(self.mctx):
            raise ModelError(f"mmproj {mmproj_path.name} has no vision encoder")

    def close(self) -> None:
        """Free mtmd, batch, context and model (a sibling leaves the model to its owner), in that order."""
        if self.mctx:
            mt.mtmd_free(self.mctx)
            self.mctx = None
        if self.batch is not None:
            lc.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx:
            lc.llama_free(self.ctx)
            self.ctx = None
        if self.model and self.owns_model:
            lc.llama_model_free(self.model)
        self.model = None

    # -- text ----------------------------------------------------------------------------------

    def tokenize(self, data: bytes, *, add_special: bool, parse_special: bool) -> list[int]:
        """Token ids of UTF-8 bytes."""
        cap = len(data) + 16
        buf = (lc.llama_token * cap)()
        n = lc.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            cap = -n
            buf = (lc.llama_token * cap)()
            n = lc.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            raise LauncherError(f"tokenization failed for an input of {len(data)} bytes")
        return list(buf[:n])

    def clear_memory(self) -> None:
        """Forget every sequence (and any captured rows) before the next input."""
        lc.llama_memory_clear(lc.llama_get_memory(self.ctx), True)
        if self.capture is not None:
            self.capture.rows.clear()

    def decode(self, n_tokens: int) -> None:
        """Run the first n_tokens of the batch."""
        self.batch.n_tokens = n_tokens
        rc = lc.llama_decode(self.ctx, self.batch)
        if rc != 0:
            raise LauncherError(f"llama.cpp decode failed (code {rc})")

    def decode_tokens(self, tokens: Sequence[int], start: int, last_is_output: bool) -> None:
        """Feed tokens of sequence 0 at positions start.. in n_batch slices."""
        b = self.batch
        for offset in range(0, len(tokens), self.n_batch):
            piece = tokens[offset : offset + self.n_batch]
            for k, tok in enumerate(piece):
                b.token[k] = tok
                b.pos[k] = start + offset + k
                b.n_seq_id[k] = 1
                b.seq_id[k][0] = 0
                b.logits[k] = last_is_output and offset + k == len(tokens) - 1
            self.decode(len(piece))

    def decode_packed(self, seqs: Sequence[Sequence[int]]) -> Iterator[list[int]]:
        """Decode whole sequences packed into decodes of at most n_batch tokens and n_seq_max
        sequences, each with only its last token as output; yields the indices of each decode's
        sequences (sequence ids 0, 1... in that order). A sequence longer than a decode is fed
        alone, in n_batch slices, as sequence 0."""
        b = self.batch
        i = 0
        while i < len(seqs):
            if len(seqs[i]) > self.n_batch:
                self.clear_memory()
                self.decode_tokens(seqs[i], 0, True)
                yield [i]
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
            self.clear_memory()
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
            self.decode(k)
            yield group

    def pooled(self, seq_id: int, n: int, what: str) -> np.ndarray:
        """The n pooled floats of a sequence of the last decode (embedding mode)."""
        ptr = lc.llama_get_embeddings_seq(self.ctx, seq_id)
        if not ptr:
            raise LauncherError(f"llama.cpp returned no {what}")
        return np.ctypeslib.as_array(ptr, shape=(n,)).copy()

    # -- images --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def image_chunks(self, prompt: str, images: Sequence[PreparedImage]) -> Iterator[Any]:
        """mtmd chunks of a prompt with IMAGE_SLOTs and its images, freed on leaving."""
        bitmaps: list[Any] = []
        chunks = None
        try:
            for p in images:
                buf = (ctypes.c_uint8 * p.pixels.size).from_buffer_copy(p.pixels.tobytes())
                bitmap = mt.mtmd_bitmap_init(p.width, p.height, buf)
                if not bitmap:
                    raise LauncherError("mtmd could not allocate an image bitmap")
                bitmaps.append(bitmap)
            chunks = mtmd_tokenize_prompt(self.mctx, prompt, bitmaps)
            yield chunks
        finally:
            if chunks:
                mt.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                mt.mtmd_bitmap_free(bitmap)

    @staticmethod
    def chunk_tokens(chunks: Any) -> int:
        """Tokens of all the chunks, images included."""
        return int(mt.mtmd_helper_get_n_tokens(chunks))

    def eval_chunks(self, chunks: Any) -> None:
        """Decode all the chunks as sequence 0 from position 0, the last token as output."""
        new_n_past = lc.llama_pos(0)
        rc = mt.mtmd_helper_eval_chunks(
            self.mctx, self.ctx, chunks, 0, 0, self.n_batch, True, ctypes.byref(new_n_past)
        )
        if rc != 0:
            raise LauncherError(f"mtmd could not evaluate the input (code {rc})")

    @staticmethod
    def chunk_parts(chunks: Any) -> list[tuple[Any, list[int] | None, int]]:
        """(chunk, its text tokens or None for an image, its token count) for each chunk."""
        parts: list[tuple[Any, list[int] | None, int]] = []
        for i in range(mt.mtmd_input_chunks_size(chunks)):
            chunk = mt.mtmd_input_chunks_get(chunks, i)
            if mt.mtmd_input_chunk_get_type(chunk) == mt.MTMD_INPUT_CHUNK_TYPE_TEXT:
                size = ctypes.c_size_t(0)
                ptr = mt.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(size))
                text_tokens = [int(ptr[j]) for j in range(size.value)]
                parts.append((chunk, text_tokens, len(text_tokens)))
            else:
                parts.append((chunk, None, int(mt.mtmd_input_chunk_get_n_tokens(chunk))))
        return parts

    def eval_image_chunk(self, chunk: Any, n_past: int) -> int:
        """Decode one image chunk of sequence 0 at n_past (no output); the position after it."""
        new_n_past = lc.llama_pos(n_past)
        rc = mt.mtmd_helper_eval_chunk_single(
            self.mctx, self.ctx, chunk, n_past, 0, self.n_batch, False, ctypes.byref(new_n_past)
        )
        if rc != 0:
            raise LauncherError(f"mtmd could not evaluate an image (code {rc})")
        return int(new_n_past.value)
