"""Helpers for tests of the resident process: a real `launcher launch` subprocess, a real X server
(Xvfb), and commands that record what the launcher asked the desktop to do."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root in CI containers
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--num-raster-threads=1",  # one raster thread: screenshots come out the same, pixel for pixel
]


def recorder(out: Path) -> str:
    """A command line that appends its last argument (a path or URL) as one line to `out`."""
    code = f"import sys; open({str(out)!r}, 'a', encoding='utf-8').write(sys.argv[-1] + chr(10))"
    return f"{sys.executable} -c {json.dumps(code)}"


def recorded(out: Path, n: int = 1, timeout: float = 20) -> list[str]:
    """The lines a recorder wrote, waiting until there are at least n."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.exists():
            lines = out.read_text(encoding="utf-8").splitlines()
            if len(lines) >= n:
                return lines
        time.sleep(0.05)
    raise AssertionError(f"{out.name}: fewer than {n} line(s) recorded in {timeout}s")


def chromium_path() -> str:
    """Debian's Chromium, which Playwright drives (its own browser download is not used)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


@contextmanager
def xvfb() -> Iterator[str]:
    """A private X server on a free display; yields the DISPLAY value."""
    if not shutil.which("Xvfb"):
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    r, w = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(w), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        pass_fds=(w,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(w)
    try:
        with os.fdopen(r) as f:
            number = f.readline().strip()
        if not number:
            raise AssertionError("Xvfb did not start")
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass
class Launched:
    """A running `launcher launch` and where to find what it did."""

    proc: subprocess.Popen[str]
    home: Path
    info: dict[str, Any]
    records: Path  # folder of recorder outputs: browser.txt, opened.txt, revealed.txt

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.info['port']}"

    @property
    def token(self) -> str:
        return str(self.info["token"])

    def get(self, path: str, token: str | None = "", **kw: Any) -> Any:
        return self.request("GET", path, token=token, **kw)

    def post(self, path: str, body: Any = None, token: str | None = "", **kw: Any) -> Any:
        return self.request("POST", path, token=token, json=body if body is not None else {}, **kw)

    def request(self, method: str, path: str, token: str | None = "", **kw: Any) -> Any:
        """An HTTP request; token "" means the real one, None means none."""
        import httpx

        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token or self.token}"
        with httpx.Client(trust_env=False, timeout=60) as client:
            return client.request(method, self.url + path, headers=headers, **kw)

    def settle(self) -> None:
        """Log in the last window asked for, so that the next toggle opens a new one."""
        pages = self.lines("browser.txt")
        url = login_target(pages[-1]) if pages else None
        if url and url.startswith(self.url + "/"):
            self.request("GET", url.removeprefix(self.url), token=None, follow_redirects=False)

    def window_page(self) -> str:
        """Ask for a window (as the hotkey does) and return what the browser is given: the file://
        address of the private page that forwards to the one-time URL."""
        self.settle()
        before = len(self.lines("browser.txt"))
        self.post("/api/toggle").raise_for_status()
        return recorded(self.records / "browser.txt", before + 1)[-1]

    def window_url(self) -> str:
        """Ask for a window and return the one-time URL its login page forwards to."""
        url = login_target(self.window_page())
        assert url is not None, "the login page forwards nowhere"
        return url

    def lines(self, name: str) -> list[str]:
        path = self.records / name
        return path.read_text(encoding="utf-8").splitlines() if path.exists() else []

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def login_target(page_uri: str) -> str | None:
    """The URL a login page (a file:// address the browser was given) forwards to; None once the
    page is gone (used, or expired)."""
    import html
    import re
    from urllib.parse import unquote, urlparse

    if not page_uri.startswith("file://"):
        return None
    try:
        text = Path(unquote(urlparse(page_uri).path)).read_text(encoding="utf-8")
    except OSError:
        return None
    found = re.search(r'http-equiv="refresh" content="0;url=([^"]+)"', text)
    return html.unescape(found.group(1)) if found else None


def env_for(home: Path, records: Path, **extra: str) -> dict[str, str]:
    """The environment of a launched process: its own home, and recorders for every desktop command."""
    records.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "LAUNCHER_HOME": str(home),
        "LAUNCHER_THREADS": "2",
        "LAUNCHER_BROWSER": recorder(records / "browser.txt"),
        "LAUNCHER_OPENER": recorder(records / "opened.txt"),
        "LAUNCHER_REVEALER": recorder(records / "revealed.txt"),
        **extra,
    }
    if "DISPLAY" not in extra:  # no hotkey on the developer's own desktop
        env.pop("DISPLAY", None)
    return env


def launch(home: Path, *args: str, extra_env: dict[str, str] | None = None, timeout: float = 120) -> Launched:
    """Start `launcher launch --no-browser` and wait until its run file says where it listens."""
    records = home.parent / f"{home.name}-records"
    env = env_for(home, records, **(extra_env or {}))
    run_file = home / "run" / "launcher.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "launcher.cli", "launch", "--no-browser", *args],
        env=env,
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"launch exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
            )
        if run_file.exists():
            try:
                info = json.loads(run_file.read_text(encoding="utf-8"))
            except ValueError:
                info = None
            if info:
                launched = Launched(proc, home, info, records)
                if _answers(launched):
                    return launched
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"launch did not come up in {timeout}s")


def _answers(launched: Launched) -> bool:
    import httpx

    try:
        return bool(launched.get("/api/status").status_code == 200)
    except httpx.HTTPError:
        return False


def screenshots_wanted() -> bool:
    """LAUNCHER_SCREENSHOTS=1 regenerates docs/screenshots/*.png from the UI tests."""
    return os.environ.get("LAUNCHER_SCREENSHOTS") == "1"
