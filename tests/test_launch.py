"""`launcher launch`, `toggle` and `search` through the resident process: the real CLI, a real
server on loopback, the real MiniLM model, the hotkey on a real X server (Xvfb + xdotool)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest

from launcher.app.hotkey import HotkeyListener, parse_combo
from launcher.core.errors import InputError
from tests.conftest import FIXTURES, MINILM
from tests.launched import Launched, launch, login_target, recorded, xvfb
from tests.test_index_cli import cli, ok


def make_notes(root: Path) -> Path:
    """A few notes with clear topics."""
    docs = root / "notes"
    (docs / "travel").mkdir(parents=True)
    (docs / "travel" / "passport renewal.txt").write_text(
        "To renew a passport, fill in form DS-82, attach a recent photo and mail it with the old passport.\n",
        encoding="utf-8",
    )
    (docs / "garden.md").write_text(
        "# Garden\n\nTomatoes need full sun and deep watering.\n", encoding="utf-8"
    )
    (docs / "fib.py").write_text(
        "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n"
    )
    return docs


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    if not shutil.which("xdotool"):
        pytest.skip("xdotool is not installed (apt-get install xdotool)")
    with xvfb() as d:
        yield d


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, display: str
) -> Iterator[tuple[Launched, Path, dict[str, str]]]:
    """A MiniLM index, searched in-process first, then served by `launcher launch` with the hotkey on."""
    root = tmp_path_factory.mktemp("served")
    docs = make_notes(root)
    home = root / "home"
    ok(cli(home, "index", str(docs), "--model", str(MINILM), "--json"))
    before = {
        "json": ok(cli(home, "search", "how do I get a new passport", "--json")).stdout,
        "text": ok(cli(home, "search", "growing tomatoes")).stdout,
        "filtered": ok(cli(home, "search", "code", "--kind", "code", "--min-score", "-1", "--json")).stdout,
    }
    launched = launch(home, "--hotkey", "ctrl+alt+space", extra_env={"DISPLAY": display})
    yield launched, docs, before
    launched.stop()


def test_combo_parsing() -> None:
    assert parse_combo("ctrl+alt+space") == "<ctrl>+<alt>+<space>"
    assert parse_combo("<ctrl>+<alt>+k") == "<ctrl>+<alt>+k"
    assert parse_combo(" Super + F2 ") == "<cmd>+<f2>"
    assert parse_combo("shift+ctrl+Return") == "<ctrl>+<shift>+<enter>"
    assert parse_combo("f12") == "<f12>"
    for bad, why in [
        ("ctrl+alt+banana", "unknown key 'banana'"),
        ("ctrl+alt", "no key besides the modifiers"),
        ("k", "add a modifier"),
        ("ctrl+a+b", "more than one key"),
        ("ctrl++alt", "empty key name"),
    ]:
        with pytest.raises(InputError, match="--hotkey") as err:
            parse_combo(bad)
        assert why in str(err.value)


def test_bad_hotkey_is_one_line_naming_the_flag(tmp_path: Path) -> None:
    proc = cli(tmp_path / "home", "launch", "--no-browser", "--hotkey", "ctrl+alt+banana")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("error: --hotkey 'ctrl+alt+banana': unknown key 'banana'")


def test_launch_without_index_says_what_to_do(tmp_path: Path) -> None:
    proc = cli(tmp_path / "home", "launch", "--no-browser", "--hotkey", "none")
    assert proc.returncode == 4 and "no index at" in proc.stderr and "--watch" in proc.stderr
    assert not (tmp_path / "home" / "run" / "launcher.json").exists()


def test_hotkey_listener_under_xvfb(display: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real pynput code path sees a combo typed on a real X server."""
    monkeypatch.setenv("DISPLAY", display)
    from pynput import keyboard  # imports only with a display

    for combo in ("ctrl+alt+space", "<ctrl>+<alt>+k", "super+shift+f5", "ctrl+return"):
        assert keyboard.HotKey.parse(parse_combo(combo)), combo
    pressed = threading.Event()
    with HotkeyListener("ctrl+alt+space", pressed.set):
        subprocess.run(
            ["xdotool", "key", "ctrl+alt+space"], check=True, env={**os.environ, "DISPLAY": display}
        )
        assert pressed.wait(10), "the hotkey handler did not run"
    other = threading.Event()
    with HotkeyListener("<ctrl>+<alt>+k", other.set):
        subprocess.run(["xdotool", "key", "ctrl+alt+j"], check=True, env={**os.environ, "DISPLAY": display})
        assert not other.wait(1), "a different combo fired the handler"


