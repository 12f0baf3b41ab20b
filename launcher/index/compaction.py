"""Index upkeep at commit: size-tiered merges of segments, and the vector partition's training and lists."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from launcher.index import keywords, partition
from launcher.index.manifest import (
    F32,
    I64,
    Mask,
    _lists_name,
)
from launcher.index.segments import (
    PieceSegment,
    VectorSegment,
    contains_sorted,
    fsync_file,
    save_npy,
)

MERGE_FACTOR = 8  # this many segments of one size tier are merged into one
DEAD_FRACTION = 0.3  # a segment with more dead rows than this is rewritten without them


class Compaction:
    """The writer's upkeep at commit: merging segments and keeping the partition current.

    Mixed into Writer, whose root, dims and segment names (`_name`) it uses."""

    root: Path
    dims: int

    def _name(self, prefix: str, gen: int) -> str:
        raise NotImplementedError

    # partition (launcher/index/partition.py)

    def _partition(self, gen: int, m: dict[str, Any], segs: dict[str, VectorSegment]) -> None:
        """Train, keep or drop the partition for the segments in m["vectors"], and write the list
        ids of every segment that lacks them for the current centroids."""
        entries: list[dict[str, Any]] = [dict(e) for e in m["vectors"]]  # never edit the old manifest's
        m["vectors"] = entries
        rows = sum(int(e["rows"]) for e in entries)
        part = m.get("partition")
        if not partition.wanted(rows, self.dims):
            m.pop("partition", None)
            for e in entries:
                e.pop("lists", None)
            return
        cent: F32 | None = None
        if part is None or partition.needs_retraining(rows, int(part["trained_on"])):
            lists = partition.n_lists(int(rows * partition.RETRAIN_GROWTH))  # sized for its lifetime
            cent = partition.train(
                self._sample([segs[e["name"]] for e in entries], lists * partition.SAMPLE_PER_LIST), lists
            )
            cname = self._name("c", gen)
            save_npy(self.root / f"{cname}.npy", cent)
            part = {"name": cname, "lists": len(cent), "trained_on": rows}
            m["partition"] = part
        for e in entries:
            if e.get("lists") == part["name"]:
                continue
            if cent is None:  # read only when a segment lacks its lists (not for commits without vectors)
                cent = np.load(self.root / f"{part['name']}.npy")
            path = self.root / _lists_name(e["name"], part["name"])
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a leftover of an interrupted commit
            save_npy(path, partition.assign(segs[e["name"]].vectors, cent))
            e["lists"] = part["name"]

    @staticmethod
    def _sample(segs: Sequence[VectorSegment], count: int) -> F32:
        """About `count` rows drawn uniformly from the segments, decoded to float32."""
        total = sum(len(s) for s in segs)
        rng = np.random.default_rng(partition.SEED)
        picks = np.sort(rng.choice(total, min(count, total), replace=False))
        out = []
        start = 0
        for s in segs:
            mine = picks[(picks >= start) & (picks < start + len(s))] - start
            if len(mine):
                out.append(s.floats(mine))
            start += len(s)
        return np.concatenate(out).astype(np.float32)

    # compaction

    def _compact(
        self,
        gen: int,
        entries: list[dict[str, Any]],
        segs: dict[str, Any],
        live_files: I64,
        merge: Any,
    ) -> list[dict[str, Any]]:
        """Drop empty segments, rewrite mostly-dead ones, merge MERGE_FACTOR of a size tier."""
        alive: dict[str, Mask] = {
            e["name"]: contains_sorted(live_files, np.asarray(segs[e["name"]].files)) for e in entries
        }
        kept: list[dict[str, Any]] = []
        groups: list[list[dict[str, Any]]] = []
        tiers: dict[int, list[dict[str, Any]]] = {}
        for e in entries:
            n_live = int(alive[e["name"]].sum())
            if n_live == 0:
                continue
            if n_live < (1 - DEAD_FRACTION) * e["rows"]:
                groups.append([e])
                continue
            tiers.setdefault(int(math.log(n_live, MERGE_FACTOR)), []).append(e)
        for tier in tiers.values():
            if len(tier) >= MERGE_FACTOR:
                groups.append(tier)
            else:
                kept += tier
        for group in groups:
            kept.append(
                merge(
                    self._name(group[0]["name"][0], gen), [(segs[e["name"]], alive[e["name"]]) for e in group]
                )
            )
            segs[kept[-1]["name"]] = (PieceSegment if kept[-1]["name"][0] == "p" else VectorSegment)(
                self.root, kept[-1]["name"]
            )
        # Keep the manifest in id order: older segments first, like the pieces themselves.
        return sorted(kept, key=lambda e: int(np.asarray(segs[e["name"]].ids[0])))

    @staticmethod
    def _gather(
        parts: Sequence[tuple[Any, Mask]],
    ) -> tuple[I64, I64, list[tuple[int, I64]], npt.NDArray[np.intp]]:
        """Live rows of several segments in piece-id order: ids, files, (segment, rows), order."""
        rows = [np.flatnonzero(keep) for _, keep in parts]
        ids = np.concatenate([np.asarray(seg.ids)[r] for (seg, _), r in zip(parts, rows, strict=True)])
        files = np.concatenate([np.asarray(seg.files)[r] for (seg, _), r in zip(parts, rows, strict=True)])
        order = np.argsort(ids, kind="stable")
        return ids[order], files[order], list(enumerate(rows)), order

    def _merge_pieces(self, name: str, parts: Sequence[tuple[PieceSegment, Mask]]) -> dict[str, Any]:
        ids, files, rows, order = self._gather(parts)
        src = np.concatenate([np.full(len(r), k) for k, r in rows])
        src_row = np.concatenate([r for _, r in rows])
        position = np.empty(len(order), dtype=np.int64)
        position[order] = np.arange(len(order))
        remaps = []
        start = 0
        for (seg, _), (_, r) in zip(parts, rows, strict=True):
            new_row = np.full(len(seg), -1, dtype=np.int64)
            new_row[r] = position[start : start + len(r)]
            remaps.append((seg.postings, new_row))
            start += len(r)
        post = keywords.merge_postings(remaps)
        lines = [parts[int(src[i])][0].line(int(src_row[i])) for i in order]
        nbytes = PieceSegment.write(self.root, name, ids, files, lines, post)
        return {"name": name, "rows": len(ids), "bytes": nbytes}

    def _merge_vectors(self, name: str, parts: Sequence[tuple[VectorSegment, Mask]]) -> dict[str, Any]:
        ids, files, rows, order = self._gather(parts)
        src = np.concatenate([np.full(len(r), k) for k, r in rows])
        src_row = np.concatenate([r for _, r in rows])
        dtype = parts[0][0].vectors.dtype
        path = self.root / f"{name}.vec.npy"
        # Created empty and private first: open_memmap would make it with the umask's mode.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(len(ids), self.dims))
        scales = np.empty(len(ids), dtype=np.float32) if dtype == np.int8 else None
        chunk = 65536  # bounded memory: a merge never holds all vectors at once
        for a in range(0, len(ids), chunk):
            sel = order[a : a + chunk]
            s, r = src[sel], src_row[sel]
            for k in np.unique(s):
                hit = s == k
                seg = parts[int(k)][0]
                out[a : a + len(sel)][hit] = seg.vectors[r[hit]]
                if scales is not None and seg.scales is not None:
                    scales[a : a + len(sel)][hit] = seg.scales[r[hit]]
        out.flush()
        del out
        nbytes = fsync_file(path) + VectorSegment.write_index(self.root, name, ids, files, scales)
        return {"name": name, "rows": len(ids), "bytes": nbytes}
