"""The search window in a real browser (Playwright driving Debian's Chromium) against a real
`launcher launch`: typing, the keyboard, filters, "more like this", image drop and paste, hostile
file names, and the open-only-indexed rule. LAUNCHER_SCREENSHOTS=1 also writes docs/screenshots/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demo_launcher import make_sample
from tests.conftest import FIXTURES, MINILM, TINY_F16, TINY_MMPROJ
from tests.launched import (
    CHROMIUM_ARGS,
    SCREENSHOTS,
    Launched,
    chromium_path,
    launch,
    recorded,
    screenshots_wanted,
)
from tests.test_index_cli import cli, ok

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)

VIEWPORT = {"width": 780, "height": 560}
IMG_NAME = "<img src=x onerror=alert(1)>.txt"
SVG_NAME = "<svg onload=window.pwned=1>.md"
SCRIPT_DIR = '"><script>window.pwned=1<'  # a file name cannot hold "/": the folder carries the tag
SCRIPT_NAME = "script>.md"
# The servers start with no reranker unless a test gives one (not from the developer's own settings).
NO_RERANK_ENV = {"LAUNCHER_RERANK": "", "LAUNCHER_RERANKER": "", "LAUNCHER_RERANK_TOP": ""}
RERANKER = FIXTURES / "tiny-reranker" / "tiny-qwen3vl-reranker-f16.gguf"
RERANKER_MMPROJ = FIXTURES / "tiny-reranker" / "mmproj-tiny-qwen3vl-reranker-f16.gguf"


def sample_tree(root: Path) -> Path:
    """The demo's sample folder, plus files whose names and contents try to inject HTML."""
    docs = make_sample(root)
    hostile = docs / "hostile"
    (hostile / SCRIPT_DIR).mkdir(parents=True)
    (hostile / IMG_NAME).write_text("an onerror handler in a file name\n", encoding="utf-8")
    (hostile / SVG_NAME).write_text("an onload handler in a file name\n", encoding="utf-8")
    (hostile / SCRIPT_DIR / SCRIPT_NAME).write_text("a script tag in a folder name\n", encoding="utf-8")
    (hostile / "snippet.html.txt").write_text(
        "pwned snippet <script>window.pwned=2</script><img src=x onerror=window.pwned=3>\n", encoding="utf-8"
    )
    return docs


def _root(factory: pytest.TempPathFactory, name: str) -> Path:
    """A fresh folder for one server. For screenshots, a fixed one: the stored vectors include each
    file's path, so the same path gives the same scores, and the same pictures."""
    if not screenshots_wanted():
        return factory.mktemp(name)
    root = Path(tempfile.gettempdir()) / "launcher-screenshots" / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    return root


def _serve(root: Path, *index_args: str) -> tuple[Launched, Path]:
    docs = sample_tree(root)
    home = root / "home"
    ok(cli(home, "index", str(docs), *index_args, "--json"))
    # HOME=root: paths show as ~/Documents/..., the same on every machine (screenshots).
    return launch(home, "--hotkey", "none", extra_env={"HOME": str(root), **NO_RERANK_ENV}), docs


