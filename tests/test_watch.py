"""Watch mode end to end: real file operations, the real watchdog observer, real MiniLM vectors."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from launcher.cli.jobs import format_status, status_report
from launcher.index.store import Store
from launcher.ingest.pipeline import Indexer, IndexOptions
from launcher.models.embed import QUERY_INSTRUCTION, Embedder, EmbedInput, load_embedder
from launcher.query.retrieve import search
from launcher.watch.watcher import PAUSE_FILE, Watcher, read_status
from tests.conftest import MINILM
from tests.test_index_cli import ok

SETTLE = 0.3  # seconds; short, so that each step of a test waits little
T = TypeVar("T")


@pytest.fixture(scope="module")
def model() -> Iterator[Embedder]:
    """MiniLM on one thread: on a busy 2-core machine, two OpenMP threads mostly wait for each other."""
    from launcher.models.embed.llama import LlamaOptions

    with load_embedder(MINILM, None, LlamaOptions(n_threads=1)) as e:
        yield e


def until(cond: Callable[[], T], what: str, timeout: float = 30) -> T:
    """Poll cond until it is truthy (bounded); return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


@contextmanager
def watching(index_dir: Path, roots: list[Path], embedder: Embedder, **kw: Any) -> Iterator[Watcher]:
    """A started watcher that has finished its first reconcile; stopped on exit."""
    kw.setdefault("settle_s", SETTLE)
    kw.setdefault("nice", 0)  # other tests share the machine; the priority has its own test
    options = kw.pop("options", IndexOptions())
    w = Watcher(index_dir, roots, embedder, options, **kw)
    w.start()
    try:
        assert w.wait_idle(60), w.status()
        yield w
    finally:
        w.stop()


def settle(w: Watcher) -> dict[str, Any]:
    """Wait until the watcher has nothing left to do; its status then."""
    time.sleep(0.1)  # let the kernel's event reach the observer
    assert w.wait_idle(60), w.status()
    return w.status()


def top(index_dir: Path, embedder: Embedder, text: str, k: int = 5) -> list[str]:
    """Paths of the best hits, through the library (the CLI is exercised below)."""
    store = Store.open(index_dir)
    vector = embedder.embed_one(EmbedInput(texts=[text], instruction=QUERY_INSTRUCTION), dims=store.dims)
    return [h.path for h in search(store, vector, text, top_k=k)]


def files(index_dir: Path) -> dict[str, str]:
    """Indexed path -> file id."""
    return {f.path: f.file_id for f in Store.open(index_dir).files()}


def stored_text(index_dir: Path, path: Path) -> str:
    store = Store.open(index_dir)
    info = store.file_by_path(str(path))
    assert info is not None, f"{path} is not indexed"
    return "\n".join(store.piece(p).text for p in store.pieces_of(info.file_id))  # type: ignore[union-attr]


def embedded(w: Watcher) -> int:
    return int(w.status()["totals"]["pieces_embedded"])