def test_search_through_the_process_is_identical_and_loads_the_model_once(
    served: tuple[Launched, Path, dict[str, str]],
) -> None:
    launched, docs, before = served
    home = launched.home
    searches = launched.get("/api/status").json()["searches"]
    assert ok(cli(home, "search", "how do I get a new passport", "--json")).stdout == before["json"]
    assert ok(cli(home, "search", "growing tomatoes")).stdout == before["text"]
    assert (
        ok(cli(home, "search", "code", "--kind", "code", "--min-score", "-1", "--json")).stdout
        == before["filtered"]
    )
    hits = json.loads(before["json"])["hits"]
    assert hits[0]["path"] == str(docs / "travel" / "passport renewal.txt")
    st = launched.get("/api/status").json()
    assert st["searches"] == searches + 3, "the CLI did not go through the running process"
    assert st["model_loads"] == 1 and st["pid"] == launched.info["pid"]
    # Errors are the same one line and exit code either way.
    proc = cli(home, "search", "x", "--under", str(docs / "missing"), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["hits"] == []
    proc = cli(home, "search", "")
    assert proc.returncode == 2 and "empty query" in proc.stderr


def test_second_launch_says_where_the_first_runs(served: tuple[Launched, Path, dict[str, str]]) -> None:
    launched, _, _ = served
    proc = cli(launched.home, "launch", "--no-browser", "--hotkey", "none")
    assert proc.returncode == 5
    assert f"launcher is already running (pid {launched.info['pid']}) at {launched.url}" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_run_file_is_private_and_holds_pid_port_token(served: tuple[Launched, Path, dict[str, str]]) -> None:
    launched, _, _ = served
    run = launched.home / "run"
    assert (run / "launcher.json").stat().st_mode & 0o777 == 0o600
    assert run.stat().st_mode & 0o777 == 0o700
    assert {"pid", "port", "token"} <= set(launched.info) and len(launched.token) >= 40


def test_requests_need_the_token(served: tuple[Launched, Path, dict[str, str]]) -> None:
    launched, _, _ = served
    assert launched.get("/api/status", token=None).status_code == 401
    assert launched.get("/api/status", token="not-the-token").status_code == 403
    assert launched.post("/api/search", {"text": "passport"}, token=None).status_code == 401
    assert launched.get("/", token=None, headers={"Accept": "text/html"}).status_code == 401
    assert launched.get("/api/status").status_code == 200
    # DNS rebinding and other local pages are refused even with the token.
    assert launched.get("/api/status", headers={"Host": "evil.example:80"}).status_code == 403
    assert launched.post("/api/toggle", headers={"Origin": "http://127.0.0.1:1"}).status_code == 403


def test_window_login_is_one_time(served: tuple[Launched, Path, dict[str, str]]) -> None:
    launched, _, _ = served
    page_uri = launched.window_page()
    page = Path(unquote(urlparse(page_uri).path))
    url = login_target(page_uri)
    assert url is not None and url.startswith(launched.url + "/auth?code=")
    first = launched.request("GET", url.removeprefix(launched.url), token=None, follow_redirects=False)
    # A page that forwards itself to / (a redirect chain begun at a file:// page would not carry
    # the SameSite=Strict cookie; the page's own navigation does).
    assert first.status_code == 200 and 'content="0;url=/"' in first.text
    assert not page.exists(), "the login page outlived its use"
    cookie = first.headers["set-cookie"]
    assert (
        f"launcher_token={launched.token}" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    )
    again = launched.request("GET", url.removeprefix(launched.url), token=None, follow_redirects=False)
    assert again.status_code == 403
    page = launched.request("GET", "/", token=None, headers={"Cookie": f"launcher_token={launched.token}"})
    assert page.status_code == 200 and "gradio" in page.text


def test_the_browser_is_handed_no_secret(served: tuple[Launched, Path, dict[str, str]]) -> None:
    """Any user reads command lines in /proc: the browser gets a private file, never the code or token."""
    launched, _, _ = served
    page_uri = launched.window_page()
    url = login_target(page_uri)
    assert url is not None
    code = url.split("code=", 1)[1]
    assert page_uri.startswith("file://") and code not in page_uri and launched.token not in page_uri
    page = Path(unquote(urlparse(page_uri).path))
    assert page.parent == launched.home / "run"
    assert page.stat().st_mode & 0o777 == 0o600 and page.parent.stat().st_mode & 0o777 == 0o700
    launched.settle()  # the window logs in: its page is deleted
    assert not page.exists()


FRAMING = {"content-security-policy": "frame-ancestors 'none'", "x-frame-options": "DENY"}


def test_no_page_can_be_framed(served: tuple[Launched, Path, dict[str, str]]) -> None:
    launched, _, _ = served
    cookie = {"Cookie": f"launcher_token={launched.token}"}
    login = launched.window_url()
    responses = {
        "window": launched.get("/", token=None, headers=cookie),
        "api": launched.get("/api/status"),
        "search": launched.post("/api/search", {"text": "passport"}),
        "malformed": launched.post("/api/search", {"top_k": "many"}),
        "no token": launched.get("/", token=None, headers={"Accept": "text/html"}),
        "wrong host": launched.get("/api/status", headers={"Host": "evil.example:80"}),
        "login": launched.request(
            "GET", login.removeprefix(launched.url), token=None, follow_redirects=False
        ),
        "used login": launched.request("GET", login.removeprefix(launched.url), token=None),
    }
    assert [r.status_code for r in responses.values()] == [200, 200, 200, 400, 401, 403, 200, 403]
    for name, resp in responses.items():
        for header, value in FRAMING.items():
            assert resp.headers.get(header) == value, f"{name}: {header} is {resp.headers.get(header)!r}"


# Malformed values for every field of every endpoint that takes a body, each a 400 naming the field.
MALFORMED: dict[str, list[Any]] = {
    "text": [5, ["a"], {"a": 1}, True, "nul\x00byte"],
    "top_k": ["many", 0, 1001, -3, 2.5, True, [], {}],
    "kinds": ["text", [5], ["spreadsheet"], {"text": 1}, 3],
    "under": [7, ["/"], {}, False],
    "after": ["last tuesday", 20230430, ["2023-04-30"], "2023-02-30"],
    "before": ["soon", 1.5, {}, True],
    "min_score": ["high", [0.5], {}, True, "NaN"],
    "like": [12, ["p1"], {}, True],
    "image_b64": ["not base64!!", 42, ["aGk="], True],
    "image_name": [3, ["x.png"], {}, True],
    "rerank": ["perhaps", 2, [], {}],
    "dates": ["perhaps", 2, [], {}],
    "rerank_top": ["ten", 0, 201, 1.5, True, []],
    "reranker_file": [3, ["f"], {}, True],
}
OPEN_MALFORMED: dict[str, list[Any]] = {
    "action": ["launch", 1, ["open"], {}, True],
    "file_id": [1, ["f1"], {}, True],
    "path": [1, ["/etc/passwd"], {}, True],
}
WATCH_MALFORMED: dict[str, list[Any]] = {"paused": ["perhaps", 2, [], {}]}


def test_every_api_field_is_validated(served: tuple[Launched, Path, dict[str, str]]) -> None:
    launched, docs, _ = served
    cases = [("/api/search", MALFORMED), ("/api/open", OPEN_MALFORMED), ("/api/watch", WATCH_MALFORMED)]
    base = {
        "/api/search": {"text": "passport"},
        "/api/open": {"path": str(docs / "garden.md"), "action": "copy"},
    }
    for endpoint, fields in cases:
        for name, values in fields.items():
            for value in values:
                resp = launched.post(endpoint, {**base.get(endpoint, {}), name: value})
                assert resp.status_code == 400, (endpoint, name, value, resp.status_code, resp.text)
                error = resp.json()["error"]
                assert error.startswith(f"{name}: ") and "\n" not in error, (endpoint, name, value, error)
        for body in ("[1, 2]", '"text"', "{not json", "[" * 5000, "7"):
            resp = launched.request(
                "POST", endpoint, content=body, headers={"Content-Type": "application/json"}
            )
            assert resp.status_code == 400 and "JSON" in resp.json()["error"], (
                endpoint,
                body[:20],
                resp.text,
            )
    # The one path parameter: anything but an indexed picture's id is a 404, never a 500.
    for file_id in ("f", "x1", "f999999999999999999999", "%00", "..%2F..%2Fetc%2Fpasswd", "f1"):
        resp = launched.get(f"/api/thumb/{file_id}")
        assert resp.status_code == 404, (file_id, resp.status_code, resp.text)
    # Well-formed requests still work, nulls meaning "not given".
    ok_search = launched.post(
        "/api/search", {"text": "passport", "top_k": 2, "kinds": None, "rerank": "false"}
    )
    assert ok_search.status_code == 200 and ok_search.json()["hits"]
    assert launched.post("/api/open", base["/api/open"]).status_code == 200


def test_open_refuses_paths_outside_the_index(served: tuple[Launched, Path, dict[str, str]]) -> None:
    launched, docs, _ = served
    for body in (
        {"path": "/etc/passwd"},
        {"path": str(docs / ".." / "home" / "run" / "launcher.json")},
        {"file_id": "f999"},
    ):
        resp = launched.post("/api/open", {**body, "action": "open"})
        assert resp.status_code == 403, body
        assert "is not in the index" in resp.json()["error"]
    assert not launched.lines("opened.txt")
    target = str(docs / "garden.md")
    resp = launched.post("/api/open", {"path": target, "action": "reveal"})
    assert resp.status_code == 200 and resp.json()["path"] == target
    assert recorded(launched.records / "revealed.txt")[-1] == target


def test_toggle_and_hotkey_ask_for_the_window(
    served: tuple[Launched, Path, dict[str, str]], display: str
) -> None:
    launched, _, _ = served
    st = launched.get("/api/status").json()
    assert st["hotkey"]["active"] is True and st["hotkey"]["combo"] == "ctrl+alt+space"
    launched.settle()
    opened = len(launched.lines("browser.txt"))
    subprocess.run(["xdotool", "key", "ctrl+alt+space"], check=True, env={**os.environ, "DISPLAY": display})
    urls = recorded(launched.records / "browser.txt", opened + 1)
    assert (login_target(urls[-1]) or "").startswith(launched.url + "/auth?code=")
    assert launched.get("/api/status").json()["hotkey"]["presses"] == 1
    # `launcher toggle` reaches the same process; a window is on its way, so no second one opens.
    proc = ok(cli(launched.home, "toggle", "--json"))
    assert json.loads(proc.stdout)["action"] == "opening"
    assert len(launched.lines("browser.txt")) == opened + 1


def test_toggle_focuses_an_open_window(served: tuple[Launched, Path, dict[str, str]]) -> None:
    """With a window's event stream open, toggle asks it to focus instead of opening another."""
    import httpx

    launched, _, _ = served
    events: list[str] = []
    connected = threading.Event()

    def window() -> None:
        headers = {"Cookie": f"launcher_token={launched.token}"}
        with (
            httpx.Client(trust_env=False, timeout=30) as client,
            client.stream("GET", launched.url + "/api/events", headers=headers) as resp,
        ):
            for line in resp.iter_lines():
                if line.startswith("event:"):
                    events.append(line.split(":", 1)[1].strip())
                    connected.set()
                    if events[-1] == "focus":
                        return

    t = threading.Thread(target=window, daemon=True)
    t.start()
    assert connected.wait(10)
    opened = len(launched.lines("browser.txt"))
    assert ok(cli(launched.home, "toggle")).stdout.strip() == "brought the search window forward"
    t.join(10)
    assert events == ["hello", "focus"]
    assert len(launched.lines("browser.txt")) == opened


def test_stop_removes_the_run_file_and_a_stale_one_is_cleaned(tmp_path: Path) -> None:
    docs = make_notes(tmp_path)
    home = tmp_path / "home"
    ok(cli(home, "index", str(docs), "--model", str(MINILM), "--json"))
    launched = launch(home, "--hotkey", "none")
    run_file = home / "run" / "launcher.json"
    assert launched.stop() == 0 and not run_file.exists()
    # A process killed with SIGKILL leaves its run file; the next client notices (the lock is free).
    launched = launch(home, "--hotkey", "none")
    launched.proc.kill()
    launched.proc.wait()
    assert run_file.exists()
    proc = cli(home, "toggle")
    assert proc.returncode == 5 and "launcher is not running" in proc.stderr
    assert not run_file.exists()
    hits = json.loads(ok(cli(home, "search", "passport", "--json")).stdout)["hits"]
    assert hits and hits[0]["path"].endswith("passport renewal.txt")


def test_toggle_without_a_process(tmp_path: Path) -> None:
    proc = cli(tmp_path / "home", "toggle")
    assert proc.returncode == 5 and "start it with `launcher launch`" in proc.stderr


def _wait_for_hit(launched: Launched, text: str, name: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = launched.post("/api/search", {"text": text})
        if resp.status_code == 200:
            hits = resp.json()["hits"]
            if hits and Path(hits[0]["path"]).name == name:
                return dict(hits[0])
        time.sleep(0.5)
    raise AssertionError(f"{name} not found for {text!r} in {timeout}s: {launched.get('/api/status').json()}")


def test_launch_watch_builds_and_follows_the_index(tmp_path: Path) -> None:
    """`launch --watch` on a fresh home: the watcher builds the index with the one loaded model."""
    docs = make_notes(tmp_path)
    home = tmp_path / "home"
    launched = launch(home, "--hotkey", "none", "--watch", str(docs), "--model", str(MINILM))
    try:
        _wait_for_hit(launched, "how do I renew my passport", "passport renewal.txt")
        (docs / "volcano.txt").write_text("Lava and ash erupted from the volcano.\n", encoding="utf-8")
        _wait_for_hit(launched, "an erupting volcano", "volcano.txt")
        st = launched.get("/api/status").json()
        assert st["model_loads"] == 1 and st["watcher"]["roots"] == [str(docs)]
        assert st["model"]["query_lane"]["tokens"] == 256  # queries never wait for the watcher
        assert st["watcher"]["status"]["state"] in ("watching", "embedding", "reading", "reconciling")
        assert launched.post("/api/watch", {"paused": True}).json() == {"ok": True, "paused": True}
        assert launched.get("/api/status").json()["watcher"]["status"]["paused"] is True
        hits = json.loads(ok(cli(home, "search", "an erupting volcano", "--json")).stdout)["hits"]
        assert Path(hits[0]["path"]).name == "volcano.txt"
    finally:
        assert launched.stop() == 0


def test_the_query_lane_setting(tmp_path: Path) -> None:
    """`query_lane = 0` turns the lane off (its memory saved; queries wait for the watcher)."""
    docs = make_notes(tmp_path)
    home = tmp_path / "home"
    launched = launch(
        home,
        "--hotkey",
        "none",
        "--watch",
        str(docs),
        "--model",
        str(MINILM),
        extra_env={"LAUNCHER_QUERY_LANE": "0"},
    )
    try:
        _wait_for_hit(launched, "how do I renew my passport", "passport renewal.txt")
        assert launched.get("/api/status").json()["model"]["query_lane"] == {"tokens": 0, "calls": 0}
    finally:
        assert launched.stop() == 0


# --- reranking through the process: the real tiny GGUF reranker, loaded once, per-request choice ---

RERANKER = FIXTURES / "tiny-reranker" / "tiny-qwen3vl-reranker-f16.gguf"
NO_RERANK_ENV = {"LAUNCHER_RERANK": "", "LAUNCHER_RERANKER": "", "LAUNCHER_RERANK_TOP": ""}


@pytest.fixture(scope="module")
def rerank_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Launched, Path]]:
    """A MiniLM index served with no reranker configured; the tests write `reranker` into config.toml
    while it runs (the process reads that setting at each reranked search)."""
    root = tmp_path_factory.mktemp("rerank-served")
    docs = make_notes(root)
    (docs / "passport photo.txt").write_text("Passport photos must be 35 by 45 mm.\n", encoding="utf-8")
    home = root / "home"
    ok(cli(home, "index", str(docs), "--model", str(MINILM), "--json"))
    launched = launch(home, "--hotkey", "none", extra_env=NO_RERANK_ENV)
    yield launched, docs
    launched.stop()


