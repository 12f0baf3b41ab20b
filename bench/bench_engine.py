"""Engine speed and memory on the shape-true random Qwen3-VL-2B (bench/make_shape_true_2b.py).

    python bench/bench_engine.py                         # every section, medians of 5 runs
    python bench/bench_engine.py --runs 3 --only text    # one section
    python bench/bench_engine.py --quants Q4_K_M --image-sizes 256,512

Sections (tables are printed as markdown and written to bench/results/engine-<time>.json):
  text     tokens/s through load_embedder(...).embed(), last_token_capture on and off, against
           llama.cpp's raw prefill ceiling: a plain context on the same file, threads, n_ctx and
           n_batch, embeddings off, only each sequence's last token marked as output, the same
           token ids packed into the same decodes. ratio = ours / ceiling (target >= 0.9).
  parity   capture mode vs embedding mode on the same 2B file: cosine and max |difference| of the
           unit vectors (texts, one image, text+image), and batched vs one-at-a-time.
  images   seconds per image at 64 / 256 / 1024 visual tokens (256, 512, 1024 px squares) for each
           mmproj: the engine's embed_image end to end, and a split measured on a bench-owned
           llama + mtmd context with the same settings: mtmd_encode_chunk (vision encoder) vs
           the language-model decodes (text chunks + image embeddings).
  memory   peak resident memory (VmHWM) of a child process that loads the Q4_K_M model with an
           mmproj and embeds texts then images, vs model + mmproj file size + 500 MB.

The machine is shared: runs of every mode are interleaved round by round so drift hits them all
alike; read the ratios more than the absolute numbers. Never run two benchmarks at once.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import json
import logging
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import llama_cpp as lc  # noqa: E402  (bench code may use llama_cpp directly; launcher/ may not)
from llama_cpp import mtmd_cpp as mt  # noqa: E402

from launcher.models.embed import EmbedInput, load_embedder  # noqa: E402
from launcher.models.embed.llama import LlamaEmbedder  # noqa: E402
from launcher.models.imageprep import FACTOR, PreparedImage, prepare_image  # noqa: E402
from launcher.models.runtime import LlamaOptions, mtmd_tokenize_prompt, system_info  # noqa: E402

MODELS = ROOT / "bench" / "models"
RESULTS = ROOT / "bench" / "results"
NAME = "shape-true-qwen3vl-2b"
NO_POST_DECODE = ctypes.cast(None, mt.mtmd_helper_post_decode_callback)  # a NULL function pointer
MEMORY_SLACK = 500 * 1000**2  # the target: model + mmproj file sizes + 500 MB

# Words that are one token each after a space in the Qwen vocabulary (checked at run time), so a
# text can be grown to an exact token count. Random weights: what the words say does not matter.
WORDS_TEXT = (
    "the of and to in is that for it as with was on be by at this from or have an are not but "
    "all were when we there can more if no out so said what up its about into than them only "
    "time new some could these two may first then do any like my now over such our man me even "
    "most made after also did many before must through back years where much your way well down "
    "should because each just those people how too little state good very make world still own "
    "see men work long get here between both life being under never day same another know while "
    "last might us great old year off come since against go came right used take three house"
)
WORDS = WORDS_TEXT.split()


def log(msg: str) -> None:
    """Progress on stderr; tables go to stdout."""
    print(f"[bench_engine] {msg}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    """Median of a non-empty list."""
    return float(statistics.median(values))


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def peak_rss_bytes() -> int:
    """Peak resident memory of this process, in bytes.

    Linux: VmHWM, which starts afresh at exec. ru_maxrss would not do in the memory child: Linux
    carries it over from the parent across fork + exec, so the child would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB elsewhere


@dataclass(frozen=True)
class Files:
    """The GGUFs made by make_shape_true_2b.py."""

    folder: Path

    def model(self, quant: str) -> Path:
        """Text model file for a quantization name."""
        return self.folder / f"{NAME}-{quant}.gguf"

    def mmproj(self, kind: str) -> Path:
        """Projector file: 'f16' or 'Q8_0'."""
        return self.folder / f"mmproj-{NAME}-{kind}.gguf"


# -- exact-length inputs -------------------------------------------------------------------------


