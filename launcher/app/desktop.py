"""Talking to the desktop: open a file, reveal it in its folder, open the search window, raise it.

Every command is configurable (flag > env > config file > default, see config.py), so a person can
use their own file manager or browser and the tests can capture what would have run:
`LAUNCHER_OPENER`, `LAUNCHER_REVEALER` and `LAUNCHER_BROWSER` are command lines; the path or URL
replaces `{}` in them, or is appended as the last argument.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
import threading
import webbrowser
from pathlib import Path

from launcher.core import config, files
from launcher.core.errors import LauncherError

log = logging.getLogger("launcher.desktop")

WINDOW_TITLE = "Launcher search"  # the page title: app windows carry it, xdotool/wmctrl find it by it
# Browsers with an app mode (`--app=URL`: a window without tabs or address bar), best first.
APP_BROWSERS = (
    "google-chrome",
    "google-chrome-stable",
    "chromium",
    "chromium-browser",
    "brave-browser",
    "microsoft-edge",
    "vivaldi",
)
APP_WINDOW_SIZE = "760,560"


def _command(template: str, arg: str) -> list[str]:
    """A configured command line with the argument put in place of `{}` or appended."""
    parts = shlex.split(template)
    if any("{}" in p for p in parts):
        return [p.replace("{}", arg) for p in parts]
    return [*parts, arg]


def _spawn(argv: list[str]) -> None:
    """Start a desktop program detached from us; a reaper thread collects its exit status."""
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            # The person's own umask: files the opened program saves are theirs to share.
            umask=files.USER_UMASK if files.USER_UMASK is not None else -1,
        )
    except OSError as exc:
        raise LauncherError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    threading.Thread(target=proc.wait, name="reap", daemon=True).start()


def open_file(path: str) -> None:
    """Open a file with the configured opener (default: the desktop's own choice)."""
    template = config.resolve("opener")
    if template:
        _spawn(_command(template, path))
    elif sys.platform == "darwin":
        _spawn(["open", path])
    else:
        _spawn(["xdg-open", path])


def reveal_file(path: str) -> None:
    """Show a file selected in its folder with the configured revealer (default: the file manager)."""
    template = config.resolve("revealer")
    if template:
        _spawn(_command(template, path))
    elif sys.platform == "darwin":
        _spawn(["open", "-R", path])
    elif shutil.which("dbus-send") and _show_items(path):
        pass  # Nautilus, Dolphin, Nemo, Thunar... select the file in its folder
    else:
        _spawn(["xdg-open", str(Path(path).parent)])


def _show_items(path: str) -> bool:
    """The freedesktop FileManager1 call that opens the folder with the file selected."""
    uri = Path(path).as_uri()
    try:
        done = subprocess.run(
            [
                "dbus-send",
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.FileManager1",
                "--type=method_call",
                "/org/freedesktop/FileManager1",
                "org.freedesktop.FileManager1.ShowItems",
                f"array:string:{uri}",
                "string:",
            ],
            capture_output=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def open_window(url: str) -> str:
    """Open the search window at `url` (configured browser, else a Chromium app window, else the default); says which."""
    template = config.resolve("browser")
    if template:
        _spawn(_command(template, url))
        return "browser command"
    for name in APP_BROWSERS:
        exe = shutil.which(name)
        if exe:
            _spawn([exe, f"--app={url}", f"--window-size={APP_WINDOW_SIZE}"])
            return f"{name} app window"
    if not webbrowser.open(url, new=1):
        raise LauncherError(f"no browser found to open {url}: set LAUNCHER_BROWSER to a browser command")
    return "default browser"


def raise_window() -> bool:
    """Bring the search window to the front on X11 (xdotool, else wmctrl); False when neither can."""
    if not os.environ.get("DISPLAY"):
        return False  # Wayland without XWayland, a console, macOS: the page focuses itself
    pattern = f"^{WINDOW_TITLE}"
    for argv in (
        ["xdotool", "search", "--name", pattern, "windowactivate"],
        ["wmctrl", "-a", WINDOW_TITLE],
    ):
        if shutil.which(argv[0]):
            try:
                if subprocess.run(argv, capture_output=True, timeout=3).returncode == 0:
                    return True
            except (OSError, subprocess.TimeoutExpired):
                continue
    return False


def display_path(path: str) -> str:
    """A path as a person reads it: the home folder shown as ~."""
    home = os.path.expanduser("~")
    if home not in ("", "/") and (path == home or path.startswith(home + os.sep)):
        return "~" + path[len(home) :]
    return path
