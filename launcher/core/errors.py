"""Typed errors the library raises; the CLI turns them into one-line messages and exit codes.

Messages are lowercase, name the file and say what to do.
"""

from __future__ import annotations


class LauncherError(Exception):
    """Base class: a problem a user can hit and fix."""

    exit_code = 1


class ModelError(LauncherError):
    """A model file is missing, corrupt, or does not fit the request."""

    exit_code = 3


class RerankerUnavailable(ModelError):
    """The requested reranker backend cannot run here (no CUDA GPU, optional extra not installed)."""


class InputError(LauncherError):
    """An input (text, image, flag value) cannot be embedded as given."""

    exit_code = 2


class InputTooLong(InputError):
    """The prompt is longer than the model's context; never truncated silently."""


class StoreError(LauncherError):
    """The index on disk is missing, locked, or from another model."""

    exit_code = 4


class StoreLocked(StoreError):
    """Another process is writing the index."""


class ModelMismatch(StoreError):
    """The index was built with another model or pipeline."""


class ServerError(LauncherError):
    """The resident process (`launcher launch`) is not running, already running, or refused a request."""

    exit_code = 5


class AlreadyRunning(ServerError):
    """A second `launcher launch` for the same user."""


class NotRunning(ServerError):
    """`launcher toggle` with no resident process."""


class NotIndexed(LauncherError):
    """The window was asked to open, reveal or copy a path that is not in the index."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (at most `limit` characters), '' when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else ""
