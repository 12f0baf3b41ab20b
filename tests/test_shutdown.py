"""Stopping while the model works: SIGTERM and Ctrl+C (SIGINT) mid-embedding end the worker and the
searches in flight before the model is freed. Real processes, real signals, the real MiniLM model."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from launcher.core.errors import LauncherError
from launcher.index.store import Store
from launcher.watch.watcher import read_status
from tests.conftest import MINILM
from tests.launched import launch
from tests.test_index_cli import cli, ok

WORDS = [
    "apple",
    "river",
    "mountain",
    "tax",
    "passport",
    "volcano",
    "ocean",
    "whale",
    "bread",
    "recipe",
    "invoice",
    "meeting",
    "notes",
    "garden",
    "engine",
    "orbit",
    "harbour",
    "lantern",
    "quartz",
    "violin",
]
N_FILES = 80  # tens of seconds of embedding on a busy 2-core machine: long enough to stop it midway
FAST_COMMITS = {"LAUNCHER_COMMIT_SECONDS": "0.5"}  # commit vectors often, so some are kept at the stop
CRASH_SIGNS = ("Traceback", "Segmentation fault", "Fatal Python error", "core dumped", "Exception")


def make_tree(root: Path, n: int) -> Path:
    """n text files of one piece each, different enough that every one is embedded."""
    docs = root / "docs"
    docs.mkdir()
    rng = random.Random(14)
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(60))
        (docs / f"note{i:04d}.txt").write_text(text + "\n", encoding="utf-8")
    return docs


def until(check: object, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def embedding_under_way(index: Path) -> bool:
    """The watcher is embedding and has committed vectors, with more still to embed."""
    status = read_status(index)
    if not status or status.get("state") != "embedding" or not Store.exists(index):
        return False
    stats = Store.open(index).stats()
    return stats.embedded > 0 and stats.pending > 0


def assert_index_whole(home: Path, n: int) -> None:
    """The index opens, `launcher status` reads it, and a re-run finishes what was left."""
    index = home / "index"
    stats = Store.open(index).stats()
    assert stats.files == n and stats.embedded > 0
    status = json.loads(ok(cli(home, "status", "--json")).stdout)
    assert status["watcher"] is None and status["files"] == n
    report = json.loads(ok(cli(home, "index", "--json")).stdout)
    assert report["new"] == 0 and report["changed"] == 0
    final = Store.open(index).stats()
    assert final.pending == 0 and final.failed_pieces == 0 and final.embedded == final.pieces


def test_close_waits_for_the_call_under_way() -> None:
    """close() from another thread while embeddings run: it waits for the decode, then every later
    call is one clear error, never a call into freed memory."""
    from launcher.models.embed import load_embedder
    from launcher.models.embed.base import EmbedInput
    from launcher.models.embed.llama import LlamaOptions

    embedder = load_embedder(MINILM, None, LlamaOptions(n_threads=2))
    batch = [" ".join(random.Random(i).choice(WORDS) for _ in range(100)) for i in range(16)]
    done: list[np.ndarray] = []
    ended: list[BaseException] = []

    def work() -> None:
        try:
            while True:
                done.append(embedder.embed([EmbedInput(texts=[t]) for t in batch]))
        except BaseException as exc:
            ended.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    until(lambda: done or ended, "a first batch")
    assert not ended, ended
    embedder.close()
    worker.join(60)
    assert not worker.is_alive()
    assert len(ended) == 1 and isinstance(ended[0], LauncherError)
    assert str(ended[0]) == "the embedder is closed"
    assert all(np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4) for v in done)
    with pytest.raises(LauncherError, match="the embedder is closed"):
        embedder.tokenize("after close")
    embedder.close()  # twice is harmless


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_launch_watch_stopped_mid_embedding(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    """`launch --watch` stopped while it embeds and answers searches: a clean exit, no run file, an
    index that opens, and a re-run that finishes with nothing pending."""
    n = N_FILES
    docs = make_tree(tmp_path, n)
    home = tmp_path / "home"
    launched = launch(
        home, "--hotkey", "none", "--watch", str(docs), "--model", str(MINILM), extra_env=FAST_COMMITS
    )
    answers: list[int] = []
    stop_searching = threading.Event()

    def search_all_along() -> None:
        import httpx

        while not stop_searching.is_set():
            try:
                answers.append(launched.post("/api/search", {"text": "a whale in the ocean"}).status_code)
            except httpx.HTTPError:
                answers.append(-1)  # the process went away mid-request: expected at the end

    searching = threading.Thread(target=search_all_along)
    try:
        until(lambda: embedding_under_way(home / "index"), "embedding to be under way")
        searching.start()
        until(lambda: 200 in answers, "a search answered while embedding")
        launched.proc.send_signal(sig)
        _, err = launched.proc.communicate(timeout=60)
    finally:
        stop_searching.set()
        if searching.is_alive():
            searching.join(60)
        launched.stop()
    assert launched.proc.returncode == code, err
    assert not any(sign in err for sign in CRASH_SIGNS), err
    assert not (home / "run" / "launcher.json").exists()
    assert read_status(home / "index") is None  # no watcher is reported as running
    # Every answer was a result or a refusal during shutdown, never a server error.
    assert set(answers) <= {200, 503, -1}, answers
    assert_index_whole(home, n)


def test_index_stopped_mid_embedding(tmp_path: Path) -> None:
    """`launcher index` stopped by SIGTERM while it embeds: it unwinds like Ctrl+C (exit 143), the
    committed part is kept, and the next run embeds only the rest."""
    sig, code = signal.SIGTERM, 143
    n = N_FILES
    docs = make_tree(tmp_path, n)
    home = tmp_path / "home"
    index = home / "index"
    env_cmd = [sys.executable, "-m", "launcher.cli", "index", str(docs), "--model", str(MINILM), "--json"]
    proc = subprocess.Popen(
        env_cmd, env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        until(
            lambda: (
                Store.exists(index)
                and 0 < Store.open(index).stats().embedded < Store.open(index).stats().pieces
            ),
            "a first commit of vectors",
        )
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert not any(sign in err for sign in CRASH_SIGNS), err
    kept = Store.open(index).stats().embedded
    assert kept > 0
    assert_index_whole(home, n)


def _env(home: Path) -> dict[str, str]:
    from tests.launched import env_for

    return env_for(home, home.parent / "records", **FAST_COMMITS)
