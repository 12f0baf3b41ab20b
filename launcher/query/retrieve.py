"""Stage 6, search: cosine over piece vectors, BM25 over piece texts, and file-name matches, fused.

Per query:
1. filters (kind, folder, date) become one boolean mask over files, and so over rows, before any
   top-k: a filtered-out file can neither win nor push a match out;
2. vector: the query against every piece vector in float32, block by block: float16 and int8 rows
   are converted a cache-sized block at a time (NumPy's float16 arithmetic is ~9x slower) and
   multiplied by single-threaded BLAS GEMV, with our own threads across blocks (see BLOCK_VALUES);
   then the top rows by argpartition, grouped so each file counts once, with its best piece.
   A large index is partitioned (launcher/index/partition.py): the query then scores only the rows of
   the `probe` lists whose centroids are nearest (DEFAULT_PROBE; 0 = exact), still exactly; a
   filter that keeps a fraction f of the rows probes 1/f as many lists, and when the rows it keeps
   are few enough to read them all (partition.PARTITION_MIN_VALUES) they are all scored. Files that
   keyword or name search found get their vector score from all their rows, probed or not;
3. keyword: BM25 over the postings the index built at write time; a file scores as its best piece,
   normalised by the summed idf of the query terms found in the index (1.0 = the piece holds every
   known query term about as often as an average piece);
4. name: the query's words found whole in the file name (NFC + casefold, split on `_`, `.`,
   `-`, case and digit changes, so `Tax_Form_2023.pdf` has `tax form 2023 pdf`), weighted by how
   rare each word is among file names; a word that begins a name word counts half; a joined word
   of the query (`MS_BIND`, `readFile`) counts only in names that hold all of it;
5. fusion is a noisy-OR of the three, each read as evidence of relevance in [0, 1]:
       score = 1 - (1 - cos+) (1 - KEYWORD_WEIGHT * keyword) (1 - NAME_WEIGHT * name)
   with a heavier keyword side (SHORT_KEYWORD_WEIGHT) for a query of a few words, a lookup.
   The vector enters at full strength, so it dominates; keyword and name can only lift a file,
   never sink one; a file matching one signal alone still has a score on the same scale, so one
   threshold (min_score) serves every mode, including keyword-only search without a vector
   (pieces not embedded yet, or no model). With these weights an exact file-name match scores
   at least 0.6, on a par with a strong semantic match, so it surfaces among the top hits.
   Reciprocal rank fusion was not chosen: it has no absolute scale, so it cannot say "nothing
   here is relevant".
6. min_score (DEFAULT_MIN_SCORE, 0.25) drops weak files; ties are broken by path, so equal
   scores always list the same way.

The per-snapshot caches (row -> file arrays, name blob, BM25 statistics) are built at the first
query after a commit: O(pieces) array work (a few ms per 100k pieces) plus O(files) string joins.
"""

from __future__ import annotations

import operator
import os
import re
import unicodedata
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from launcher.core.paths import folder_prefix
from launcher.core.records import KINDS, Hit, Locator, Vector
from launcher.index import keywords, partition
from launcher.index.info import FileColumns
from launcher.index.store import Store
from launcher.models.catalogue import DEFAULT_MIN_SCORE  # the floor of a model the catalogue does not know

KEYWORD_WEIGHT = 0.4  # a full keyword match alone scores 0.4
# A query of a few words ("cargo yank", "MS_BIND", "eprintln!") looks a term up: its words are the
# evidence, and they weigh more. A longer one describes a need in everyday words that pages repeat
# without answering it, where the vector judges better (see keyword_weight_for).
SHORT_QUERY_WORDS = 3
SHORT_KEYWORD_WEIGHT = 0.6
NAME_WEIGHT = 0.6  # an exact file-name match alone scores 0.6
FUSIONS = ("noisy-or", "rrf")
DEFAULT_FUSION = "noisy-or"
RRF_K = 60.0  # the usual constant (Cormack et al. 2009)
# Values per block: 2^18 float32 = 1 MiB, converted and multiplied while still in L2. It also keeps
# each GEMV under OpenBLAS's multithreading threshold (~460k values): its own threads made small
# GEMVs 10-100x slower whenever the cores were busy; we parallelise across blocks instead.
BLOCK_VALUES = 1 << 18
BLOCKS_PER_JOB = 32  # blocks per thread-pool task
# Conversion and BLAS release the GIL, so blocks run on threads: half the cores (at most 4), as
# the model, the UI or an indexer share the machine; on 2 busy cores a second thread only lost.
THREADS = max(1, min(4, (os.cpu_count() or 2) // 2))
# Lists probed in a partitioned index (setting `search_probe`). bench_search.py at 1M x 1024 int8
# (~1,700 lists): probe 8 / 12 / 16 -> p50 17 / 20 / 29 ms, recall@10 against exact search 0.993 /
# 0.993 / 0.997 on embedding-shaped synthetic vectors; 12 leaves headroom under 30 ms.
DEFAULT_PROBE = 12
# ... and at least this many rows (a smaller index has shorter lists; 20k int8 rows of 1024 dims
# are ~5 ms): at 100k x 2048, 12 lists alone gave recall@10 0.94.
PROBE_MIN_ROWS = 20_000
SNIPPET_CHARS = 200
MAX_TERMS = 64  # a pasted paragraph is matched on its first 64 distinct words

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]
Time = datetime | float | int | None


@dataclass(frozen=True)
class _Scored:
    """Vector scores of some rows with those rows' file positions and piece ids: every row (rows
    is None; dead and filtered ones at -inf), or, after a partition probe, the rows listed."""

    scores: F32
    ords: I32
    pids: I64
    rows: npt.NDArray[np.intp] | None


@dataclass(frozen=True)
class _Signal:
    """Per-file results of one signal: file positions, scores in [0, 1], best piece ids (-1: none)."""

    ords: I32
    scores: F32
    pieces: I64


_EMPTY = _Signal(np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0, np.int64))


