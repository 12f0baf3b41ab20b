"""`launcher index` / `search` / `status` end to end: the real CLI, real files, real llama.cpp."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docx
import openpyxl
import pptx
import pytest
from PIL import Image, ImageDraw

from launcher.index.store import Store
from tests.conftest import MINILM, TINY_F16, TINY_MMPROJ
from tests.test_extract import make_epub, make_pdf, make_video, png_claiming, scanned_page, video_codec


def cli(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real `launcher` command with its own LAUNCHER_HOME."""
    env = {**os.environ, "LAUNCHER_HOME": str(home), "LAUNCHER_THREADS": "2"}
    return subprocess.run(
        [sys.executable, "-m", "launcher.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return proc


def index_json(home: Path, *args: str) -> dict[str, Any]:
    return json.loads(ok(cli(home, "index", *args, "--json")).stdout)  # type: ignore[no-any-return]


def search_json(home: Path, query: str, *args: str) -> list[dict[str, Any]]:
    """The hits of `launcher search --json` ({"parsed": ..., "hits": [...]})."""
    return json.loads(ok(cli(home, "search", query, *args, "--json")).stdout)["hits"]  # type: ignore[no-any-return]


def make_tree(root: Path) -> Path:
    """A person's documents folder: many formats, some broken or hostile."""
    docs = root / "Documents"
    (docs / "travel").mkdir(parents=True)
    (docs / "work" / "src").mkdir(parents=True)
    (docs / "photos").mkdir()
    (docs / "travel" / "passport renewal.txt").write_text(
        "To renew a passport, fill in form DS-82, attach a recent photo and mail it with the old passport.\n",
        encoding="utf-8",
    )
    (docs / "work" / "quarterly report.md").write_text(
        "# Q3 results\n\nRevenue grew twelve percent, driven by cloud subscriptions.\n", encoding="utf-8"
    )
    (docs / "work" / "src" / "fib.py").write_text(
        "def fibonacci(n):\n    'recursive fibonacci numbers'\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n",
        encoding="utf-8",
    )
    (docs / "recette crêpes.txt").write_bytes(
        "Recette des crêpes: farine, œufs, lait et beurre fondu.\n".encode("cp1252")
    )
    (docs / "日本語メモ.txt").write_bytes(
        "東京で会議があります。資料を準備してください。\n".encode("shift_jis")
    )
    (docs / "utf16 notes.txt").write_bytes(
        "\ufeffGardening notes: tomatoes need full sun.\n".encode("utf-16-le")
    )
    (docs / "page.html").write_text(
        "<html><head><title>Volunteer schedule</title><script>alert(1)</script></head>"
        "<body><h1>Beach cleanup</h1><p>Volunteers meet at the pier on Saturday morning.</p></body></html>",
        encoding="utf-8",
    )
    volcano = "Volcanic eruptions\nMagma rises through the crust and erupts as lava and ash clouds."
    (docs / "geology.pdf").write_bytes(
        make_pdf(["Introduction to rocks and minerals", volcano, scanned_page()])
    )
    img = Image.new("RGB", (320, 200), (30, 120, 200))
    ImageDraw.Draw(img).ellipse((100, 40, 220, 160), fill=(250, 220, 0))
    img.save(docs / "photos" / "sunny beach.jpg", quality=90)
    img.save(docs / "photos" / "sunny beach copy.png")
    make_video(docs / "photos" / "clip.mp4", seconds=4, fps=4, codec=video_codec())
    d = docx.Document()
    d.add_paragraph("Lease agreement for the apartment on Elm Street, rent due on the first of the month.")
    d.save(str(docs / "lease.docx"))
    p = pptx.Presentation()
    slide = p.slides.add_slide(p.slide_layouts[5])
    slide.shapes.title.text = "Migration plan for the database cluster"
    p.save(str(docs / "plan.pptx"))
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Budget"
    ws.append(["item", "cost"])
    ws.append(["groceries", 320])
    wb.save(str(docs / "budget.xlsx"))
    make_epub(
        docs / "novel.epub", {"c1.xhtml": "<p>The lighthouse keeper watched the storm.</p>"}, ["c1.xhtml"]
    )
    import pillow_heif
    import pypdf

    pillow_heif.register_heif_opener()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(
        docs / "photos" / "IMG_0042.HEIC", format="HEIF", quality=90
    )
    # Broken and hostile files: each must be skipped with a reason, never stop the job.
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(docs / "geology.pdf"))
    writer.encrypt(user_password="secret", owner_password="owner")
    with open(docs / "locked.pdf", "wb") as f:
        writer.write(f)
    good_png = io.BytesIO()
    img.save(good_png, "PNG")
    (docs / "photos" / "truncated.png").write_bytes(good_png.getvalue()[:200])
    (docs / "photos" / "bomb.png").write_bytes(png_claiming(40000, 40000))
    (docs / "empty.txt").write_bytes(b"")
    (docs / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (docs / ".hidden note.txt").write_text("secret hidden file", encoding="utf-8")
    (docs / "node_modules").mkdir()
    (docs / "node_modules" / "lib.js").write_text("module.exports = 1", encoding="utf-8")
    os.close(os.open(os.fsencode(docs) + b"/bad-name-\xff\xfe.txt", os.O_CREAT | os.O_WRONLY, 0o644))
    with open(os.fsencode(docs) + b"/bad-name-\xff\xfe.txt", "wb") as f:
        f.write(b"a file whose name is not valid utf-8 talks about zebras")
    return docs


@pytest.fixture(scope="module")
def minilm_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """One tree indexed once with the real MiniLM model (real semantics for ranking assertions)."""
    root = tmp_path_factory.mktemp("minilm")
    docs = make_tree(root)
    home = root / "home"
    report = index_json(home, str(docs), "--model", str(MINILM))
    return home, docs, report


def test_summary_counts_skips_and_failures(minilm_index: tuple[Path, Path, dict[str, Any]]) -> None:
    _, docs, report = minilm_index
    assert report["new"] >= 15 and report["changed"] == 0 and report["removed"] == 0
    failed = {Path(f["path"]).name: f["reason"] for f in report["failed"]}
    # A text-only model never looks at pixels, so a picture broken past its header is indexed by
    # name (its header is sound); a multimodal model records it (test_extract_once.py).
    assert "truncated.png" not in failed
    assert "bomb.png" in failed and "--max-image-mp" in failed["bomb.png"]
    assert "binary.txt" in failed and "binary" in failed["binary.txt"]
    assert failed.get("locked.pdf") == "encrypted pdf, cannot read it without the password"
    assert "IMG_0042.HEIC" not in failed and "empty.txt" not in failed
    assert report["pieces_pending"] == 0 and report["pieces_embedded"] > 0


def test_search_json_shape_and_ranking(minilm_index: tuple[Path, Path, dict[str, Any]]) -> None:
    home, docs, _ = minilm_index
    hits = search_json(home, "how do I get a new passport")
    assert hits, "no hits"
    top = hits[0]
    assert set(top) >= {"path", "score", "kind", "locator", "snippet"}
    assert top["path"] == str(docs / "travel" / "passport renewal.txt")
    assert top["kind"] == "text" and top["locator"] == {"line_start": 1, "line_end": 1}
    assert "DS-82" in top["snippet"]
    assert all(hits[i]["score"] >= hits[i + 1]["score"] for i in range(len(hits) - 1))


def test_pdf_page_locator(minilm_index: tuple[Path, Path, dict[str, Any]]) -> None:
    home, docs, _ = minilm_index
    hits = search_json(home, "lava and ash from a volcano")
    assert hits[0]["path"] == str(docs / "geology.pdf")
    assert hits[0]["locator"]["page"] == 2


def test_office_ebook_html_and_encodings_are_findable(
    minilm_index: tuple[Path, Path, dict[str, Any]],
) -> None:
    home, docs, _ = minilm_index
    expectations = {
        "apartment rental contract": "lease.docx",
        "moving the database servers": "plan.pptx",
        "storm at sea near a lighthouse": "novel.epub",
        "beach cleanup volunteers": "page.html",
        "recette des crêpes": "recette crêpes.txt",  # cp1252 decoded right (MiniLM is English-only)
        "growing tomatoes in the garden": "utf16 notes.txt",
        "recursive function": "fib.py",
    }
    for query, name in expectations.items():
        hits = search_json(home, query, "--top", "3")
        assert hits and Path(hits[0]["path"]).name == name, (query, [h["path"] for h in hits])


def test_filters_kind_and_under(minilm_index: tuple[Path, Path, dict[str, Any]]) -> None:
    home, docs, _ = minilm_index
    hits = search_json(home, "document", "--kind", "office", "--min-score", "-1", "--top", "50")
    assert hits and {h["kind"] for h in hits} == {"office"}
    hits = search_json(home, "notes", "--under", str(docs / "work"), "--min-score", "-1", "--top", "50")
    assert hits and all(h["path"].startswith(str(docs / "work") + os.sep) for h in hits)


def test_hidden_system_and_undecodable_names(minilm_index: tuple[Path, Path, dict[str, Any]]) -> None:
    home, docs, _ = minilm_index
    paths = [
        h["path"]
        for h in search_json(home, "secret hidden file module exports", "--min-score", "-1", "--top", "100")
    ]
    assert not any(".hidden" in p or "node_modules" in p for p in paths)
    zebra = search_json(home, "zebras")
    assert zebra and "bad-name-" in zebra[0]["path"]


def test_file_name_match_surfaces(minilm_index: tuple[Path, Path, dict[str, Any]]) -> None:
    home, _, _ = minilm_index
    hits = search_json(home, "quarterly report")
    assert Path(hits[0]["path"]).name == "quarterly report.md"
    assert hits[0]["scores"]["name"] > 0


def test_status_json(minilm_index: tuple[Path, Path, dict[str, Any]]) -> None:
    home, docs, _ = minilm_index
    st = json.loads(ok(cli(home, "status", "--json")).stdout)
    assert st["roots"] == [str(docs)]
    assert st["files_by_kind"]["office"] == 3 and st["files_by_kind"]["pdf"] == 2
    assert st["files_by_kind"]["image"] == 5  # jpg, png, heic, and the two broken ones (findable by name)
    assert st["pending"] == 0 and st["embedding_progress"] == 1.0
    assert st["model"]["name"] == "all-minilm-l6-v2" and st["dims"] == 384
    failures = {Path(f["path"]).name for f in st["failures"]}
    assert "bomb.png" in failures and "truncated.png" not in failures  # see test_summary_counts_...
    assert st["bytes_on_disk"] > 0 and st["last_update"]


def test_incremental_rename_change_delete(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, topic in enumerate(["volcanoes erupt lava", "cats purr when happy", "taxes are due in april"]):
        (docs / f"note{i}.txt").write_text(f"{topic}\n", encoding="utf-8")
    home = tmp_path / "home"
    first = index_json(home, str(docs), "--model", str(MINILM))
    assert first["new"] == 3 and first["pieces_embedded"] == 3

    again = index_json(home, str(docs), "--model", str(MINILM))
    assert again["unchanged"] == 3 and again["pieces_embedded"] == 0 and again["new"] == 0

    (docs / "note1.txt").rename(docs / "kitten.txt")
    moved = index_json(home, str(docs), "--model", str(MINILM))
    assert moved["moved"] == 1 and moved["pieces_embedded"] == 0 and moved["new"] == 0
    assert search_json(home, "happy cats purring")[0]["path"] == str(docs / "kitten.txt")

    (docs / "note2.txt").write_text(
        "taxes are due in april\nand the refund arrives in june\n", encoding="utf-8"
    )
    changed = index_json(home, str(docs), "--model", str(MINILM))
    assert changed["changed"] == 1 and changed["pieces_embedded"] == 1

    (docs / "note0.txt").unlink()
    removed = index_json(home, str(docs), "--model", str(MINILM))
    assert removed["removed"] == 1
    paths = [h["path"] for h in search_json(home, "volcanoes erupt lava", "--min-score", "-1", "--top", "50")]
    assert str(docs / "note0.txt") not in paths


def test_no_embed_makes_names_and_text_searchable_first(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "invoice-2023-acme.txt").write_text("payment of 420 euros for consulting\n", encoding="utf-8")
    (docs / "other.txt").write_text("unrelated words here\n", encoding="utf-8")
    home = tmp_path / "home"
    report = index_json(home, str(docs), "--model", str(MINILM), "--no-embed")
    assert report["pieces_embedded"] == 0 and report["pieces_pending"] == 2
    st = json.loads(ok(cli(home, "status", "--json")).stdout)
    assert st["pending"] == 2 and st["embedding_progress"] == 0.0
    hits = search_json(home, "consulting")
    assert hits and hits[0]["path"].endswith("invoice-2023-acme.txt") and hits[0]["scores"]["keyword"] > 0
    hits = search_json(home, "acme invoice")
    assert hits and hits[0]["path"].endswith("invoice-2023-acme.txt")
    later = index_json(home, str(docs), "--model", str(MINILM))
    assert later["pieces_embedded"] == 2 and later["unchanged"] == 2


def test_multimodal_index_with_tiny_qwen3vl(tmp_path: Path) -> None:
    """The tiny random model has no semantics; this checks images, PDF pages and frames get vectors."""
    docs = tmp_path / "docs"
    docs.mkdir()
    img = Image.new("RGB", (300, 200), (200, 40, 40))
    img.save(docs / "red.png")
    (docs / "scan.pdf").write_bytes(make_pdf(["A typed page", scanned_page()]))
    make_video(docs / "clip.mp4", seconds=3, fps=4, codec=video_codec())
    home = tmp_path / "home"
    report = index_json(home, str(docs), "--model", str(TINY_F16), "--mmproj", str(TINY_MMPROJ))
    assert report["failed"] == [] and report["pieces_pending"] == 0
    store = Store.open(home / "index")
    kinds = store.stats().files_by_kind
    assert kinds == {"image": 1, "pdf": 1, "video": 1}
    # Query by image: the same picture is the top hit (the stored vector also saw the file name and
    # the document instruction, so the cosine is high but not 1).
    hits = json.loads(ok(cli(home, "search", "--image", str(docs / "red.png"), "--json")).stdout)["hits"]
    assert hits and hits[0]["path"] == str(docs / "red.png") and hits[0]["kind"] == "image"


def test_switching_model_reembeds_never_mixes(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("alpha\n", encoding="utf-8")
    home = tmp_path / "home"
    index_json(home, str(docs), "--model", str(MINILM))
    proc = ok(cli(home, "index", str(docs), "--model", str(TINY_F16), "--json"))
    report = json.loads(proc.stdout)
    assert report["reset_reason"] and report["new"] == 1 and report["pieces_embedded"] == 1
    assert "rebuilt from scratch" in proc.stderr
    assert Store.open(home / "index").dims == 64


def test_kill_during_indexing_then_rerun(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(120):
        (docs / f"doc{i:03d}.txt").write_text(
            "\n".join(f"line {j} of document {i} about topic {i % 7}" for j in range(120)), encoding="utf-8"
        )
    home = tmp_path / "home"
    env = {
        **os.environ,
        "LAUNCHER_HOME": str(home),
        "LAUNCHER_THREADS": "1",
        "LAUNCHER_COMMIT_SECONDS": "0.2",
    }
    index_dir = home / "index"
    proc = subprocess.Popen(
        [sys.executable, "-m", "launcher.cli", "index", str(docs), "--model", str(TINY_F16)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if Store.exists(index_dir) and Store.open(index_dir).stats().embedded > 0:
            break
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.fail("the indexer finished before it could be killed; make the tree bigger")
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    snap = Store.open(index_dir)  # opens after a kill -9
    done_before = snap.stats().embedded
    assert 0 < done_before < snap.stats().pieces or snap.stats().pending == 0
    ok(cli(home, "search", "document about topic 3", "--json"))
    report = index_json(home, str(docs), "--model", str(TINY_F16))
    final = Store.open(index_dir).stats()
    assert final.pending == 0 and final.files == 120
    # Nothing committed before the kill was embedded again.
    assert report["pieces_embedded"] == final.pieces - done_before


def test_errors_are_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = cli(home, "search", "anything")
    assert proc.returncode == 4 and "no index at" in proc.stderr and proc.stderr.strip().count("\n") == 0
    proc = cli(home, "index", str(tmp_path / "missing"))
    assert proc.returncode == 1 and "no such file or folder" in proc.stderr
    proc = cli(home, "search", "x", "--kind", "spreadsheet")
    assert proc.returncode == 2 and "--kind" in proc.stderr
    proc = cli(home, "search", "x", "--after", "last tuesday")
    assert proc.returncode == 2 and "--after" in proc.stderr
    proc = cli(home, "index", str(tmp_path), "--dims", "0")
    assert proc.returncode == 2 and "--dims" in proc.stderr


def test_storage_default_is_int8_and_an_existing_index_keeps_its_own(tmp_path: Path) -> None:
    """A new index is int8 (the default); an index built as float16 stays float16 when re-indexed
    without --storage (a changed default never rebuilds anyone's index); an explicit --storage
    that differs rebuilds it, and says so."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "note.txt").write_text("The quarterly budget meeting moved to Thursday.\n", encoding="utf-8")
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    index_json(home_a, str(docs), "--model", str(MINILM))
    assert Store.open(home_a / "index").dtype == "int8"

    index_json(home_b, str(docs), "--model", str(MINILM), "--storage", "float16")
    again = index_json(home_b, str(docs), "--model", str(MINILM))
    assert Store.open(home_b / "index").dtype == "float16"
    assert again["unchanged"] == 1 and not again.get("reset_reason")
    proc = ok(cli(home_b, "index", str(docs), "--model", str(MINILM), "--storage", "int8"))
    assert Store.open(home_b / "index").dtype == "int8"
    assert "rebuilt from scratch" in proc.stderr
    assert search_json(home_b, "budget meeting")[0]["path"].endswith("note.txt")


def test_search_probe_setting_is_checked(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "note.txt").write_text("Thursday budget meeting.\n", encoding="utf-8")
    index_json(tmp_path, str(docs), "--model", str(MINILM))
    env_home = tmp_path
    os.environ["LAUNCHER_SEARCH_PROBE"] = "-3"
    try:
        proc = cli(env_home, "search", "budget")
    finally:
        del os.environ["LAUNCHER_SEARCH_PROBE"]
    assert proc.returncode != 0
    assert (
        "LAUNCHER_SEARCH_PROBE" in proc.stderr
        and "0 (exact search) or a positive whole number" in proc.stderr
    )
    assert len(proc.stderr.strip().splitlines()) == 1
    exact = search_json(tmp_path, "budget meeting")  # a tiny index is never partitioned: same answer
    assert exact[0]["path"].endswith("note.txt")
