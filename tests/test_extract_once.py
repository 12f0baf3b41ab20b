"""Extract once: the read pass stores text and places without decoding pixels; the embed pass decodes
each picture, page and frame once, made the size the model needs, read ahead within a byte budget."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from launcher.core.records import FileRecord
from launcher.index.store import Store
from launcher.ingest import pipeline as indexer_mod
from launcher.ingest.extract import ExtractError, ExtractSettings, extract
from launcher.ingest.extract import image as image_mod
from launcher.ingest.extract import pdf as pdf_mod
from launcher.ingest.pipeline import Indexer, IndexOptions
from launcher.models.embed import EmbedInput
from tests.test_extract import make_pdf, scanned_page


def _photo(path: Path, size: tuple[int, int], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)
    return path


def _photos(folder: Path, stem: str, n: int, size: tuple[int, int], seed: int) -> Path:
    """A new folder of n photos, stem0.jpg..., each with its own pixels."""
    folder.mkdir()
    for i in range(n):
        _photo(folder / f"{stem}{i}.jpg", size, seed + i)
    return folder


def _record(path: Path, kind: str) -> FileRecord:
    st = path.stat()
    return FileRecord(str(path), st.st_size, st.st_mtime_ns, kind)


def _count_calls(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[str]:
    """Wrap a real function so that each call is recorded (the function still runs)."""
    calls: list[str] = []
    real = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(str(args[0]) if args else "")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_without_decoding_the_pieces_are_the_same_minus_pixels(tmp_path: Path) -> None:
    photo = _photo(tmp_path / "beach.jpg", (640, 480), 1)
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(make_pdf(["Quarterly report on volcano monitoring", scanned_page()]))
    for path, kind in ((photo, "image"), (pdf, "pdf")):
        full = extract(_record(path, kind), settings=ExtractSettings())
        light = extract(_record(path, kind), settings=ExtractSettings(decode_media=False))
        assert [(p.text, p.locator, p.modality, p.context) for p in light] == [
            (p.text, p.locator, p.modality, p.context) for p in full
        ]
        assert any(p.image is not None for p in full)
        assert all(p.image is None for p in light)


def test_without_decoding_a_bad_header_or_a_bomb_still_fails(tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a picture at all" * 10)
    with pytest.raises(ExtractError, match="not a readable image"):
        extract(_record(junk, "image"), settings=ExtractSettings(decode_media=False))
    big = _photo(tmp_path / "big.jpg", (400, 300), 2)
    with pytest.raises(ExtractError, match="too large"):
        extract(_record(big, "image"), settings=ExtractSettings(decode_media=False, max_image_pixels=1000))


def test_indexing_decodes_each_picture_and_page_once(
    tmp_path: Path, tiny_vl: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _photos(tmp_path / "docs", "photo", 3, (800, 600), 10)
    (folder / "scan.pdf").write_bytes(make_pdf(["A scanned letter about the garden", scanned_page()]))
    decoded = _count_calls(monkeypatch, image_mod, "load_image")
    rendered = _count_calls(monkeypatch, pdf_mod, "_render")
    report = Indexer(tmp_path / "index", tiny_vl).run([str(folder)])
    assert report.pieces_pending == 0 and report.pieces_failed == 0
    assert sorted(Path(p).name for p in decoded) == ["photo0.jpg", "photo1.jpg", "photo2.jpg"]
    assert len(rendered) == 2  # two pages, each rendered once
    store = Store.open(tmp_path / "index")
    stats = store.stats()
    assert stats.embedded == stats.pieces == report.pieces_embedded and stats.pending == 0


def test_a_fitted_picture_gives_the_same_vector(tmp_path: Path, tiny_vl: Any) -> None:
    photo = Image.open(_photo(tmp_path / "p.jpg", (1000, 700), 3)).convert("RGB")
    fitted = tiny_vl.fit_image(photo)
    assert fitted.size[0] * fitted.size[1] < photo.size[0] * photo.size[1]
    whole = tiny_vl.embed([EmbedInput(texts=["p.jpg"], images=[photo])])
    small = tiny_vl.embed([EmbedInput(texts=["p.jpg"], images=[fitted])])
    assert np.array_equal(whole, small)


def test_read_ahead_stays_within_its_byte_budget(
    tmp_path: Path, tiny_vl: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _photos(tmp_path / "pics", "pic", 6, (512, 512), 20)
    idx = Indexer(tmp_path / "index", tiny_vl)
    one = indexer_mod._item_bytes(
        ("x", _record(folder / "pic0.jpg", "image"), idx._read_version(_record(folder / "pic0.jpg", "image")))
    )
    assert one > 512 * 512  # the picture's pixels are counted, at the model's size
    monkeypatch.setattr(indexer_mod, "LOOKAHEAD_BYTES", one + one // 2)  # room for one file, not two
    reads: list[str] = []
    lock = threading.Lock()
    real = idx._read_version

    def counted(rec: FileRecord, **kwargs: Any) -> Any:
        out = real(rec, **kwargs)
        with lock:
            reads.append(rec.path)
        return out

    monkeypatch.setattr(idx, "_read_version", counted)
    files = {str(i): _record(folder / f"pic{i}.jpg", "image") for i in range(6)}
    order = list(files)
    seen = 0
    for _file_id, _rec, result in idx._lookahead(order, files):
        assert isinstance(result, tuple)
        seen += 1
        threading.Event().wait(0.3)  # the model's turn: the reader may run ahead meanwhile
        with lock:
            ahead = len(reads) - seen
        # One file waits in the queue and the reader holds one more it cannot queue yet.
        assert ahead <= 2, (seen, reads)
    assert seen == 6


def test_a_picture_broken_past_its_header_fails_alone_when_embedded(tmp_path: Path, tiny_vl: Any) -> None:
    folder = tmp_path / "pics"
    folder.mkdir()
    _photo(folder / "good.jpg", (300, 200), 30)
    data = (_photo(tmp_path / "whole.png", (300, 200), 31)).read_bytes()
    (folder / "broken.png").write_bytes(data[: len(data) // 2])  # header intact, pixels cut off
    report = Indexer(tmp_path / "index", tiny_vl).run([str(folder)])
    failed = {Path(f.path).name: f.reason for f in report.failed}
    assert list(failed) == ["broken.png"] and "corrupt image" in failed["broken.png"]
    assert report.pieces_pending == 0 and report.pieces_embedded == 1 and report.pieces_failed == 1


def test_a_video_is_decoded_once_and_keeps_its_frames_exact_times(
    tmp_path: Path, tiny_vl: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read pass places frames at their sample times without decoding; the embed pass decodes
    each frame once and stores the time it really has (here a keyframe every 3 s, so the frame for
    a sample is the keyframe before it, not the sample time)."""
    from launcher.ingest.extract import video as video_mod
    from tests.test_extract import make_video, video_codec

    folder = tmp_path / "clips"
    folder.mkdir()
    clip = make_video(folder / "walk.mp4", codec=video_codec(), seconds=12, fps=4, gop=12)
    settings = ExtractSettings(video_interval_s=4)
    exact = [p.locator for p in extract(_record(clip, "video"), settings=settings)]
    frames = _count_calls(monkeypatch, video_mod, "_frame_image")
    planned = extract(_record(clip, "video"), settings=replace(settings, decode_media=False))
    assert frames == [] and all(p.image is None for p in planned)
    assert [p.locator.timestamp for p in planned[1:]] == [2.0, 6.0, 10.0]  # the sample times
    assert [p.locator for p in planned] != exact  # keyframes every 3 s: the frames lie elsewhere

    idx = Indexer(tmp_path / "index", tiny_vl, IndexOptions(extract=settings))
    report = idx.run([str(folder)])
    assert report.pieces_pending == 0 and report.pieces_failed == 0
    assert len(frames) == len(exact) - 1  # each frame decoded once, in the embed pass
    store = Store.open(tmp_path / "index")
    info = store.file_by_path(str(clip))
    assert info is not None
    pieces = [store.piece(p) for p in store.pieces_of(info.file_id)]
    assert [p.locator for p in pieces if p is not None] == exact  # the times the frames really have
    assert all(p is not None and p.has_vector for p in pieces)