def search(
    store: Store,
    query_vector: Vector | None,
    query_text: str,
    *,
    top_k: int = 10,
    kinds: Iterable[str] | None = None,
    under: str | None = None,
    modified_after: Time = None,
    modified_before: Time = None,
    min_score: float | None = None,
    keyword_weight: float | None = None,
    name_weight: float = NAME_WEIGHT,
    probe: int | None = None,
    fusion: str | None = None,
) -> list[Hit]:
    """The best files for a query vector and/or text, with their best piece; [] when nothing fits.
    `keyword_weight`: None weighs by the query's length (keyword_weight_for).
    `probe`: lists searched in a partitioned index (None: DEFAULT_PROBE; 0: every row, exact)."""
    if min_score is None:
        min_score = DEFAULT_MIN_SCORE
    if keyword_weight is None:
        keyword_weight = keyword_weight_for(query_text)
    fusion = fusion or DEFAULT_FUSION
    if probe is None:
        probe = DEFAULT_PROBE
    if probe < 0:
        raise ValueError(f"probe must be 0 (exact) or more, not {probe}")
    cols = store.file_columns()
    if len(cols) == 0 or top_k <= 0:
        return []
    allowed = _file_mask(store, cols, kinds, under, modified_after, modified_before)
    terms = keywords.query_terms(query_text)[:MAX_TERMS]
    pool = max(50, 5 * top_k)  # candidates taken from each signal before fusion

    vec = _EMPTY
    scored: _Scored | None = None
    q: F32 | None = None
    if query_vector is not None:
        q = _as_query(query_vector, store.dims)
        scored = _row_scores(store, q, allowed, probe)
        vec = _best_per_file(scored.scores, scored.ords, scored.pids, limit=pool)
    kw = _bm25(store, terms, allowed) if terms else _EMPTY
    nm = _names(store, cols, terms, keywords.query_runs(query_text), allowed) if terms else _EMPTY

    cand: dict[int, list[float]] = {}  # ord -> [vector, vector piece, keyword, keyword piece, name]
    for o, s, p in zip(vec.ords.tolist(), vec.scores.tolist(), vec.pieces.tolist(), strict=True):
        cand[o] = [min(s, 1.0), p, 0.0, -1, 0.0]

    def rank() -> I64:
        return _path_rank(store, cols)

    for sig, col in ((_top(kw, pool, rank), 2), (_top(nm, pool, rank), 4)):
        for o, s, p in zip(sig.ords.tolist(), sig.scores.tolist(), sig.pieces.tolist(), strict=True):
            c = cand.setdefault(o, [0.0, -1, 0.0, -1, 0.0])
            c[col] = s
            if col == 2:
                c[3] = p
    if not cand:
        return []
    # A file found by keyword or name also needs its vector score, and vice versa. After a
    # partition probe, every row of every candidate is scored, so each file's score is its best
    # piece's even when its other pieces sit in lists the probe skipped.
    if scored is not None and q is not None:
        if scored.rows is None:
            missing = np.array([o for o, c in cand.items() if c[1] == -1], dtype=np.int32)
        else:
            missing = np.fromiter(cand, dtype=np.int32, count=len(cand))
            scored = _with_files(store, q, scored, missing, allowed)
        if len(missing):
            extra = _best_per_file(
                scored.scores, scored.ords, scored.pids, limit=None, only=missing, n_files=len(cols)
            )
            for o, s, p in zip(
                extra.ords.tolist(), extra.scores.tolist(), extra.pieces.tolist(), strict=True
            ):
                cand[o][0], cand[o][1] = min(s, 1.0), p
    for sig, col in ((kw, 2), (nm, 4)):
        if len(sig.ords):
            pos = {o: i for i, o in enumerate(sig.ords.tolist())}
            for o, c in cand.items():
                i = pos.get(o)
                if i is not None and c[col] == 0.0:
                    c[col] = float(sig.scores[i])
                    if col == 2:
                        c[3] = int(sig.pieces[i])

    exact = {o for o in _exact_names(store, cols, query_text) if o in cand and allowed[o]}
    relevance = {o: _fused(c, keyword_weight, name_weight) for o, c in cand.items()}
    if fusion == "rrf":
        order = _rrf_order(cand)
    elif fusion == "noisy-or":
        order = relevance
    else:
        raise ValueError(f"fusion must be one of {FUSIONS}, not {fusion!r}")
    ranked = [
        (o in exact, order[o], cols.paths[o], o) for o in cand if relevance[o] >= min_score or o in exact
    ]
    # An exact file-name match comes first; then the fused order; equal scores list by path.
    ranked.sort(key=lambda r: (not r[0], -r[1], r[2]))
    return [
        _hit(store, cols, o, relevance[o], cand[o], terms, keyword_weight) for _, _, _, o in ranked[:top_k]
    ]


