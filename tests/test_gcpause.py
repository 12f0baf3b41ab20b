"""The cycle collector's pause: nested and shared by threads, it ends with the last holder and
restores what it found."""

from __future__ import annotations

import gc
import threading

from launcher.core.gcpause import paused_gc


def test_nested_pauses_from_two_threads_restore_the_collector() -> None:
    assert gc.isenabled()
    inner_started, outer_may_end = threading.Event(), threading.Event()
    seen: list[bool] = []

    def other() -> None:
        with paused_gc():
            inner_started.set()
            outer_may_end.wait(5)
            seen.append(gc.isenabled())
        seen.append(gc.isenabled())

    with paused_gc():
        t = threading.Thread(target=other)
        t.start()
        assert inner_started.wait(5)
        with paused_gc():
            assert not gc.isenabled()
    # This thread's pauses ended, the other's has not: still off.
    assert not gc.isenabled()
    outer_may_end.set()
    t.join(5)
    assert seen == [False, True] and gc.isenabled()


def test_a_collector_turned_off_by_someone_else_stays_off() -> None:
    gc.disable()
    try:
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_exception_ends_the_pause() -> None:
    try:
        with paused_gc():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.isenabled()