def exact_texts(embedder: LlamaEmbedder, n_tokens: int, count: int, seed: int) -> list[tuple[str, list[int]]]:
    """`count` different texts whose full templated prompt is exactly `n_tokens` tokens."""
    vocab = [w for w in WORDS if len(embedder.tokenize(" " + w)) == 1]
    rng = np.random.default_rng(seed)
    overhead = len(embedder.tokenize(embedder.prompt_for(EmbedInput(texts=["x"])))) - 1
    out: list[tuple[str, list[int]]] = []
    for _ in range(count):
        words = [str(w) for w in rng.choice(vocab, size=max(1, n_tokens - overhead))]
        while True:
            text = " ".join(words)
            tokens = embedder.tokenize(embedder.prompt_for(EmbedInput(texts=[text])))
            if len(tokens) == n_tokens:
                out.append((text, tokens))
                break
            if len(tokens) < n_tokens:
                words.append(str(rng.choice(vocab)))
            else:
                words.pop()
    return out


def test_image(side: int, seed: int) -> Image.Image:
    """A deterministic busy RGB square (content does not change the timing, size does)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:side, 0:side]
    base = np.stack([(xs * 3 + ys) % 256, (ys * 2 + xs // 4) % 256, (xs ^ ys) % 256], axis=-1)
    noise = rng.integers(0, 32, size=base.shape)
    return Image.fromarray(((base + noise) % 256).astype(np.uint8), "RGB")


# -- what the engine set up --------------------------------------------------------------------


FLASH_ATTN = {
    "auto": lc.LLAMA_FLASH_ATTN_TYPE_AUTO,
    "disabled": lc.LLAMA_FLASH_ATTN_TYPE_DISABLED,
    "enabled": lc.LLAMA_FLASH_ATTN_TYPE_ENABLED,
}


@dataclass(frozen=True)
class ContextSettings:
    """Model and context settings of an engine, as llama.cpp printed them; bench contexts copy them."""

    n_threads: int
    n_ctx: int
    n_batch: int
    n_ubatch: int
    n_seq_max: int
    kv_unified: bool
    flash_attn: str  # auto | disabled | enabled
    extra_bufts: bool  # weights in a repacked/AMX buffer instead of plain CPU memory
    model_buffers: tuple[str, ...]


class LlamaLogTap(logging.Handler):
    """Collects what llama.cpp and mtmd print through the engine's logger (routed at debug level)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._logger = logging.getLogger("launcher.llama")
        self._level = self._logger.level

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the message."""
        self.lines.append(record.getMessage())

    def __enter__(self) -> LlamaLogTap:
        self._logger.setLevel(logging.DEBUG)
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)


def load_engine(
    model: Path, mmproj: Path | None, opts: LlamaOptions
) -> tuple[LlamaEmbedder, ContextSettings]:
    """load_embedder(...), plus the settings llama.cpp reported while it loaded."""
    with LlamaLogTap() as tap:
        eng = load_embedder(model, mmproj, opts)
    assert isinstance(eng, LlamaEmbedder)
    ctx: dict[str, str] = {}
    for line in tap.lines:
        m = re.match(r"llama_context: (\w+)\s+= (\S+)", line)
        if m:
            ctx.setdefault(m[1], m[2])
    buffers = tuple(re.findall(r"(\S+) model buffer size", "\n".join(tap.lines)))
    needed = ("n_ctx", "n_batch", "n_ubatch", "n_seq_max", "kv_unified", "flash_attn")
    if any(k not in ctx for k in needed) or not buffers:
        raise SystemExit(
            "llama.cpp did not print its context settings through launcher.llama; update bench_engine.py"
        )
    settings = ContextSettings(
        n_threads=eng.n_threads,
        n_ctx=int(ctx["n_ctx"]),
        n_batch=int(ctx["n_batch"]),
        n_ubatch=int(ctx["n_ubatch"]),
        n_seq_max=int(ctx["n_seq_max"]),
        kv_unified=ctx["kv_unified"] == "true",
        flash_attn=ctx["flash_attn"],
        extra_bufts=any(b not in ("CPU", "CPU_Mapped") for b in buffers),
        model_buffers=buffers,
    )
    return eng, settings


def cpu_has_amx() -> bool:
    """True on CPUs with AMX, where llama.cpp's extra buffer types crash on quantized models."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True  # cannot tell: assume the hazard
    return "amx_int8" in flags or "amx_tile" in flags


