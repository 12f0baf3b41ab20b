"""Pausing Python's cycle collector while a burst of acyclic objects is made.

Loading a 100k-file table or walking a 100k-file tree makes millions of lists, strings and tuples,
none of them in a cycle; the collector would run over all of them many times on the way (a quarter
of a rescan's time, measured). A pause nests and is shared by threads: the collector comes back
when the last one ends, and only if it was on when the first began.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextmanager
def paused_gc() -> Iterator[None]:
    """Keep the cycle collector off for the block (reference counting frees memory as usual)."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