def newest(
    store: Store,
    *,
    top_k: int = 10,
    kinds: Iterable[str] | None = None,
    under: str | None = None,
    after: Time = None,
    before: Time = None,
) -> list[Hit]:
    """The files in a date range, newest first (a query that is only a time: "yesterday"); each
    with its first piece as the snippet, score 0: nothing was matched."""
    cols = store.file_columns()
    if len(cols) == 0 or top_k <= 0:
        return []
    allowed = np.flatnonzero(_file_mask(store, cols, kinds, under, after, before)[:-1])
    # Newest first; equal dates by path, so the list is the same every time.
    order = sorted(allowed.tolist(), key=lambda o: (-int(cols.date_ns[o]), cols.paths[o]))[:top_k]
    return [replace(_hit(store, cols, o, 0.0, [0.0, -1, 0.0, -1, 0.0], [], 0.0), scores={}) for o in order]


def keyword_weight_for(query_text: str) -> float:
    """The keyword side's weight for a query: SHORT_KEYWORD_WEIGHT for one of at most
    SHORT_QUERY_WORDS words, KEYWORD_WEIGHT for a longer one. Measured on both retrieval sets
    (bench_retrieval.py): R@1 0.77 -> 0.80 on the main set, 0.76 -> 0.78 on the held-out set, all on
    exact names; no long query changes. A fixed 0.6 for every query lost 0.03 R@1 on the held-out
    set, all on paraphrases."""
    return SHORT_KEYWORD_WEIGHT if keywords.query_length(query_text) <= SHORT_QUERY_WORDS else KEYWORD_WEIGHT


def _fused(c: list[float], keyword_weight: float, name_weight: float) -> float:
    """The noisy-OR of a candidate's signals. A file none of whose pieces has a vector (read, not yet
    embedded; or a search without a query vector) is judged on its words alone, at full weight."""
    v, vp, k, _, n = c
    if vp < 0:
        keyword_weight = name_weight = 1.0
    return 1.0 - (1.0 - max(v, 0.0)) * (1.0 - keyword_weight * k) * (1.0 - name_weight * n)


def _rrf_order(cand: dict[int, list[float]], k: float = RRF_K) -> dict[int, float]:
    """Reciprocal-rank fusion of the three signals over the candidates (higher is better)."""
    out = dict.fromkeys(cand, 0.0)
    for col, weight in ((0, 1.0), (2, 1.0), (4, 0.5)):
        scored = sorted((o for o, c in cand.items() if c[col] > 0), key=lambda o: -cand[o][col])
        for rank, o in enumerate(scored):
            out[o] += weight / (k + rank + 1)
    return out


# --- filters -----------------------------------------------------------------------------------


def _file_mask(
    store: Store, cols: FileColumns, kinds: Iterable[str] | None, under: str | None, after: Time, before: Time
) -> Mask:
    """Allowed files as a mask of len(files) + 1; the extra last entry (False) is where row -> file
    position -1 (a dead row) lands, so one gather masks dead rows and filtered files together."""
    ok = np.ones(len(cols) + 1, dtype=bool)
    ok[-1] = False
    if kinds is not None:
        kinds = set(kinds)
        if kinds - set(KINDS):
            raise ValueError(
                f"unknown kind {sorted(kinds - set(KINDS))[0]!r}; known kinds: {', '.join(KINDS)}"
            )
        wanted = [KINDS.index(k) for k in kinds]
        ok[:-1] &= np.isin(cols.kinds, np.array(wanted, dtype=np.uint8))
    # Dates are a picture's taken time (EXIF) when it has one, else the file's modification time.
    if after is not None:
        ok[:-1] &= cols.date_ns >= _ns(after)
    if before is not None:
        ok[:-1] &= cols.date_ns < _ns(before)
    if under is not None:
        ok[:-1] &= _under(store, cols, under)
    return ok


def _ns(t: datetime | float | int) -> int:
    return int(t.timestamp() * 1e9) if isinstance(t, datetime) else int(float(t) * 1e9)


def _under(store: Store, cols: FileColumns, under: str) -> Mask:
    """Files at or below a folder, matched on NFC paths; the folder as typed and as resolved."""
    if "paths_nfc" not in store.cache:
        store.cache["paths_nfc"] = [unicodedata.normalize("NFC", p) for p in cols.paths]
    paths: list[str] = store.cache["paths_nfc"]
    typed = os.path.normpath(os.path.abspath(os.path.expanduser(under)))
    tops = {unicodedata.normalize("NFC", t) for t in (typed, os.path.realpath(typed))}
    prefixes = tuple(folder_prefix(t) for t in tops)
    return np.fromiter((p in tops or p.startswith(prefixes) for p in paths), dtype=bool, count=len(paths))