@pytest.fixture(scope="module")
def text_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Launched, Path]]:
    """The sample indexed with the real MiniLM model, served by `launcher launch`."""
    launched, docs = _serve(_root(tmp_path_factory, "ui-text"), "--model", str(MINILM))
    yield launched, docs
    launched.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Window:
    """One search window: the page, what it showed and what it asked for."""

    def __init__(self, page: Any, launched: Launched):
        self.page = page
        self.launched = launched
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        page.on("dialog", self._dialog)
        page.on("request", lambda r: self.requests.append(r.url))

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)  # an alert() would mean injected code ran
        dialog.dismiss()

    @property
    def query(self) -> Any:
        return self.page.locator("#q textarea, #q input").first

    def seq(self) -> int:
        """The number of the rendering the result area shows (each server rendering has its own)."""
        value = self.page.evaluate("() => document.querySelector('#results .results')?.dataset.seq || '0'")
        return int(value)

    def search(self, text: str) -> list[str]:
        """Type a query (as a person does) and return the file names shown."""

        def typing() -> None:
            self.query.fill("")
            self.query.press_sequentially(text, delay=10)

        self.names_after(typing)
        self.page.wait_for_function(  # the rendering of the whole query, not of a prefix
            "t => document.querySelector('#results .results')?.dataset.query === t", arg=text
        )
        return self.names()

    def names_after(self, action: Any, settle_ms: int = 400) -> list[str]:
        """Do something, wait for a new rendering and for the results to stop changing, return the names."""
        before = self.seq()
        action()
        self.page.wait_for_function(
            "n => Number(document.querySelector('#results .results')?.dataset.seq || 0) > n", arg=before
        )
        while True:  # typing fires several searches: wait until the last one has landed
            seen = self.seq()
            self.page.wait_for_timeout(settle_ms)
            if self.seq() == seen:
                return self.names()

    def names(self) -> list[str]:
        return [str(n) for n in self.page.locator("#results .hit .fname").all_inner_texts()]

    def scores(self) -> list[str]:
        return [str(s) for s in self.page.locator("#results .hit .score").all_inner_texts()]

    def rerank_state(self) -> str:
        """What the result list says about reranking: off, pending, done or failed."""
        return str(self.page.evaluate("() => document.querySelector('#results .results')?.dataset.rerank"))

    def settled(self) -> list[str]:
        """The names once reranking (if any) has finished: the second rendering replaces the first."""
        self.page.wait_for_function(
            "() => document.querySelector('#results .results')?.dataset.rerank !== 'pending'"
        )
        return self.names()

    def shoot(self, name: str) -> None:
        if screenshots_wanted():
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            self.page.mouse.move(0, 0)
            # Every picture decoded and painted at full quality, so the PNG is the same each time.
            self.page.evaluate(
                "() => Promise.all([...document.images].map((i) => i.decode().catch(() => null)))"
            )
            self.page.wait_for_timeout(800)
            self.page.screenshot(path=str(SCREENSHOTS / name), animations="disabled", caret="hide")


@pytest.fixture
def window(browser: Any, text_server: tuple[Launched, Path]) -> Iterator[Window]:
    launched, _ = text_server
    yield from _window(browser, launched)


def _window(browser: Any, launched: Launched) -> Iterator[Window]:
    context = browser.new_context(viewport=VIEWPORT, color_scheme="light")
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=launched.url)
    page = context.new_page()
    w = Window(page, launched)
    # What the hotkey hands the browser: a private file that forwards to the one-time URL, whose
    # page sets the cookie and goes on to the window.
    login = launched.window_page()
    page.goto(login)
    w.query.wait_for()
    page.locator("#results .results").wait_for()
    page.wait_for_function("() => document.activeElement && document.activeElement.closest('#q')")
    page.wait_for_function("() => document.documentElement.dataset.live === '1'")  # its event stream is open
    yield w
    context.close()
    assert not w.dialogs, f"the page opened dialogs: {w.dialogs}"
    outside = [u for u in w.requests if not u.startswith((launched.url, "data:", "blob:", login))]
    assert not outside, f"the window fetched from outside this machine: {outside}"


def test_typing_shows_the_file(window: Window) -> None:
    window.shoot("welcome.png")
    names = window.search("how do I renew my passport")
    assert names[0] == "passport renewal.txt"
    first = window.page.locator("#results .hit").first
    assert "sel" in (first.get_attribute("class") or "")
    assert first.locator(".where").inner_text() == "lines 1-2"
    assert "~/Documents/notes" in first.locator(".path").inner_text()
    assert {"renew", "passport"} <= {m.lower() for m in first.locator(".snip mark").all_inner_texts()}
    names = window.search("plans for the trip to Portugal")
    assert names[:2] == ["lisbon itinerary.md", "flight booking.pdf"]
    assert window.page.locator("#results .hit").nth(1).locator(".where").inner_text() == "p. 1"
    window.shoot("search.png")


