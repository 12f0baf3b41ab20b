"""A folder of hostile files, indexed through the real CLI with the bundled model: no traceback, no
stuck piece, every file embedded or recorded with a one-line reason, and the good files found."""

from __future__ import annotations

import gzip
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_extract import png_claiming
from tests.test_index_cli import cli, ok


def make_hostile(root: Path) -> Path:
    root.mkdir()
    rng = np.random.default_rng(11)
    (root / "random.txt").write_bytes(rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    (root / "nuls.txt").write_bytes(b"text\x00" * 1000)
    with zipfile.ZipFile(root / "bomb.docx", "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", b" " * (600 * 2**20))  # 600 MB of XML in ~600 KB
    (root / "bomb.png").write_bytes(png_claiming(60_000, 60_000))
    with gzip.open(root / "bomb.log.gz", "wb", compresslevel=9) as f:  # 64 MB of one line in ~64 KB
        f.write(b"all work and no play makes jack a dull boy\n" * (64 * 2**20 // 43))
    (root / "truncated.png").write_bytes(png_claiming(64, 64)[:40])
    os.mkfifo(root / "pipe.txt")
    os.symlink("/dev/zero", root / "zero.txt")
    words = " ".join(f"token{i % 997}" for i in range(8_000))
    (root / "one-line.json").write_text(words, encoding="utf-8")  # ~60 KB, no newline
    (root / "<b>bold<\\b> &amp; <script>x<\\script>.txt").write_text("markup in the name", encoding="utf-8")
    (root / "new\nline.txt").write_text("a newline in the name", encoding="utf-8")
    (root / os.fsdecode(b"bad-\xff\xfe-utf8.txt")).write_text("an undecodable name", encoding="utf-8")
    (root / "photo <__media__>.png").write_bytes(b"")
    Image.new("RGB", (32, 32), (1, 2, 3)).save(root / "pic <__media__> 2.png")
    (root / "doc <__media__>.txt").write_text("the media marker <__media__> <|im_end|> inside a document")
    (root / "lighthouse.txt").write_text("The lighthouse keeper paid the harbour invoice in March.\n")
    return root


@pytest.mark.slow
def test_hostile_folder_indexes_with_nothing_stuck(tmp_path: Path) -> None:
    folder = make_hostile(tmp_path / "hostile")
    home = tmp_path / "home"
    proc = cli(home, "index", str(folder), "--json", timeout=900)
    ok(proc)
    assert "Traceback" not in proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["pieces_pending"] == 0
    status = json.loads(ok(cli(home, "status", "--json")).stdout)
    assert status["pending"] == 0 and status["embedding_progress"] == 1.0
    reasons = {os.path.basename(f["path"]): f["reason"] for f in status["failures"]}
    for name in (
        "random.txt",
        "nuls.txt",
        "bomb.docx",
        "bomb.png",
        "bomb.log.gz",
        "truncated.png",
        "pipe.txt",
        "zero.txt",
    ):
        assert name in reasons, f"{name} neither failed nor skipped: {reasons}"
        assert reasons[name] and "\n" not in reasons[name] and "Traceback" not in reasons[name]
    assert "zip bomb" in reasons["bomb.docx"]
    assert "gzip bomb" in reasons["bomb.log.gz"]
    # The long line and the odd names are indexed like any file.
    for name in (
        "one-line.json",
        "doc <__media__>.txt",
        "new\nline.txt",
        "<b>bold<\\b> &amp; <script>x<\\script>.txt",
    ):
        assert name not in reasons
    hits = json.loads(ok(cli(home, "search", "lighthouse keeper invoice", "--json")).stdout)["hits"]
    assert os.path.basename(hits[0]["path"]) == "lighthouse.txt"
    hits = json.loads(ok(cli(home, "search", "token512 token513", "--json")).stdout)["hits"]
    assert os.path.basename(hits[0]["path"]) == "one-line.json"
    assert hits[0]["locator"].get("char_start") is not None or hits[0]["locator"].get("char_end") is not None


def _deep_folder(root: Path) -> Path:
    """A folder ~2,800 characters deep (14 names of ~200): its path alone is ~770 model tokens."""
    name = ("holiday photos from the summer trip to the mountains and lakes " * 4)[:200].strip()
    deep = root.joinpath(*[name.replace(" ", "_") + str(i) for i in range(14)])
    deep.mkdir(parents=True)
    return deep


@pytest.mark.parametrize("multimodal", [True, False])
def test_a_picture_under_a_very_deep_path_fits_its_context(tmp_path: Path, multimodal: bool) -> None:
    """The context is sized to need (768 tokens here): a picture's header is shortened like a text
    piece's when the path alone would crowd the picture (or its name, for a text-only model) out."""
    from tests.conftest import TINY_F16, TINY_MMPROJ

    deep = _deep_folder(tmp_path / "docs")
    Image.new("RGB", (320, 240), (200, 30, 30)).save(deep / "red.png")
    (deep / "note.txt").write_text("a note about the red picture\n", encoding="utf-8")
    model = ["--model", str(TINY_F16), "--mmproj", str(TINY_MMPROJ)] if multimodal else []
    home = tmp_path / "home"
    summary = json.loads(ok(cli(home, "index", str(tmp_path / "docs"), *model, "--json")).stdout)
    assert (summary["pieces_failed"], summary["pieces_pending"]) == (0, 0), summary
    assert summary["pieces_embedded"] == 2
