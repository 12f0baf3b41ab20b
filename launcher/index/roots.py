"""The index's roots and the scan options remembered for each one.

The manifest keeps `roots` (a sorted list of folders, as before) and `scan` (root -> the options
it was indexed with). An index written before options were remembered has no `scan`: its roots
get the defaults, which is what those runs used unless flags said otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from launcher.core.paths import inside, unique_paths

DEFAULT_MAX_FILE_BYTES = 1024 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000  # ExtractSettings' default; --max-image-mp


@dataclass(frozen=True)
class ScanOptions:
    """How one root is walked and which files are left out."""

    excludes: tuple[str, ...] = ()
    include_hidden: bool = False
    follow_symlinks: bool = False
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    def to_json(self) -> dict[str, Any]:
        """The manifest's form."""
        return {
            "excludes": list(self.excludes),
            "include_hidden": self.include_hidden,
            "follow_symlinks": self.follow_symlinks,
            "max_file_bytes": self.max_file_bytes,
            "max_image_pixels": self.max_image_pixels,
        }

    @staticmethod
    def from_json(data: Any) -> ScanOptions:
        """Options from the manifest; a missing or malformed value falls back to the default."""
        if not isinstance(data, dict):
            return ScanOptions()
        kept: dict[str, Any] = {}
        excludes = data.get("excludes")
        if isinstance(excludes, list) and all(isinstance(e, str) for e in excludes):
            kept["excludes"] = tuple(excludes)
        for name in ("include_hidden", "follow_symlinks"):
            if isinstance(data.get(name), bool):
                kept[name] = data[name]
        for name in ("max_file_bytes", "max_image_pixels"):
            value = data.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                kept[name] = value
        return replace(ScanOptions(), **kept)

    def with_flags(self, flags: ScanFlags) -> ScanOptions:
        """These options with whatever the flags say instead."""
        said = {f.name: getattr(flags, f.name) for f in fields(flags) if getattr(flags, f.name) is not None}
        if "excludes" in said:
            said["excludes"] = tuple(said["excludes"])
        return replace(self, **said)

    def describe(self) -> str:
        """One short line for `launcher status`."""
        parts = [f"exclude {', '.join(self.excludes)}"] if self.excludes else []
        if self.include_hidden:
            parts.append("hidden files")
        if self.follow_symlinks:
            parts.append("symlinks followed")
        parts.append(f"max {self.max_file_bytes // (1024 * 1024)} MB")
        parts.append(f"max {self.max_image_pixels // 1_000_000} MP")
        return ", ".join(parts)


@dataclass(frozen=True)
class ScanFlags:
    """The scan options a command line gave; None where it said nothing (the remembered one holds)."""

    excludes: Sequence[str] | None = None
    include_hidden: bool | None = None
    follow_symlinks: bool | None = None
    max_file_bytes: int | None = None
    max_image_pixels: int | None = None

    def any(self) -> bool:
        """Whether any scan flag was given."""
        return any(getattr(self, f.name) is not None for f in fields(self))


def root_of(path: str, roots: Sequence[str]) -> str | None:
    """The root that holds path (the deepest, should roots ever nest), else None."""
    holding = [r for r in roots if inside(path, r)]
    return max(holding, key=len) if holding else None


def stored_options(manifest: Mapping[str, Any]) -> dict[str, ScanOptions]:
    """Each root's remembered options; roots of an index from before they were kept get the defaults."""
    scan = manifest.get("scan")
    scan = scan if isinstance(scan, dict) else {}
    return {str(r): ScanOptions.from_json(scan.get(r)) for r in manifest.get("roots", [])}


def merge_roots(
    current: Mapping[str, ScanOptions], added: Mapping[str, ScanOptions]
) -> dict[str, ScanOptions]:
    """The roots after adding some: a new root that holds older ones takes their place (it is
    walked whole, with its own options); one inside an existing root is not added (the caller
    refreshes it with that root's options)."""
    out = dict(current)
    for root, options in added.items():
        if root in out or root_of(root, list(out)) is None:
            for old in [r for r in out if r != root and inside(r, root)]:
                del out[old]
            out[root] = options
    kept = unique_paths(list(out))
    return {r: out[r] for r in kept}


def chosen_options(
    remembered: Mapping[str, ScanOptions], folders: Sequence[str], flags: ScanFlags
) -> dict[str, ScanOptions]:
    """The scan options of each folder a command names: what it remembers (the defaults for a new
    root) with the flags applied. A folder inside a root is left out: it is walked with its root's."""
    out: dict[str, ScanOptions] = {}
    for folder in folders:
        root = root_of(folder, list(remembered))
        if root is not None and root != folder:
            continue
        out[folder] = remembered.get(folder, ScanOptions()).with_flags(flags)
    return out