def test_keyboard_open_reveal_copy(window: Window, text_server: tuple[Launched, Path]) -> None:
    launched, docs = text_server
    names = window.search("plans for the trip to Portugal")
    opened = len(launched.lines("opened.txt"))
    window.query.press("Enter")
    assert recorded(launched.records / "opened.txt", opened + 1)[-1] == str(
        docs / "travel" / "lisbon itinerary.md"
    )
    window.query.press("ArrowDown")
    selected = window.page.locator("#results .hit.sel .fname").inner_text()
    assert selected == names[1]
    revealed = len(launched.lines("revealed.txt"))
    window.query.press("Control+Enter")
    assert recorded(launched.records / "revealed.txt", revealed + 1)[-1] == str(docs / "travel" / names[1])
    window.query.press("ArrowUp")
    copied = "() => document.querySelector('#toast.show')?.textContent.startsWith('Copied')"
    window.query.press("Alt+Enter")
    window.page.wait_for_function(copied)
    clip = window.page.evaluate("navigator.clipboard.readText()")
    assert clip == str(docs / "travel" / "lisbon itinerary.md")
    window.page.evaluate("navigator.clipboard.writeText('')")
    window.query.press("Control+Shift+C")  # the other binding for the same thing
    # Poll the clipboard from here: a predicate that returns readText()'s promise is truthy at once.
    deadline = time.monotonic() + 10
    got = ""
    while not got and time.monotonic() < deadline:
        got = window.page.evaluate("navigator.clipboard.readText()")
        time.sleep(0.05)
    assert got == clip
    assert len(launched.lines("opened.txt")) == opened + 1  # only Enter opened anything


def test_hostile_names_show_as_text_and_run_nothing(window: Window) -> None:
    names = window.search("a file name with an onerror or onload handler, a script tag in a folder name")
    for name in (IMG_NAME, SVG_NAME, SCRIPT_NAME):
        assert name in names, (name, names)
    paths = window.page.locator("#results .hit .path").all_inner_texts()
    assert any(SCRIPT_DIR in p for p in paths)
    names = window.search("pwned snippet")
    assert "snippet.html.txt" in names
    snip = window.page.locator("#results .hit .snip").first.inner_text()
    assert "<script>window.pwned=2</script>" in snip
    assert window.page.evaluate("typeof window.pwned") == "undefined"
    assert window.page.locator("#results img[src='x'], #results script, #results svg").count() == 0
    assert not window.dialogs


def test_filters_kind_folder_date(window: Window) -> None:
    page = window.page
    pictures = window.search("a picture of nature")
    assert len(pictures) >= 5

    def choose(elem: str, label: str) -> list[str]:
        def act() -> None:
            page.locator(f"#{elem} input").click()
            page.get_by_role("option", name=label, exact=True).click()

        return window.names_after(act)

    def folder(path: str) -> list[str]:
        box = page.locator("#f-folder input")

        def act() -> None:
            box.fill(path)
            box.press("Enter")

        return window.names_after(act)

    images = choose("f-kind", "Images")
    assert len(images) >= 4 and all(n.endswith((".png", ".jpg")) for n in images), images
    assert choose("f-when", "Past month") == images  # the pictures are recent
    choose("f-when", "Any time")
    choose("f-kind", "All kinds")
    assert len(window.search("pancakes, garden and passport renewal notes")) >= 3
    choose("f-kind", "Notes and text")
    notes = folder("~/Documents/notes")
    assert "pancakes.md" in notes and set(notes) <= {"pancakes.md", "garden.md", "passport renewal.txt"}
    recent = choose("f-when", "Past year")
    assert "pancakes.md" not in recent and set(recent) <= set(notes)  # the recipe is dated 2021
    folder("~/Documents/nowhere")
    assert "no such folder: ~/Documents/nowhere" in page.locator("#results .msg").inner_text()