# --- vectors -----------------------------------------------------------------------------------


def _as_query(q: Vector, dims: int) -> F32:
    """A unit float32 query of the index's width; a longer one is truncated (Matryoshka) first."""
    q = np.asarray(q, dtype=np.float32).reshape(-1)
    if q.shape[0] < dims:
        raise ValueError(f"query vector has {q.shape[0]} dims, the index has {dims}")
    q = q[:dims]
    norm = float(np.linalg.norm(q))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("query vector is zero or not finite")
    return (q / norm).astype(np.float32)


def _row_arrays(store: Store) -> tuple[I32, I64, bool]:
    """All vector rows' file positions and piece ids, concatenated, and whether every row is live
    (once per snapshot)."""
    if "rows" not in store.cache:
        blocks = store.vector_blocks()
        ords = np.concatenate([b.file_ords for b in blocks]) if blocks else np.zeros(0, np.int32)
        pids = np.concatenate([np.asarray(b.piece_ids) for b in blocks]) if blocks else np.zeros(0, np.int64)
        store.cache["rows"] = (ords, pids, bool((ords >= 0).all()))
    return store.cache["rows"]  # type: ignore[no-any-return]


def cosine_scores(store: Store, q: F32, threads: int = THREADS) -> F32:
    """Cosine of q with every stored row (dead rows included), float32, block by block."""
    blocks = store.vector_blocks()
    total = sum(len(b.vectors) for b in blocks)
    out = np.empty(total, dtype=np.float32)
    rows = max(1, BLOCK_VALUES // max(1, store.dims))
    jobs: list[tuple[npt.NDArray[Any], F32]] = []
    pos = 0
    for b in blocks:
        n = len(b.vectors)
        step = rows * BLOCKS_PER_JOB
        for a in range(0, n, step):
            jobs.append((b.vectors[a : a + step], out[pos + a : pos + min(n, a + step)]))
        pos += n

    def run(job: tuple[npt.NDArray[Any], F32]) -> None:
        src, dst = job
        buf = None if src.dtype == np.float32 else np.empty((min(rows, len(src)), src.shape[1]), np.float32)
        for a in range(0, len(src), rows):
            chunk = src[a : a + rows]
            block = chunk if buf is None else _as_float32(chunk, buf[: len(chunk)])
            np.matmul(block, q, out=dst[a : a + len(chunk)])

    if threads > 1 and len(jobs) > 1:
        list(_executor(threads).map(run, jobs))
    else:
        for job in jobs:
            run(job)
    pos = 0
    for b in blocks:
        if b.scales is not None:
            out[pos : pos + len(b.vectors)] *= b.scales
        pos += len(b.vectors)
    return out


def _as_float32(chunk: npt.NDArray[Any], dst: F32) -> F32:
    """Stored float16 or int8 rows decoded into dst (same shape); float32 rows copied."""
    if chunk.dtype == np.float16:
        return _half_to_float(chunk, dst)
    np.copyto(dst, chunk, casting="unsafe")
    return dst


_HALF_MASK = np.int32(0x8FFFFFFF - (1 << 32))  # sign bit + exponent/mantissa bits of a float32
_HALF_SCALE = np.float32(2.0**112)  # 2^(127 - 15): float16 -> float32 exponent bias


def _half_to_float(src: npt.NDArray[np.float16], dst: F32) -> F32:
    """float16 -> float32, exactly, for finite values: NumPy's own cast is a scalar loop here
    (~2 ns/value), these five vectorised integer passes are ~4x faster."""
    bits = dst.view(np.int32)
    np.copyto(bits, src.view(np.int16), casting="unsafe")  # sign-extends
    np.left_shift(bits, 16, out=bits)  # sign to bit 31, exponent+mantissa to bits 16..30
    np.right_shift(bits, 3, out=bits)  # ... to bits 13..27 (bits 28..30 now copy the sign)
    np.bitwise_and(bits, _HALF_MASK, out=bits)  # clear those copies
    np.multiply(dst, _HALF_SCALE, out=dst)  # rebias the exponent; subnormals come out right too
    return dst


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _executor(threads: int) -> ThreadPoolExecutor:
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="launcher-search")
    return _POOLS[threads]