def notes(folder: Path, topics: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in topics.items():
        (folder / name).write_text(text + "\n", encoding="utf-8")
    return folder


def test_rescan_of_any_path_agrees_with_the_full_scan(tmp_path: Path) -> None:
    """The watcher reads what a full scan would: same ignore files, excludes, hidden and system rules."""
    from launcher.ingest.scan import rescan, scan

    root = tmp_path / "r"
    for d in ("a/b", ".hidden", "node_modules", "env", "c/d/e", "ignored/keep"):
        (root / d).mkdir(parents=True)
    (root / "env" / "pyvenv.cfg").write_text("home = /usr\n")
    (root / ".gitignore").write_text("*.log\nignored/\n")
    (root / "a" / ".gitignore").write_text("secret*\n!secret-ok.txt\n")
    for f in (
        "x.txt", "a/y.log", "a/secret.txt", "a/secret-ok.txt", "a/b/z.md", ".hidden/h.txt",
        "node_modules/m.js", "env/e.py", "c/d/e/deep.txt", "ignored/i.txt", "ignored/keep/k.txt",
        "c/build.o", "dl.part",
    ):  # fmt: skip
        (root / f).write_text("hello " + f)
    os.symlink(root / "a", root / "linked")
    os.symlink(root / "nowhere", root / "dangling.txt")
    full = {(type(r).__name__, r.path) for r in scan([root], excludes=["*.o"])}
    assert len(full) == 7  # 5 files, the symlinked folder and the dangling link as skips
    for path in [*map(str, root.rglob("*")), str(root), str(root / "gone.txt")]:
        got = {(type(r).__name__, r.path) for r in rescan([root], [path], excludes=["*.o"])}
        assert got == {x for x in full if x[1] == path or x[1].startswith(path + os.sep)}, path


TOPICS = {
    "volcano.txt": "volcanoes erupt lava and ash",
    "cats.txt": "cats purr when they are happy",
    "taxes.txt": "income taxes are due in april",
}


def test_create_modify_delete(tmp_path: Path, model: Embedder) -> None:
    docs = notes(tmp_path / "docs", TOPICS)
    index = tmp_path / "index"
    with watching(index, [docs], model) as w:
        assert set(files(index)) == {str(docs / n) for n in TOPICS} and embedded(w) == 3
        assert w.status()["roots"] == [{"path": str(docs), "observer": "native", "reason": None}]

        (docs / "bread.txt").write_text("how to bake banana bread with ripe bananas\n", encoding="utf-8")
        until(
            lambda: top(index, model, "baking a banana loaf")[:1] == [str(docs / "bread.txt")], "the new file"
        )
        assert settle(w)["totals"]["pieces_embedded"] == 4  # the new file only

        ids = files(index)
        (docs / "cats.txt").write_text("astronauts walked on the moon in 1969\n", encoding="utf-8")
        until(lambda: "moon" in stored_text(index, docs / "cats.txt"), "the modified file")
        assert settle(w)["totals"]["pieces_embedded"] == 5  # the modified file only
        assert top(index, model, "the apollo moon landing")[0] == str(docs / "cats.txt")
        assert {p: i for p, i in files(index).items() if p != str(docs / "cats.txt")} == {
            p: i for p, i in ids.items() if p != str(docs / "cats.txt")
        }

        (docs / "taxes.txt").unlink()
        until(lambda: str(docs / "taxes.txt") not in files(index), "the deletion")
        assert str(docs / "taxes.txt") not in top(index, model, "income taxes due in april")
        assert settle(w)["totals"]["pieces_embedded"] == 5


def test_atomic_save_rename_and_partial_download(tmp_path: Path, model: Embedder) -> None:
    docs = notes(tmp_path / "docs", TOPICS)
    index = tmp_path / "index"
    with watching(index, [docs], model) as w:
        ids = files(index)
        # An editor's atomic save: write a temporary file, then rename it over the original.
        tmp = docs / "volcano.txt.tmp"
        tmp.write_text("volcanoes erupt lava and ash\nthe last eruption was in 2021\n", encoding="utf-8")
        os.replace(tmp, docs / "volcano.txt")
        until(lambda: "2021" in stored_text(index, docs / "volcano.txt"), "the atomic save")
        st = settle(w)
        assert st["totals"]["pieces_embedded"] == 4 and set(files(index)) == set(ids)

        # A rename keeps the file's id, pieces and vectors: nothing is embedded again.
        (docs / "cats.txt").rename(docs / "kitten.txt")
        until(lambda: str(docs / "kitten.txt") in files(index), "the rename")
        st = settle(w)
        assert files(index)[str(docs / "kitten.txt")] == ids[str(docs / "cats.txt")]
        assert str(docs / "cats.txt") not in files(index) and st["totals"]["pieces_embedded"] == 4
        assert top(index, model, "a happy purring cat")[0] == str(docs / "kitten.txt")

        # A download being written under a partial name is not read until it gets its final name.
        part = docs / "manual.txt.crdownload"
        with part.open("w", encoding="utf-8") as f:
            for i in range(5):
                f.write(f"chapter {i}: assembling the bookshelf\n")
                f.flush()
                time.sleep(0.1)
        (docs / "~$lease.docx").write_bytes(b"office lock file")
        time.sleep(SETTLE * 3)
        assert settle(w)["totals"]["new"] == 3 and set(files(index)) == {
            str(docs / n) for n in ("volcano.txt", "kitten.txt", "taxes.txt")
        }
        part.rename(docs / "manual.txt")
        until(lambda: str(docs / "manual.txt") in files(index), "the finished download")
        assert "chapter 4" in stored_text(index, docs / "manual.txt")
        assert settle(w)["totals"]["pieces_embedded"] == 5


def test_folder_move_reuses_vectors_and_folder_delete(tmp_path: Path, model: Embedder) -> None:
    docs = tmp_path / "docs"
    alpha = notes(
        docs / "projects" / "alpha", {f"note{i}.txt": f"meeting notes number {i}" for i in range(20)}
    )
    (alpha / "garden.txt").write_text("tomatoes need full sun and regular watering\n", encoding="utf-8")
    index = tmp_path / "index"
    with watching(index, [docs], model) as w:
        before = files(index)
        vectors = Store.open(index).stats().embedded
        target = docs / "archive" / "alpha-2023"
        target.parent.mkdir()
        alpha.rename(target)
        until(lambda: str(target / "garden.txt") in files(index), "the moved folder")
        st = settle(w)
        after = files(index)
        assert sorted(after.values()) == sorted(before.values())  # the same files, re-pathed
        assert all(p.startswith(str(target) + os.sep) for p in after)
        assert st["totals"]["moved"] == 21 and st["totals"]["pieces_embedded"] == 21
        assert Store.open(index).stats().embedded == vectors  # no vector was made again
        assert top(index, model, "growing tomatoes")[0] == str(target / "garden.txt")

        # Again into a folder made a moment before: inotify may see that rename as two halves.
        again = docs / "archive" / "2024" / "alpha"
        again.parent.mkdir()
        target.rename(again)
        until(lambda: str(again / "garden.txt") in files(index), "the folder moved again")
        st = settle(w)
        assert sorted(files(index).values()) == sorted(before.values())
        assert st["totals"]["moved"] == 42 and st["totals"]["pieces_embedded"] == 21

        shutil.rmtree(docs / "archive")
        until(lambda: not files(index), "the deleted folder to disappear")
        assert settle(w)["totals"]["removed"] == 21


def test_burst_of_files_is_one_batch(tmp_path: Path, model: Embedder) -> None:
    docs = notes(tmp_path / "docs", {"readme.txt": "a small project"})
    index = tmp_path / "index"
    # A longer settle time than elsewhere: writing 300 files must take less than it on a busy machine.
    with watching(index, [docs], model, settle_s=1.0) as w:
        batches = w.status()["batches"]
        checkout = docs / "checkout"
        checkout.mkdir()
        for i in range(300):
            (checkout / f"module{i:03d}.py").write_text(
                f"def handler_{i}():\n    return {i}\n", encoding="utf-8"
            )
        until(lambda: len(files(index)) == 301, "300 new files", timeout=60)
        st = settle(w)
        assert st["batches"] == batches + 1, st
        assert st["totals"]["pieces_embedded"] == 301 and st["pending_pieces"] == 0
        assert Store.open(index).stats().pending == 0


def test_growing_file_is_read_once_whole(tmp_path: Path, model: Embedder) -> None:
    docs = notes(tmp_path / "docs", {"readme.txt": "a small project"})
    index = tmp_path / "index"
    log = docs / "diary.txt"
    with watching(index, [docs], model, settle_s=1.0) as w:
        with log.open("w", encoding="utf-8") as f:
            for i in range(10):  # appended every 0.3 s for 3 s: shorter gaps than the settle time
                f.write(f"day {i}: walked the dog along the river\n")
                f.flush()
                time.sleep(0.3)
        until(lambda: str(log) in files(index), "the grown file")
        st = settle(w)
        assert "day 9" in stored_text(index, log)  # read whole, after it settled
        pieces = len(Store.open(index).pieces_of(files(index)[str(log)]))
        assert st["totals"]["new"] == 2 and st["totals"]["changed"] == 0  # read once
        assert st["totals"]["pieces_embedded"] == 1 + pieces  # embedded once


def test_reconcile_repairs_dropped_events(tmp_path: Path, model: Embedder) -> None:
    docs = notes(tmp_path / "docs", TOPICS)
    index = tmp_path / "index"
    with watching(index, [docs], model, reconcile_interval_s=1.5) as w:
        # The kernel drops events (watch limits, a sleeping laptop, a network drive): here the
        # observer simply stops reporting, while it still looks alive.
        for obs in w._observers.values():
            obs.unschedule_all()
        (docs / "taxes.txt").unlink()
        (docs / "cats.txt").rename(docs / "kitten.txt")
        (docs / "volcano.txt").write_text("volcanoes and earthquakes in iceland\n", encoding="utf-8")
        (docs / "ocean.txt").write_text("whales migrate across the pacific ocean\n", encoding="utf-8")
        want = {str(docs / n) for n in ("kitten.txt", "volcano.txt", "ocean.txt")}
        until(
            lambda: set(files(index)) == want and "iceland" in stored_text(index, docs / "volcano.txt"),
            "the reconcile",
        )
        st = settle(w)
        assert st["reconciles"] >= 2 and st["last_reconcile"]
        assert st["totals"]["moved"] == 1 and st["totals"]["pieces_embedded"] == 5  # 3 + changed + new


def test_polling_forced_and_as_fallback(
    tmp_path: Path, model: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = notes(tmp_path / "docs", TOPICS)
    index = tmp_path / "index"
    with watching(index, [docs], model, force_polling=True, poll_interval_s=0.2) as w:
        assert w.status()["roots"] == [
            {"path": str(docs), "observer": "polling", "reason": "forced (--poll)"}
        ]
        assert read_status(index)["roots"][0]["observer"] == "polling"  # type: ignore[index]
        (docs / "ocean.txt").write_text("whales migrate across the pacific ocean\n", encoding="utf-8")
        until(lambda: str(docs / "ocean.txt") in files(index), "a file seen by polling")
        (docs / "ocean.txt").rename(docs / "whales.txt")
        until(lambda: str(docs / "whales.txt") in files(index), "a rename seen by polling")
        assert settle(w)["totals"]["pieces_embedded"] == 4

    # The kernel refuses to watch (the inotify watch limit): a named fake, since raising the real
    # limit would disturb everything else on this machine.
    def no_watches(self: Watcher, root: str) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Watcher, "_native_observer", no_watches)
    with watching(tmp_path / "index2", [docs], model, poll_interval_s=0.2) as w:
        root = w.status()["roots"][0]
        assert root["observer"] == "polling" and "inotify watch limit" in root["reason"]
        (docs / "notes.txt").write_text("the fallback still sees new files\n", encoding="utf-8")
        until(lambda: str(docs / "notes.txt") in files(tmp_path / "index2"), "a file seen after the fallback")
        assert "polling (inotify watch limit" in format_status(status_report(tmp_path / "index2"))


def test_pause_resume_and_a_locked_index(tmp_path: Path, model: Embedder) -> None:
    docs = notes(tmp_path / "docs", TOPICS)
    index = tmp_path / "index"
    with watching(index, [docs], model) as w:
        w.pause()
        (docs / "ocean.txt").write_text("whales migrate across the pacific ocean\n", encoding="utf-8")
        (docs / "taxes.txt").unlink()  # deletions still apply while paused: search never shows ghosts
        until(lambda: str(docs / "taxes.txt") not in files(index), "a deletion while paused")
        time.sleep(SETTLE * 4)
        st = w.status()
        assert st["state"] == "paused" and st["queue"] == 1 and str(docs / "ocean.txt") not in files(index)
        w.resume()
        until(lambda: str(docs / "ocean.txt") in files(index), "the file after resume")
        settle(w)

        # The pause file does the same, for scripts.
        (index / PAUSE_FILE).touch()
        (docs / "bread.txt").write_text("banana bread\n", encoding="utf-8")
        time.sleep(SETTLE * 4)
        assert w.status()["state"] == "paused" and str(docs / "bread.txt") not in files(index)
        (index / PAUSE_FILE).unlink()
        until(lambda: str(docs / "bread.txt") in files(index), "the file after the pause file went")
        settle(w)

        # Another process writes the index: the watcher waits and tries again, never blocks it.
        with Indexer(index, model, IndexOptions()).open_writer(reset_on_mismatch=False):
            (docs / "cats.txt").write_text("dogs bark at the mailman\n", encoding="utf-8")
            st = until(lambda: (s := w.status())["state"] == "waiting" and s, "the watcher to find the lock")
            assert "being written by pid" in st["message"]
        until(lambda: "mailman" in stored_text(index, docs / "cats.txt"), "the change after the lock")


def test_embedding_runs_niced_in_its_own_thread(tmp_path: Path, model: Embedder) -> None:
    docs = notes(tmp_path / "docs", TOPICS)
    seen: dict[int, int] = {}

    def record(_: Any) -> None:
        tid = threading.get_native_id()
        stat = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        seen[tid] = int(stat[16])  # the nice value of the thread doing the work

    mine = os.getpriority(os.PRIO_PROCESS, 0)
    with watching(tmp_path / "index", [docs], model, nice=mine + 10, on_progress=record):
        pass
    assert seen and set(seen.values()) == {mine + 10}, seen
    assert os.getpriority(os.PRIO_PROCESS, 0) == mine  # the caller's thread (queries) is untouched


def run_cli(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launcher.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(home),
    )


def cli_env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "LAUNCHER_HOME": str(home),
        "LAUNCHER_THREADS": "1",
        "LAUNCHER_COMMIT_SECONDS": "0.2",
    }