def test_more_like_this(window: Window) -> None:
    copies = {"beach sunset.png", "beach sunset (small copy).jpg"}
    first = window.search("sunset at the beach")[0]
    assert first in copies
    names = window.names_after(lambda: window.query.press("Control+m"))
    chip = " ".join(window.page.locator("#results .chip").inner_text().split())
    assert chip == f"Similar to {first} ×"
    assert first not in names and names[0] == (copies - {first}).pop()
    assert window.query.input_value() == ""
    names = window.names_after(lambda: window.page.locator("#results .chip button").click())
    assert window.page.locator("#results .welcome").count() == 1


def test_window_refuses_paths_outside_the_index(window: Window, text_server: tuple[Launched, Path]) -> None:
    launched, docs = text_server
    answer = window.page.evaluate(
        """async (body) => {
            const r = await fetch('/api/open', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                               body: JSON.stringify(body)});
            return {status: r.status, body: await r.json()};
        }""",
        {"path": "/etc/passwd", "action": "open"},
    )
    assert answer["status"] == 403 and "/etc/passwd is not in the index" in answer["body"]["error"]
    answer = window.page.evaluate(
        "async () => (await fetch('/api/thumb/f99999')).status",
    )
    assert answer == 404
    # A hit whose id was forged in the page is refused too, and the window says why.
    window.search("how do I renew my passport")
    window.page.evaluate("document.querySelector('#results .hit').dataset.file = 'f424242'")
    window.query.press("Enter")
    toast = window.page.locator("#toast.bad")
    toast.wait_for()
    assert "is not in the index" in toast.inner_text()
    assert not any("f424242" in line for line in launched.lines("opened.txt"))


def test_toggle_focuses_the_open_window(window: Window, text_server: tuple[Launched, Path]) -> None:
    launched, _ = text_server
    window.page.wait_for_function("() => true")
    window.page.evaluate("document.activeElement.blur()")
    assert window.page.evaluate("document.activeElement === document.body")
    opened = len(launched.lines("browser.txt"))
    assert launched.post("/api/toggle").json()["action"] == "focused"
    window.page.wait_for_function("() => document.activeElement && document.activeElement.closest('#q')")
    assert len(launched.lines("browser.txt")) == opened


def test_expired_cookie_gets_a_clear_page(browser: Any, text_server: tuple[Launched, Path]) -> None:
    launched, _ = text_server
    context = browser.new_context()
    page = context.new_page()
    resp = page.goto(launched.url + "/")
    assert resp.status == 401 and "launcher toggle" in page.inner_text("body")
    context.close()


# --- the Rerank switch: the real tiny GGUF reranker in the process, or none at all ---


def test_rerank_without_a_model_says_how_to_get_one(window: Window) -> None:
    page = window.page
    switch = page.locator("#f-rerank input")
    assert not switch.is_checked()  # the `rerank` setting is off on this server
    names = window.search("plans for the trip to Portugal")
    scores = window.scores()
    assert window.rerank_state() == "off" and not any("rerank" in s for s in scores)
    window.names_after(switch.click)
    assert window.settled() == names  # the hits are still there, as retrieved
    assert window.rerank_state() == "failed" and window.scores() == scores
    assert page.locator("#results .note").inner_text() == (
        "Not reranked: no reranker model: run launcher models pull qwen3-vl-reranker-2b "
        "(or give a reranker .gguf file or a Hugging Face folder)"
    )
    assert page.locator("#results .note code").inner_text() == "launcher models pull qwen3-vl-reranker-2b"
    window.shoot("rerank-no-model.png")
    # The switch stays on for the next query; Alt+R turns it off, and the note goes with it.
    window.search("how do I renew my passport")
    window.settled()
    assert "no reranker model" in page.locator("#results .note").inner_text()
    window.names_after(lambda: window.query.press("Alt+r"))
    assert not switch.is_checked() and window.rerank_state() == "off"
    assert page.locator("#results .note").count() == 0


