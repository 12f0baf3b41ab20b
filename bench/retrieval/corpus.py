"""The retrieval benchmark's corpus: real documentation from Debian packages nobody here wrote.

    python bench/retrieval/corpus.py [DEST]      # default bench/data/docs-corpus

Downloads three pinned packages with `apt-get download` (runs `apt-get update` once if apt has no
lists), unpacks them with dpkg-deb and copies a fixed selection into DEST:

- rust-book/        the Rust Programming Language book, one HTML page per section (rust-doc)
- rust-reference/   the Rust Reference, HTML pages in nested folders (rust-doc)
- debian-reference/ the Debian Reference, one long HTML page per chapter (debian-reference-en)
- bash-examples/    bash's example scripts, start-up files, READMEs and Markdown (bash-doc)

`print.html` (the whole book on one page) is left out: every question would have two right answers.
The questions in questions.jsonl are labelled with paths relative to DEST.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGES = {
    "rust-doc": "1.63.0+dfsg1-2",
    "debian-reference-en": "2.100",
    "bash-doc": "5.2.15-2",
}
HERE = Path(__file__).resolve().parent
DEFAULT_DEST = HERE.parent / "data" / "docs-corpus"
RUST_HTML = "usr/share/doc/rust-doc/html"


def download(workdir: Path, packages: dict[str, str] = PACKAGES) -> dict[str, Path]:
    """Fetch and unpack pinned packages (name -> version); returns package -> unpacked root."""
    specs = [f"{name}={version}" for name, version in packages.items()]
    if subprocess.run(["apt-get", "download", *specs], cwd=workdir, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "download", *specs], cwd=workdir, check=True)
    roots: dict[str, Path] = {}
    for name in packages:
        (deb,) = workdir.glob(f"{name}_*.deb")
        root = workdir / name
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        roots[name] = root
    return roots


def _copy_tree(src: Path, dest: Path, pattern: str, *, skip: frozenset[str] = frozenset()) -> int:
    n = 0
    for path in sorted(src.rglob(pattern) if "/" not in pattern else src.glob(pattern)):
        if not path.is_file() or path.name in skip:
            continue
        target = dest / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        n += 1
    return n


def build(dest: Path = DEFAULT_DEST) -> Path:
    """Make the corpus at `dest` (replacing what is there); returns dest."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        roots = download(Path(tmp))
        rust = roots["rust-doc"] / RUST_HTML
        counts = {
            "rust-book": _copy_tree(
                rust / "book", dest / "rust-book", "*.html", skip=frozenset({"print.html"})
            ),
            "rust-reference": _copy_tree(
                rust / "reference", dest / "rust-reference", "*.html", skip=frozenset({"print.html"})
            ),
            "debian-reference": _copy_tree(
                roots["debian-reference-en"] / "usr/share/debian-reference",
                dest / "debian-reference",
                "*.html",
            ),
            "bash-examples": _copy_tree(
                roots["bash-doc"] / "usr/share/doc/bash/examples", dest / "bash-examples", "*"
            ),
        }
    # Only the top level of the book: its sub-folders are old editions' redirect stubs.
    for sub in (dest / "rust-book").iterdir():
        if sub.is_dir():
            shutil.rmtree(sub)
    counts["rust-book"] = sum(1 for _ in (dest / "rust-book").glob("*.html"))
    for name, n in counts.items():
        print(f"{name:18} {n:4d} files")
    return dest


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DEST)
