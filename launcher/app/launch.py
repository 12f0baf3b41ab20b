"""`launcher launch`: the service started, served over HTTP, its window opened."""

from __future__ import annotations

import os

from launcher.app.http import build_app
from launcher.app.service import LOOPBACK, LauncherService, LaunchOptions, _err
from launcher.core.errors import LauncherError


def run_launch(options: LaunchOptions) -> None:
    """`launcher launch`: start, say where, open the window, serve until stopped."""
    if options.hotkey:
        from launcher.app.hotkey import parse_combo

        parse_combo(options.hotkey)  # a bad combo fails before anything is loaded
    if options.host not in LOOPBACK:
        _err(
            f"warning: serving on {options.host}: other machines can reach this port; "
            "every request still needs your token, but traffic is not encrypted"
        )
    service = LauncherService(options)
    service.start()
    hot = f"press {options.hotkey} or run" if service.hotkey.active else "run"
    _err(f"launcher is running at {service.url} (pid {os.getpid()}): {hot} `launcher toggle` to search")

    def ready() -> None:
        if options.open_browser:
            try:
                service.open_window()
            except LauncherError as exc:
                _err(f"note: {exc}")

    service.serve_forever(build_app(service), on_ready=ready)