@pytest.fixture(scope="module")
def rerank_server(text_server: tuple[Launched, Path]) -> Iterator[tuple[Launched, Path]]:
    """A second process on the text server's index with the `rerank` setting on, `rerank_top` 2, and
    the tiny reranker given by path (`reranker` setting; a pulled one must pass its checksums,
    which the tiny one cannot: tests/test_pull.py covers pulled files)."""
    text, docs = text_server
    home = text.home.parent / "home-rerank"
    env = {
        "HOME": str(text.home.parent),
        "LAUNCHER_RERANKER": str(RERANKER),
        "LAUNCHER_RERANK": "1",
        "LAUNCHER_RERANK_TOP": "2",
    }
    launched = launch(home, "--hotkey", "none", "--index-dir", str(text.home / "index"), extra_env=env)
    yield launched, docs
    launched.stop()


@pytest.fixture
def rerank_window(browser: Any, rerank_server: tuple[Launched, Path]) -> Iterator[Window]:
    launched, _ = rerank_server
    yield from _window(browser, launched)


def test_rerank_switch_shows_both_scores_in_the_rerankers_order(
    rerank_window: Window, rerank_server: tuple[Launched, Path]
) -> None:
    from launcher.app.window import TOP_K
    from launcher.cli.commands import _engine_options
    from launcher.models.rerank import load_reranker
    from launcher.query.rerank import rerank_hits
    from launcher.query.session import hit_from_json, open_store

    launched, _ = rerank_server
    window, page = rerank_window, rerank_window.page
    assert page.locator("#f-rerank input").is_checked()  # LAUNCHER_RERANK=1 on this server
    text = "Lisbon itinerary, flight booking and passport renewal"
    window.search(text)
    names = window.settled()
    assert window.rerank_state() == "done" and page.locator("#results .chip.rr").inner_text() == "Reranked"
    window.shoot("rerank.png")
    # What the window shows is the process's reranked list, with both scores on each judged hit.
    answer = launched.post("/api/search", {"text": text, "top_k": TOP_K, "rerank": True}).json()
    assert answer["reranked"] is True and answer["rerank_error"] is None
    hits, top = answer["hits"], launched.get("/api/status").json()["reranker"]["top"]
    assert top == 2  # LAUNCHER_RERANK_TOP
    assert len(hits) > top and names == [Path(h["path"]).name for h in hits]
    assert window.scores() == [
        f"rerank {h['scores']['rerank']:.2f} · retrieval {h['scores']['retrieval']:.2f}" for h in hits[:top]
    ] + [f"retrieval {h['scores']['retrieval']:.2f}" for h in hits[top:]]
    # And that list is the reranker's order: the same reranker files run here on the retrieved hits.
    plain = launched.post("/api/search", {"text": text, "top_k": TOP_K, "rerank": False}).json()["hits"]
    with load_reranker(RERANKER, None, options=_engine_options(2, None, None)) as rr:
        store = open_store(launched.home.parent / "home" / "index")
        direct = rerank_hits(store, rr, text, None, [hit_from_json(h) for h in plain], top_n=top)
    assert [h.path for h in direct] == [h["path"] for h in hits]
    assert [h.scores["rerank"] for h in direct[:top]] == pytest.approx(
        [h["scores"]["rerank"] for h in hits[:top]], abs=1e-4
    )
    # Switched off (Alt+R), the window shows the hits as retrieved with their plain score.
    assert window.names_after(lambda: window.query.press("Alt+r")) == [Path(h["path"]).name for h in plain]
    assert window.rerank_state() == "off" and window.scores() == [f"{h['score']:.2f}" for h in plain]
    assert launched.get("/api/status").json()["reranker"]["loads"] == 1  # loaded once, kept


def test_snippets_mark_the_query_words_cjk_ones_of_two_characters_too() -> None:
    from launcher.app.window import _highlight, query_words

    words = query_words("天気 the budget at")
    assert words == ["budget", "天気"]  # "the" is a stopword, "at" too short
    assert _highlight("明日の天気予報 <b>budget</b>", words) == (
        "明日の<mark>天気</mark>予報 &lt;b&gt;<mark>budget</mark>&lt;/b&gt;"
    )