def start_watch(home: Path, docs: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "launcher.cli",
            "watch",
            str(docs),
            "--model",
            str(MINILM),
            "--settle",
            str(SETTLE),
        ],
        env=cli_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def disk_state(docs: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in docs.rglob("*") if p.is_file()}


def test_cli_watch_killed_mid_batch_then_restarted(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(200):
        (docs / f"doc{i:03d}.txt").write_text(f"document {i} about topic {i % 7}\n", encoding="utf-8")
    home = tmp_path / "home"
    index = home / "index"
    proc = start_watch(home, docs)
    try:
        until(lambda: Store.exists(index), "the index")
        until(lambda: Store.open(index).stats().embedded > 0, "a first embedding")
        if Store.open(index).stats().pending == 0:
            pytest.fail("the watcher finished before it could be killed; make the tree bigger")
        status = status_report(index)["watcher"]
        assert status["pid"] == proc.pid and status["state"] in ("reconciling", "embedding")
        assert status["roots"] == [{"path": str(docs), "observer": "native", "reason": None}]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    store = Store.open(index)  # opens after a kill -9
    assert json.loads(ok(run_cli(home, "status", "--json")).stdout)["watcher"] is None  # the pid is dead

    # Changes nobody sees while the watcher is down: the restart's reconcile must find them.
    for i in range(5):
        (docs / f"doc{i:03d}.txt").unlink()
    (docs / "doc010.txt").rename(docs / "renamed.txt")
    (docs / "doc011.txt").write_text("a document about whales and oceans\n", encoding="utf-8")
    (docs / "new.txt").write_text("recipes for banana bread\n", encoding="utf-8")
    on_disk = disk_state(docs)
    kept = 0  # committed vectors of files still there unchanged (the renamed one included)
    for f in store.files():
        path = str(docs / "renamed.txt") if f.path == str(docs / "doc010.txt") else f.path
        if on_disk.get(path) == (f.size, f.mtime_ns):
            kept += sum(store.piece(p).has_vector for p in store.pieces_of(f.file_id))  # type: ignore[union-attr]

    proc = start_watch(home, docs)
    try:
        until(
            lambda: (
                (w := read_status(index))
                and w["reconciles"] >= 1
                and w["queue"] == 0
                and w["pending_pieces"] == 0
            ),
            "the restarted watcher to catch up",
            timeout=60,
        )
        final = Store.open(index)
        assert {
            f.path: (f.size, f.mtime_ns) for f in final.files()
        } == on_disk  # the tree and the index agree
        assert final.stats().pending == 0
        w = read_status(index)
        assert w is not None and w["totals"]["pieces_embedded"] == final.stats().embedded - kept  # none twice
        hits = json.loads(ok(run_cli(home, "search", "whales in the ocean", "--json")).stdout)["hits"]
        assert hits[0]["path"] == str(docs / "doc011.txt")

        # SIGUSR1 pauses, SIGUSR2 resumes; `launcher status` says so.
        proc.send_signal(signal.SIGUSR1)
        until(lambda: (w := read_status(index)) and w["state"] == "paused", "the pause")
        text = ok(run_cli(home, "status")).stdout
        assert f"watcher:  paused (pid {proc.pid})" in text and f"watching {docs} native" in text
        (docs / "late.txt").write_text("written while paused\n", encoding="utf-8")
        proc.send_signal(signal.SIGUSR2)
        until(lambda: str(docs / "late.txt") in files(index), "the file after SIGUSR2")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert read_status(index) is None  # stopped cleanly: status no longer shows a watcher


def test_update_sees_its_own_moves(tmp_path: Path, model: Embedder) -> None:
    """What a watcher hands the indexer in one batch: a folder moved, a file in it then edited, a
    file removed. The moved files keep their ids (and vectors); the rescan of the moved folder,
    in the same update, finds them at their new paths: one changed, one unchanged, none new."""
    docs = tmp_path / "docs"
    notes(docs / "a", {"x.txt": "the x note about sailing", "y.txt": "the y note about hiking"})
    notes(docs / "keep", {"z.txt": "the z note about baking", "w.txt": "the w note about chess"})
    index = tmp_path / "index"
    indexer = Indexer(index, model, IndexOptions())
    indexer.run([docs])
    ids = {os.path.relpath(p, docs): fid for p, fid in files(index).items()}
    (docs / "a").rename(docs / "b")
    (docs / "b" / "y.txt").write_text("the y note about hiking in the rain, longer now", encoding="utf-8")
    (docs / "keep" / "w.txt").unlink()
    report = indexer.update(
        changed=[str(docs / "b")],
        removed=[str(docs / "keep" / "w.txt"), str(docs / "a")],  # a move's source too, as the watcher does
        moves=[(str(docs / "a"), str(docs / "b"))],
        roots=[str(docs)],
    )
    # y was edited, so the move leaves it (its old entry under a/ goes with the removals) and the
    # rescan of b finds it new; x moves, and the rescan of b finds it unchanged at its new path.
    assert (report.moved, report.new, report.unchanged, report.removed) == (1, 1, 1, 2)
    after = {os.path.relpath(p, docs): fid for p, fid in files(index).items()}
    assert sorted(after) == ["b/x.txt", "b/y.txt", "keep/z.txt"]
    assert after["b/x.txt"] == ids["a/x.txt"] and after["keep/z.txt"] == ids["keep/z.txt"]
    assert after["b/y.txt"] not in ids.values()  # read again
