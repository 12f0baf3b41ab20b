"""Where things live and how settings resolve: flag > environment variable > config file > default.

Everything is resolved here, in one place. The home folder is `LAUNCHER_HOME` if set, else the
user's data directory (platformdirs). The config file is `<home>/config.toml`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.core.errors import LauncherError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def home() -> Path:
    """The launcher's own folder: index, models, config, run files."""
    env = os.environ.get("LAUNCHER_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("launcher", appauthor=False))


def models_dir() -> Path:
    """Where `launcher models pull` puts GGUF files."""
    return home() / "models"


def default_index_dir() -> Path:
    """The index used when --index-dir is not given."""
    return home() / "index"


def run_dir() -> Path:
    """Where the resident process keeps its run file (pid, port, token) and upload cache."""
    return home() / "run"


def bundled_models_dir() -> Path:
    """The `models/` folder shipped with the source tree (the offline text model)."""
    return Path(__file__).resolve().parents[2] / "models"


def boolean(value: Any) -> bool:
    """true/false, yes/no, on/off, 1/0 (and TOML booleans)."""
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(value)


RERANK_TOP_MAX = 200  # the reranker reads every candidate whole: more is minutes on a CPU


def rerank_count(value: Any) -> int:
    """How many hits the reranker judges: a whole number from 1 to RERANK_TOP_MAX."""
    n = int(value)
    if not 1 <= n <= RERANK_TOP_MAX:
        raise ValueError(value)
    return n


def token_count(value: Any) -> int:
    """A number of tokens, 0 for none."""
    n = int(value)
    if n < 0:
        raise ValueError(value)
    return n


# Visual tokens per image when `image_max_tokens` is unset. bench_engine.py, shape-true 2B Q4_K_M
# on 2 CPU threads: 64 / 256 / 1024 tokens take ~2.4 / 8.6 / 51 s per image (the vision encoder
# grows faster than linearly); the model's report shows diminishing returns past a few hundred.
# With GPU offload the official cap (1800, ~1.8 megapixels) is kept.
IMAGE_TOKENS_CPU = 256
IMAGE_TOKENS_GPU = 1800


def probe_count(value: Any) -> int:
    """Partition lists searched per query: 0 (exact search) or a positive whole number."""
    n = int(value)
    if n < 0:
        raise ValueError(value)
    return n


@dataclass(frozen=True)
class Setting:
    """One setting: its environment variable, config-file key, default and type."""

    env: str
    key: str
    default: Any
    type: Callable[[Any], Any]
    expected: str = ""  # what a bad value is told it should be (default: the type's name)


SETTINGS: dict[str, Setting] = {
    "model": Setting("LAUNCHER_MODEL", "model", None, str),
    "mmproj": Setting("LAUNCHER_MMPROJ", "mmproj", None, str),
    "index_dir": Setting("LAUNCHER_INDEX_DIR", "index_dir", None, str),
    "dims": Setting("LAUNCHER_DIMS", "dims", None, int),
    "threads": Setting("LAUNCHER_THREADS", "threads", None, int),
    "gpu_layers": Setting("LAUNCHER_GPU_LAYERS", "gpu_layers", 0, int),
    # None: sized to what pieces and pictures need (768 on the CPU; see embed.base.context_needed).
    "ctx": Setting("LAUNCHER_CTX", "ctx", None, int),
    "batch": Setting("LAUNCHER_BATCH", "batch", 1024, int),
    "flash_attn": Setting("LAUNCHER_FLASH_ATTN", "flash_attn", False, boolean),
    # Tokens of the query lane `launch --watch` gives text queries (0: none, queries wait for the
    # watcher's model call; saves the lane's memory).
    "query_lane": Setting(
        "LAUNCHER_QUERY_LANE", "query_lane", 256, token_count, "0 (none) or a number of tokens"
    ),
    "image_max_tokens": Setting("LAUNCHER_IMAGE_MAX_TOKENS", "image_max_tokens", None, int),
    "query_instruction": Setting("LAUNCHER_QUERY_INSTRUCTION", "query_instruction", None, str),
    "document_instruction": Setting("LAUNCHER_DOCUMENT_INSTRUCTION", "document_instruction", None, str),
    "storage": Setting("LAUNCHER_STORAGE", "storage", "int8", str),
    # Model tokens a text piece aims at; None: the model's own default (measured, see the guide).
    "chunk_tokens": Setting("LAUNCHER_CHUNK_TOKENS", "chunk_tokens", None, int),
    "rerank": Setting("LAUNCHER_RERANK", "rerank", False, boolean),
    "reranker": Setting("LAUNCHER_RERANKER", "reranker", None, str),
    "rerank_top": Setting(
        "LAUNCHER_RERANK_TOP", "rerank_top", 10, rerank_count, f"a whole number from 1 to {RERANK_TOP_MAX}"
    ),
    "min_score": Setting("LAUNCHER_MIN_SCORE", "min_score", None, float),
    # Read time expressions in a query ("notes from last week"); off: every word is embedded as typed.
    "dates": Setting("LAUNCHER_DATES", "dates", True, boolean),
    "search_probe": Setting(
        "LAUNCHER_SEARCH_PROBE",
        "search_probe",
        None,
        probe_count,
        "0 (exact search) or a positive whole number",
    ),
    # The resident process (`launcher launch`) and the desktop commands it runs.
    "host": Setting("LAUNCHER_HOST", "host", "127.0.0.1", str),
    "port": Setting("LAUNCHER_PORT", "port", 0, int),
    "hotkey": Setting("LAUNCHER_HOTKEY", "hotkey", "ctrl+alt+space", str),
    "opener": Setting("LAUNCHER_OPENER", "opener", None, str),
    "revealer": Setting("LAUNCHER_REVEALER", "revealer", None, str),
    "browser": Setting("LAUNCHER_BROWSER", "browser", None, str),
}


def config_file() -> Path:
    """The TOML config file (optional)."""
    return home() / "config.toml"


def _load_file() -> dict[str, Any]:
    path = config_file()
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise LauncherError(f"cannot read config file {path}: {exc}") from None


def resolve(name: str, flag: Any = None) -> Any:
    """The value of setting `name`: the flag if given, else env, else config file, else default."""
    value = explicit(name, flag)
    return SETTINGS[name].default if value is None else value


def explicit(name: str, flag: Any = None) -> Any:
    """The value of setting `name` when the person chose one (flag, env or config file), else None."""
    setting = SETTINGS[name]
    if flag is not None:
        return flag
    raw: Any = os.environ.get(setting.env)
    source = f"environment variable {setting.env}"
    if raw is None or raw == "":
        raw = _load_file().get(setting.key)
        source = f"{config_file()} key {setting.key!r}"
    if raw is None:
        return None
    try:
        return setting.type(raw)
    except (TypeError, ValueError):
        expected = setting.expected or setting.type.__name__
        raise LauncherError(f"bad value {raw!r} for {source}: expected {expected}") from None