def _row_scores(store: Store, q: F32, allowed: Mask, probe: int) -> _Scored:
    """Cosines of the rows to search: all of them, or the rows of the probed partition lists."""
    ords, pids, all_live = _row_arrays(store)
    part = store.partition() if probe > 0 else None
    unfiltered = all_live and bool(allowed[:-1].all())
    ok: Mask | None = None
    if part is not None:
        centroids = part[0]
        if not unfiltered:
            ok = allowed[ords]
        n_ok = len(ords) if ok is None else int(np.count_nonzero(ok))
        count = -(-probe * len(ords) // max(1, n_ok))  # a filter keeping 1/k of the rows probes k x
        if n_ok * store.dims > partition.PARTITION_MIN_VALUES and count < len(centroids):
            lists, sizes = _row_lists(store)
            min_rows = PROBE_MIN_ROWS * len(ords) // max(1, n_ok)
            probed = partition.probe(centroids, q, count, sizes, min_rows)[lists]
            ok = probed if ok is None else ok & probed
        # else: few enough allowed rows (or a probe as wide as the index) to score every one
    if ok is None or part is None:
        scores = cosine_scores(store, q)
        if not unfiltered:
            scores[~allowed[ords]] = -np.inf
        return _Scored(scores, ords, pids, None)
    rows = np.flatnonzero(ok)
    return _Scored(rows_cosine(store, q, rows), ords[rows], pids[rows], rows)


WARM_PAGES = 4096  # pages touched between two looks at `cancelled` (16 MB: a few ms)


def warm(store: Store, cancelled: Callable[[], bool] | None = None) -> bool:
    """Map every page of the vectors into this process and build the per-snapshot row arrays, so
    that the first probed queries do not pay ~1 us per page fault (1M x 1024 int8: ~160 ms once,
    ~15 ms when already mapped). False when `cancelled` said stop before the end. The resident
    process runs it in one background thread (searcher.Warmer), newest snapshot first. The file
    columns and name lookups are built first: a watcher commits every few seconds, and the
    first search on each new snapshot would otherwise build them (0.05 s per 100k files)."""
    cols = store.file_columns()
    _name_words(store, cols)
    _whole_names(store, cols)
    _path_rank(store, cols)
    _row_arrays(store)
    if store.partition() is not None:
        _row_lists(store)
    for b in store.vector_blocks():
        flat = b.vectors.reshape(-1)
        per_page = max(1, 4096 // flat.itemsize)
        stretch = per_page * WARM_PAGES
        for start in range(0, len(flat), stretch):
            if cancelled is not None and cancelled():
                return False
            # A value per page: reading it maps the page.
            float(np.asarray(flat[start : start + stretch : per_page], dtype=np.float64).sum())
    return True


def _row_lists(store: Store) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.int64]]:
    """Every row's partition list, concatenated, and the rows per list (once per snapshot)."""
    if "row_lists" not in store.cache:
        part = store.partition()
        assert part is not None
        lists = np.concatenate([np.asarray(li) for li in part[1]])
        store.cache["row_lists"] = (lists, np.bincount(lists, minlength=len(part[0])))
    return store.cache["row_lists"]  # type: ignore[no-any-return]


