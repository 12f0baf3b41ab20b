"""What the index remembers: roots that accumulate, `launcher forget`, scan options kept per root,
gone files never shown, and private modes on disk. The real CLI, real files, the real MiniLM model."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from launcher.index.gone import GONE
from launcher.index.manifest import MANIFEST
from tests.conftest import MINILM
from tests.test_index_cli import cli, index_json, ok, search_json


def status(home: Path) -> dict[str, Any]:
    return json.loads(ok(cli(home, "status", "--json")).stdout)  # type: ignore[no-any-return]


def paths(home: Path, query: str) -> list[str]:
    return [h["path"] for h in search_json(home, query, "--min-score", "-1", "--top", "50")]


def two_folders(root: Path) -> tuple[Path, Path]:
    docs, pics = root / "Documents", root / "Pictures"
    docs.mkdir()
    pics.mkdir()
    (docs / "volcano.txt").write_text("volcanoes erupt with glowing lava\n", encoding="utf-8")
    (docs / "taxes.txt").write_text("the tax return is due in april\n", encoding="utf-8")
    (pics / "cat notes.txt").write_text("my cat purrs when she is happy\n", encoding="utf-8")
    return docs, pics


def test_roots_accumulate_and_a_bare_index_refreshes_them_all(tmp_path: Path) -> None:
    docs, pics = two_folders(tmp_path)
    home = tmp_path / "home"
    assert index_json(home, str(docs), "--model", str(MINILM))["new"] == 2
    second = index_json(home, str(pics))
    assert second["new"] == 1 and second["removed"] == 0
    assert status(home)["roots"] == [str(docs), str(pics)]
    assert paths(home, "lava from a volcano")[0] == str(docs / "volcano.txt")
    assert paths(home, "happy purring cat")[0] == str(pics / "cat notes.txt")

    # Both stay fresh: a bare `launcher index` sees changes in the first root too.
    (docs / "taxes.txt").unlink()
    (docs / "garden.txt").write_text("tomatoes need full sun\n", encoding="utf-8")
    (pics / "dog.txt").write_text("the dog fetches the ball\n", encoding="utf-8")
    again = index_json(home)
    assert (again["new"], again["removed"]) == (2, 1)
    assert status(home)["roots"] == [str(docs), str(pics)]
    assert str(docs / "taxes.txt") not in paths(home, "tax return april")
    assert paths(home, "growing tomatoes in the sun")[0] == str(docs / "garden.txt")

    # A folder inside a root refreshes with the root and is not added.
    (docs / "sub").mkdir()
    (docs / "sub" / "owl.txt").write_text("owls hunt at night\n", encoding="utf-8")
    assert index_json(home, str(docs / "sub"))["new"] == 1
    assert status(home)["roots"] == [str(docs), str(pics)]


def test_a_deleted_file_never_shows_and_is_removed_later(tmp_path: Path) -> None:
    docs, _ = two_folders(tmp_path)
    home = tmp_path / "home"
    index_json(home, str(docs), "--model", str(MINILM))
    (docs / "volcano.txt").unlink()
    hits = paths(home, "lava from a volcano")
    assert hits and str(docs / "volcano.txt") not in hits
    # Queued for removal; the next run removes it for good and empties the queue.
    gone = home / "index" / GONE
    assert json.loads(gone.read_text(encoding="utf-8").splitlines()[0]) == str(docs / "volcano.txt")
    assert gone.stat().st_mode & 0o777 == 0o600
    assert index_json(home)["removed"] == 1
    assert not gone.exists()
    assert status(home)["files"] == 1


def test_forget_removes_a_root_and_everything_under_it(tmp_path: Path) -> None:
    docs, pics = two_folders(tmp_path)
    home = tmp_path / "home"
    index_json(home, str(docs), "--model", str(MINILM))
    index_json(home, str(pics))
    proc = ok(cli(home, "forget", str(docs)))
    assert proc.stdout.strip() == f"forgot {docs}: 2 files removed from the index"
    st = status(home)
    assert st["roots"] == [str(pics)] and st["files"] == 1 and list(st["scan_options"]) == [str(pics)]
    assert not any(p.startswith(str(docs)) for p in paths(home, "lava from a volcano"))
    # A bare refresh does not bring it back.
    assert index_json(home)["new"] == 0 and status(home)["roots"] == [str(pics)]

    for unknown in (docs, pics / "nothing", tmp_path):
        proc = cli(home, "forget", str(unknown))
        assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0
        assert proc.stderr.startswith(f"error: {unknown} is not a root of the index at ")
        assert f"(roots: {pics})" in proc.stderr


def test_scan_options_are_remembered_per_root(tmp_path: Path) -> None:
    docs, pics = two_folders(tmp_path)
    (docs / "server.log").write_text("error volcano log line\n", encoding="utf-8")
    (docs / ".hidden notes.txt").write_text("secret volcano notes\n", encoding="utf-8")
    (docs / "big.txt").write_text("volcano " * 200_000, encoding="utf-8")  # 1.6 MB
    home = tmp_path / "home"
    args = ["--exclude", "*.log", "--include-hidden", "--max-file-mb", "1", "--max-image-mp", "5"]
    index_json(home, str(docs), "--model", str(MINILM), *args)
    index_json(home, str(pics))  # a second root with the defaults

    def indexed() -> set[str]:
        return {Path(p).name for p in paths(home, "volcano")}

    assert {".hidden notes.txt", "volcano.txt"} <= indexed() and not {"server.log", "big.txt"} & indexed()
    st = status(home)
    assert st["scan_options"][str(docs)] == {
        "excludes": ["*.log"],
        "include_hidden": True,
        "follow_symlinks": False,
        "max_file_bytes": 1024 * 1024,
        "max_image_pixels": 5_000_000,
    }
    assert (
        st["scan_options"][str(pics)]["excludes"] == []
        and not st["scan_options"][str(pics)]["include_hidden"]
    )
    text = ok(cli(home, "status")).stdout
    assert f"{docs}: exclude *.log, hidden files, max 1 MB, max 5 MP" in text

    # A bare refresh, and a refresh of the root by name, keep them.
    (docs / "other.log").write_text("volcano log again\n", encoding="utf-8")
    assert index_json(home)["new"] == 0
    assert index_json(home, str(docs))["new"] == 0
    assert {".hidden notes.txt"} <= indexed() and not {"server.log", "other.log", "big.txt"} & indexed()

    # A flag changes only its own option, and is remembered in turn.
    changed = index_json(home, str(docs), "--no-include-hidden")
    assert changed["removed"] == 1 and ".hidden notes.txt" not in indexed()
    opts = status(home)["scan_options"][str(docs)]
    assert (
        opts["include_hidden"] is False
        and opts["excludes"] == ["*.log"]
        and opts["max_file_bytes"] == 1024 * 1024
    )


def test_an_index_from_before_options_were_kept_opens_with_defaults(tmp_path: Path) -> None:
    docs, _ = two_folders(tmp_path)
    (docs / ".hidden.txt").write_text("hidden volcano\n", encoding="utf-8")
    home = tmp_path / "home"
    index_json(home, str(docs), "--model", str(MINILM), "--include-hidden")
    manifest = home / "index" / MANIFEST
    data = json.loads(manifest.read_text(encoding="utf-8"))
    del data["scan"]  # what an older launcher wrote
    manifest.write_text(json.dumps(data), encoding="utf-8")
    st = status(home)
    assert st["roots"] == [str(docs)] and st["scan_options"][str(docs)]["include_hidden"] is False
    # Refreshed with the defaults: the hidden file goes, the root's options are now recorded.
    assert index_json(home)["removed"] == 1
    assert "scan" in json.loads(manifest.read_text(encoding="utf-8"))


def test_watch_keeps_the_options_the_index_was_built_with(tmp_path: Path) -> None:
    docs, _ = two_folders(tmp_path)
    home = tmp_path / "home"
    index_json(home, str(docs), "--model", str(MINILM), "--exclude", "*.log", "--include-hidden")
    (docs / ".later.txt").write_text("a hidden note about glaciers\n", encoding="utf-8")
    (docs / "later.log").write_text("glaciers log line\n", encoding="utf-8")
    env = {**os.environ, "LAUNCHER_HOME": str(home), "LAUNCHER_THREADS": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "launcher.cli", "watch", "--settle", "0.3"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        found: set[str] = set()
        while time.monotonic() < deadline and ".later.txt" not in found:
            time.sleep(1)
            st = status(home)
            if (st.get("watcher") or {}).get("state") == "watching":
                found = {Path(p).name for p in paths(home, "glaciers")}
        assert ".later.txt" in found, proc.stderr.read() if proc.poll() is not None else found
        assert "later.log" not in found
        # A file made while it watches follows the same rules.
        (docs / "new.log").write_text("glaciers again in a log\n", encoding="utf-8")
        (docs / ".new.txt").write_text("glaciers calving hidden note\n", encoding="utf-8")
        while time.monotonic() < deadline and ".new.txt" not in found:
            time.sleep(0.5)
            found = {Path(p).name for p in paths(home, "glaciers")}
        assert ".new.txt" in found and "new.log" not in found
        # Forgetting a folder a live watcher watches would be undone by it: refused, in one line.
        refused = cli(home, "forget", str(docs))
        assert refused.returncode == 1 and refused.stderr.strip().count("\n") == 0
        assert f"{docs} is being watched by pid {proc.pid}: stop that watcher first" in refused.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert status(home)["scan_options"][str(docs)]["excludes"] == ["*.log"]
    assert ok(cli(home, "forget", str(docs))).stdout.startswith(f"forgot {docs}: ")


def test_launch_accepts_the_scan_flags_of_watch() -> None:
    import typer

    from launcher.cli.commands import app

    commands = {c.name: c for c in typer.main.get_command(app).commands.values()}  # type: ignore[attr-defined]

    def scan_flags(name: str) -> set[str]:
        wanted = {"--exclude", "--max-file-mb", "--max-image-mp", "--include-hidden", "--follow-symlinks"}
        return {o for p in commands[name].params for o in p.opts if o in wanted}

    assert scan_flags("launch") == scan_flags("watch") == scan_flags("index")
    assert len(scan_flags("launch")) == 5


def _modes(top: Path) -> list[tuple[str, int]]:
    """Every folder and file under top that others could read or enter."""
    loose = []
    for folder, dirs, files in os.walk(top):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                continue
            want = 0o700 if stat.S_ISDIR(mode) else 0o600
            if stat.S_IMODE(mode) & 0o777 != want:
                loose.append((str(path.relative_to(top)), oct(stat.S_IMODE(mode))))
    return loose


def test_everything_under_launcher_home_is_private_whatever_the_umask(tmp_path: Path) -> None:
    docs, pics = two_folders(tmp_path)
    home = tmp_path / "home"
    # An index left by an older version: readable by everyone.
    (home / "index").mkdir(parents=True, mode=0o755)
    os.chmod(home, 0o755)
    os.chmod(home / "index", 0o755)
    (home / "config.toml").write_text("threads = 2\n", encoding="utf-8")
    os.chmod(home / "config.toml", 0o644)
    env = {**os.environ, "LAUNCHER_HOME": str(home), "LAUNCHER_THREADS": "2"}
    for args in (["index", str(docs), "--model", str(MINILM), "--json"], ["index", str(pics), "--json"]):
        done = subprocess.run(
            [sys.executable, "-m", "launcher.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            preexec_fn=lambda: os.umask(0o022),  # noqa: PLW1509 - the person's usual umask
        )
        assert done.returncode == 0, done.stderr
    (docs / "volcano.txt").unlink()
    paths(home, "lava volcano")  # search queues the gone file: that file is private too
    assert (home / "index" / GONE).exists()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert _modes(home) == []
    # An index folder outside the home is private too.
    elsewhere = tmp_path / "elsewhere"
    ok(cli(home, "index", str(pics), "--index-dir", str(elsewhere), "--model", str(MINILM), "--json"))
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o700 and _modes(elsewhere) == []
