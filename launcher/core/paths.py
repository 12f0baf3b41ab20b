"""Path strings compared as the stages compare them: absolute, no file-system calls."""

from __future__ import annotations

import os
from collections.abc import Iterable


def folder_prefix(folder: str) -> str:
    """What every path strictly below `folder` starts with (one separator, whatever the folder ends in)."""
    return folder.rstrip(os.sep) + os.sep


def inside(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or below it (plain string comparison on absolute paths)."""
    return path == folder or path.startswith(folder_prefix(folder))


def inside_any(path: str, folders: Iterable[str]) -> bool:
    """Whether `path` is one of `folders` or below one of them."""
    return any(inside(path, f) for f in folders)
