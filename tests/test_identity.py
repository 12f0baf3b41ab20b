"""A complete index identity, renames across kinds, one version per file, and the two instruction
settings: the real CLI on real files with the real MiniLM and tiny Qwen3-VL GGUF models."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from launcher.index import keywords
from launcher.index.store import Store
from launcher.ingest.pipeline import Indexer
from launcher.query.retrieve import search
from tests.conftest import MINILM, TINY_F16, TINY_MMPROJ
from tests.test_index_cli import cli, ok, search_json


def index(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[dict[str, object], str]:
    """`launcher index ... --json` with extra environment: (the summary, stderr)."""
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        proc = ok(cli(home, "index", *args, "--json"))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return json.loads(proc.stdout), proc.stderr


def test_a_rename_that_changes_the_kind_is_read_again(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "README").write_text("# Setup\n\nInstall the heron package with pip.\n", encoding="utf-8")
    (docs / "notes").write_text("plain notes about herons\n", encoding="utf-8")
    home = tmp_path / "home"
    index(home, str(docs), "--model", str(MINILM))
    assert Store.open(home / "index").stats().files_by_kind == {"other": 2}
    (docs / "README").rename(docs / "README.md")
    (docs / "notes").rename(docs / "notes-moved")  # same kind: a plain move keeps its vectors
    report, _ = index(home)
    assert (report["moved"], report["new"], report["removed"]) == (1, 1, 1)
    store = Store.open(home / "index")
    assert store.stats().files_by_kind == {"markdown": 1, "other": 1}
    info = store.file_by_path(str(docs / "README.md"))
    assert info is not None and info.kind == "markdown"
    texts = [store.piece(p).text for p in store.pieces_of(info.file_id)]  # type: ignore[union-attr]
    assert any("heron package" in t for t in texts)


def test_an_edit_in_place_never_mixes_versions(tmp_path: Path) -> None:
    """Same size, same time stamp, same number of pieces: the stored text still follows the vectors."""
    docs = tmp_path / "docs"
    docs.mkdir()
    note = docs / "pet.txt"
    note.write_text("my pet is a grey cat\n", encoding="utf-8")
    home = tmp_path / "home"
    index(home, str(docs), "--model", str(MINILM), "--no-embed")  # text stored, vectors later
    st = note.stat()
    note.write_text("my pet is a tiny owl\n", encoding="utf-8")  # same length
    os.utime(note, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert note.stat().st_size == st.st_size
    report, _ = index(home)
    assert report["unchanged"] == 1 and report["pieces_embedded"] == 1
    store = Store.open(home / "index")
    info = store.file_by_path(str(note))
    assert info is not None
    (pid,) = store.pieces_of(info.file_id)
    piece = store.piece(pid)
    assert piece is not None and piece.has_vector and "tiny owl" in piece.text
    hits = search_json(home, "a small owl as a pet", "--min-score", "-1")
    assert "owl" in hits[0]["snippet"]


def _picture_folder(root: Path) -> Path:
    docs = root / "docs"
    docs.mkdir()
    Image.new("RGB", (320, 240), (30, 120, 200)).save(docs / "sky.png")
    (docs / "a.txt").write_text("alpha beta gamma\n", encoding="utf-8")
    (docs / "b.txt").write_text("delta epsilon\n", encoding="utf-8")
    return docs


def test_a_new_image_budget_reembeds_pictures_not_text(tmp_path: Path) -> None:
    docs = _picture_folder(tmp_path)
    home = tmp_path / "home"
    model = ["--model", str(TINY_F16), "--mmproj", str(TINY_MMPROJ)]
    first, _ = index(home, str(docs), *model, env={"LAUNCHER_IMAGE_MAX_TOKENS": "64"})
    assert first["pieces_embedded"] == 3
    ident = Store.open(home / "index").identity
    assert ident["image_max_pixels"] == 64 * 32 * 32 and ident["flash_attn"] is False
    text_vectors = _vectors(home, docs / "a.txt")
    image_vectors = _vectors(home, docs / "sky.png")

    again, err = index(home, *model, env={"LAUNCHER_IMAGE_MAX_TOKENS": "16"})
    assert again["reset_reason"] is None and again["pieces_embedded"] == 1  # the picture only
    assert err.count("note: pictures, pages and frames are embedded again, text is kept") == 1
    assert "image_max_pixels 65536 -> 16384" in err
    assert Store.open(home / "index").identity["image_max_pixels"] == 16 * 32 * 32
    assert (_vectors(home, docs / "a.txt") == text_vectors).all()
    assert not (_vectors(home, docs / "sky.png") == image_vectors).all()

    same, err = index(home, *model, env={"LAUNCHER_IMAGE_MAX_TOKENS": "16"})
    assert same["pieces_embedded"] == 0 and "note:" not in err


def test_flash_attention_is_part_of_the_identity(tmp_path: Path) -> None:
    docs = _picture_folder(tmp_path)
    home = tmp_path / "home"
    index(home, str(docs), "--model", str(MINILM))
    flipped, err = index(home, env={"LAUNCHER_FLASH_ATTN": "1"})
    assert (
        flipped["pieces_embedded"] == 3
        and "note: every piece is embedded again (flash_attn False -> True)" in err
    )
    assert Store.open(home / "index").identity["flash_attn"] is True


def test_an_index_from_before_the_identity_was_complete_keeps_its_vectors(tmp_path: Path) -> None:
    docs = _picture_folder(tmp_path)
    home = tmp_path / "home"
    model = ["--model", str(TINY_F16), "--mmproj", str(TINY_MMPROJ)]
    index(home, str(docs), *model)
    manifest = home / "index" / "MANIFEST.json"
    data = json.loads(manifest.read_text(encoding="utf-8"))
    for key in ("image_max_pixels", "flash_attn"):
        del data["identity"][key]  # what an older launcher recorded
    manifest.write_text(json.dumps(data), encoding="utf-8")
    report, err = index(home, *model)
    assert report["pieces_embedded"] == 0 and report["reset_reason"] is None and "note:" not in err
    assert "image_max_pixels" in Store.open(home / "index").identity


def test_the_instruction_settings_are_used(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("the heron stands in the river\n", encoding="utf-8")
    home = tmp_path / "home"
    # The Qwen3-VL prompt carries the instruction (MiniLM's has none): the tiny model shows its effect.
    index(home, str(docs), "--model", str(TINY_F16))
    plain = search_json(home, "a bird by the water", "--min-score", "-1")[0]["score"]
    os.environ["LAUNCHER_QUERY_INSTRUCTION"] = "Find notes about birds."
    try:
        told = search_json(home, "a bird by the water", "--min-score", "-1")[0]["score"]
    finally:
        del os.environ["LAUNCHER_QUERY_INSTRUCTION"]
    assert told != plain

    changed, err = index(home, env={"LAUNCHER_DOCUMENT_INSTRUCTION": "Represent this personal note."})
    assert changed["reset_reason"] and "instruction" in changed["reset_reason"] and "rebuilt" in err
    assert Store.open(home / "index").identity["instruction"] == "Represent this personal note."
    # Without the setting a refresh keeps the index's own instruction: nothing is re-embedded.
    kept, err = index(home)
    assert kept["pieces_embedded"] == 0 and kept["reset_reason"] is None
    assert Store.open(home / "index").identity["instruction"] == "Represent this personal note."


def _vectors(home: Path, path: Path):  # type: ignore[no-untyped-def]
    store = Store.open(home / "index")
    info = store.file_by_path(str(path))
    assert info is not None
    return store.vectors_of(store.pieces_of(info.file_id))


def test_the_context_is_what_pieces_and_pictures_need() -> None:
    from launcher.models.embed import load_embedder
    from launcher.models.embed.base import context_needed
    from tests.conftest import _options

    assert context_needed(512, 256) == 768  # the CPU's defaults: 512-token pieces, 256-token pictures
    assert context_needed(512, 1800) == 2304  # pictures of 1800 tokens (with --gpu-layers)
    cases = [
        (TINY_F16, TINY_MMPROJ, {"image_max_pixels": 256 * 32 * 32}, 768),
        (TINY_F16, TINY_MMPROJ, {"image_max_pixels": 1800 * 32 * 32}, 2304),
        (TINY_F16, None, {"chunk_tokens": 1024}, 1280),  # a bigger piece size asks for more
        (TINY_F16, None, {"n_ctx": 2048}, 2048),  # --ctx is kept as given
        (MINILM, None, {}, 512),  # never past what the model was trained for
    ]
    for model, mmproj, kw, n_ctx in cases:
        with load_embedder(model, mmproj, _options(**kw)) as e:
            assert e.max_tokens == n_ctx, (model.name, kw)


def test_another_context_size_keeps_the_pieces_and_their_vectors(tmp_path: Path) -> None:
    docs = _picture_folder(tmp_path)
    (docs / "long.txt").write_text("\n".join(f"line {i} about herons and egrets" for i in range(400)))
    home = tmp_path / "home"
    model = ["--model", str(TINY_F16), "--mmproj", str(TINY_MMPROJ)]
    first, _ = index(home, str(docs), *model, env={"LAUNCHER_CTX": "4096"})  # the old default
    assert Store.open(home / "index").identity["chunking"]["limit"] == 4096
    vectors = _vectors(home, docs / "long.txt")
    assert len(vectors) > 1

    again, err = index(home, *model)  # the context sized to need: 768 on the CPU
    assert again["reset_reason"] is None and again["pieces_embedded"] == 0 and "note:" not in err
    assert Store.open(home / "index").identity["chunking"]["limit"] == 768
    assert (_vectors(home, docs / "long.txt") == vectors).all()

    smaller, _ = index(home, *model, "--chunk-tokens", "64")  # another piece size: cut again
    assert smaller["reset_reason"] is not None and smaller["pieces_embedded"] > first["pieces_embedded"]
    assert Store.open(home / "index").identity["chunking"]["target"] == 64


def test_new_keyword_tokens_rebuild_the_postings_and_keep_every_vector(
    minilm: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "weather.txt").write_text("明日の天気予報によると東京は雨が降るでしょう。\n", encoding="utf-8")
    (docs / "heron.txt").write_text("the heron stands in the river\n", encoding="utf-8")
    home = tmp_path / "home"
    index_dir = home / "index"
    # An index as the version before TOKENS_VERSION 2 wrote it: whole CJK runs, no key recorded.
    real_tokenize = keywords.tokenize
    monkeypatch.setattr(
        keywords, "tokenize", lambda text: [w.casefold() for w in keywords._WORD.findall(text)]
    )
    Indexer(index_dir, minilm).run([docs])
    monkeypatch.setattr(keywords, "tokenize", real_tokenize)
    manifest = index_dir / "MANIFEST.json"
    data = json.loads(manifest.read_text(encoding="utf-8"))
    del data["identity"]["keywords"]
    manifest.write_text(json.dumps(data), encoding="utf-8")
    assert search(Store.open(index_dir), None, "天気") == []  # a word inside the sentence: not found
    before = {name: _vectors(home, docs / name) for name in ("weather.txt", "heron.txt")}

    indexer = Indexer(index_dir, minilm)
    report = indexer.run([docs])
    assert report.pieces_embedded == 0 and report.reset_reason is None
    assert any(
        n.startswith("keyword postings rebuilt, every vector kept") and "2 files" in n for n in indexer.notes
    )
    store = Store.open(index_dir)
    assert store.identity["keywords"] == keywords.TOKENS_VERSION
    for name, vectors in before.items():
        # Kept, not embedded again: only the stored rows' rounding, renormalised, moves them (6e-5).
        assert np.abs(_vectors(home, docs / name) - vectors).max() < 1e-3
    hits = search(store, None, "天気")
    assert [os.path.basename(h.path) for h in hits] == ["weather.txt"]
    assert search(store, None, "heron")[0].path.endswith("heron.txt")
    # Nothing is rebuilt twice.
    again = Indexer(index_dir, minilm)
    again.run([docs])
    assert not again.notes