def open_context(model: Path, s: ContextSettings, *, llama_defaults: bool = False) -> tuple[Any, Any]:
    """(model, context) with embeddings off and the sizes and threads of `s`.

    Flash attention and buffer types come from `s` too, or stay at llama.cpp's defaults
    (flash attention auto, extra buffer types on) with `llama_defaults`.
    """
    mparams = lc.llama_model_default_params()
    if not llama_defaults:
        mparams.use_extra_bufts = s.extra_bufts
    lmodel = lc.llama_model_load_from_file(str(model).encode(), mparams)
    if not lmodel:
        raise SystemExit(f"cannot load {model}")
    cparams = lc.llama_context_default_params()
    cparams.n_ctx = s.n_ctx
    cparams.n_batch = s.n_batch
    cparams.n_ubatch = s.n_ubatch
    cparams.n_seq_max = s.n_seq_max
    cparams.n_threads = s.n_threads
    cparams.n_threads_batch = s.n_threads
    cparams.kv_unified = s.kv_unified
    if not llama_defaults:
        cparams.flash_attn_type = FLASH_ATTN[s.flash_attn]
    cparams.embeddings = False
    ctx = lc.llama_init_from_model(lmodel, cparams)
    if not ctx:
        raise SystemExit(f"cannot create a context for {model}")
    return lmodel, ctx


# -- llama.cpp's own ceiling ---------------------------------------------------------------------


class RawPrefill:
    """A plain llama context: embeddings off, last token of each sequence marked as output.

    By default it copies the engine's model and context settings (threads, n_ctx, n_batch,
    n_ubatch, n_seq_max, unified KV cache, flash attention, extra buffer types), so the only
    differences left are what the engine does on top. With `llama_defaults=True` it keeps
    llama.cpp's own defaults for flash attention and buffer types instead (same sizes and threads).
    """

    def __init__(self, model: Path, settings: ContextSettings, *, llama_defaults: bool = False):
        self.model, self.ctx = open_context(model, settings, llama_defaults=llama_defaults)
        self.n_batch = settings.n_batch
        self.n_seq_max = settings.n_seq_max
        self.batch = lc.llama_batch_init(self.n_batch, 0, 1)

    def run(self, seqs: Sequence[Sequence[int]]) -> float:
        """Decode the sequences packed as the engine packs them; seconds spent in llama_decode."""
        seconds = 0.0
        b = self.batch
        i = 0
        while i < len(seqs):
            group: list[Sequence[int]] = []
            total = 0
            while i < len(seqs) and len(group) < self.n_seq_max and total + len(seqs[i]) <= self.n_batch:
                group.append(seqs[i])
                total += len(seqs[i])
                i += 1
            if not group:
                raise SystemExit("a sequence is longer than n_batch; the ceiling does not split sequences")
            lc.llama_memory_clear(lc.llama_get_memory(self.ctx), True)
            k = 0
            for seq_id, toks in enumerate(group):
                for pos, tok in enumerate(toks):
                    b.token[k] = tok
                    b.pos[k] = pos
                    b.n_seq_id[k] = 1
                    b.seq_id[k][0] = seq_id
                    b.logits[k] = pos == len(toks) - 1
                    k += 1
            b.n_tokens = k
            t0 = time.perf_counter()
            rc = lc.llama_decode(self.ctx, b)
            lc.llama_synchronize(self.ctx)
            seconds += time.perf_counter() - t0
            if rc != 0:
                raise SystemExit(f"llama_decode failed ({rc})")
        return seconds

    def close(self) -> None:
        """Free batch, context, model."""
        lc.llama_batch_free(self.batch)
        lc.llama_free(self.ctx)
        lc.llama_model_free(self.model)


# -- vision encoder vs language model ------------------------------------------------------------