def test_a_newer_search_makes_an_older_rerank_stale() -> None:
    """The window's tickets: only the newest search of a window is reranked and shown, and only once."""
    from launcher.app.window import Tickets

    tickets = Tickets()
    first = tickets.issue("w1")
    other = tickets.issue("w2")
    assert tickets.current("w1", first) and tickets.claim("w1", first)
    assert not tickets.claim("w1", first)  # a second step for the same search does nothing
    second = tickets.issue("w1")
    assert not tickets.current("w1", first) and not tickets.claim("w1", first)
    assert tickets.claim("w1", second) and tickets.current("w2", other)  # windows are independent


# --- a time in the query: the chip (fixed clock, files with set dates) -----------------------------


@pytest.fixture(scope="module")
def dated_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Launched, Path]]:
    """Meeting notes and pictures with set dates (tests/test_dates.py), served on a fixed clock."""
    from tests.test_dates import CLOCK, dated_tree

    root = tmp_path_factory.mktemp("ui-dated")
    docs = dated_tree(root)
    home = root / "home"
    ok(cli(home, "index", str(docs), "--model", str(MINILM), "--json"))
    launched = launch(home, "--hotkey", "none", extra_env={**CLOCK, **NO_RERANK_ENV})
    yield launched, docs
    launched.stop()


@pytest.fixture
def dated_window(browser: Any, dated_server: tuple[Launched, Path]) -> Iterator[Window]:
    launched, _ = dated_server
    yield from _window(browser, launched)


def test_a_time_in_the_query_is_a_removable_chip(dated_window: Window) -> None:
    window = dated_window
    assert window.search("meeting notes from last week") == ["meeting notes roadmap.md"]
    chip = window.page.locator("#results .chip.when")
    assert " ".join(chip.inner_text().split()) == "modified last week ×"
    assert chip.get_attribute("title") == "2026-11-23 to 2026-11-29"
    # The words searched are the query without its time: "week" is not marked in the snippet.
    marks = {m.lower() for m in window.page.locator("#results .snip mark").all_inner_texts()}
    assert marks == {"meeting", "notes"}
    # The chip's ×: every word searched as typed, the older meeting notes back, the query untouched.
    names = window.names_after(lambda: chip.locator("button").click())
    assert window.page.locator("#results .chip.when").count() == 0
    assert {"meeting notes budget.md", "meeting notes offsite.md"} <= set(names)
    assert window.query.input_value() == "meeting notes from last week"
    # Typing on keeps it off while those words are there ...
    window.search("meeting notes from last week, action items")
    assert window.page.locator("#results .chip.when").count() == 0
    # ... and a query that is only a time lists that day's files, newest first, with their dates.
    assert window.search("yesterday") == ["pancake recipe.md", "tomato garden.md"]
    assert window.scores() == ["2026-12-01 18:00", "2026-12-01 09:00"]
    chip = window.page.locator("#results .chip.when")
    assert " ".join(chip.inner_text().split()) == "modified yesterday ×"


def test_the_api_and_the_cli_through_the_process_report_what_was_parsed(
    dated_server: tuple[Launched, Path],
) -> None:
    """POST /api/search answers `parsed` beside the hits and takes "dates"; `launcher search` through
    the running process prints the same object as in-process (LAUNCHER_NOW and TZ set for both)."""
    from tests.test_dates import CLOCK

    launched, _ = dated_server
    query = "meeting notes from last week"
    got = launched.post("/api/search", {"text": query}).json()
    assert got["parsed"]["text"] == "meeting notes" and got["parsed"]["mode"] == "filter"
    assert [Path(h["path"]).name for h in got["hits"]] == ["meeting notes roadmap.md"]
    off = launched.post("/api/search", {"text": query, "dates": False}).json()
    assert off["parsed"]["text"] == query and off["parsed"]["after"] is None
    assert "meeting notes budget.md" in {Path(h["path"]).name for h in off["hits"]}
    bad = launched.post("/api/search", {"text": query, "dates": "maybe"})
    assert bad.status_code == 400 and bad.json()["error"] == 'dates: "maybe" is not true or false'
    searches = launched.get("/api/status").json()["searches"]
    env = {**os.environ, "LAUNCHER_HOME": str(launched.home), **CLOCK}
    through = subprocess.run(
        [sys.executable, "-m", "launcher.cli", "search", query, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert launched.get("/api/status").json()["searches"] == searches + 1  # it went through the process
    answer = json.loads(ok(through).stdout)
    assert answer["parsed"] == got["parsed"]
    assert answer["hits"] == [{k: v for k, v in h.items() if k != "piece_id"} for h in got["hits"]]


# --- image search with the tiny Qwen3-VL model (random weights: a picture finds its own copies) ---


@pytest.fixture(scope="module")
def image_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Launched, Path]]:
    launched, docs = _serve(
        _root(tmp_path_factory, "ui-image"), "--model", str(TINY_F16), "--mmproj", str(TINY_MMPROJ)
    )
    yield launched, docs
    launched.stop()


