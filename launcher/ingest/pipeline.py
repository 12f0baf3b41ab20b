"""The indexing job: scan -> diff -> extract -> store (keyword first) -> embed (most useful first).

Two passes, so the index is useful from the first minute:
1. read: every new or changed file is extracted and its pieces stored WITHOUT vectors, so names
   and text are searchable (keyword and name) as soon as they are read;
2. embed: pending pieces are embedded file by file, recently modified and small files first,
   committed every few seconds. A bounded look-ahead thread extracts the next files while the
   model works on the current one. Killing the job at any moment loses at most the last few
   seconds of work; a rerun continues with what is still pending.
"""

from __future__ import annotations

import bisect
import collections
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from launcher.core.errors import LauncherError, first_line
from launcher.core.gcpause import paused_gc
from launcher.core.paths import folder_prefix, inside_any, unique_paths
from launcher.core.records import FileRecord, Piece, Skip
from launcher.index import keywords, scanstate
from launcher.index.gone import GONE, take_gone
from launcher.index.info import FileInfo, PieceMeta
from launcher.index.roots import DEFAULT_MAX_FILE_BYTES, ScanOptions, merge_roots, root_of
from launcher.index.store import Store, Stored
from launcher.index.writer import Writer
from launcher.ingest import diff as diff_stage
from launcher.ingest import scan as scan_stage
from launcher.ingest.extract import ExtractError, ExtractSettings, extract
from launcher.ingest.extract.chunk import TokenBudget
from launcher.ingest.extract.image import taken_ns
from launcher.models.embed import DOCUMENT_INSTRUCTION, Embedder, EmbedInput
from launcher.models.embed.base import PROMPT_ROOM

log = logging.getLogger("launcher.indexer")

PIPELINE_VERSION = 4  # bump when extraction or the embedding input format changes: forces re-embed
# Commit at least this often while working: a kill loses at most this much work.
COMMIT_SECONDS = float(os.environ.get("LAUNCHER_COMMIT_SECONDS", "5"))
# The embed pass reads ahead while the model works, up to this many bytes of pieces (pixels as the
# model will see them, text) and this many files, whichever comes first; a single file bigger than
# the budget still goes through, alone.
LOOKAHEAD_BYTES = 64 * 1024 * 1024
LOOKAHEAD_FILES = 16
# A file read ahead: its id, the record asked for, and what was read (the record of the version read,
# its content hash and pieces), or why it could not be read, or None for a file that is gone.
ReadAhead = tuple[str, FileRecord, tuple[FileRecord, str, list[Piece]] | str | None]
EMBED_SLICE = 64  # pieces of one file handed to the model at once


@dataclass
class IndexOptions:
    """What to index and how; the CLI fills it from flags, env and config."""

    excludes: Sequence[str] = ()
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    include_hidden: bool = False
    follow_symlinks: bool = False
    dims: int | None = None
    storage: str = "int8"
    instruction: str = DOCUMENT_INSTRUCTION
    extract: ExtractSettings = field(default_factory=ExtractSettings)
    embed: bool = True  # False: read pass only (names and text searchable, vectors later)
    chunk_tokens: int | None = None  # text tokens a piece aims at; None: the model's own default
    retry_failed: bool = False  # read failed files again and embed failed pieces again


@dataclass
class _Walked:
    """What a run's walk found (before the writer opens): the folders walked, the roots they
    leave the index with, the skips, and the files as columns."""

    folders: list[str]
    merged: dict[str, ScanOptions]
    skipped: list[Skip]
    paths: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    mtimes: list[int] = field(default_factory=list)


@dataclass
class IndexReport:
    """What a run did, for the summary line and `--json`."""

    unchanged: int = 0
    new: int = 0
    changed: int = 0
    moved: int = 0
    removed: int = 0
    skipped: list[Skip] = field(default_factory=list)
    failed: list[Skip] = field(default_factory=list)
    pieces_embedded: int = 0
    pieces_failed: int = 0
    pieces_pending: int = 0
    seconds: float = 0.0
    reset_reason: str | None = None
    deferred: list[str] = field(default_factory=list)  # paths left unread for now (defer, checkpoint)
    interrupted: bool = False  # a checkpoint or stop() ended the job early

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return {
            "unchanged": self.unchanged,
            "new": self.new,
            "changed": self.changed,
            "moved": self.moved,
            "removed": self.removed,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "failed": [{"path": s.path, "reason": s.reason} for s in self.failed],
            "pieces_embedded": self.pieces_embedded,
            "pieces_failed": self.pieces_failed,
            "pieces_pending": self.pieces_pending,
            "seconds": round(self.seconds, 3),
            "reset_reason": self.reset_reason,
        }


@dataclass
class Progress:
    """A progress event: phase ('scan', 'read', 'embed'), done and total units, and an ETA."""

    phase: str
    done: int
    total: int
    eta_s: float | None = None
    path: str | None = None


ProgressFn = Callable[[Progress], None]
# Called between files (phase "read") and between embedding units ("embed"); True stops the pass
# there, after a commit. The watcher uses it to pause, to give way to queries and to new events.
Checkpoint = Callable[[str], bool]


def _noop(_: Progress) -> None:
    pass


def embed_spans(alone: Sequence[bool], step: int) -> Iterator[tuple[int, int]]:
    """(start, end) ranges over len(alone) pieces, each at most `step` long, a piece marked `alone`
    in a range of its own."""
    a = 0
    n = len(alone)
    while a < n:
        b = a + 1
        if not alone[a]:
            while b < n and b - a < step and not alone[b]:
                b += 1
        yield a, b
        a = b


