"""The model catalogue, default-model choice, `models`, `doctor`, and the CLI's help and docs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from typing import Any

import pytest
import typer

from launcher import models
from launcher.cli import app
from tests.conftest import MINILM, ROOT, TINY_F16, TINY_MMPROJ


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launcher.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_default_model_is_the_bundled_text_model_until_a_qwen_model_is_pulled() -> None:
    assert models.resolve_model(None).name == "all-minilm-l6-v2"
    e = models.entry("qwen3-vl-embedding-2b")
    assert e is not None
    model, mmproj = models.pulled_path(e)
    model.parent.mkdir(parents=True)
    shutil.copy(TINY_F16, model)
    assert models.resolve_model(None).name == "all-minilm-l6-v2"  # mmproj still missing: not complete
    assert mmproj is not None
    shutil.copy(TINY_MMPROJ, mmproj)
    chosen = models.resolve_model(None)
    assert chosen.name == "qwen3-vl-embedding-2b" and chosen.multimodal and chosen.mmproj == mmproj


def test_models_list_json() -> None:
    rows = json.loads(cli("models", "list", "--json").stdout)
    names = {r["name"]: r for r in rows}
    assert {"qwen3-vl-embedding-2b", "qwen3-vl-embedding-8b", "qwen3-vl-reranker-2b", "minilm"} <= set(names)
    assert names["minilm"]["downloaded"] is True and names["qwen3-vl-embedding-2b"]["downloaded"] is False


def test_pull_offline_is_one_clear_line() -> None:
    proc = cli("models", "pull", "qwen3-vl-embedding-2b", env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "you seem to be offline" in proc.stderr
    proc = cli("models", "pull", "no-such-model")
    assert proc.returncode == 1 and "unknown model 'no-such-model'" in proc.stderr


def test_unknown_model_name() -> None:
    proc = cli("embed", "--model", "qwen9", "--text", "x")
    assert proc.returncode == 3 and "model not found: qwen9" in proc.stderr


def test_doctor_json() -> None:
    proc = cli("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["gpu_offload"].startswith(("yes", "no"))
    assert "AVX" in report["cpu_features"] or "NEON" in report["cpu_features"]
    assert report["models"]["minilm (bundled)"] == str(MINILM)
    assert report["default_model"] == "all-minilm-l6-v2"


def _commands(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    # Typer vendors its own click: duck typing instead of isinstance(click.Group).
    out: list[tuple[str, Any]] = []
    for name, cmd in group.commands.items():
        full = f"{prefix}{name}"
        if hasattr(cmd, "commands"):
            out += _commands(cmd, full + " ")
        else:
            out.append((full, cmd))
    return out


def test_every_command_has_help_and_is_documented() -> None:
    root = typer.main.get_command(app)
    guide = (ROOT / "LAUNCHER_README.md").read_text(encoding="utf-8")
    commands = _commands(root)
    assert len(commands) >= 7
    for name, cmd in commands:
        assert cmd.help and cmd.help.strip(), f"`launcher {name}` has no help text"
        assert f"launcher {name}" in guide, f"`launcher {name}` is missing from LAUNCHER_README.md"
        for param in cmd.params:
            if param.param_type_name == "option" and param.name != "help":
                flag = max(param.opts, key=len)
                assert param.help, f"`launcher {name} {flag}` has no help text"
                assert re.search(re.escape(flag) + r"\b", guide), (
                    f"`{flag}` of `launcher {name}` is not in LAUNCHER_README.md"
                )


@pytest.mark.parametrize("flag", ["--help"])
def test_top_level_help(flag: str) -> None:
    proc = cli(flag)
    assert proc.returncode == 0 and "index" in proc.stdout and "search" in proc.stdout