def _set_reranker(home: Path, reranker: Path | None) -> None:
    config = home / "config.toml"
    config.unlink(missing_ok=True)
    if reranker is not None:
        config.write_text(f"reranker = {json.dumps(str(reranker))}\n", encoding="utf-8")


def _search(launched: Launched, **body: Any) -> dict[str, Any]:
    resp = launched.post("/api/search", {"text": "renew my passport", "min_score": -1, **body})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def _direct_rerank_scores(index_dir: Path, hits: list[dict[str, Any]], top_n: int) -> dict[str, float]:
    """The tiny reranker run here, in the test process, on what the process showed it."""
    from launcher.cli.commands import _engine_options
    from launcher.models.rerank import load_reranker
    from launcher.query.rerank import candidate_for
    from launcher.query.session import hit_from_json, open_store

    store = open_store(index_dir)
    head = [hit_from_json(h) for h in hits[:top_n]]
    with load_reranker(RERANKER, options=_engine_options(2, None, None)) as rr:
        order = rr.rerank("renew my passport", [candidate_for(store, h, images=False) for h in head])
    return {head[i].path: score for i, score in order}


def test_search_api_reranks_when_asked(rerank_served: tuple[Launched, Path]) -> None:
    launched, _ = rerank_served
    _set_reranker(launched.home, RERANKER)
    plain = _search(launched, rerank=False)
    assert plain["reranked"] is False and plain["rerank_error"] is None
    assert all("rerank" not in h["scores"] and "retrieval" not in h["scores"] for h in plain["hits"])
    assert _search(launched) == plain  # no "rerank": the process's setting, off here

    answer = _search(launched, rerank=True, rerank_top=3)
    assert answer["reranked"] is True and answer["rerank_error"] is None
    hits, top = answer["hits"], answer["hits"][:3]
    assert len(hits) == len(plain["hits"]) >= 4
    # The reranker judged the three best retrieved files and only those; each keeps both scores.
    assert {h["path"] for h in top} == {h["path"] for h in plain["hits"][:3]}
    assert [h["path"] for h in hits[3:]] == [h["path"] for h in plain["hits"][3:]]
    retrieval = {h["path"]: h["score"] for h in plain["hits"]}
    for h in top:
        assert h["score"] == h["scores"]["rerank"]
        assert h["scores"]["retrieval"] == pytest.approx(retrieval[h["path"]], abs=1e-6)
    assert all("rerank" not in h["scores"] and "retrieval" in h["scores"] for h in hits[3:])
    # The order is the reranker's: its scores, best first, equal to running it here.
    rerank = [h["scores"]["rerank"] for h in top]
    assert rerank == sorted(rerank, reverse=True)
    direct = _direct_rerank_scores(launched.home / "index", plain["hits"], 3)
    assert {h["path"]: h["scores"]["rerank"] for h in top} == pytest.approx(direct, abs=1e-4)

    # Loaded once, kept: later reranked searches reuse it.
    loads = launched.get("/api/status").json()["reranker"]["loads"]
    assert _search(launched, rerank=True, rerank_top=3) == answer
    st = launched.get("/api/status").json()["reranker"]
    assert st["loads"] == loads and st["loaded"] == str(RERANKER) and st["error"] is None
    assert st["default"] is False and st["top"] == 10