def rows_cosine(store: Store, q: F32, rows: npt.NDArray[np.intp]) -> F32:
    """Cosine of q with some stored rows (global row numbers, ascending), gathered block by block:
    np.take on a plain view of the map into a reused buffer (indexing the np.memmap itself costs
    ~60 us of Python per call), then converted and multiplied like cosine_scores."""
    out = np.empty(len(rows), dtype=np.float32)
    step = max(1, BLOCK_VALUES // max(1, store.dims))
    buf = np.empty((step, store.dims), dtype=np.float32)
    raw: npt.NDArray[Any] | None = None
    start = i = 0
    for b in store.vector_blocks():
        j = int(np.searchsorted(rows, start + len(b.vectors)))
        local = rows[i:j] - start
        src = b.vectors.view(np.ndarray)
        if src.dtype != np.float32 and (raw is None or raw.dtype != src.dtype):
            raw = np.empty((step, store.dims), dtype=src.dtype)
        for a in range(0, len(local), step):
            idx = local[a : a + step]
            block = buf[: len(idx)]
            if src.dtype == np.float32:
                np.take(src, idx, axis=0, out=block)
            else:
                _as_float32(np.take(src, idx, axis=0, out=raw[: len(idx)]), block)  # type: ignore[index]
            np.matmul(block, q, out=out[i + a : i + a + len(idx)])
        if b.scales is not None:
            out[i:j] *= b.scales[local]
        start += len(b.vectors)
        i = j
    return out


def _with_files(store: Store, q: F32, scored: _Scored, files: I32, allowed: Mask) -> _Scored:
    """`scored` plus the allowed rows of some files that a partition probe left out."""
    ords, pids, _ = _row_arrays(store)
    flag = np.zeros(len(allowed), dtype=bool)
    flag[files] = True
    want = flag[ords] & allowed[ords]
    want[scored.rows] = False
    new = np.flatnonzero(want)
    if not len(new):
        return scored
    return _Scored(
        np.concatenate([scored.scores, rows_cosine(store, q, new)]),
        np.concatenate([scored.ords, ords[new]]),
        np.concatenate([scored.pids, pids[new]]),
        np.concatenate([scored.rows, new]),  # type: ignore[list-item]
    )


def _best_per_file(
    scores: F32, ords: I32, pids: I64, *, limit: int | None, only: I32 | None = None, n_files: int = 0
) -> _Signal:
    """Each file's best row: the top `limit` files by score, or every file in `only`."""
    if only is not None:
        flag = np.zeros(n_files + 1, dtype=bool)
        flag[only] = True
        idx = np.flatnonzero(flag[ords] & np.isfinite(scores))
        return _group(idx, scores, ords, pids)
    n = len(scores)
    k = min(n, 8 * (limit or 1))
    while True:
        # argpartition finds the k best rows in O(n); files may repeat among them, so widen k
        # until `limit` distinct files are in, or every row has been seen.
        idx = _top_rows(scores, k)
        idx = idx[np.isfinite(scores[idx])]
        sig = _group(idx, scores, ords, pids)
        if len(sig.ords) >= (limit or 0) or k == n or len(idx) < k:
            return _top(sig, limit, None)
        k = min(n, k * 4)


def _top_rows(scores: F32, k: int) -> npt.NDArray[np.intp]:
    """Indices of the k highest scores, in no order; exact."""
    n = len(scores)
    if k >= n:
        return np.arange(n)
    if n >= 1 << 16:
        # Guess a cut from a 1-in-(n/16k) sample so that a few thousand rows, not n, reach
        # argpartition (10 ms -> 2 ms at 1M rows); when the guess keeps fewer than k, fall back.
        sample = scores[:: n >> 14]
        at = int(len(sample) * (1.0 - 4.0 * k / n))
        if 0 < at < len(sample):
            idx = np.flatnonzero(scores >= np.partition(sample, at)[at])
            if len(idx) >= k:
                return idx[np.argpartition(scores[idx], len(idx) - k)[len(idx) - k :]]
    return np.argpartition(scores, n - k)[n - k :]


def _group(idx: npt.NDArray[np.intp], scores: F32, ords: I32, pids: I64) -> _Signal:
    """Keep the best of the given rows per file; files sorted by that score, best first."""
    order = np.lexsort((pids[idx], -scores[idx]))  # best first; equal scores: lower piece id
    idx = idx[order]
    _, first = np.unique(ords[idx], return_index=True)
    idx = idx[np.sort(first)]
    return _Signal(ords[idx].astype(np.int32), scores[idx].astype(np.float32), pids[idx].astype(np.int64))


def _top(sig: _Signal, limit: int | None, rank: Callable[[], I64] | None) -> _Signal:
    """The `limit` best files; with `rank` (each file's place in path order, asked for only when
    files tie at the cut), files tied at the cut are taken in path order."""
    if limit is None or len(sig.ords) <= limit:
        return sig
    order = np.argsort(-sig.scores, kind="stable")
    if rank is not None:
        cut = sig.scores[order[limit - 1]]
        sure = order[sig.scores[order] > cut]
        tied = order[sig.scores[order] == cut]
        if len(tied) > 1:
            tied = tied[np.argsort(rank()[sig.ords[tied]], kind="stable")]
        order = np.concatenate([sure, tied])
    order = order[:limit]
    return _Signal(sig.ords[order], sig.scores[order], sig.pieces[order])


def _path_rank(store: Store, cols: FileColumns) -> I64:
    """Each file's place when the files are sorted by path (once per snapshot; the warm thread
    builds it): ties at a cut are broken in path order without a Python call per tied file."""
    if "path_rank" not in store.cache:
        order = sorted(range(len(cols)), key=cols.paths.__getitem__)
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order), dtype=np.int64)
        store.cache["path_rank"] = rank
    return store.cache["path_rank"]  # type: ignore[no-any-return]


# --- keywords ----------------------------------------------------------------------------------


def _bm25(store: Store, terms: list[str], allowed: Mask) -> _Signal:
    """Each file's best piece by BM25, normalised to [0, 1), for files that match any term."""
    blocks = store.piece_blocks()
    if "bm25" not in store.cache:
        n_live = sum(int((b.file_ords >= 0).sum()) for b in blocks)
        length = sum(int(np.asarray(b.postings.doclen)[b.file_ords >= 0].sum(dtype=np.int64)) for b in blocks)
        store.cache["bm25"] = (n_live, length / n_live if n_live else 1.0)
    n_live, avgdl = store.cache["bm25"]
    if n_live == 0:
        return _EMPTY
    found = [[b.postings.lookup(keywords.term_hash(t)) for b in blocks] for t in terms]
    idf = []
    for per_block in found:
        df = sum(int((b.file_ords[e[:, 0]] >= 0).sum()) for b, e in zip(blocks, per_block, strict=True))
        idf.append(keywords.bm25_idf(n_live, df) if df else 0.0)
    norm = sum(idf)  # terms that no piece contains carry no weight (typos, half-typed words)
    if norm == 0.0:
        return _EMPTY
    s_all, o_all, p_all = [], [], []
    for j, b in enumerate(blocks):
        entries = [(found[t][j], idf[t]) for t in range(len(terms)) if idf[t] > 0 and len(found[t][j])]
        if not entries:
            continue
        rows = np.concatenate([e[:, 0] for e, _ in entries]).astype(np.int64)
        tf = np.concatenate([e[:, 1] for e, _ in entries]).astype(np.float32)
        w = np.concatenate([np.full(len(e), w, dtype=np.float32) for e, w in entries])
        dl = np.asarray(b.postings.doclen)[rows].astype(np.float32)
        part = w * tf * (keywords.K1 + 1) / (tf + keywords.K1 * (1 - keywords.B + keywords.B * dl / avgdl))
        uniq, inv = np.unique(rows, return_inverse=True)
        score = np.bincount(inv, weights=part).astype(np.float32)
        o = b.file_ords[uniq]
        keep = allowed[o]
        s_all.append(score[keep])
        o_all.append(o[keep])
        p_all.append(np.asarray(b.piece_ids)[uniq[keep]])
    if not s_all:
        return _EMPTY
    # Divided by the most a piece can score per unit of query idf (k1 + 1, approached as a term
    # repeats), so the scale is [0, 1) and never saturates: two occurrences beat one, a piece with
    # every rare query term beats one with the common ones. (Capping raw/idf at 1 instead, as
    # before, tied most matches at the top: R@1 0.75 against 0.80 on bench_retrieval.py.)
    scores = (np.concatenate(s_all) / (norm * (keywords.K1 + 1))).astype(np.float32)
    ords = np.concatenate(o_all).astype(np.int32)
    pids = np.concatenate(p_all).astype(np.int64)
    return _group(np.arange(len(scores)), scores, ords, pids)


