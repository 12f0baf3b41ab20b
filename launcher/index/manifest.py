"""The manifest: the index's names and limits, and reading what a committed manifest names.

The directory layout and the commit protocol are in launcher/index/store.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from launcher.core.errors import StoreError

SCHEMA = 1  # bump when the layout or the tokenizer (keywords.py) changes
MANIFEST = "MANIFEST.json"
# A manifest write that never reached its rename (atomic_write_json's name; older versions' too).
_MANIFEST_TMP = re.compile(r"\.?MANIFEST\.json(\.\d+\.\d+)?\.tmp$")
LOCK = "LOCK"
TEXT_CAP = 4096  # characters of a piece's text kept for snippets; postings see all of it
MAX_FILE_DELTAS = 16  # file-table deltas before a new base is written

Dtype = Literal["float32", "float16", "int8"]
DTYPES: tuple[str, ...] = ("float32", "float16", "int8")
FileId = str
PieceId = str

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
F32 = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]

_OWN_FILE = re.compile(r"^([pvfc]-\d{8}-[0-9a-f]{6})\.")
_LISTS_FILE = re.compile(r"^([v]-\d{8}-[0-9a-f]{6})\.(c-\d{8}-[0-9a-f]{6})\.lists\.npy$")
_MODALITIES = ("text", "image")


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"no index at {root}; run `launcher index` to build one") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read index manifest {path}: {exc}; rebuild the index") from None
    if data.get("schema") != SCHEMA:
        raise StoreError(
            f"index at {root} has schema {data.get('schema')}, this launcher reads {SCHEMA}; "
            "rebuild the index"
        )
    return data  # type: ignore[no-any-return]


def _names(manifest: dict[str, Any], key: str) -> list[str]:
    return [e["name"] for e in manifest[key]]


def _lists_name(vector_segment: str, centroids: str) -> str:
    return f"{vector_segment}.{centroids}.lists.npy"


def _partition_name(manifest: dict[str, Any]) -> str | None:
    part = manifest.get("partition")
    return str(part["name"]) if part else None


def _live_files(manifest: dict[str, Any]) -> set[str]:
    """What a manifest names: segment prefixes, centroids, and list files (full names)."""
    live = set(_names(manifest, "files") + _names(manifest, "pieces") + _names(manifest, "vectors"))
    cname = _partition_name(manifest)
    if cname is not None:
        live.add(cname)
        live.update(_lists_name(e["name"], cname) for e in manifest["vectors"] if e.get("lists") == cname)
    return live