def test_search_api_without_a_reranker_still_answers(rerank_served: tuple[Launched, Path]) -> None:
    launched, docs = rerank_served
    _set_reranker(launched.home, None)
    plain = _search(launched, rerank=False)
    answer = _search(launched, rerank=True)
    assert answer["reranked"] is False and answer["hits"] == plain["hits"]
    assert answer["rerank_error"] == (
        "no reranker model: run `launcher models pull qwen3-vl-reranker-2b` "
        "(or give a reranker .gguf file or a Hugging Face folder)"
    )
    _set_reranker(launched.home, docs / "missing.gguf")
    answer = _search(launched, rerank=True)
    assert answer["reranked"] is False and answer["hits"] == plain["hits"]
    assert answer["rerank_error"].startswith(f"no reranker model at {docs / 'missing.gguf'}: run `launcher")
    # A present but broken file: one line naming it, search unharmed, and a good model afterwards works.
    broken = docs.parent / "broken-reranker.gguf"
    broken.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(64))
    _set_reranker(launched.home, broken)
    answer = _search(launched, rerank=True)
    assert answer["reranked"] is False and answer["hits"] == plain["hits"]
    assert "broken-reranker.gguf" in answer["rerank_error"] and "\n" not in answer["rerank_error"]
    assert launched.get("/api/status").json()["reranker"]["error"] == answer["rerank_error"]
    _set_reranker(launched.home, RERANKER)
    assert _search(launched, rerank=True)["reranked"] is True
    # A bad request is an error like any other.
    resp = launched.post("/api/search", {"text": "passport", "rerank_top": 0})
    assert resp.status_code == 400
    assert resp.json() == {"error": "rerank_top: 0 is not a whole number from 1 to 200", "exit_code": 2}


