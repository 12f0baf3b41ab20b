"""Read a GGUF file's header (metadata key/values) without loading tensors or llama.cpp.

Used to tell a model from an mmproj, to check that a file is a GGUF at all before llama.cpp
sees it, and for `launcher models list` / `doctor`. Arrays (the vocabulary) are skipped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from launcher.core.errors import ModelError

GGUF_MAGIC = b"GGUF"
_SCALARS: dict[int, str] = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING = 8
_ARRAY = 9

MetaValue = int | float | bool | str | None


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError
    return data


def _read_str(f: BinaryIO) -> str:
    (n,) = struct.unpack("<Q", _read(f, 8))
    if n > 1 << 26:
        raise ValueError("string too long")
    return _read(f, n).decode("utf-8", errors="replace")


def _read_value(f: BinaryIO, vtype: int) -> MetaValue:
    if vtype in _SCALARS:
        fmt = _SCALARS[vtype]
        return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]  # type: ignore[no-any-return]
    if vtype == _STRING:
        return _read_str(f)
    if vtype == _ARRAY:
        (etype,) = struct.unpack("<I", _read(f, 4))
        (count,) = struct.unpack("<Q", _read(f, 8))
        if etype in _SCALARS:
            f.seek(count * struct.calcsize(_SCALARS[etype]), 1)
        else:
            for _ in range(count):
                _read_value(f, etype)
        return None
    raise ValueError(f"unknown gguf value type {vtype}")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in a GGUF header: its shape, ggml type and offset into the data section."""

    dims: tuple[int, ...]
    ggml_type: int
    offset: int


@dataclass(frozen=True)
class Header:
    """A GGUF header: scalar/string metadata, tensor entries, and where the tensor data starts."""

    meta: dict[str, MetaValue]
    tensors: dict[str, TensorInfo]
    data_start: int


def read_header(path: str | Path, *, tensors: bool = True) -> Header:
    """Metadata (and tensor entries) of a GGUF file; raises ModelError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        with path.open("rb") as f:
            if _read(f, 4) != GGUF_MAGIC:
                raise ModelError(f"not a gguf model file: {path}")
            (version,) = struct.unpack("<I", _read(f, 4))
            n_tensors, n_kv = struct.unpack("<QQ", _read(f, 16))
            meta: dict[str, MetaValue] = {"gguf.version": version}
            for _ in range(n_kv):
                key = _read_str(f)
                (vtype,) = struct.unpack("<I", _read(f, 4))
                meta[key] = _read_value(f, vtype)
            infos: dict[str, TensorInfo] = {}
            if not tensors:
                return Header(meta, infos, 0)
            if n_tensors > 1 << 20:
                raise ValueError(f"{n_tensors} tensors")
            for _ in range(n_tensors):
                name = _read_str(f)
                (n_dims,) = struct.unpack("<I", _read(f, 4))
                if n_dims > 8:
                    raise ValueError(f"tensor {name} has {n_dims} dimensions")
                dims = struct.unpack(f"<{n_dims}Q", _read(f, 8 * n_dims))
                ggml_type, offset = struct.unpack("<IQ", _read(f, 12))
                infos[name] = TensorInfo(tuple(dims), ggml_type, offset)
            alignment = meta.get("general.alignment")
            align = alignment if isinstance(alignment, int) and alignment > 0 else 32
            return Header(meta, infos, -(-f.tell() // align) * align)
    except ModelError:
        raise
    except EOFError:
        raise ModelError(f"corrupt gguf model file: {path} (truncated)") from None
    except (ValueError, struct.error, OSError) as exc:
        raise ModelError(f"corrupt gguf model file: {path} ({exc})") from None


def read_metadata(path: str | Path) -> dict[str, MetaValue]:
    """All scalar and string metadata of a GGUF file; raises ModelError if it is not one."""
    return read_header(path, tensors=False).meta


def architecture(meta: dict[str, MetaValue]) -> str:
    """The `general.architecture` value ('qwen3vl', 'bert', 'clip', ...)."""
    return str(meta.get("general.architecture", ""))


def is_mmproj(meta: dict[str, MetaValue]) -> bool:
    """True for a vision projector file (llama.cpp writes them with architecture 'clip')."""
    return architecture(meta) == "clip"


def model_header(path: Path, *, pass_mmproj_as: str) -> Header:
    """The header of a model file, read once for everything a load needs (metadata, tensor entries);
    ModelError when it is an mmproj (which goes elsewhere)."""
    header = read_header(path)
    if is_mmproj(header.meta):
        raise ModelError(f"{path} is an mmproj (vision projector), not a model: pass it as {pass_mmproj_as}")
    return header


def check_mmproj(path: Path) -> None:
    """ModelError unless the file is a vision projector (mmproj)."""
    meta = read_metadata(path)
    if not is_mmproj(meta):
        raise ModelError(f"{path} is not an mmproj file (its architecture is {architecture(meta)!r})")