def token_budget(embedder: Embedder, options: IndexOptions) -> TokenBudget:
    """How pieces are measured for this model: its own tokenizer, its input limit (the whole prompt,
    instruction and file-name context included) and its target piece size."""
    limit = embedder.max_tokens
    # A piece leaves room for its prompt (PROMPT_ROOM, or half a small context).
    target = min(options.chunk_tokens or embedder.chunk_tokens, max(limit // 2, limit - PROMPT_ROOM))
    instruction = options.instruction

    def overhead(context: str) -> int:
        return embedder.input_tokens(EmbedInput(texts=[context], instruction=instruction))

    return TokenBudget(
        count=embedder.count_tokens,
        overhead=overhead,
        limit=limit,
        target=target,
        overlap=target // 6,
        image_tokens=embedder.image_tokens if embedder.supports_images else 0,
    )


# Identity keys that only image pieces (pictures, PDF pages, video frames) depend on: a change
# re-embeds those pieces and keeps the text vectors.
IMAGE_KEYS = ("image_max_pixels", "mmproj_fingerprint")
# Keys older indexes did not record: a missing one is recorded now, not taken for a change (those
# indexes were made with the defaults these stand for, unless settings said otherwise).
RECORDED_LATER = ("image_max_pixels", "flash_attn")


def identity_for(embedder: Embedder, options: IndexOptions) -> dict[str, object]:
    """Everything the stored vectors depend on: model, dims (beside it in the manifest), document
    instruction, chunking, flash attention, and the image budget; a difference re-embeds what it
    affects (see IMAGE_KEYS), everything otherwise."""
    budget = token_budget(embedder, options)
    ident = dict(embedder.identity())
    engine = getattr(embedder, "options", None)
    ident.update(
        {
            "pipeline_version": PIPELINE_VERSION,
            # An index recorded before this key was added used version 1 (see _take_over).
            "keywords": keywords.TOKENS_VERSION,
            "instruction": options.instruction,
            "images": bool(embedder.supports_images),
            "chunking": {
                "unit": "model tokens",
                "target": budget.target,
                "overlap": budget.overlap,
                "limit": budget.limit,
            },
            # llama.cpp's flash-attention kernel changes every vector slightly.
            "flash_attn": bool(getattr(engine, "flash_attn", False)),
        }
    )
    if embedder.supports_images and engine is not None:
        # Visual tokens per image (256 on the CPU, 1800 with --gpu-layers by default).
        ident["image_max_pixels"] = int(engine.image_max_pixels)
    return ident


def same_pieces(old: Any, new: Any) -> bool:
    """True when two recorded chunkings cut the same pieces: they differ at most in the context's
    size (`limit`), which only shortens the prompt of a file whose path alone would crowd a piece
    (see ingest.extract.base.fit_context). The context is sized to need, so a new default or --ctx
    never re-embeds an index; a piece over a smaller context fails alone, with its reason."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return False
    return {k: v for k, v in old.items() if k != "limit"} == {k: v for k, v in new.items() if k != "limit"}


def document_instruction(identity: dict[str, Any] | None = None) -> str:
    """The instruction documents are embedded with: the `document_instruction` setting, else the one
    the index was built with (so a watcher never rebuilds an index by accident), else the default."""
    from launcher.core import config

    chosen = config.explicit("document_instruction")
    if chosen:
        return str(chosen)
    kept = (identity or {}).get("instruction")
    return str(kept) if isinstance(kept, str) and kept else DOCUMENT_INSTRUCTION


def kept_chunk_tokens(identity: dict[str, Any] | None) -> int | None:
    """The piece size an index was built with, for writers that were not told one."""
    chunking = (identity or {}).get("chunking")
    target = chunking.get("target") if isinstance(chunking, dict) else None
    return target if isinstance(target, int) and target > 0 else None


def embed_input_for(piece: Piece, instruction: str, *, images: bool) -> EmbedInput:
    """What the model sees for a piece: its context header (name, path) with its text or image."""
    if piece.modality == "image" and images and piece.image is not None:
        texts = [piece.context] if piece.context else []
        return EmbedInput(texts=texts, images=[piece.image], instruction=instruction)
    body = f"{piece.context}\n{piece.text}" if piece.text else piece.context
    return EmbedInput(texts=[body], instruction=instruction)


def _places_moved(writer: Writer, file_id: str, pieces: Sequence[Piece]) -> bool:
    """Whether decoding placed a file's pieces elsewhere than the stored ones (a video's frames:
    the read pass stores the sample times, decoding finds each frame's own)."""
    store = writer.snapshot()
    stored = [store.piece(pid) for pid in writer.pieces_of(file_id)]
    return any(s is None or s.locator != p.locator for s, p in zip(stored, pieces, strict=False))


def pieces_for_model(pieces: list[Piece], *, images: bool) -> list[Piece]:
    """Drop image pieces a text-only model cannot use; a lone image keeps a name-only piece."""
    if images:
        return pieces
    kept = [p for p in pieces if p.modality != "image"]
    if not kept and pieces:
        first = pieces[0]
        kept = [Piece(text=first.text or "", locator=first.locator, context=first.context, modality="text")]
    return kept


class Indexer:
    """Runs indexing jobs against one index directory with one embedder."""

    def __init__(
        self,
        index_dir: Path,
        embedder: Embedder,
        options: IndexOptions | None = None,
        root_options: Mapping[str, ScanOptions] | None = None,
    ):
        self.index_dir = Path(index_dir)
        self.embedder = embedder
        self.options = options or IndexOptions()
        # Scan options chosen for some roots (flags); other roots keep what the index remembers.
        self.root_options = {str(k): v for k, v in (root_options or {}).items()}
        self._roots: dict[str, ScanOptions] = {}  # the roots of the job under way, with their options
        self.notes: list[str] = []  # one line each: why pieces were embedded again
        self.images = bool(embedder.supports_images)
        self._stop = threading.Event()
        # The last writer opened: its last commit is a snapshot the next writer builds on, reading
        # only the file-table deltas committed since (a watcher's update on a 100k-file index
        # would otherwise parse the whole table again for every batch of events).
        self._last_writer: Writer | None = None
        settings = replace(self.options.extract, budget=token_budget(embedder, self.options))
        if not self.images:
            # Page renders and video frames are useless to a text-only model: don't make them.
            settings = replace(settings, pdf_render=False, video_max_frames=0)
        self.extract_settings = settings

    def stop(self) -> None:
        """Ask a running job to stop at the next commit point."""
        self._stop.set()

    # -- the jobs --------------------------------------------------------------------------------

    def open_writer(self, *, reset_on_mismatch: bool = True) -> Writer:
        """The index's one writer for this model (StoreLocked while another process writes).

        A different model or pipeline resets the index (never mixing vectors), or raises
        ModelMismatch with reset_on_mismatch=False."""

        previous = self._last_writer.snapshot() if self._last_writer is not None else None

        def opened(adopt: tuple[str, ...]) -> Writer:
            return Store.open_writer(
                self.index_dir,
                identity_for(self.embedder, self.options),
                dims=self.options.dims or self.embedder.dims,
                dtype=self.options.storage,  # type: ignore[arg-type]
                on_mismatch="reset" if reset_on_mismatch else "raise",
                adopt=adopt,
                previous=previous,
            )

        writer = opened((*IMAGE_KEYS, *RECORDED_LATER, "keywords", "chunking"))
        if "chunking" in writer.adopted and not same_pieces(*writer.adopted["chunking"]):
            # Another piece size: the pieces change, as with any other identity change.
            writer.close()
            writer = opened((*IMAGE_KEYS, *RECORDED_LATER, "keywords"))
        try:
            self._take_over(writer)
        except BaseException:
            writer.close()
            raise
        self._last_writer = writer
        return writer

    def _take_over(self, writer: Writer) -> None:
        """Apply an identity change the index was kept through: keys it did not record yet are just
        recorded; a flash-attention change re-embeds everything; an image budget or projector change
        re-embeds the image pieces and keeps every text vector; new keyword tokens rebuild every
        file's postings from its stored pieces, keeping every vector."""
        changes = writer.adopted
        if not changes:
            return
        recorded = {k for k, (old, _) in changes.items() if old is None and k in RECORDED_LATER}
        if "chunking" in changes:  # only the context's size changed (open_writer): same pieces
            recorded.add("chunking")
        real = {k: v for k, v in changes.items() if k not in recorded}
        why = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in real.items())
        if "flash_attn" in real:
            self.notes.append(f"every piece is embedded again ({why})")
            for info in list(writer.files()):
                if info.n_pieces:
                    self._readd(writer, info, lambda _meta: False)
        else:
            images = any(k != "keywords" for k in real)
            count = words = 0
            for info in list(writer.files()):
                if not info.n_pieces:
                    continue
                if images and info.kind in ("image", "pdf", "video"):
                    count += self._readd(writer, info, lambda meta: meta.modality != "image")
                elif "keywords" in real:
                    words += self._readd(writer, info, lambda _meta: True)
            if images:
                self.notes.append(
                    f"pictures, pages and frames are embedded again, text is kept ({why}): {count} files"
                )
            if "keywords" in real:
                self.notes.append(f"keyword postings rebuilt, every vector kept ({why}): {words} files")
        for note in self.notes:
            log.info("%s", note)
        writer.commit()

    def _readd(self, writer: Writer, info: FileInfo, keep: Callable[[PieceMeta], bool]) -> int:
        """Store a file's pieces again without vectors, except those `keep` says keep theirs."""
        store = writer.snapshot()
        old_ids = writer.pieces_of(info.file_id)
        metas: list[PieceMeta] = []
        embedded: list[bool] = []
        for pid in old_ids:
            piece = store.piece(pid)
            if piece is None:
                return 0  # not committed yet: nothing embedded to redo
            metas.append(PieceMeta(piece.text, piece.locator, piece.modality))
            embedded.append(piece.has_vector)
        kept = [i for i, m in enumerate(metas) if keep(m) and embedded[i]]
        vectors = store.vectors_of([old_ids[i] for i in kept]) if kept else None
        rec = FileRecord(info.path, info.size, info.mtime_ns, info.kind)
        _, new_ids = writer.add_file(rec, info.content_hash, metas)
        if vectors is not None:
            # Decoded int8 or float16 rows are a hair off unit length: renormalise.
            vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
            writer.set_vectors([new_ids[i] for i in kept], vectors)
        return 1

    def run(
        self,
        roots: Sequence[str | Path] | None,
        progress: ProgressFn = _noop,
        *,
        checkpoint: Checkpoint | None = None,
        defer: Callable[[FileRecord], bool] | None = None,
        reset_on_mismatch: bool = True,
    ) -> IndexReport:
        """Add `roots` to the index's roots and index them fully: scan, diff, read pass, embed pass.
        None refreshes every root (a root missing from disk, e.g. an unmounted drive, keeps its
        entries and is reported as skipped).

        `checkpoint` may stop the read and embed passes early; `defer` names files not to read now
        (both end up in report.deferred, to be read later)."""
        started = time.monotonic()
        report = IndexReport()
        # The walk comes first, with the roots the manifest names: when the recorded scan state
        # says it matches the index and nothing else waits, the file table is never read.
        stored = Stored.read(self.index_dir)
        walked = self._walked(roots, stored.root_options(), progress) if stored is not None else None
        if stored is not None and walked is not None and self._nothing_to_do(stored, walked, report):
            report.seconds = time.monotonic() - started
            return report
        with self.open_writer(reset_on_mismatch=reset_on_mismatch) as writer:
            report.reset_reason = writer.reset_reason
            if self.options.retry_failed:
                writer.retry_failed()  # failed files are forgotten: the scan below finds them new
            current = writer.root_options()
            if walked is None or walked.merged != self._roots_after(walked.folders, current):
                walked = self._walked(roots, current, progress)  # another writer changed the roots
            writer.set_roots(walked.merged)
            self._roots = walked.merged
            report.removed += self._drop_gone(writer)
            report.skipped += walked.skipped
            with paused_gc():  # 100k files: a million acyclic objects the collector would only rescan
                indexed = writer.indexed_under(walked.folders)
                plan = diff_stage.plan_files(walked.paths, walked.sizes, walked.mtimes, indexed)
            self._backfill_taken(writer)  # committed with the removals and moves below
            self._apply(writer, plan, walked.folders, report, progress, checkpoint, defer)
            self._finish(writer, report, progress, checkpoint)
        # What the next run compares its walk with, if nothing commits in between.
        untaken = len(writer.pictures_without_taken())
        scanstate.write(self.index_dir, writer.snapshot(), writer.pending_count(), untaken, walked.paths)
        report.seconds = time.monotonic() - started
        return report

    def _walked(
        self, roots: Sequence[str | Path] | None, current: Mapping[str, ScanOptions], progress: ProgressFn
    ) -> _Walked:
        """Walk what a run of `roots` covers, given the index's roots and their options: every root
        (None; a root missing from disk, e.g. an unmounted drive, keeps its entries and is reported
        as skipped), or these folders, which join the roots (a folder inside a root is refreshed
        with that root's options and not added)."""
        skipped: list[Skip] = []
        if roots is None:
            folders = [r for r in current if os.path.isdir(r)]
            skipped += [
                Skip(r, "folder not found: its files stay indexed (`launcher forget` drops them)")
                for r in current
                if r not in folders
            ]
        else:
            folders = unique_paths([str(Path(r).expanduser().resolve()) for r in roots])
        walked = _Walked(folders, self._roots_after(folders, current), skipped)
        shown = 0
        with paused_gc():  # 100k files: a million acyclic objects the collector would only rescan
            for item in self._walk(folders, walked.merged):
                if isinstance(item, Skip):
                    walked.skipped.append(item)
                else:
                    walked.paths += item.paths
                    walked.sizes += item.sizes
                    walked.mtimes += item.mtimes
                if len(walked.paths) - shown >= 1000:
                    shown = len(walked.paths)
                    progress(Progress("scan", shown + len(walked.skipped), 0))
        scanned = len(walked.paths) + len(walked.skipped)
        progress(Progress("scan", scanned, scanned))
        return walked

    def _roots_after(self, folders: list[str], current: Mapping[str, ScanOptions]) -> dict[str, ScanOptions]:
        """The index's roots once a run has walked `folders`, each with its options."""
        return merge_roots(current, {f: self.options_for(f, current) for f in folders})

    def _nothing_to_do(self, stored: Stored, walked: _Walked, report: IndexReport) -> bool:
        """Whether the walk matches the index at its last commit, so that a run would change nothing:
        the same model and settings, the same roots, nothing queued, pending (when embedding),
        failed to retry or left to look up, the same skips, and every file unchanged. Then the
        report is filled in and no writer is opened."""
        m = stored.manifest
        if (
            self.options.retry_failed
            or (self.index_dir / GONE).exists()
            or walked.merged != stored.root_options()
        ):
            return False
        identity = json.loads(json.dumps(identity_for(self.embedder, self.options)))
        dims = self.options.dims or self.embedder.dims
        if (m.get("identity"), m.get("dims"), m.get("dtype")) != (identity, dims, self.options.storage):
            return False
        state = scanstate.read(self.index_dir, m)
        if state is None or state.untaken or (self.options.embed and state.pending):
            return False
        if any(state.skips.get(s.path) != s.reason for s in walked.skipped):
            return False
        reported = {s.path for s in walked.skipped}
        if any(inside_any(p, walked.folders) and p not in reported for p in state.skips):
            return False  # a recorded skip the walk no longer meets: the writer forgets it
        paths, sizes, mtimes = state.under(walked.folders)
        if not diff_stage.same_files(walked.paths, walked.sizes, walked.mtimes, paths, sizes, mtimes):
            return False
        report.unchanged = len(walked.paths)
        report.skipped += walked.skipped
        report.pieces_pending = state.pending
        return True

    def update(
        self,
        changed: Iterable[str] = (),
        removed: Iterable[str] = (),
        moves: Sequence[tuple[str, str]] = (),
        progress: ProgressFn = _noop,
        *,
        roots: Sequence[str] | None = None,
        checkpoint: Checkpoint | None = None,
        defer: Callable[[FileRecord], bool] | None = None,
    ) -> IndexReport:
        """Apply what a watcher saw, without scanning the whole tree.

        - moves (src, dst): each indexed file at or below src whose counterpart below dst has the
          indexed size and mtime is re-pathed, keeping its pieces and vectors; nothing is read;
        - removed: indexed files at or below these paths that are gone from disk are forgotten;
        - changed: each path (file or folder) is rescanned with the rules of a full scan of `roots`
          (default: the index's roots) and diffed against the indexed files at or below it: new and
          changed files are read, vanished ones removed, renames inside found by content hash.
        Then the embed pass, as in run(). A different model raises ModelMismatch: a partial
        update never resets the index."""
        started = time.monotonic()
        report = IndexReport()
        with self.open_writer(reset_on_mismatch=False) as writer:
            current = writer.root_options()
            roots = list(roots) if roots is not None else list(current)
            self._roots = {r: self.options_for(r, current) for r in roots}
            report.removed += self._drop_gone(writer)
            known = _PathIndex(writer)
            for src, dst in moves:
                report.moved += self._move(writer, known, src, dst)
            gone = [info for info in known.under(removed) if not os.path.exists(info.path)]
            for info in gone:
                writer.remove_file(info.file_id)
            report.removed += len(gone)
            scopes = [p for p in unique_paths(list(changed)) if inside_any(p, roots)]
            if scopes:
                records: list[FileRecord] = []
                for item in scan_stage.records(self._walk(scopes, self._roots)):
                    if isinstance(item, Skip):
                        report.skipped.append(item)
                    else:
                        records.append(item)
                plan = diff_stage.plan(records, _known(known.under(scopes)))
                self._apply(writer, plan, scopes, report, progress, checkpoint, defer)
            writer.commit()
            self._finish(writer, report, progress, checkpoint)
        report.seconds = time.monotonic() - started
        return report

    def drop_gone(self) -> int:
        """Remove the files that search found gone from disk (queued in the index folder)."""
        with self.open_writer(reset_on_mismatch=False) as writer:
            return self._drop_gone(writer)

    def _drop_gone(self, writer: Writer) -> int:
        removed = 0
        for path in take_gone(self.index_dir):
            info = writer.file_by_path(path)
            if info is not None and not os.path.lexists(path):
                writer.remove_file(info.file_id)
                removed += 1
        return removed

    def embed_pending(
        self, progress: ProgressFn = _noop, *, checkpoint: Checkpoint | None = None, unit: int | None = None
    ) -> IndexReport:
        """Embed the pieces still without vectors (recent and small files first) until done or
        until `checkpoint` says stop; `unit` pieces per model call (default: a whole file)."""
        started = time.monotonic()
        report = IndexReport()
        with self.open_writer(reset_on_mismatch=False) as writer:
            current = writer.root_options()
            self._roots = {r: self.options_for(r, current) for r in current}
            self._embed_pass(writer, report, progress, checkpoint, unit)
            report.pieces_pending = writer.pending_count()
        report.seconds = time.monotonic() - started
        return report

    def default_scan(self) -> ScanOptions:
        """The scan options of a root the index does not know yet and no flag chose: IndexOptions'."""
        return ScanOptions(
            excludes=tuple(self.options.excludes),
            include_hidden=self.options.include_hidden,
            follow_symlinks=self.options.follow_symlinks,
            max_file_bytes=self.options.max_file_bytes,
            max_image_pixels=self.options.extract.max_image_pixels,
        )

    def options_for(self, folder: str, current: Mapping[str, ScanOptions]) -> ScanOptions:
        """A folder's scan options: chosen for it, else remembered for it (or for the root that holds
        it), else the defaults."""
        if folder in self.root_options:
            return self.root_options[folder]
        root = root_of(folder, list(current))
        return current[root] if root is not None else self.default_scan()

    def _scan_settings(self, options: ScanOptions) -> dict[str, Any]:
        return {
            "excludes": options.excludes,
            "index_dir": self.index_dir,
            "max_file_bytes": options.max_file_bytes,
            "include_hidden": options.include_hidden,
            "follow_symlinks": options.follow_symlinks,
        }

    def _walk(
        self, folders: Sequence[str], roots: Mapping[str, ScanOptions]
    ) -> Iterator[scan_stage.Files | Skip]:
        """Scan each folder with the options of its root: a root whole, a folder inside one as a
        part of it (the root's ignore files and rules apply)."""
        for folder in unique_paths(list(folders)):
            root = root_of(folder, list(roots))
            if root is None:
                settings = self._scan_settings(self.options_for(folder, roots))
                yield from scan_stage.scan_files([folder], **settings)
            elif root == folder:
                yield from scan_stage.scan_files([folder], **self._scan_settings(roots[root]))
            else:
                yield from scan_stage.rescan_files([root], [folder], **self._scan_settings(roots[root]))

    def _extract_settings(self, path: str) -> ExtractSettings:
        """Extraction settings for a file: the pixel cap of its root."""
        root = root_of(path, list(self._roots))
        cap = self._roots[root].max_image_pixels if root is not None else None
        if cap is None or cap == self.extract_settings.max_image_pixels:
            return self.extract_settings
        return replace(self.extract_settings, max_image_pixels=cap)

    def _apply(
        self,
        writer: Writer,
        plan: diff_stage.Plan,
        scanned: Sequence[str],
        report: IndexReport,
        progress: ProgressFn,
        checkpoint: Checkpoint | None,
        defer: Callable[[FileRecord], bool] | None,
    ) -> None:
        """Carry out a diff: removals and moves first (cheap, committed at once), then the read pass."""
        candidates = [rec for rec, _ in plan.changed] + plan.new
        later = {rec.path for rec in candidates if defer is not None and defer(rec)}
        report.deferred += sorted(later)
        report.unchanged += plan.unchanged
        report.new += sum(rec.path not in later for rec in plan.new)
        report.changed += sum(rec.path not in later for rec, _ in plan.changed)
        report.moved += len(plan.moved)
        report.removed += len(plan.removed)
        for file_id in plan.removed:
            writer.remove_file(file_id)
        for rec, file_id, digest in plan.moved:
            writer.move_file(file_id, rec.path, rec.size, rec.mtime_ns, digest)
        writer.record_skips(report.skipped, replace_under=scanned)
        writer.commit()
        to_read = [rec for rec, _ in plan.changed if rec.path not in later]
        to_read += [rec for rec in plan.new if rec.path not in later]
        replaced = {rec.path: file_id for rec, file_id in plan.changed}
        self._read_pass(writer, to_read, replaced, report, progress, checkpoint)

    def _backfill_taken(self, writer: Writer) -> None:
        """Pictures indexed by a launcher that did not record when they were taken get it now:
        a header read each, once, instead of re-reading (and re-embedding) them."""
        for file_id, path in writer.pictures_without_taken():
            if self._stop.is_set():
                return
            writer.set_taken(file_id, taken_ns(path))

    def _finish(
        self, writer: Writer, report: IndexReport, progress: ProgressFn, checkpoint: Checkpoint | None
    ) -> None:
        if self.options.embed and not self._stop.is_set() and not report.interrupted:
            self._embed_pass(writer, report, progress, checkpoint, None)
        report.pieces_pending = writer.pending_count()
        writer.commit()

    def _move(self, writer: Writer, known: _PathIndex, src: str, dst: str) -> int:
        """Re-path the indexed files at or below src that now sit, unchanged, below dst."""
        moved = 0
        for info in known.under([src]):
            new_path = dst + info.path[len(src) :]
            try:
                st = os.stat(new_path)
            except OSError:
                continue
            same = st.st_size == info.size and st.st_mtime_ns == info.mtime_ns and stat.S_ISREG(st.st_mode)
            # A new extension is a new kind (notes -> notes.pdf): read it again rather than keep
            # pieces made the old way.
            if same and scan_stage.kind_of(new_path) == info.kind:
                writer.move_file(info.file_id, new_path, info.size, info.mtime_ns)
                known.moved_to(new_path)
                moved += 1
        return moved

    def _read_pass(
        self,
        writer: Writer,
        records: list[FileRecord],
        replaced: dict[str, str],
        report: IndexReport,
        progress: ProgressFn,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        last_commit = time.monotonic()
        for n, rec in enumerate(records, 1):
            if self._stop.is_set() or (checkpoint is not None and checkpoint("read")):
                report.interrupted = True
                report.deferred += [r.path for r in records[n - 1 :]]
                break
            old_id = replaced.get(rec.path)
            if old_id is not None:
                writer.remove_file(old_id)
            try:
                # Text and places only: pictures, pages and frames are decoded once, to be embedded.
                rec, digest, pieces = self._read_version(rec, decode_media=False)
            except ExtractError as exc:
                report.failed.append(Skip(rec.path, str(exc)))
                writer.record_failure(rec, str(exc))
                continue
            except OSError as exc:
                reason = f"cannot read: {exc.strerror or exc}".lower()
                report.failed.append(Skip(rec.path, reason))
                writer.record_failure(rec, reason)
                continue
            except LauncherError as exc:
                report.failed.append(Skip(rec.path, str(exc)))
                writer.record_failure(rec, str(exc))
                continue
            writer.add_file(rec, digest, [PieceMeta.from_piece(p) for p in pieces], taken_ns=_taken_of(rec))
            if time.monotonic() - last_commit > COMMIT_SECONDS:
                writer.commit()
                last_commit = time.monotonic()
            progress(Progress("read", n, len(records), path=rec.path))
        writer.commit()

    def _read_version(
        self, rec: FileRecord, *, decode_media: bool = True
    ) -> tuple[FileRecord, str, list[Piece]]:
        """One version of a file: its stat, content hash and pieces, all from the same bytes as far as
        the file system can tell (the stat before and after agree; a file being written is read
        again), so that text, snippets and vectors never mix two versions. Without `decode_media`
        image pieces come without pixels (the read pass); with it, each picture is decoded and made
        the size the model needs, here rather than in the model call."""
        settings = self._extract_settings(rec.path)
        if not (decode_media and self.images):
            settings = replace(settings, decode_media=False)
        for _ in range(3):
            st = os.stat(rec.path)
            now = FileRecord(rec.path, st.st_size, st.st_mtime_ns, rec.kind)
            digest = diff_stage.content_hash(now.path, now.size)
            pieces = pieces_for_model(extract(now, settings=settings), images=self.images)
            if settings.decode_media:
                pieces = [self._fitted(p) for p in pieces]
            after = os.stat(rec.path)
            if (after.st_size, after.st_mtime_ns) == (now.size, now.mtime_ns):
                break
        return now, digest, pieces

    def _embed_pass(
        self,
        writer: Writer,
        report: IndexReport,
        progress: ProgressFn,
        checkpoint: Checkpoint | None = None,
        unit: int | None = None,
    ) -> None:
        """Embed pending pieces file by file: recent and small files first."""
        work = writer.pending_by_file()  # file_id -> [piece ids in order]
        files = writer.files_by_id(list(work))
        order = sorted(work, key=lambda fid: (-files[fid].mtime_ns, files[fid].size, files[fid].path))
        total = sum(len(v) for v in work.values())
        done = 0
        started = time.monotonic()
        last_commit = started
        for file_id, rec, extracted in self._lookahead(order, files):
            if self._stop.is_set() or (checkpoint is not None and checkpoint("embed")):
                report.interrupted = True
                break
            piece_ids = work[file_id]
            if extracted is None:
                writer.remove_file(file_id)  # gone from disk since it was read
                done += len(piece_ids)
                continue
            if isinstance(extracted, str):
                # The file cannot be read any more: its waiting pieces fail with the reason (its text
                # stays searchable); it is read again when it changes.
                report.failed.append(Skip(rec.path, extracted))
                writer.fail_pieces(file_id, dict.fromkeys(piece_ids, extracted))
                report.pieces_failed += len(piece_ids)
                done += len(piece_ids)
                continue
            now_rec, digest, pieces = extracted
            stored = writer.file(file_id)
            if (
                (now_rec.size, now_rec.mtime_ns) != (rec.size, rec.mtime_ns)
                or len(pieces) != writer.piece_count(file_id)
                or (stored is not None and stored.content_hash not in ("", digest))
                or (rec.kind == "video" and _places_moved(writer, file_id, pieces))
            ):
                # The file changed since its text was stored (even in place, with the same size,
                # time stamp or piece count), or a video's frames were found at other times than
                # the read pass planned: store this version's pieces, so that text, snippets,
                # places and vectors all come from one version, and embed those.
                total += len(pieces) - len(piece_ids)
                file_id, piece_ids = writer.add_file(
                    now_rec,
                    digest,
                    [PieceMeta.from_piece(p) for p in pieces],
                    taken_ns=_taken_of(now_rec),
                )
                wanted = list(range(len(pieces)))
            else:
                wanted = writer.piece_positions(file_id, piece_ids)
            # A very long file is embedded (and committed) in slices, so a kill loses little of it.
            step = unit or min(len(wanted), EMBED_SLICE) or 1
            # Small units (the watcher's) give a picture or page a model call of its own: its vision
            # encode cannot be interrupted, and a picture query waits for the call under way.
            alone = [unit is not None and self.images and pieces[i].image is not None for i in wanted]
            failed: dict[str, str] = {}
            for a, b in embed_spans(alone, step):
                if a and checkpoint is not None and checkpoint("embed"):
                    # Stopped inside a file: its other pieces stay pending for the next pass.
                    report.interrupted = True
                    break
                ids = piece_ids[a:b]
                inputs = [
                    embed_input_for(pieces[i], self.options.instruction, images=self.images)
                    for i in wanted[a:b]
                ]
                failures = self._embed_into(writer, ids, inputs)
                failed.update(failures)
                report.pieces_embedded += len(inputs) - len(failures)
                done += len(inputs)
                if time.monotonic() - last_commit > COMMIT_SECONDS:
                    if failed:
                        writer.fail_pieces(file_id, failed)
                    writer.commit()
                    last_commit = time.monotonic()
            if failed:
                writer.fail_pieces(file_id, failed)
                report.pieces_failed += len(failed)
                summary = writer.file(file_id).error or ""  # type: ignore[union-attr]
                report.failed.append(Skip(rec.path, summary))
                log.info("%s: %s", rec.path, summary)
            if report.interrupted:
                break
            now = time.monotonic()
            rate = done / max(now - started, 1e-6)
            progress(
                Progress(
                    "embed", done, total, eta_s=(total - done) / rate if rate > 0 else None, path=rec.path
                )
            )
        writer.commit()

    def _embed_into(self, writer: Writer, piece_ids: list[str], inputs: list[EmbedInput]) -> dict[str, str]:
        """Embed pieces and store their vectors; returns the ones that failed, with one-line reasons.

        A batch that fails is retried one piece at a time, so one bad piece (too long, rejected by
        mtmd, a decode error, out of memory) fails alone and the others are embedded."""
        try:
            writer.set_vectors(piece_ids, self.embedder.embed(inputs, dims=self.options.dims))
            return {}
        except Exception as exc:
            if self._stop.is_set():
                raise  # shutting down: the model may be gone, which is no fault of the pieces
            if len(inputs) == 1:
                return {piece_ids[0]: failure_reason(exc)}
        failures: dict[str, str] = {}
        for pid, item in zip(piece_ids, inputs, strict=True):
            try:
                writer.set_vectors([pid], self.embedder.embed([item], dims=self.options.dims))
            except Exception as exc:
                if self._stop.is_set():
                    raise
                failures[pid] = failure_reason(exc)
        return failures

    def _fitted(self, piece: Piece) -> Piece:
        """An image piece whose decoded picture is made the size the model needs; others as they are.
        A page kept compressed until use (a PDF render) stays so: decoding it now would cost more
        memory than it saves."""
        image = piece.image
        if not isinstance(image, Image.Image) or getattr(image, "fp", None) is not None:
            return piece
        return replace(piece, image=self.embedder.fit_image(image))

    def _lookahead(self, order: list[str], files: dict[str, FileRecord]) -> Iterator[ReadAhead]:
        """Extract the next files in a thread while the caller embeds the current one, up to
        LOOKAHEAD_BYTES (or LOOKAHEAD_FILES) ahead; each comes with the record of the version that was
        read (its stat taken just before), or the reason it could not be read, or None for a file
        that is gone."""
        ready: collections.deque[tuple[ReadAhead, int]] = collections.deque()
        room = threading.Condition()
        held = 0  # bytes in `ready`
        finished = False
        stop = self._stop
        closing = threading.Event()

        def put(item: ReadAhead) -> None:
            nonlocal held
            size = _item_bytes(item)
            with room:
                # Wait for room; an empty queue always takes the next file, however big.
                while (
                    ready
                    and (held + size > LOOKAHEAD_BYTES or len(ready) >= LOOKAHEAD_FILES)
                    and not closing.is_set()
                ):
                    room.wait(0.1)
                ready.append((item, size))
                held += size
                room.notify_all()

        def produce() -> None:
            nonlocal finished
            try:
                for file_id in order:
                    if stop.is_set() or closing.is_set():
                        break
                    rec = files[file_id]
                    result: tuple[FileRecord, str, list[Piece]] | str
                    try:
                        try:
                            result = self._read_version(rec)
                        except FileNotFoundError:
                            put((file_id, rec, None))
                            continue
                    except ExtractError as exc:
                        result = str(exc)
                    except OSError as exc:
                        result = f"cannot read: {exc.strerror or exc}".lower()
                    except LauncherError as exc:
                        result = str(exc)
                    put((file_id, rec, result))
            finally:
                with room:
                    finished = True
                    room.notify_all()

        thread = threading.Thread(target=produce, name="launcher-extract", daemon=True)
        thread.start()
        try:
            while True:
                with room:
                    while not ready and not finished:
                        room.wait()
                    if not ready:
                        break
                    item, size = ready.popleft()
                    held -= size
                    room.notify_all()
                yield item
        finally:
            # The consumer may stop early: let the producer see it and end.
            closing.set()
            with room:
                room.notify_all()
            thread.join()


def _item_bytes(item: ReadAhead) -> int:
    """About how much memory a read-ahead file holds: its pieces' text and decoded pixels."""
    result = item[2]
    if not isinstance(result, tuple):
        return 0
    total = 0
    for piece in result[2]:
        total += len(piece.text) + len(piece.context)
        image = piece.image
        if isinstance(image, Image.Image):
            w, h = image.size
            total += w * h * len(image.getbands()) if getattr(image, "fp", None) is None else 0
    return total


def _taken_of(rec: FileRecord) -> int | None:
    """When a picture was taken (EXIF), for the date filters; None for other files."""
    return taken_ns(rec.path) if rec.kind == "image" else None


def failure_reason(exc: BaseException) -> str:
    """One lowercase line for an error while embedding a piece."""
    if isinstance(exc, LauncherError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory while embedding this piece"
    detail = first_line(exc)
    return f"unexpected {type(exc).__name__} while embedding" + (f": {detail}" if detail else "")


def _known(infos: Iterable[FileInfo]) -> dict[str, diff_stage.Known]:
    """What the diff compares a scan with."""
    return {i.path: diff_stage.Known(i.file_id, i.size, i.mtime_ns, i.content_hash, i.kind) for i in infos}


class _PathIndex:
    """The writer's files by path, sorted, so that "everything at or below P" is two binary searches
    (the store's known_under compares every file with every path: too slow for 10,000 events).
    What a path holds is asked of the writer, so moves and removals made during the update count,
    and no object is made per indexed file (a watcher's update on a 100k-file index made 100k)."""

    def __init__(self, writer: Writer) -> None:
        self._writer = writer
        self._sorted = sorted(writer.paths())
        # Paths that files moved to during this update, not yet in _sorted: merged (one sort) only
        # when a later lookup could need them, i.e. for a chain of moves (a -> b, then b -> c).
        self._fresh: list[str] = []

    def under(self, paths: Iterable[str]) -> list[FileInfo]:
        """Indexed files at or below any of `paths`, each once."""
        out: dict[str, FileInfo] = {}
        for path in paths:
            prefix = folder_prefix(path)
            if self._fresh and _prefix_range(self._fresh, prefix):
                self._sorted = sorted(set(self._sorted) | set(self._fresh))
                self._fresh = []
            for p in [path, *_prefix_range(self._sorted, prefix)]:
                info = self._writer.file_by_path(p)
                if info is not None:  # None: never indexed, moved away or removed during this update
                    out[p] = info
        return list(out.values())

    def moved_to(self, new_path: str) -> None:
        """A file was re-pathed to new_path during this update."""
        bisect.insort(self._fresh, new_path)


def _prefix_range(items: list[str], prefix: str) -> list[str]:
    """The items of a sorted list that start with prefix (which ends with the separator)."""
    # They sort between prefix and prefix with its last character bumped by one.
    lo = bisect.bisect_left(items, prefix)
    hi = bisect.bisect_left(items, prefix[:-1] + chr(ord(prefix[-1]) + 1))
    return items[lo:hi]
