"""A coarse partition of the vector rows, so that search reads a few percent of a large index.

Exact search reads every stored vector: at a million 1024-dim int8 rows that is 1 GB per query,
~200 ms on two laptop cores. Past PARTITION_MIN_VALUES stored values the index also keeps an
inverted-file partition (IVF, as in FAISS's IndexIVFFlat, here in plain NumPy):

- **centroids**: `c-<gen>-<tag>.npy`, (lists, dims) float32 unit rows from spherical k-means on
  a sample of the stored vectors; the manifest names it under "partition", with the row count it
  was trained on. It is retrained (and every segment re-assigned) when the index has grown past
  RETRAIN_GROWTH times that count, so lists stay ~sqrt(rows) long.
- **list ids**: `<vector segment>.<centroids name>.lists.npy`, uint16 per row: the centroid
  nearest to the row (argmax of the dot product; the int8 scale is positive, so it does not change
  the argmax). Written for each new or merged segment at commit; the segment's manifest entry
  says which centroids its lists belong to.

A query scores the centroids (lists x dims, ~1 MB), takes the `probe` best lists, and scores only
the rows in them, exactly, from the stored vectors; search.py handles filters and the rows it needs
beyond the probed lists. The recall this costs is measured in bench/bench_search.py. Every file
written here is immutable and named by the manifest, like the segments (see store.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
Lists = npt.NDArray[np.uint16]

# Partition an index once it stores more than this many values (rows x dims): 2^28 is 262k rows
# at 1024 dims, 131k at 2048, 1M at 256. Below it exact search takes <= ~55 ms on two cores, and
# bench_search.py measured the partition's recall falling on small indexes (0.95 at 100k x 2048
# with a fifth of the rows read, against 0.993 at 1M x 1024 with a few percent).
PARTITION_MIN_VALUES = 1 << 28
RETRAIN_GROWTH = 2.0  # retrain when the index has grown to this multiple of the trained rows
MIN_LISTS, MAX_LISTS = 64, 4096  # uint16 list ids; ~sqrt(rows) lists
SAMPLE_PER_LIST = 48  # k-means sample: this many rows per list (FAISS warns below 39)
ITERATIONS = 10
SPLIT_ABOVE = 2.0  # lists with more than this times the mean share are split ...
SPLIT_ROUNDS = 3  # ... this many times at most
ASSIGN_ROWS = 16384  # rows decoded at a time when assigning
SEED = 1234


def wanted(rows: int, dims: int) -> bool:
    """Whether an index of this size is partitioned."""
    return rows * dims > PARTITION_MIN_VALUES


def n_lists(rows: int) -> int:
    """The number of lists for `rows` rows: the power of two nearest sqrt(rows), clamped."""
    return int(min(MAX_LISTS, max(MIN_LISTS, 2 ** round(math.log2(max(1.0, math.sqrt(rows)))))))


def needs_retraining(rows: int, trained_on: int) -> bool:
    """Whether centroids trained on `trained_on` rows are too few for `rows` rows now."""
    return rows > RETRAIN_GROWTH * trained_on


def train(sample: F32, lists: int, *, iterations: int = ITERATIONS, seed: int = SEED) -> F32:
    """`lists` centroids by spherical k-means, then every list holding more than SPLIT_ABOVE times
    the mean share of the sample split by k-means on its own rows (up to SPLIT_ROUNDS times), so
    the dense regions of a collection (thousands of near-identical screenshots, one big project)
    do not make lists that every nearby query must read whole. The count may end above `lists`."""
    cent = _kmeans(sample, lists, iterations, seed)
    mean = len(sample) / lists
    for _ in range(SPLIT_ROUNDS):
        assign = _nearest(sample, cent)
        counts = np.bincount(assign, minlength=len(cent))
        big = np.flatnonzero(counts > SPLIT_ABOVE * mean)
        if not len(big) or len(cent) + len(big) > MAX_LISTS:
            break
        parts = [np.delete(cent, big, axis=0)]
        for j in big:
            rows = sample[assign == j]
            parts.append(_kmeans(rows, min(len(rows), math.ceil(counts[j] / mean)), iterations, seed))
        cent = np.concatenate(parts).astype(np.float32)
    return cent[:MAX_LISTS]


def _kmeans(sample: F32, lists: int, iterations: int, seed: int) -> F32:
    """Spherical k-means: `lists` unit centroids for the unit rows of `sample` (float32)."""
    rng = np.random.default_rng(seed)
    n = len(sample)
    if n < lists:
        raise ValueError(f"k-means needs at least {lists} rows, got {n}")
    cent = sample[rng.choice(n, lists, replace=False)].copy()
    for _ in range(iterations):
        assign = _nearest(sample, cent)
        sums = _sums(sample, assign, lists)
        norms = np.linalg.norm(sums, axis=1)
        empty = norms == 0
        if empty.any():  # reseed an empty list with random rows, as FAISS does
            sums[empty] = sample[rng.choice(n, int(empty.sum()), replace=False)]
            norms[empty] = np.linalg.norm(sums[empty], axis=1)
        cent = (sums / norms[:, None]).astype(np.float32)
    return cent


def assign(vectors: npt.NDArray[Any], centroids: F32) -> Lists:
    """The nearest centroid of every stored row (float32, float16 or int8), block by block."""
    out = np.empty(len(vectors), dtype=np.uint16)
    for a in range(0, len(vectors), ASSIGN_ROWS):
        block = np.asarray(vectors[a : a + ASSIGN_ROWS], dtype=np.float32)
        out[a : a + len(block)] = _nearest(block, centroids)
    return out


def probe(
    centroids: F32, q: F32, count: int, sizes: npt.NDArray[np.int64] | None = None, min_rows: int = 0
) -> npt.NDArray[np.bool_]:
    """A mask over the lists: the `count` whose centroids are nearest the query, and further ones
    in that order until they hold at least `min_rows` rows (`sizes`: rows per list)."""
    scores = centroids @ q
    order = np.argsort(-scores, kind="stable")
    take = min(count, len(scores))
    if sizes is not None and min_rows > 0:
        covered = np.cumsum(sizes[order])
        take = max(take, min(len(scores), int(np.searchsorted(covered, min_rows)) + 1))
    mask = np.zeros(len(scores), dtype=bool)
    mask[order[:take]] = True
    return mask


def _sums(rows: F32, assign: npt.NDArray[np.intp], lists: int) -> F32:
    """Per-list sums of the rows (sorted by list, then np.add.reduceat: np.add.at is ~50x slower)."""
    order = np.argsort(assign, kind="stable")
    counts = np.bincount(assign, minlength=lists)
    sums = np.zeros((lists, rows.shape[1]), dtype=np.float32)
    filled = np.flatnonzero(counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[filled]
    sums[filled] = np.add.reduceat(rows[order], starts, axis=0)
    return sums


def _nearest(rows: F32, centroids: F32) -> npt.NDArray[np.intp]:
    return np.argmax(rows @ centroids.T, axis=1)  # type: ignore[no-any-return]
