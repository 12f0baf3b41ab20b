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

from launcher.cli.commands import app
from launcher.models import catalogue as models
from tests.conftest import MINILM, ROOT, TINY_F16, TINY_MMPROJ


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launcher.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_models_list_json() -> None:
    rows = json.loads(cli("models", "list", "--json").stdout)
    names = {r["name"]: r for r in rows}
    assert {"qwen3-vl-embedding-2b", "qwen3-vl-embedding-8b", "qwen3-vl-reranker-2b", "minilm"} <= set(names)
    assert names["minilm"]["on_disk"] is True and names["qwen3-vl-embedding-2b"]["on_disk"] is False
    for r in rows:
        assert r["role"] in ("embedding", "reranker") and isinstance(r["description"], str)
        assert r["revision"] is None or re.fullmatch(r"[0-9a-f]{40}", r["revision"])
        for f in r["files"]:
            assert set(f) == {"kind", "name", "size", "sha256"} and f["kind"] in ("model", "mmproj")
    two_b = names["qwen3-vl-embedding-2b"]
    assert two_b["repo"] == "DevQuasar/Qwen.Qwen3-VL-Embedding-2B-GGUF"
    assert two_b["revision"] == "6a1b927414664e0e17dd379913e3416a1ae1b48d"
    assert two_b["files"] == [
        {
            "kind": "model",
            "name": "Qwen.Qwen3-VL-Embedding-2B.Q4_K_M.gguf",
            "size": 1107410528,
            "sha256": "42a4ebc629ecc6514649e12b1529b857f54900273bb854f853c970fb90edd09d",
        },
        {
            "kind": "mmproj",
            "name": "mmproj-Qwen.Qwen3-VL-Embedding-2B.f16.gguf",
            "size": 819395136,
            "sha256": "3f89a7768ffa6606935319f71bf56bb71871249ba549bf1080a0caea7a088613",
        },
    ]
    assert names["qwen3-vl-reranker-2b"]["revision"] is None  # checked against the hub's metadata


def test_models_list_says_whose_conversions_they_are() -> None:
    proc = cli("models", "list")
    assert proc.returncode == 0, proc.stderr
    assert "third-party conversion by DevQuasar of Qwen/Qwen3-VL-Embedding-2B" in proc.stdout
    assert "third-party conversion by bealore of Qwen/Qwen3-VL-Reranker-2B" in proc.stdout
    assert "DevQuasar/Qwen.Qwen3-VL-Embedding-2B-GGUF @ 6a1b92741466" in proc.stdout


def test_files_copied_by_hand_are_not_used_until_checked() -> None:
    e = models.entry("qwen3-vl-embedding-2b")
    assert e is not None
    model, mmproj = models.pulled_path(e)
    model.parent.mkdir(parents=True)
    shutil.copy(TINY_F16, model)
    assert models.install_state(e) == "partial" and models.resolve_model(None).name == "all-minilm-l6-v2"
    assert mmproj is not None
    shutil.copy(TINY_MMPROJ, mmproj)
    assert models.install_state(e) == "unverified"
    assert models.resolve_model(None).name == "all-minilm-l6-v2"
    listed = {r["name"]: r for r in json.loads(cli("models", "list", "--json").stdout)}
    assert listed[e.name]["state"] == "unverified" and listed[e.name]["on_disk"] is False
    proc = cli("models", "pull", e.name, env={"HF_HUB_OFFLINE": "1"})  # pinned sums: checked offline
    assert proc.returncode == 3 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"error: checksum failed for {model}") and "delete it" in proc.stderr


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