class ImageSplit:
    """A bench-owned llama + mtmd pair set up like the engine's, driving mtmd chunk by chunk.

    mtmd_helper_eval_chunks (what the engine calls) encodes and decodes in one call; here the
    encode (mtmd_encode_chunk) and the decodes are timed apart.
    """

    def __init__(self, model: Path, mmproj: Path, embedder: LlamaEmbedder, settings: ContextSettings):
        opts = embedder.options
        self.model, self.ctx = open_context(model, settings)
        self.n_batch = settings.n_batch
        mp = mt.mtmd_context_params_default()
        mp.use_gpu = False
        mp.n_threads = embedder.n_threads
        mp.print_timings = False
        mp.warmup = False
        mp.image_min_tokens = max(1, opts.image_min_pixels // (FACTOR * FACTOR))
        mp.image_max_tokens = max(1, opts.image_max_pixels // (FACTOR * FACTOR))
        self.mctx = mt.mtmd_init_from_file(str(mmproj).encode(), self.model, mp)
        if not self.mctx:
            raise SystemExit(f"cannot set up mtmd for {model.name} + {mmproj.name}")

    def run(self, prompt: str, image: PreparedImage) -> tuple[float, float, int]:
        """(encode seconds, language-model seconds, tokens) for one prompt with one image."""
        buf = (ctypes.c_uint8 * image.pixels.size).from_buffer_copy(image.pixels.tobytes())
        bitmap = mt.mtmd_bitmap_init(image.width, image.height, buf)
        chunks = mtmd_tokenize_prompt(self.mctx, prompt, [bitmap])  # as the engine tokenizes
        try:
            n_tokens = int(mt.mtmd_helper_get_n_tokens(chunks))
            lc.llama_memory_clear(lc.llama_get_memory(self.ctx), True)
            encode_s = lm_s = 0.0
            n_past = 0
            n_chunks = mt.mtmd_input_chunks_size(chunks)
            for i in range(n_chunks):
                chunk = mt.mtmd_input_chunks_get(chunks, i)
                # eval_chunk_single adds to *new_n_past for text and sets it for images: start at n_past.
                new_n_past = lc.llama_pos(n_past)
                if mt.mtmd_input_chunk_get_type(chunk) == mt.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    t0 = time.perf_counter()
                    rc = mt.mtmd_helper_eval_chunk_single(
                        self.mctx,
                        self.ctx,
                        chunk,
                        n_past,
                        0,
                        self.n_batch,
                        i == n_chunks - 1,
                        ctypes.byref(new_n_past),
                    )
                    lc.llama_synchronize(self.ctx)
                    lm_s += time.perf_counter() - t0
                else:
                    t0 = time.perf_counter()
                    rc = mt.mtmd_encode_chunk(self.mctx, chunk)
                    t1 = time.perf_counter()
                    encode_s += t1 - t0
                    if rc == 0:
                        embd = mt.mtmd_get_output_embd(self.mctx)
                        rc = mt.mtmd_helper_decode_image_chunk(
                            self.mctx,
                            self.ctx,
                            chunk,
                            embd,
                            n_past,
                            0,
                            self.n_batch,
                            ctypes.byref(new_n_past),
                            NO_POST_DECODE,
                            None,
                        )
                        lc.llama_synchronize(self.ctx)
                    lm_s += time.perf_counter() - t1
                if rc != 0:
                    raise SystemExit(f"mtmd failed on chunk {i} ({rc})")
                n_past = new_n_past.value
            return encode_s, lm_s, n_tokens
        finally:
            mt.mtmd_input_chunks_free(chunks)
            mt.mtmd_bitmap_free(bitmap)

    def close(self) -> None:
        """Free mtmd, context, model."""
        mt.mtmd_free(self.mctx)
        lc.llama_free(self.ctx)
        lc.llama_model_free(self.model)


# -- sections ------------------------------------------------------------------------------------


@dataclass
class Config:
    """What to run, from the command line."""

    files: Files
    runs: int
    quants: list[str]
    tokens: list[int]
    batches: list[int]
    image_sizes: list[int]
    large_image_runs: int
    mmprojs: list[str]
    n_threads: int | None
    defaults_ceiling: bool
    memory_settings: list[tuple[int, int]] = field(default_factory=list)


def options(cfg: Config, **kw: Any) -> LlamaOptions:
    """Engine options: LlamaOptions defaults, threads from --threads if given."""
    if cfg.n_threads is not None:
        kw["n_threads"] = cfg.n_threads
    return LlamaOptions(**kw)


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds of one call."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def text_rows(cfg: Config, quant: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One model: the engine's settings and one row per (tokens, inputs) case."""
    path = cfg.files.model(quant)
    log(f"text: loading {path.name}")
    cap, settings = load_engine(path, None, options(cfg, last_token_capture=True))
    emb, emb_settings = load_engine(path, None, options(cfg, last_token_capture=False))
    ceilings = {"ceiling": RawPrefill(path, settings)}
    if cfg.defaults_ceiling:
        ceilings["ceiling_llama_defaults"] = RawPrefill(path, settings, llama_defaults=True)
    cases: list[tuple[int, int, list[EmbedInput], list[list[int]]]] = []
    for n_tok in cfg.tokens:
        for n_in in cfg.batches:
            # Input 0 is the same text in every case of one length, so single and batched overlap.
            texts = exact_texts(cap, n_tok, n_in, seed=n_tok)
            inputs = [EmbedInput(texts=[t]) for t, _ in texts]
            cases.append((n_tok, n_in, inputs, [toks for _, toks in texts]))
    modes: dict[str, Callable[[list[EmbedInput], list[list[int]]], float]] = {
        "capture": lambda inputs, _toks: timed(lambda: cap.embed(inputs)),
        "embedding": lambda inputs, _toks: timed(lambda: emb.embed(inputs)),
    }
    for name, raw in ceilings.items():
        modes[name] = lambda _inputs, toks, raw=raw: raw.run(toks)  # type: ignore[misc]
    # Warm-up: touch every weight page and allocate the compute buffers once per mode.
    for fn in modes.values():
        fn(cases[0][2], cases[0][3])
    times: dict[tuple[int, int, str], list[float]] = {}
    loadavg: list[float] = []  # 1-minute load average after each round: how busy the machine was
    for r in range(cfg.runs):
        t_round = time.perf_counter()
        for n_tok, n_in, inputs, toks in cases:
            order = list(modes)
            order = order[r % len(order) :] + order[: r % len(order)]  # rotate who goes first
            for mode in order:
                times.setdefault((n_tok, n_in, mode), []).append(modes[mode](inputs, toks))
        loadavg.append(os.getloadavg()[0])
        log(
            f"text {quant}: round {r + 1}/{cfg.runs} {time.perf_counter() - t_round:.0f} s, load {loadavg[-1]:.1f}"
        )
    rows: list[dict[str, Any]] = []
    for n_tok, n_in, _inputs, toks in cases:
        total = sum(len(t) for t in toks)
        row: dict[str, Any] = {
            "quant": quant,
            "tokens_per_input": n_tok,
            "inputs": n_in,
            "total_tokens": total,
        }
        for mode in modes:
            row[f"{mode}_seconds"] = times[(n_tok, n_in, mode)]
            row[f"{mode}_tok_s"] = total / median(times[(n_tok, n_in, mode)])
        ceiling = times[(n_tok, n_in, "ceiling")]
        for mode in ("capture", "embedding"):
            row[f"{mode}_ratio"] = row[f"{mode}_tok_s"] / row["ceiling_tok_s"]
            # Paired per-round ratios are less sensitive to drift than the ratio of medians.
            paired = [c / m for c, m in zip(ceiling, times[(n_tok, n_in, mode)], strict=True)]
            row[f"{mode}_ratio_paired_median"] = median(paired)
        rows.append(row)
    for raw in ceilings.values():
        raw.close()
    emb.close()
    cap.close()
    gc.collect()
    setup = {
        "engine_capture": asdict(settings),
        "engine_embedding_mode": asdict(emb_settings),
        "loadavg_per_round": loadavg,
    }
    return setup, rows


def bench_text(cfg: Config) -> dict[str, Any]:
    """Tokens/s: engine with capture on and off vs the raw prefill ceiling, interleaved by round."""
    rows: list[dict[str, Any]] = []
    setup: dict[str, Any] = {}
    for quant in cfg.quants:
        setup[quant], quant_rows = text_rows(cfg, quant)
        rows += quant_rows
    headers = ["model", "tokens/input", "inputs", "capture tok/s", "embedding-mode tok/s", "ceiling tok/s"]
    headers += ["capture ratio", "embedding ratio"]
    if cfg.defaults_ceiling:
        headers += ["llama.cpp-defaults ceiling tok/s"]
    table_rows = []
    for r in rows:
        cells = [r["quant"], r["tokens_per_input"], r["inputs"]]
        cells += [f"{r[f'{m}_tok_s']:.1f}" for m in ("capture", "embedding", "ceiling")]
        cells += [
            f"{r[f'{m}_ratio']:.3f} ({r[f'{m}_ratio_paired_median']:.3f})" for m in ("capture", "embedding")
        ]
        if cfg.defaults_ceiling:
            cells.append(f"{r['ceiling_llama_defaults_tok_s']:.1f}")
        table_rows.append(cells)
    return {"setup": setup, "rows": rows, "table": md_table(headers, table_rows)}


def compare(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(cosine, max |a - b|) of two vectors."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return cos, float(np.max(np.abs(a - b)))


def bench_parity(cfg: Config) -> dict[str, Any]:
    """Capture mode vs embedding mode, and batched vs one at a time, on the 2B files."""
    rows: list[dict[str, Any]] = []
    for quant in cfg.quants:
        path = cfg.files.model(quant)
        mmproj = cfg.files.mmproj("f16") if quant == cfg.quants[0] else None  # images: once is enough
        log(f"parity: {path.name}" + (f" + {mmproj.name}" if mmproj else ""))
        cap = load_embedder(path, mmproj, options(cfg, last_token_capture=True))
        emb = load_embedder(path, mmproj, options(cfg, last_token_capture=False))
        assert isinstance(cap, LlamaEmbedder)
        cases: list[tuple[str, list[EmbedInput]]] = []
        for n_tok in (32, 128, 512):
            text = exact_texts(cap, n_tok, 1, seed=n_tok)[0][0]
            cases.append((f"text {n_tok} tokens", [EmbedInput(texts=[text])]))
        batch = [EmbedInput(texts=[t]) for t, _ in exact_texts(cap, 128, 8, seed=7)]
        cases.append(("8 texts x 128 tokens, one decode", batch))
        if mmproj is not None:
            img = test_image(256, seed=1)
            cases.append(("image 256x256 (64 visual tokens)", [EmbedInput(images=[img])]))
            cases.append(("text + image 256x256", [EmbedInput(texts=["a striped test card"], images=[img])]))
        for label, inputs in cases:
            pairs = [compare(x, y) for x, y in zip(cap.embed(inputs), emb.embed(inputs), strict=True)]
            rows.append(
                {
                    "quant": quant,
                    "case": label,
                    "check": "capture vs embedding mode",
                    "cosine": min(c for c, _ in pairs),
                    "max_abs_diff": max(d for _, d in pairs),
                }
            )
        one_by_one = np.stack([cap.embed([item])[0] for item in batch])
        batched = cap.embed(batch)
        cos = min(compare(x, y)[0] for x, y in zip(one_by_one, batched, strict=True))
        diff = float(np.max(np.abs(one_by_one - batched)))
        check = "batched vs one at a time (capture)"
        rows.append(
            {
                "quant": quant,
                "case": "8 texts x 128 tokens",
                "check": check,
                "cosine": cos,
                "max_abs_diff": diff,
            }
        )
        emb.close()
        cap.close()
        gc.collect()
    table = md_table(
        ["model", "input", "check", "min cosine", "1 - cosine", "max abs diff"],
        [
            [
                r["quant"],
                r["case"],
                r["check"],
                f"{r['cosine']:.9f}",
                f"{1 - r['cosine']:.1e}",
                f"{r['max_abs_diff']:.2e}",
            ]
            for r in rows
        ],
    )
    return {"rows": rows, "table": table}


def bench_images(cfg: Config) -> dict[str, Any]:
    """Seconds per image: engine end to end, and vision encoder vs language model apart."""
    rows: list[dict[str, Any]] = []
    quant = cfg.quants[0]
    model = cfg.files.model(quant)
    images = {side: test_image(side, seed=side) for side in cfg.image_sizes}
    for kind in cfg.mmprojs:
        mmproj = cfg.files.mmproj(kind)
        log(f"images: {model.name} + {mmproj.name}")
        eng, settings = load_engine(model, mmproj, options(cfg))
        split = ImageSplit(model, mmproj, eng, settings)
        prompt = eng.prompt_for(EmbedInput(images=[images[cfg.image_sizes[0]]]), image_slots=True)
        prepared = {side: prepare_image(img) for side, img in images.items()}
        # Warm-up on the smallest image: weight pages, graph allocation.
        eng.embed_image(images[cfg.image_sizes[0]])
        split.run(prompt, prepared[cfg.image_sizes[0]])
        total: dict[int, list[float]] = {s: [] for s in cfg.image_sizes}
        enc: dict[int, list[float]] = {s: [] for s in cfg.image_sizes}
        lm: dict[int, list[float]] = {s: [] for s in cfg.image_sizes}
        n_tokens: dict[int, int] = {}
        for r in range(cfg.runs):
            for side in cfg.image_sizes:
                if side >= 1024 and r >= cfg.large_image_runs:
                    continue
                t = timed(functools.partial(eng.embed_image, images[side]))
                e, m, n = split.run(prompt, prepared[side])
                total[side].append(t)
                enc[side].append(e)
                lm[side].append(m)
                n_tokens[side] = n
                log(f"images {kind} {side}px run {r + 1}: engine {t:.1f} s, encode {e:.1f} s + lm {m:.1f} s")
        for side in cfg.image_sizes:
            rows.append(
                {
                    "model": quant,
                    "mmproj": kind,
                    "pixels": f"{side}x{side}",
                    "visual_tokens": prepared[side].n_tokens,
                    "prompt_tokens": n_tokens[side],
                    "runs": len(total[side]),
                    "engine_seconds": total[side],
                    "encode_seconds": enc[side],
                    "lm_seconds": lm[side],
                    "engine_median_s": median(total[side]),
                    "encode_median_s": median(enc[side]),
                    "lm_median_s": median(lm[side]),
                }
            )
        split.close()
        eng.close()
        gc.collect()
    table = md_table(
        [
            "mmproj",
            "image",
            "visual tokens",
            "runs",
            "engine s/image",
            "vision encode s",
            "LM decode s",
            "encode + LM s",
            "encode share",
        ],
        [
            [
                r["mmproj"],
                r["pixels"],
                r["visual_tokens"],
                r["runs"],
                f"{r['engine_median_s']:.2f}",
                f"{r['encode_median_s']:.2f}",
                f"{r['lm_median_s']:.2f}",
                f"{r['encode_median_s'] + r['lm_median_s']:.2f}",
                f"{r['encode_median_s'] / (r['encode_median_s'] + r['lm_median_s']):.0%}",
            ]
            for r in rows
        ],
    )
    return {"model": quant, "rows": rows, "table": table}


def memory_child(
    model: Path, mmproj: Path, n_ctx: int, n_batch: int, n_threads: int | None, sizes: list[int]
) -> dict[str, Any]:
    """Run in a fresh process: load, embed texts then images, report ru_maxrss after each stage."""
    stages: dict[str, int] = {"imports": peak_rss_bytes()}
    kw: dict[str, Any] = {"n_ctx": n_ctx, "n_batch": n_batch}
    if os.environ.get("LAUNCHER_BENCH_FLASH_ATTN") == "1":  # set by --flash-attn
        kw["flash_attn"] = True
    if n_threads is not None:
        kw["n_threads"] = n_threads
    with LlamaLogTap() as tap:
        eng, settings = load_engine(model, mmproj, LlamaOptions(**kw))
        stages["loaded"] = peak_rss_bytes()
        # The biggest decodes the engine makes: n_batch tokens of packed texts, then one text that
        # fills the whole context (fed in n_batch slices, so the KV cache is full at the end).
        per = min(512, eng.n_batch)
        eng.embed(
            [EmbedInput(texts=[t]) for t, _ in exact_texts(eng, per, max(1, eng.n_batch // per), seed=3)]
        )
        eng.embed([EmbedInput(texts=[exact_texts(eng, eng.n_ctx - 8, 1, seed=4)[0][0]])])
        stages["texts"] = peak_rss_bytes()
        for side in sizes:
            eng.embed_image(test_image(side, seed=side))
            stages[f"image_{side}"] = peak_rss_bytes()
        eng.close()
    buffers = [line for line in tap.lines if "buffer size" in line and "~" not in line]
    return {"stages": stages, "settings": asdict(settings), "buffers": buffers}


def bench_memory(cfg: Config, script: Path) -> dict[str, Any]:
    """Peak RSS in child processes, one per (mmproj, n_ctx, n_batch), vs file sizes + 500 MB."""
    rows: list[dict[str, Any]] = []
    quant = cfg.quants[0]
    model = cfg.files.model(quant)
    for kind in cfg.mmprojs:
        mmproj = cfg.files.mmproj(kind)
        for n_ctx, n_batch in cfg.memory_settings:
            cmd = [
                sys.executable,
                str(script),
                "--child-memory",
                str(model),
                str(mmproj),
                str(n_ctx),
                str(n_batch),
            ]
            cmd += ["--image-sizes", ",".join(map(str, cfg.image_sizes))]
            if cfg.n_threads is not None:
                cmd += ["--threads", str(cfg.n_threads)]
            log(f"memory: {mmproj.name}, n_ctx {n_ctx}, n_batch {n_batch}")
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                rows.append(
                    {"mmproj": kind, "n_ctx": n_ctx, "n_batch": n_batch, "error": proc.stderr[-2000:]}
                )
                log(f"memory child failed ({proc.returncode}): {proc.stderr[-500:]}")
                continue
            child = json.loads(proc.stdout.strip().splitlines()[-1])
            files = model.stat().st_size + mmproj.stat().st_size
            peak = max(child["stages"].values())
            rows.append(
                {
                    "model": quant,
                    "mmproj": kind,
                    "n_ctx": child["settings"]["n_ctx"],
                    "n_batch": child["settings"]["n_batch"],
                    "files_bytes": files,
                    "target_bytes": files + MEMORY_SLACK,
                    "peak_bytes": peak,
                    "over_files_bytes": peak - files,
                    "meets_target": peak <= files + MEMORY_SLACK,
                    "stages": child["stages"],
                    "settings": child["settings"],
                    "buffers": child["buffers"],
                }
            )
    mb = 1000**2
    table = md_table(
        [
            "mmproj",
            "n_ctx",
            "n_batch",
            "files MB",
            "after load MB",
            "after texts MB",
            "peak MB",
            "peak - files MB",
            "<= files + 500 MB",
        ],
        [
            [
                r["mmproj"],
                r["n_ctx"],
                r["n_batch"],
                f"{r['files_bytes'] / mb:.0f}",
                f"{r['stages']['loaded'] / mb:.0f}",
                f"{r['stages']['texts'] / mb:.0f}",
                f"{r['peak_bytes'] / mb:.0f}",
                f"{r['over_files_bytes'] / mb:.0f}",
                "yes" if r["meets_target"] else "NO",
            ]
            for r in rows
            if "error" not in r
        ],
    )
    return {"model": quant, "rows": rows, "table": table}


# -- main ----------------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    """'128,512' -> [128, 512]."""
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=Path, default=MODELS, help="folder with the GGUFs (default: %(default)s)")
    p.add_argument("--runs", type=int, default=5, help="timed runs per measurement; medians are reported")
    p.add_argument("--only", default="text,parity,images,memory", help="sections to run, comma-separated")
    p.add_argument(
        "--quants", default="Q4_K_M,Q8_0", help="text models; the first is used for images and memory"
    )
    p.add_argument("--tokens", type=int_list, default=[128, 512], help="tokens per text input")
    p.add_argument("--batches", type=int_list, default=[1, 8], help="inputs per embed call")
    p.add_argument("--image-sizes", type=int_list, default=[256, 512, 1024], help="square image sides, px")
    p.add_argument("--large-image-runs", type=int, default=3, help="runs for images of 1024 px and up")
    p.add_argument("--mmprojs", default="f16,Q8_0", help="projector files to time")
    p.add_argument(
        "--memory", default="4096x1024,2048x512", help="n_ctx x n_batch settings for the memory section"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="threads (default: the engine's, physical cores)"
    )
    p.add_argument(
        "--llama-defaults-ceiling",
        action="store_true",
        help="add a ceiling with llama.cpp's default flash attention and buffer types "
        "(skipped on AMX CPUs, where those buffer types crash on quantized models)",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: %(default)s)")
    p.add_argument(
        "--flash-attn", action="store_true", help="memory section: the engine's flash_attn option on"
    )
    p.add_argument(
        "--child-memory", nargs=4, metavar=("MODEL", "MMPROJ", "N_CTX", "N_BATCH"), help=argparse.SUPPRESS
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen sections, print their tables, write the JSON."""
    args = parse_args(argv)
    if args.flash_attn:
        os.environ["LAUNCHER_BENCH_FLASH_ATTN"] = "1"  # read by the memory children
    if args.child_memory:
        model, mmproj, n_ctx, n_batch = args.child_memory
        result = memory_child(
            Path(model), Path(mmproj), int(n_ctx), int(n_batch), args.threads, args.image_sizes
        )
        print(json.dumps(result))
        return 0
    cfg = Config(
        files=Files(args.models.resolve()),
        runs=args.runs,
        quants=args.quants.split(","),
        tokens=args.tokens,
        batches=args.batches,
        image_sizes=args.image_sizes,
        large_image_runs=min(args.large_image_runs, args.runs),
        mmprojs=args.mmprojs.split(","),
        n_threads=args.threads,
        defaults_ceiling=args.llama_defaults_ceiling and not cpu_has_amx(),
        memory_settings=[(int(a), int(b)) for a, b in (s.split("x") for s in args.memory.split(","))],
    )
    paths = [cfg.files.model(q) for q in cfg.quants] + [cfg.files.mmproj(k) for k in cfg.mmprojs]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"missing {missing[0]}: run `python bench/make_shape_true_2b.py` first")
    sections = args.only.split(",")
    started = time.strftime("%Y%m%d-%H%M%S")
    result: dict[str, Any] = {
        "started": started,
        "config": {k: v for k, v in asdict(cfg).items() if k != "files"} | {"models": str(cfg.files.folder)},
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "loadavg_start": os.getloadavg(),
            "llama_cpp_python": lc.__version__,
            "system_info": system_info().strip(),
        },
        "files": {p.name: p.stat().st_size for p in paths},
        "engine_defaults": asdict(LlamaOptions()),
        "section_seconds": {},
    }
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "text": lambda: bench_text(cfg),
        "parity": lambda: bench_parity(cfg),
        "images": lambda: bench_images(cfg),
        "memory": lambda: bench_memory(cfg, Path(__file__).resolve()),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"engine-{started}.json"
    for name in sections:
        t0 = time.perf_counter()
        result[name] = runners[name]()
        result["section_seconds"][name] = round(time.perf_counter() - t0, 1)
        print(
            f"\n## {name} ({result['section_seconds'][name]:.0f} s)\n\n{result[name]['table']}\n", flush=True
        )
        result["machine"]["loadavg_end"] = os.getloadavg()
        # Written after every section: a long run cut short still keeps what it measured.
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