@pytest.fixture
def image_window(browser: Any, image_server: tuple[Launched, Path]) -> Iterator[Window]:
    launched, _ = image_server
    yield from _window(browser, launched)


def test_image_drop_finds_the_near_duplicate(
    image_window: Window, image_server: tuple[Launched, Path]
) -> None:
    _, docs = image_server
    small = docs / "photos" / "beach sunset (small copy).jpg"
    page = image_window.page
    names = image_window.names_after(lambda: page.set_input_files("#img input[type=file]", str(small)))
    assert "beach sunset.png" in names[:2] and small.name in names[:2], names
    assert page.locator("#results .hit img").count() >= 2  # thumbnails of indexed images
    thumb = page.locator("#results .hit img").first.evaluate("i => i.naturalWidth")
    assert thumb > 0
    image_window.shoot("image-search.png")
    # Together with text: both go into one query.
    names = image_window.names_after(lambda: image_window.query.press_sequentially("sunset", delay=10))
    assert names and page.locator("#results .msg").count() == 0


def test_pasting_an_image_searches_with_it(image_window: Window, image_server: tuple[Launched, Path]) -> None:
    _, docs = image_server
    data = (docs / "photos" / "city at night.png").read_bytes()
    page = image_window.page

    def paste() -> None:
        page.evaluate(
            """(bytes) => {
                const file = new File([new Uint8Array(bytes)], 'pasted.png', {type: 'image/png'});
                const dt = new DataTransfer(); dt.items.add(file);
                const ev = new ClipboardEvent('paste', {clipboardData: dt, bubbles: true, cancelable: true});
                document.querySelector('#q textarea, #q input').dispatchEvent(ev);
            }""",
            list(data),
        )
        page.wait_for_function("() => document.querySelector('#results .hit')")

    names = image_window.names_after(paste)
    assert names[0] == "city at night.png", names


def test_cli_image_search_goes_through_the_process(image_server: tuple[Launched, Path]) -> None:
    """`launcher search --image` sends the picture to the running process: same output as in-process."""
    from launcher.cli.commands import _engine_options
    from launcher.query.session import Query, Searcher, hit_to_json

    launched, docs = image_server
    small = docs / "photos" / "beach sunset (small copy).jpg"
    searches = launched.get("/api/status").json()["searches"]
    via_process = ok(cli(launched.home, "search", "--image", str(small), "--json")).stdout
    st = launched.get("/api/status").json()
    assert st["searches"] == searches + 1 and st["model_loads"] == 1 and st["model"]["images"] is True
    assert os.path.basename(st["model"]["file"]) == TINY_F16.name
    searcher = Searcher(launched.home / "index", engine_options=_engine_options(2, None, None))
    try:
        hits = searcher.search(Query(image=small))
    finally:
        searcher.close()
    answer = json.loads(via_process)
    assert answer["hits"] == json.loads(json.dumps([hit_to_json(h) for h in hits], ensure_ascii=True))
    assert answer["parsed"] == {**answer["parsed"], "text": "", "after": None, "before": None}
    assert {Path(h["path"]).name for h in answer["hits"][:2]} == {small.name, "beach sunset.png"}