def _names(
    store: Store, cols: FileColumns, terms: list[str], runs: list[list[list[str]]], allowed: Mask
) -> _Signal:
    """Files whose name contains the query's words: the rarity-weighted share of the query found in
    the name, times how much of the name the query covers (so `latin1.txt` beats `latin1-été.txt`
    for the query "latin1.txt"); 1.0 when every word of the name is matched. A joined word of the
    query (`runs`: keywords.query_runs) counts only where the name has all of it: `MS_BIND` asks
    for nothing named `bind`."""
    blob, starts, words = _name_words(store, cols)
    n = len(cols)

    def credit_of(t: str) -> tuple[npt.NDArray[np.float32], float]:
        """Which names hold the word (1), or a word it starts (0.5), and its rarity weight."""
        whole = _files_matching(blob, starts, re.escape(f" {t} "))
        credit = np.zeros(n, dtype=np.float32)
        if len(t) >= 3:  # a started word ("invoic", "report" for "reports") counts half
            credit[_files_matching(blob, starts, re.escape(f" {t}"))] = 0.5
        credit[whole] = 1.0
        df = int((credit > 0).sum())
        return credit, float(np.log1p(n / (df + 0.5)))

    # Only a joined word's tokens are held until the whole word is judged; the rest add up at once
    # (a pasted paragraph's 64 words would otherwise hold 64 arrays the size of the index).
    in_joined = {t for run in runs if sum(map(len, run)) > 1 for word in run for t in word}
    held = {t: credit_of(t) for t in terms if t in in_joined}
    gated = _joined_credits({t: c for t, (c, _) in held.items()}, runs, n)
    score = np.zeros(n, dtype=np.float32)
    matched = np.zeros(n, dtype=np.float32)
    total = 0.0
    for t in terms:
        credit, w = held[t] if t in held else credit_of(t)
        credit = gated.get(t, credit)
        score += w * credit
        matched += credit
        total += w
    score /= total
    # The share of the name's own words that the query matched: 1 for a name the query spells out
    # (an exact name, extension included, also ranks first: see _exact_names).
    score *= 0.75 + 0.25 * np.minimum(matched / words, 1.0)
    hit = np.flatnonzero((score > 0) & allowed[:-1])
    return _Signal(hit.astype(np.int32), score[hit], np.full(len(hit), -1, dtype=np.int64))


def _joined_credits(
    credits: dict[str, npt.NDArray[np.float32]], runs: list[list[list[str]]], n: int
) -> dict[str, npt.NDArray[np.float32]]:
    """The name credits of the tokens of joined words (runs of more than one token), kept only in
    names that hold the whole run: each of its words whole, or all of that word's parts. A token
    the query also has on its own ("bind MS_BIND") keeps its credit everywhere."""
    joined = [run for run in runs if sum(map(len, run)) > 1]
    alone = {t for run in runs if sum(map(len, run)) == 1 for word in run for t in word}
    none = np.zeros(n, dtype=np.float32)
    out: dict[str, npt.NDArray[np.float32]] = {}
    for run in joined:
        held = np.ones(n, dtype=bool)
        for whole, *parts in run:
            has = credits.get(whole, none) > 0
            if parts:
                has |= np.logical_and.reduce([credits.get(p, none) > 0 for p in parts])
            held &= has
        for t in {t for word in run for t in word} & credits.keys() - alone:
            out[t] = np.maximum(out.get(t, none), np.where(held, credits[t], 0.0).astype(np.float32))
    return out


