#!/usr/bin/env python3
"""Try the launcher on a sample folder made on the spot: notes, PDFs and pictures, no downloads.

    python demo_launcher.py            # build the folder, index it, open the search window
    python demo_launcher.py --no-ui    # the same, then print a few searches and their results

It uses the best model on this machine (a pulled Qwen3-VL-Embedding, else the bundled text model)
and its own LAUNCHER_HOME inside the demo folder, so it never touches your real index or a
launcher you already run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

NOTES = {
    "notes/passport renewal.txt": (
        "To renew a passport, fill in form DS-82, attach a recent photo and mail it with the old passport.\n"
        "Processing takes six to eight weeks; expedited service costs an extra 60 dollars.\n"
    ),
    "notes/garden.md": (
        "# Garden plan\n\nTomatoes need full sun and deep watering twice a week.\n"
        "Plant basil between the rows; it keeps pests away.\n"
    ),
    "notes/recipes/pancakes.md": (
        "# Sunday pancakes\n\n200 g flour, 2 eggs, 300 ml milk, a pinch of salt.\n"
        "Rest the batter for 30 minutes, cook on a hot buttered pan.\n"
    ),
    "work/Q3 board report.md": (
        "# Q3 board report\n\nRevenue grew twelve percent, driven by cloud subscriptions.\n"
        "Churn fell to 2.1 percent; hiring is on plan for the new data team.\n"
    ),
    "work/meeting notes 2024-05-14.txt": (
        "Weekly sync. Decided to move the database cluster to the new region in June.\n"
        "Action: Ana drafts the migration plan, Tom books the maintenance window.\n"
    ),
    "travel/lisbon itinerary.md": (
        "# Lisbon, 4 days\n\nDay 1: Alfama and the castle. Day 2: Belem tower and pastries.\n"
        "Day 3: train to Sintra. Day 4: LX Factory, flight home at 19:40.\n"
    ),
    "code/fibonacci.py": (
        "def fibonacci(n: int) -> int:\n"
        '    """The n-th Fibonacci number, computed recursively."""\n'
        "    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n"
    ),
}
PDFS = {
    "travel/flight booking.pdf": [
        "Booking confirmation\nFlight TP 1351 from Berlin to Lisbon\nDeparture 07:15, seat 14C\n"
        "One checked bag included",
    ],
    "finance/tax return 2023.pdf": [
        "Tax return 2023\nForm 1040, filed on April 2\nRefund expected in six weeks",
        "Deductions\nCharitable donations: 1,200 dollars\nHome office: 900 dollars",
    ],
}
OLD = {"notes/recipes/pancakes.md", "code/fibonacci.py", "finance/tax return 2023.pdf"}  # dated 2021


def write_pdf(path: Path, pages: list[str]) -> None:
    """A small valid PDF with one text page per string (Helvetica, one line per text line)."""
    objects: list[bytes] = []
    kids: list[int] = []
    objects.append(b"")  # 1: catalog, filled in below
    objects.append(b"")  # 2: pages
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")  # 3
    for text in pages:
        ops = ["BT /F1 16 Tf 20 TL 72 720 Td"]
        for line in text.split("\n"):
            safe = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({safe}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        content = len(objects)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 3 0 R >> >> >>" % content
        )
        kids.append(len(objects))
    objects[0] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids),
        len(kids),
    )
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))


def _sky(size: tuple[int, int], top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    w, h = size
    img = Image.new("RGB", size)
    draw = ImageDraw.Draw(img)
    for y in range(h):
        t = y / max(1, h - 1)
        draw.line(
            [(0, y), (w, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        )
    return img


def beach_sunset(size: tuple[int, int] = (640, 420)) -> Image.Image:
    """An orange sky, a low sun, the sea and sand."""
    w, h = size
    img = _sky(size, (255, 140, 80), (255, 214, 150))
    d = ImageDraw.Draw(img)
    d.ellipse((w * 0.58, h * 0.34, w * 0.78, h * 0.64), fill=(255, 236, 170))
    d.rectangle((0, h * 0.55, w, h * 0.78), fill=(40, 96, 150))
    d.polygon([(0, h * 0.78), (w, h * 0.70), (w, h), (0, h)], fill=(236, 204, 150))
    return img


def mountain_lake(size: tuple[int, int] = (640, 420)) -> Image.Image:
    """Snowy peaks over a green valley and a blue lake."""
    w, h = size
    img = _sky(size, (120, 180, 240), (210, 232, 250))
    d = ImageDraw.Draw(img)
    d.polygon([(0, h * 0.7), (w * 0.3, h * 0.2), (w * 0.55, h * 0.7)], fill=(90, 100, 120))
    d.polygon([(w * 0.3, h * 0.7), (w * 0.65, h * 0.12), (w, h * 0.7)], fill=(110, 118, 138))
    d.polygon([(w * 0.58, h * 0.24), (w * 0.65, h * 0.12), (w * 0.72, h * 0.24)], fill=(250, 250, 250))
    d.rectangle((0, h * 0.68, w, h), fill=(70, 140, 70))
    d.ellipse((w * 0.15, h * 0.76, w * 0.85, h * 0.98), fill=(50, 120, 200))
    return img


def city_night(size: tuple[int, int] = (640, 420)) -> Image.Image:
    """Dark towers with lit windows under a night sky."""
    w, h = size
    img = _sky(size, (10, 14, 40), (40, 40, 90))
    d = ImageDraw.Draw(img)
    x = 0.0
    heights = [0.5, 0.3, 0.62, 0.4, 0.25, 0.55, 0.35, 0.45]
    for i, frac in enumerate(heights):
        bw = w / len(heights)
        top = h * frac
        d.rectangle((x, top, x + bw - 6, h), fill=(25, 28, 45))
        for wy in range(int(top) + 10, h - 10, 22):
            for wx in range(int(x) + 8, int(x + bw) - 14, 16):
                if (wx + wy + i) % 3:
                    d.rectangle((wx, wy, wx + 6, wy + 9), fill=(255, 214, 110))
        x += bw
    d.ellipse((w * 0.8, h * 0.08, w * 0.88, h * 0.2), fill=(240, 240, 220))
    return img


def forest_path(size: tuple[int, int] = (640, 420)) -> Image.Image:
    """Green trees along a sandy path."""
    w, h = size
    img = _sky(size, (180, 220, 170), (90, 150, 90))
    d = ImageDraw.Draw(img)
    for i in range(9):
        cx = (i + 0.5) * w / 9
        d.polygon(
            [(cx - 40, h * 0.75), (cx, h * (0.15 + 0.05 * (i % 3))), (cx + 40, h * 0.75)],
            fill=(30, 90 + 8 * i, 50),
        )
    d.polygon([(w * 0.42, h), (w * 0.5, h * 0.62), (w * 0.55, h * 0.62), (w * 0.7, h)], fill=(200, 170, 120))
    return img.filter(ImageFilter.SMOOTH)


PICTURES = {
    "photos/beach sunset.png": beach_sunset,
    "photos/mountain lake.png": mountain_lake,
    "photos/city at night.png": city_night,
    "photos/forest path.png": forest_path,
}


def make_sample(root: Path) -> Path:
    """The sample `Documents` folder under root (made afresh): notes, two PDFs, five pictures."""
    docs = root / "Documents"
    for rel, text in NOTES.items():
        path = docs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for rel, pages in PDFS.items():
        path = docs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_pdf(path, pages)
    for rel, draw in PICTURES.items():
        path = docs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        draw().save(path)
    # The same sunset again, smaller and as a JPEG: a near-duplicate for image search to find.
    beach_sunset((320, 210)).save(docs / "photos" / "beach sunset (small copy).jpg", quality=90)
    now = time.time()
    for i, path in enumerate(sorted(p for p in docs.rglob("*") if p.is_file())):
        rel = path.relative_to(docs).as_posix()
        stamp = time.mktime((2021, 3, 1 + i, 12, 0, 0, 0, 0, -1)) if rel in OLD else now - 86400 * (1 + i % 5)
        os.utime(path, (stamp, stamp))
    return docs


QUERIES = [
    "how do I renew my passport",
    "plans for the trip to Portugal",
    "quarterly revenue numbers",
    "recursive function",
    "sunset at the beach",
]


def main(argv: list[str] | None = None) -> int:
    """Build, index, then open the window (or print searches with --no-ui)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, help="where to build the demo (default: a new temp folder)")
    parser.add_argument(
        "--no-ui", action="store_true", help="print a few searches instead of opening the window"
    )
    parser.add_argument("--model", help="model name or .gguf path (default: the best one available)")
    parser.add_argument("--port", type=int, default=0, help="port for the window (default: any free port)")
    args = parser.parse_args(argv)

    root = (args.dir or Path(tempfile.mkdtemp(prefix="launcher-demo-"))).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.environ["LAUNCHER_HOME"] = str(root / "home")  # before the launcher reads its settings

    from launcher.models import catalogue as models
    from launcher.cli.jobs import run_index

    docs = make_sample(root)
    resolved = models.resolve_model(args.model, None)
    print(f"demo folder: {docs}\nmodel: {resolved.name}", file=sys.stderr)
    index_dir = root / "home" / "index"
    run_index(
        [docs],
        index_dir=index_dir,
        model=args.model or str(resolved.path),
        mmproj=str(resolved.mmproj) if resolved.mmproj else None,
        excludes=[],
        dims=None,
        storage="float16",
        max_file_mb=1024,
        max_image_mp=64,
        include_hidden=False,
        follow_symlinks=False,
        embed=True,
        engine_options=None,  # llama.cpp defaults: all physical cores
        as_json=False,
    )
    if args.no_ui:
        from launcher.query.session import Query
        from launcher.query.session import Searcher

        searcher = Searcher(index_dir)
        try:
            for text in QUERIES:
                print(f"\n> {text}")
                for i, hit in enumerate(searcher.search(Query(text=text, top_k=3)), 1):
                    where = hit.locator.describe()
                    print(
                        f"  {i}. {hit.score:.3f}  {Path(hit.path).relative_to(docs)}"
                        + (f"  ({where})" if where else "")
                    )
        finally:
            searcher.close()
        return 0

    from launcher.app.service import LaunchOptions
    from launcher.app.launch import run_launch

    run_launch(LaunchOptions(index_dir=index_dir, port=args.port, hotkey=None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
