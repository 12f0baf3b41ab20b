"""A held-out retrieval corpus: real documentation from two Debian packages nobody here wrote.

    python bench/retrieval/heldout/corpus.py [DEST]      # default bench/data/heldout-corpus

Downloads two pinned packages with `apt-get download` (runs `apt-get update` once if apt has no
lists), unpacks them with dpkg-deb and copies a fixed selection into DEST:

- git-html/    git's manual as HTML (git-doc): the top-level pages of /usr/share/doc/git/html
               (git-*.html command pages, gitXXX concept pages, scalar, gitk, gitweb, guides such as
               MyFirstContribution) plus the howto/ pages.
- man2/        Linux system-call man pages (manpages-dev), KEPT AS SHIPPED: gzipped troff, e.g. man2/open.2.gz.

Left out, so that no question has two right answers and no page is a pure pointer:
- symlinks (git's index.html -> git.html; the 225 man2 symlinks such as dup2.2.gz -> dup.2.gz that
  Debian ships in place of `.so` redirect stubs),
- any man page whose whole content (comments aside) is a `.so` redirect line (there are none in this version),
- user-manual.html (the whole user manual on one page; it repeats the tutorials and command pages),
- everyday.html (a "this document has been moved to giteveryday(7)" stub) and howto-index.html (a list of links),
- git's technical/ folder (developer internals) and the .txt AsciiDoc sources of the HTML pages.

The questions in questions.jsonl are labelled with paths relative to DEST.
"""

from __future__ import annotations

import gzip
import shutil
import sys
import tempfile
from pathlib import Path

PACKAGES = {
    "git-doc": "1:2.39.5-0+deb12u3",
    "manpages-dev": "6.03-2",
}
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the main set's corpus.py, for its download()
from corpus import download  # noqa: E402

DEFAULT_DEST = HERE.parent.parent / "data" / "heldout-corpus"
GIT_HTML = "usr/share/doc/git/html"
MAN2 = "usr/share/man/man2"
GIT_SKIP = frozenset({"user-manual.html", "everyday.html", "howto-index.html"})


def _is_so_stub(path: Path) -> bool:
    """True for a man page whose only non-comment content is a `.so other/page` line."""
    with gzip.open(path, "rt", errors="replace") as fh:
        lines = [ln.strip() for ln in fh if ln.strip() and not ln.startswith('.\\"')]
    return len(lines) == 1 and lines[0].startswith(".so ")


def _copy(paths: list[Path], src: Path, dest: Path) -> int:
    n = 0
    for path in sorted(paths):
        if path.is_symlink() or not path.is_file():
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
        roots = download(Path(tmp), PACKAGES)
        git = roots["git-doc"] / GIT_HTML
        git_pages = [p for p in git.glob("*.html") if p.name not in GIT_SKIP]
        git_pages += list((git / "howto").glob("*.html"))
        man2 = roots["manpages-dev"] / MAN2
        man_pages = [p for p in man2.glob("*.gz") if not p.is_symlink() and not _is_so_stub(p)]
        counts = {
            "git-html": _copy(git_pages, git, dest / "git-html"),
            "man2": _copy(man_pages, man2, dest / "man2"),
        }
    for name, n in counts.items():
        print(f"{name:10} {n:4d} files")
    print(f"{'total':10} {sum(counts.values()):4d} files")
    return dest


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DEST)
