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

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from launcher import diff as diff_stage
from launcher import scan as scan_stage
from launcher.engine import DOCUMENT_INSTRUCTION, Embedder, EmbedInput
from launcher.errors import InputError, LauncherError
from launcher.extract import ExtractError, ExtractSettings, extract
from launcher.records import FileRecord, Piece, Skip
from launcher.store import PieceMeta, Store, Writer

log = logging.getLogger("launcher.indexer")

PIPELINE_VERSION = 1  # bump when extraction or the embedding input format changes: forces re-embed
# Commit at least this often while working: a kill loses at most this much work.
COMMIT_SECONDS = float(os.environ.get("LAUNCHER_COMMIT_SECONDS", "5"))
LOOKAHEAD_FILES = 4


@dataclass
class IndexOptions:
    """What to index and how; the CLI fills it from flags, env and config."""

    excludes: Sequence[str] = ()
    max_file_bytes: int = scan_stage.DEFAULT_MAX_FILE_BYTES
    include_hidden: bool = False
    follow_symlinks: bool = False
    dims: int | None = None
    storage: str = "float16"
    instruction: str = DOCUMENT_INSTRUCTION
    extract: ExtractSettings = field(default_factory=ExtractSettings)
    embed: bool = True  # False: read pass only (names and text searchable, vectors later)


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
    pieces_pending: int = 0
    seconds: float = 0.0
    reset_reason: str | None = None

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


def _noop(_: Progress) -> None:
    pass


def identity_for(embedder: Embedder, options: IndexOptions) -> dict[str, object]:
    """Everything the stored vectors depend on; a difference means re-embedding from scratch."""
    ident = dict(embedder.identity())
    ident.update(
        {
            "pipeline_version": PIPELINE_VERSION,
            "instruction": options.instruction,
            "images": bool(embedder.supports_images),
            "chunk_lines": options.extract.chunk_lines,
            "chunk_overlap_lines": options.extract.chunk_overlap_lines,
            "max_chunk_chars": options.extract.max_chunk_chars,
        }
    )
    return ident