def _name_words(store: Store, cols: FileColumns) -> tuple[str, I64, npt.NDArray[np.float32]]:
    """Every name's words between newlines, where each begins, and how many words each has, its
    extension left out ("tax form 2023" covers tax_form_2023.pdf). Once per snapshot, with C-level
    maps (the warm thread builds it for each new snapshot, so searches after a commit do not)."""
    if "names" not in store.cache:
        starts = _starts(cols.name_keys, len(cols))
        spaces = np.fromiter(map(str.count, cols.name_keys, repeat(" ")), dtype=np.float32, count=len(cols))
        stems = map(str.lstrip, _basenames(store, cols), repeat("."))
        extension = np.fromiter(map(operator.contains, stems, repeat(".")), dtype=np.float32, count=len(cols))
        words = np.maximum(1.0, spaces - 1.0 - extension)
        store.cache["names"] = ("\n".join(cols.name_keys), starts, words)
    return store.cache["names"]  # type: ignore[no-any-return]


def exact_name_files(store: Store, query: str) -> set[str]:
    """Ids of the files whose whole name, or name without its extension, is the query: search()
    lists them first, and so must anything that merges its results."""
    cols = store.file_columns()
    return {cols.file_id(o) for o in _exact_names(store, cols, query)}


def _exact_names(store: Store, cols: FileColumns, query: str) -> list[int]:
    """Files whose whole name, or name without its extension, is the query (NFC, casefolded)."""
    q = unicodedata.normalize("NFC", query.strip()).casefold()
    if len(q) < 3 or "\0" in q:
        return []
    blob, starts = _whole_names(store, cols)
    # The whole name, or the name less its last extension ("report" for report.pdf, "a.tar" for
    # a.tar.gz); names are listed from position 1 of the blob, each after its NUL.
    return _files_matching(blob, starts, "\0" + re.escape(q) + "(?:\\.[^.\0]*)?(?=\0)").tolist()


def _whole_names(store: Store, cols: FileColumns) -> tuple[str, I64]:
    """Every name, NFC and casefolded, between NULs (the one character no file name holds),
    normalised and searched as one string, and where each begins: a few ms per 100k files, once per
    snapshot."""
    if "exact_names" not in store.cache:
        blob = unicodedata.normalize("NFC", "\0" + "\0".join(_basenames(store, cols)) + "\0").casefold()
        store.cache["exact_names"] = (blob, _starts(blob[1:-1].split("\0"), len(cols)))
    return store.cache["exact_names"]  # type: ignore[no-any-return]


def _basenames(store: Store, cols: FileColumns) -> list[str]:
    """The file names of a snapshot's files, in file order (cached with it)."""
    if "basenames" not in store.cache:
        store.cache["basenames"] = list(map(itemgetter(2), map(str.rpartition, cols.paths, repeat("/"))))
    return store.cache["basenames"]  # type: ignore[no-any-return]


def _starts(entries: Iterable[str], n: int) -> I64:
    """Where each of n entries begins in a blob that joins them with one separator character."""
    lengths = np.fromiter(map(len, entries), dtype=np.int64, count=n) + 1
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


def _files_matching(blob: str, starts: I64, pattern: str) -> npt.NDArray[np.intp]:
    """The files (ordinals) of a names blob, whose entries begin at `starts`, where `pattern` matches."""
    # The match positions through C-level maps: no Python call per match.
    pos = np.fromiter(map(re.Match.start, re.finditer(pattern, blob)), dtype=np.int64)
    return np.unique(np.searchsorted(starts, pos, side="right") - 1)


# --- hits --------------------------------------------------------------------------------------


def _hit(
    store: Store, cols: FileColumns, o: int, fused: float, c: list[float], terms: list[str], kw_weight: float
) -> Hit:
    v, vp, k, kp, n = c
    # Show the piece that contributed most: the best vector piece unless keywords outweigh it.
    best = int(vp) if vp >= 0 and (max(v, 0.0) >= kw_weight * k or kp < 0) else int(kp)
    file_id = cols.file_id(o)
    if best < 0:
        ids = store.pieces_of(file_id)
        best = int(ids[0][1:]) if ids else -1
    info = store.piece(f"p{best}") if best >= 0 else None
    path = cols.paths[o]
    name = os.path.basename(path)
    if info is None or info.modality == "image" or not info.text.strip():
        snippet = name
    else:
        snippet = snippet_of(info.text, terms)
    return Hit(
        path=path,
        score=float(fused),
        kind=KINDS[int(cols.kinds[o])],
        locator=info.locator if info else Locator(),
        snippet=snippet,
        file_id=file_id,
        piece_id=info.piece_id if info else "",
        scores={"vector": float(max(v, 0.0)), "keyword": float(k), "name": float(n)},
        date=int(cols.date_ns[o]) / 1e9,
    )


def snippet_of(text: str, terms: list[str], width: int = SNIPPET_CHARS) -> str:
    """About `width` characters of text around the first query word found, whitespace collapsed."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    folded = flat.casefold()
    hits = [folded.find(t) for t in terms] if len(folded) == len(flat) else []
    at = min((h for h in hits if h >= 0), default=0)
    start = max(0, at - width // 3)
    if start > 0:
        start = flat.rfind(" ", 0, start) + 1
    end = start + width
    if end < len(flat):
        cut = flat.rfind(" ", start, end)
        end = cut if cut > start else end
    return ("…" if start > 0 else "") + flat[start:end].strip() + ("…" if end < len(flat) else "")
