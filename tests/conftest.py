"""Shared fixtures: the tiny Qwen3-VL GGUF models made offline by scripts/make_tiny_qwen3vl.py,
and the bundled MiniLM text model. Real llama.cpp runs on all of them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
TINY = FIXTURES / "tiny-qwen3vl"
TINY_F16 = TINY / "tiny-qwen3vl-f16.gguf"
TINY_Q8 = TINY / "tiny-qwen3vl-q8_0.gguf"
TINY_MMPROJ = TINY / "mmproj-tiny-qwen3vl-f16.gguf"
MINILM = ROOT / "models" / "all-MiniLM-L6-v2-Q8_0.gguf"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own LAUNCHER_HOME so nothing touches the real user's data."""
    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path_factory.mktemp("home")))
    for var in ("LAUNCHER_MODEL", "LAUNCHER_MMPROJ", "LAUNCHER_INDEX_DIR", "LAUNCHER_DIMS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def reference() -> list[dict[str, Any]]:
    """Reference inputs and vectors computed with transformers by the fixture script."""
    return json.loads((TINY / "reference.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _options(**kw: Any) -> Any:
    from launcher.models.embed.llama import LlamaOptions

    return LlamaOptions(n_threads=min(2, os.cpu_count() or 1), **kw)


@pytest.fixture(scope="session")
def tiny_vl() -> Iterator[Any]:
    """The tiny Qwen3-VL f16 model with its mmproj."""
    from launcher.models.embed import load_embedder

    with load_embedder(TINY_F16, TINY_MMPROJ, _options()) as e:
        yield e


@pytest.fixture(scope="session")
def tiny_q8() -> Iterator[Any]:
    """The Q8_0 quantized tiny model with its mmproj (the AMX crash case)."""
    from launcher.models.embed import load_embedder

    with load_embedder(TINY_Q8, TINY_MMPROJ, _options()) as e:
        yield e


@pytest.fixture(scope="session")
def minilm() -> Iterator[Any]:
    """The bundled all-MiniLM-L6-v2 text model: real semantics, offline."""
    from launcher.models.embed import load_embedder

    with load_embedder(MINILM, None, _options()) as e:
        yield e