def embed_input_for(piece: Piece, instruction: str, *, images: bool) -> EmbedInput:
    """What the model sees for a piece: its context header (name, path) with its text or image."""
    if piece.modality == "image" and images and piece.image is not None:
        texts = [piece.context] if piece.context else []
        return EmbedInput(texts=texts, images=[piece.image], instruction=instruction)
    body = f"{piece.context}\n{piece.text}" if piece.text else piece.context
    return EmbedInput(texts=[body], instruction=instruction)


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

    def __init__(self, index_dir: Path, embedder: Embedder, options: IndexOptions | None = None):
        self.index_dir = Path(index_dir)
        self.embedder = embedder
        self.options = options or IndexOptions()
        self.images = bool(embedder.supports_images)
        self._stop = threading.Event()
        settings = self.options.extract
        if not self.images:
            # Page renders and video frames are useless to a text-only model: don't make them.
            from dataclasses import replace

            settings = replace(settings, pdf_render=False, video_max_frames=0)
        self.extract_settings = settings

    def stop(self) -> None:
        """Ask a running job to stop at the next commit point."""
        self._stop.set()

    # -- the job ---------------------------------------------------------------------------------

    def run(self, roots: Sequence[str | Path], progress: ProgressFn = _noop) -> IndexReport:
        """Index `roots` fully: scan, diff, read pass, embed pass."""
        started = time.monotonic()
        report = IndexReport()
        roots = [str(Path(r).expanduser().resolve()) for r in roots]
        identity = identity_for(self.embedder, self.options)
        with Store.open_writer(
            self.index_dir,
            identity,
            dims=self.options.dims or self.embedder.dims,
            dtype=self.options.storage,  # type: ignore[arg-type]
            on_mismatch="reset",  # another model: start a fresh index, never mix vectors
        ) as writer:
            report.reset_reason = writer.reset_reason
            writer.set_roots(roots)
            records: list[FileRecord] = []
            for i, item in enumerate(
                scan_stage.scan(
                    roots,
                    excludes=self.options.excludes,
                    index_dir=self.index_dir,
                    max_file_bytes=self.options.max_file_bytes,
                    include_hidden=self.options.include_hidden,
                    follow_symlinks=self.options.follow_symlinks,
                )
            ):
                if isinstance(item, Skip):
                    report.skipped.append(item)
                else:
                    records.append(item)
                if i % 1000 == 0:
                    progress(Progress("scan", i, 0))
            scanned = len(records) + len(report.skipped)
            progress(Progress("scan", scanned, scanned))
            known = {
                path: diff_stage.Known(k.file_id, k.size, k.mtime_ns, k.content_hash)
                for path, k in writer.known_under(roots).items()
            }
            plan = diff_stage.plan(records, known)
            report.unchanged, report.new = plan.unchanged, len(plan.new)
            report.changed, report.moved, report.removed = (
                len(plan.changed),
                len(plan.moved),
                len(plan.removed),
            )
            for file_id in plan.removed:
                writer.remove_file(file_id)
            for rec, file_id, digest in plan.moved:
                writer.move_file(file_id, rec.path, rec.size, rec.mtime_ns, digest)
            writer.record_skips(report.skipped)
            writer.commit()
            to_read = [rec for rec, _ in plan.changed] + plan.new
            replaced = {rec.path: file_id for rec, file_id in plan.changed}
            self._read_pass(writer, to_read, replaced, report, progress)
            if self.options.embed and not self._stop.is_set():
                self._embed_pass(writer, report, progress)
            report.pieces_pending = writer.pending_count()
            writer.commit()
        report.seconds = time.monotonic() - started
        return report

    def _read_pass(
        self,
        writer: Writer,
        records: list[FileRecord],
        replaced: dict[str, str],
        report: IndexReport,
        progress: ProgressFn,
    ) -> None:
        last_commit = time.monotonic()
        for n, rec in enumerate(records, 1):
            if self._stop.is_set():
                break
            old_id = replaced.get(rec.path)
            if old_id is not None:
                writer.remove_file(old_id)
            try:
                pieces = pieces_for_model(extract(rec, settings=self.extract_settings), images=self.images)
                digest = diff_stage.content_hash(rec.path, rec.size)
            except ExtractError as exc:
                report.failed.append(Skip(rec.path, str(exc)))
                writer.record_failure(rec, str(exc))
                continue
            except OSError as exc:
                reason = f"cannot read: {exc.strerror or exc}".lower()
                report.failed.append(Skip(rec.path, reason))
                writer.record_failure(rec, reason)
                continue
            writer.add_file(rec, digest, [PieceMeta.from_piece(p) for p in pieces])
            if time.monotonic() - last_commit > COMMIT_SECONDS:
                writer.commit()
                last_commit = time.monotonic()
            progress(Progress("read", n, len(records), path=rec.path))
        writer.commit()

    def _embed_pass(self, writer: Writer, report: IndexReport, progress: ProgressFn) -> None:
        """Embed pending pieces file by file: recent and small files first."""
        work = writer.pending_by_file()  # file_id -> [piece ids in order]
        files = writer.files_by_id(list(work))
        order = sorted(work, key=lambda fid: (-files[fid].mtime_ns, files[fid].size, files[fid].path))
        total = sum(len(v) for v in work.values())
        done = 0
        started = time.monotonic()
        last_commit = started
        for file_id, rec, pieces_or_error in self._lookahead(order, files):
            if self._stop.is_set():
                break
            piece_ids = work[file_id]
            if isinstance(pieces_or_error, str):
                report.failed.append(Skip(rec.path, pieces_or_error))
                writer.record_failure(rec, pieces_or_error, file_id=file_id)
                done += len(piece_ids)
                continue
            pieces = pieces_or_error
            if len(pieces) != writer.piece_count(file_id):
                # The file changed between the read and the embed pass: the next scan re-reads it.
                log.debug("piece count changed for %s; left for the next run", rec.path)
                done += len(piece_ids)
                continue
            wanted = writer.piece_positions(file_id, piece_ids)
            inputs = [
                embed_input_for(pieces[i], self.options.instruction, images=self.images) for i in wanted
            ]
            try:
                vectors = self.embedder.embed(inputs, dims=self.options.dims)
            except InputError as exc:
                reason = str(exc)
                report.failed.append(Skip(rec.path, reason))
                writer.record_failure(rec, reason, file_id=file_id)
                done += len(piece_ids)
                continue
            writer.set_vectors(piece_ids, vectors)
            report.pieces_embedded += len(piece_ids)
            done += len(piece_ids)
            now = time.monotonic()
            if now - last_commit > COMMIT_SECONDS:
                writer.commit()
                last_commit = now
            rate = done / max(now - started, 1e-6)
            progress(
                Progress(
                    "embed", done, total, eta_s=(total - done) / rate if rate > 0 else None, path=rec.path
                )
            )
        writer.commit()

    def _lookahead(
        self, order: list[str], files: dict[str, FileRecord]
    ) -> Iterator[tuple[str, FileRecord, list[Piece] | str]]:
        """Extract the next few files in a thread while the caller embeds the current one."""
        q: queue.Queue[tuple[str, FileRecord, list[Piece] | str] | None] = queue.Queue(
            maxsize=LOOKAHEAD_FILES
        )
        stop = self._stop
        closing = threading.Event()

        def produce() -> None:
            try:
                for file_id in order:
                    if stop.is_set() or closing.is_set():
                        break
                    rec = files[file_id]
                    result: list[Piece] | str
                    try:
                        result = pieces_for_model(
                            extract(rec, settings=self.extract_settings), images=self.images
                        )
                    except ExtractError as exc:
                        result = str(exc)
                    except OSError as exc:
                        result = f"cannot read: {exc.strerror or exc}".lower()
                    except LauncherError as exc:
                        result = str(exc)
                    q.put((file_id, rec, result))
            finally:
                q.put(None)

        thread = threading.Thread(target=produce, name="launcher-extract", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    break
                yield item
        finally:
            # The consumer may stop early: drain so the producer is never stuck on a full queue.
            closing.set()
            while thread.is_alive():
                with contextlib.suppress(queue.Empty):
                    q.get(timeout=0.1)
            thread.join()