def test_cli_rerank_goes_through_the_process(rerank_served: tuple[Launched, Path], tmp_path: Path) -> None:
    """`launcher search --rerank` has the process rerank when it uses the reranker the CLI would use."""
    launched, _ = rerank_served
    _set_reranker(launched.home, RERANKER)
    args = ("search", "renew my passport", "--min-score", "-1", "--rerank", "--rerank-top", "3", "--json")

    def counts() -> tuple[int, int, int]:
        st = launched.get("/api/status").json()
        return st["searches"], st["reranker"]["reranks"], st["reranker"]["loads"]

    searches, reranks, loads = counts()
    out = json.loads(ok(cli(launched.home, *args)).stdout)["hits"]
    assert counts() == (searches + 1, reranks + 1, loads)  # retrieved and reranked there
    api = _search(launched, rerank=True, rerank_top=3)["hits"]
    assert out == [{k: v for k, v in h.items() if k != "piece_id"} for h in api]
    # Another reranker file: the process only retrieves, the CLI reranks with its own choice.
    other = tmp_path / "my-reranker.gguf"
    shutil.copy(RERANKER, other)
    searches, reranks, loads = counts()
    mine = json.loads(ok(cli(launched.home, *args, "--reranker", str(other))).stdout)["hits"]
    assert counts() == (searches + 1, reranks, loads)
    assert [h["path"] for h in mine] == [h["path"] for h in out]
    assert [h["scores"]["rerank"] for h in mine[:3]] == pytest.approx(
        [h["scores"]["rerank"] for h in out[:3]]
    )
    # Without --rerank: the hits as retrieved.
    plain = json.loads(ok(cli(launched.home, *args[:4], "--json")).stdout)["hits"]
    assert all("rerank" not in h["scores"] for h in plain)
