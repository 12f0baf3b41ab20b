"""The global hotkey: parse a combo like "ctrl+alt+space", listen for it with pynput.

On X11 pynput watches the keyboard through the RECORD extension: it sees the combo in every
application but does not swallow it. Wayland gives no global key access to ordinary programs, so
there the desktop's own shortcut settings run `launcher toggle` instead (see docs/launcher.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from launcher.core.errors import InputError, LauncherError

log = logging.getLogger("launcher.hotkey")

DEFAULT_COMBO = "ctrl+alt+space"
OFF = ("", "none", "off", "no", "false")
READY_TIMEOUT_S = 10.0  # for the keyboard listener's X connection

MODIFIERS = {
    "ctrl": "ctrl",
    "control": "ctrl",
    "ctl": "ctrl",
    "alt": "alt",
    "option": "alt",
    "opt": "alt",
    "altgr": "alt_gr",
    "alt_gr": "alt_gr",
    "shift": "shift",
    "super": "cmd",
    "win": "cmd",
    "windows": "cmd",
    "meta": "cmd",
    "cmd": "cmd",
    "command": "cmd",
}
# Named keys, spelled as pynput's Key members, with the common aliases people type.
NAMED_KEYS = {
    **{k: k for k in ("space", "tab", "enter", "backspace", "delete", "insert", "home", "end")},
    **{k: k for k in ("page_up", "page_down", "up", "down", "left", "right", "menu", "pause")},
    **{k: k for k in ("print_screen", "scroll_lock", "num_lock", "caps_lock", "esc")},
    **{f"f{i}": f"f{i}" for i in range(1, 21)},
    "return": "enter",
    "escape": "esc",
    "del": "delete",
    "ins": "insert",
    "pgup": "page_up",
    "pageup": "page_up",
    "pgdn": "page_down",
    "pagedown": "page_down",
    "print": "print_screen",
    "spacebar": "space",
}


def parse_combo(text: str) -> str:
    """A combo ("ctrl+alt+space", "<ctrl>+<alt>+k", "Super+F2") in pynput's form; InputError naming --hotkey."""
    raw = text.strip()
    parts = [p.strip().lower().strip("<>").strip() for p in raw.split("+")]
    if raw.endswith("++"):  # "ctrl++": the plus key itself
        parts = [*parts[:-2], "+"]
    mods: list[str] = []
    key: str | None = None
    for part in parts:
        if not part:
            raise InputError(f"--hotkey {raw!r}: empty key name (write combos like ctrl+alt+space)")
        if part in MODIFIERS:
            mod = MODIFIERS[part]
            if mod in mods:
                raise InputError(f"--hotkey {raw!r}: {part} appears twice")
            mods.append(mod)
        elif key is not None:
            raise InputError(f"--hotkey {raw!r}: more than one key ({key} and {part}); add modifiers instead")
        elif part in NAMED_KEYS:
            key = f"<{NAMED_KEYS[part]}>"
        elif len(part) == 1 and part.isprintable():
            key = part
        else:
            raise InputError(
                f"--hotkey {raw!r}: unknown key {part!r} (use a letter, digit, space, enter, f1-f20, "
                "with ctrl, alt, shift or super)"
            )
    if key is None:
        raise InputError(f"--hotkey {raw!r}: no key besides the modifiers (e.g. ctrl+alt+space)")
    if not mods and not (key.startswith("<f") and key[2:-1].isdigit()):
        raise InputError(
            f"--hotkey {raw!r}: add a modifier (ctrl, alt, shift, super) so typing is not caught"
        )
    order = ["ctrl", "alt", "alt_gr", "shift", "cmd"]
    return "+".join([f"<{m}>" for m in sorted(mods, key=order.index)] + [key])


def unavailable_reason() -> str | None:
    """Why a global hotkey cannot be listened for here, or None when it can."""
    if sys.platform.startswith("linux"):
        if not os.environ.get("DISPLAY"):
            if os.environ.get("WAYLAND_DISPLAY") or os.environ.get("XDG_SESSION_TYPE") == "wayland":
                return "wayland does not let programs grab global keys"
            return "no X display (DISPLAY is not set)"
    return None


def _send_x11_stop(listener: Any) -> None:
    """Make pynput's X11 listener thread end now, not at the next key press."""
    # pynput 1.8 queues its "stop recording" request on the connection its thread is blocked reading,
    # without sending it; send the same request over the listener's other connection, as pynput
    # itself does when it shuts down.
    display = getattr(listener, "_display_stop", None)
    context = getattr(listener, "_context", None)
    if display is None or context is None:
        return
    with contextlib.suppress(Exception):
        display.record_disable_context(context)
        display.flush()


class HotkeyListener:
    """Calls `on_press` (on the listener's thread) each time the combo is pressed."""

    def __init__(self, combo: str, on_press: Callable[[], None]):
        self.combo = parse_combo(combo)
        self.on_press = on_press
        self._listener: Any = None

    def start(self) -> None:
        """Start listening; LauncherError with the reason when this session cannot."""
        reason = unavailable_reason()
        if reason:
            raise LauncherError(f"no global hotkey: {reason}")
        try:
            from pynput import keyboard
        except Exception as exc:  # pynput raises ImportError subclasses, or Xlib errors, at import
            raise LauncherError(f"no global hotkey: pynput cannot start here ({exc})") from None
        listener = keyboard.GlobalHotKeys({self.combo: self._fire})
        listener.daemon = True
        listener.start()
        # Wait until the X connection is up, so a press right after start is seen. pynput's own
        # wait() has no timeout and never returns when its thread dies before it is ready (seen
        # under a heavily loaded Xvfb), so it waits on a thread of its own, watched from here.
        waiter = threading.Thread(target=listener.wait, name="launcher-hotkey-wait", daemon=True)
        waiter.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while waiter.is_alive() and listener.is_alive() and time.monotonic() < deadline:
            waiter.join(0.05)
        if waiter.is_alive() or not listener.is_alive():
            listener.stop()
            raise LauncherError("no global hotkey: the keyboard listener stopped at once")
        self._listener = listener

    def _fire(self) -> None:
        try:
            self.on_press()
        except Exception:  # a failing handler must not kill the listener thread
            log.exception("hotkey handler failed")

    def stop(self) -> None:
        """Stop listening."""
        if self._listener is not None:
            self._listener.stop()
            self._listener.join(timeout=0.2)
            if self._listener.is_alive():
                _send_x11_stop(self._listener)
                self._listener.join(timeout=2)
            self._listener = None

    def __enter__(self) -> HotkeyListener:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
