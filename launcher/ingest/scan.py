"""Stage 1: walk the roots and yield a FileRecord for every file worth indexing, a Skip for the rest.

One `os.scandir` per folder and one `stat` per file (DirEntry caches the type from readdir; on
POSIX both go through the folder's descriptor, so the kernel does not walk the path again per file),
so a rescan of an unchanged tree costs about what `find -printf '%s %T@'` costs. Entries are sorted,
so the order is the same on every run. The files of a folder come out as columns (`Files`: paths,
sizes, mtimes), never an object per file, so the diff can compare 100k files in bulk; `scan` and
`rescan` turn them into FileRecords for the callers that want one per file.
"""

from __future__ import annotations

import fnmatch
import operator
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import pathspec

from launcher.core.paths import inside, unique_paths
from launcher.core.records import FileRecord, Skip
from launcher.index.roots import DEFAULT_MAX_FILE_BYTES

"""Files above this size are skipped (1 GiB); `--max-file-mb` changes it."""

# Folders that hold caches, tooling or OS bookkeeping, never a person's documents. Matched by name,
# whatever `include_hidden` says.
SYSTEM_DIRS = frozenset(
    {
        "node_modules",
        "__pycache__",
        ".git",
        ".hg",
        ".svn",
        ".bzr",
        ".tox",
        ".nox",
        ".venv",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".cache",
        ".Trash",
        ".Trashes",
        ".Spotlight-V100",
        ".fseventsd",
        ".DocumentRevisions-V100",
        ".TemporaryItems",
        "$RECYCLE.BIN",
        "System Volume Information",
        "lost+found",
    }
)
# (parent name, folder name) pairs that are system folders only in that place.
SYSTEM_DIR_PAIRS = frozenset({("Library", "Caches"), ("Library", "Logs"), ("Local", "Temp")})
SYSTEM_FILES = frozenset({"Thumbs.db", "desktop.ini", "Icon\r"})
# A folder holding one of these is a Python or conda environment: thousands of library files.
ENV_MARKERS = ("pyvenv.cfg", "conda-meta")
IGNORE_FILES = (".gitignore", ".ignore")  # later files win, as in ripgrep
# Names of files another program is still writing (browser downloads, office lock files, editor swap
# and temp files). The watcher does not read them on an event (the finished file appears under its
# final name); a full scan still indexes them, so that `launcher index` indexes what is there.
PARTIAL_FILE_GLOBS = (
    "*.part",
    "*.partial",
    "*.crdownload",
    "*.download",
    "*.tmp",
    "*.temp",
    "*.swp",
    "*.swx",
    "~$*",
    ".#*",
    ".~lock.*#",
)
_PARTIAL = re.compile("|".join(fnmatch.translate(g) for g in PARTIAL_FILE_GLOBS))

# Extensions by kind (lowercase, without the dot). Anything else is "other": still findable by name.
_EXTENSIONS: dict[str, str] = {
    "code": """
        py pyi pyw ipynb c h cc cpp cxx hpp hh hxx cu cuh m mm java kt kts scala groovy gradle cs fs fsx
        vb go rs swift dart zig nim d jl r rmd lua pl pm php rb erl ex exs hs elm clj cljs ml mli js mjs
        cjs jsx ts tsx vue svelte css scss sass less sh bash zsh fish ps1 psm1 bat cmd sql graphql proto
        thrift asm s v sv vhd tcl awk sed cmake mk make tf hcl nix
    """,
    "markdown": "md markdown mdown mkd rst",
    "html": "html htm xhtml",
    "pdf": "pdf",
    "image": "jpg jpeg jpe png gif bmp tif tiff webp heic heif avif",
    "video": "mp4 mov mkv webm avi m4v mpg mpeg wmv 3gp",
    "office": "docx pptx xlsx",
    "ebook": "epub",
    "text": """
        txt text log csv tsv json jsonl ndjson yaml yml toml ini cfg conf config properties env xml tex
        bib srt vtt org adoc asciidoc textile rtf
    """,
}
KIND_BY_EXT: dict[str, str] = {ext: kind for kind, exts in _EXTENSIONS.items() for ext in exts.split()}
# Extension-less names that are code.
CODE_NAMES = frozenset(
    {"Makefile", "makefile", "GNUmakefile", "Dockerfile", "Rakefile", "Gemfile", "Jenkinsfile", "Vagrantfile"}
)


_NAME = operator.attrgetter("name")  # sort key for DirEntry objects, without a Python call each
# Folders are listed through a descriptor (and files stat'ed relative to it) where the OS can.
_BY_FD = os.scandir in os.supports_fd and os.stat in os.supports_dir_fd
_S_IFMT, _S_IFREG = 0o170000, stat.S_IFREG


class Files(NamedTuple):
    """A run of files from one folder, in walk order, as columns (absolute paths, bytes, mtime_ns)."""

    paths: list[str]
    sizes: list[int]
    mtimes: list[int]


class _Sub(NamedTuple):
    """A subfolder found while listing its parent, to enter when the walk reaches it."""

    name: str
    path: str
    is_link: bool
    ident: tuple[int, int] | None  # (st_dev, st_ino), only when following symlinks
    error: OSError | None  # the stat that identity needed failed


def kind_of(path: str | os.PathLike[str]) -> str:
    """The kind of a file (one of records.KINDS), from its extension alone."""
    return _kind_of_name(os.path.basename(os.fspath(path)))


def exclude_matcher(globs: Sequence[str]) -> Callable[[str, str, str, bool], bool]:
    """The user's exclude globs as scan applies them: (name, path relative to the root with '/',
    absolute path, is_dir) -> excluded."""
    excludes = _Excludes(globs)
    return excludes.match if excludes else (lambda name, rel, path, is_dir: False)


def is_partial_name(name: str) -> bool:
    """Whether a file name says the file is still being written (a download, a lock or swap file)."""
    return _PARTIAL.match(name.lower()) is not None


def _kind_of_name(name: str) -> str:
    if name in CODE_NAMES:
        return "code"
    _, dot, ext = name.rpartition(".")
    if not dot or not _:  # no extension, or a dot-name such as ".bashrc"
        return "other"
    return KIND_BY_EXT.get(ext.lower(), "other")


class _IgnoreFile:
    """The patterns of one folder's .gitignore/.ignore, applied to paths relative to that folder."""

    def __init__(self, base: str, lines: list[str]) -> None:
        self.base = base
        self.spec = pathspec.GitIgnoreSpec.from_lines(lines)
        parts: list[str] = []
        self.has_negation = False
        for pattern in self.spec.patterns:
            regex = getattr(pattern, "regex", None)
            if pattern.include is None or regex is None:
                continue  # a comment or blank line
            self.has_negation |= pattern.include is False
            # Named groups are made anonymous so that all patterns can share one regex.
            parts.append(re.sub(r"\(\?P<\w+>", "(?:", regex.pattern))
        # One alternation of every pattern answers "does anything match?" in a single regex call, which
        # is the common case's whole answer; pathspec's per-pattern loop runs only on a hit with "!" rules.
        self.any = re.compile("|".join(f"(?:{part})" for part in parts)) if parts else None

    def verdict(self, sub: str) -> bool | None:
        """True: ignored, False: re-included by a "!" rule, None: no rule here speaks about it."""
        if self.any is None or self.any.search(sub) is None:
            return None
        if not self.has_negation:
            return True
        return self.spec.check_file(sub).include


@dataclass
class _Rules:
    """The ignore rules in force for one folder: its own ignore files plus its ancestors'."""

    files: tuple[_IgnoreFile, ...] = ()  # outermost first; deeper files override shallower ones

    def ignored(self, rel: str, is_dir: bool) -> bool:
        """Whether gitignore semantics exclude `rel` (relative to the root, '/'-separated)."""
        for ignore in reversed(self.files):
            sub = rel[len(ignore.base) + 1 :] if ignore.base else rel
            verdict = ignore.verdict(sub + "/" if is_dir else sub)
            if verdict is not None:
                return verdict
        return False


@dataclass
class _Frame:
    """A folder being walked: what is still to visit in it and the rules that apply inside it."""

    path: str
    rel: str
    items: Iterator[Files | Skip | _Sub]  # runs of files, problems, subfolders, in sorted order
    rules: _Rules
    ident: tuple[int, int] | None  # (st_dev, st_ino) when following symlinks, for loop detection


class _Excludes:
    """User exclude globs, matched against the name, the path relative to the root, and absolute paths."""

    def __init__(self, globs: Sequence[str]) -> None:
        rel: list[str] = []
        dirs: list[str] = []
        absolute: list[str] = []
        for glob in globs:
            glob = os.path.expanduser(glob)
            target = absolute if os.path.isabs(glob) else rel
            if glob.endswith(("/", os.sep)) and len(glob) > 1:
                glob = glob.rstrip("/" + os.sep)
                target = dirs if target is rel else target
            target.append(fnmatch.translate(os.path.normcase(glob)))
        self._rel = re.compile("|".join(rel)) if rel else None
        self._dirs = re.compile("|".join(dirs)) if dirs else None
        self._abs = re.compile("|".join(absolute)) if absolute else None

    def __bool__(self) -> bool:
        return bool(self._rel or self._dirs or self._abs)

    def match(self, name: str, rel: str, path: str, is_dir: bool) -> bool:
        """Whether any glob excludes this entry."""
        name, rel = os.path.normcase(name), os.path.normcase(rel)
        for regex in (self._rel, self._dirs if is_dir else None):
            if regex is not None and (regex.match(name) or regex.match(rel)):
                return True
        return self._abs is not None and self._abs.match(os.path.normcase(path)) is not None


def scan(roots: Sequence[str | os.PathLike[str]], **settings: Any) -> Iterator[FileRecord | Skip]:
    """Walk `roots` depth-first in sorted order, yielding a FileRecord per file and a Skip per problem
    (`scan_files`' settings)."""
    return records(scan_files(roots, **settings))


def rescan(
    roots: Sequence[str | os.PathLike[str]], paths: Sequence[str | os.PathLike[str]], **settings: Any
) -> Iterator[FileRecord | Skip]:
    """What `scan(roots)` yields at or below each of `paths` (`rescan_files`, as records)."""
    return records(rescan_files(roots, paths, **settings))


def scan_files(
    roots: Sequence[str | os.PathLike[str]],
    *,
    excludes: Sequence[str] = (),
    index_dir: str | os.PathLike[str] | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    include_hidden: bool = False,
    follow_symlinks: bool = False,
) -> Iterator[Files | Skip]:
    """What a scan of `roots` finds, the files as columns (`Files`, a run per folder)."""
    walker = _Walker(excludes, index_dir, max_file_bytes, include_hidden, follow_symlinks)
    for root in unique_paths(roots):
        yield from walker.walk_root(root)


def rescan_files(
    roots: Sequence[str | os.PathLike[str]],
    paths: Sequence[str | os.PathLike[str]],
    *,
    excludes: Sequence[str] = (),
    index_dir: str | os.PathLike[str] | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    include_hidden: bool = False,
    follow_symlinks: bool = False,
) -> Iterator[Files | Skip]:
    """What `scan_files(roots)` finds at or below each of `paths` (files or folders), walking only
    there. A path outside every root, gone, or left out by the rules (hidden, excluded, ignored, a
    system folder, inside a Python environment) yields nothing; the ancestors' ignore files still
    apply."""
    walker = _Walker(excludes, index_dir, max_file_bytes, include_hidden, follow_symlinks)
    kept = unique_paths(roots)
    for path in unique_paths(paths):
        root = next((r for r in kept if inside(path, r)), None)
        if root is not None:
            yield from walker.walk_path(root, path)


def records(found: Iterator[Files | Skip]) -> Iterator[FileRecord | Skip]:
    """Columns of files as one FileRecord each (kind from the name), Skips as they come."""
    for item in found:
        if isinstance(item, Skip):
            yield item
        else:
            for path, size, mtime in zip(item.paths, item.sizes, item.mtimes, strict=True):
                yield FileRecord(path, size, mtime, kind_of(path))


def _index_dirs(index_dir: str | os.PathLike[str] | None) -> set[str]:
    """The index folder as given and as resolved, so a path through a symlink is caught too."""
    if index_dir is None:
        return set()
    given = os.path.abspath(os.path.expanduser(os.fspath(index_dir)))
    return {given, os.path.realpath(given)}


class _Walker:
    """The state of one scan: settings, and the folders seen when following symlinks."""

    def __init__(
        self,
        excludes: Sequence[str],
        index_dir: str | os.PathLike[str] | None,
        max_file_bytes: int,
        include_hidden: bool,
        follow_symlinks: bool,
    ) -> None:
        self.excludes = _Excludes(excludes)
        self._has_excludes = bool(self.excludes)
        self.index_dirs = _index_dirs(index_dir)
        self.max_file_bytes = max_file_bytes
        self.include_hidden = include_hidden
        self.follow_symlinks = follow_symlinks
        self.seen_dirs: set[tuple[int, int]] = set()
        self._folders: dict[str, _Frame | None] = {}  # rescan: the rules in force in each ancestor

    def _note_root(self, root: str) -> None:
        real_root = os.path.realpath(root)
        for index_dir in list(self.index_dirs):
            # The index folder spelled under this root, when the root is reached through a symlink.
            if inside(index_dir, real_root):
                spelled = os.path.join(root, os.path.relpath(index_dir, real_root))
                self.index_dirs.add(os.path.normpath(spelled))

    def walk_root(self, root: str) -> Iterator[Files | Skip]:
        """Yield everything under one root (or the root itself when it is a file)."""
        if any(inside(root, d) for d in self.index_dirs):
            return
        self._note_root(root)
        try:
            st = os.stat(root)
        except FileNotFoundError:
            yield Skip(root, "no such file or folder")
            return
        except OSError as exc:
            yield Skip(root, _os_reason(exc))
            return
        if stat.S_ISREG(st.st_mode):
            yield self._single(root, st)
            return
        if not stat.S_ISDIR(st.st_mode):
            yield Skip(root, "not a regular file or folder")
            return
        # The root is walked even when it is hidden or a symlink: the person named it.
        yield from self._walk(root, (st.st_dev, st.st_ino))

    def walk_path(self, root: str, path: str) -> Iterator[Files | Skip]:
        """Yield what walk_root(root) would yield at or below `path`, a file or folder inside root."""
        if path == root:
            yield from self.walk_root(root)
            return
        self._note_root(root)
        if any(inside(root, d) or inside(path, d) for d in self.index_dirs):
            return
        parts = os.path.relpath(path, root).split(os.sep)
        frame = self._folder(root, "", None)
        for name in parts[:-1]:
            if frame is None:
                return
            frame = self._folder(os.path.join(frame.path, name), name, frame)
        name = parts[-1]
        if frame is None or (not self.include_hidden and name.startswith(".")):
            return
        entry = _PathEntry(os.path.join(frame.path, name), name)
        try:
            is_link = entry.is_symlink()
            is_dir = entry.is_dir()
        except FileNotFoundError:
            return
        except OSError as exc:
            yield Skip(entry.path, _os_reason(exc))
            return
        if is_dir:
            child = self._enter(self._sub(entry, is_link), frame, [])  # type: ignore[arg-type]
            if isinstance(child, _Frame):
                yield from self._walk_frames([child])
            elif child is not None:
                yield child
        else:
            items: list[Files | Skip | _Sub] = []
            self._list_files([entry], frame.path, frame.rel, frame.rules, items)  # type: ignore[list-item]
            yield from items  # type: ignore[misc]

    def _folder(self, path: str, name: str, parent: _Frame | None) -> _Frame | None:
        """An ancestor folder of a rescanned path with its rules; None when a full scan never enters it."""
        if path in self._folders:
            return self._folders[path]
        frame: _Frame | Skip | None = None
        if parent is None:
            frame = self._open(path, "", _Rules(), None, is_root=True)
        else:
            rel = f"{parent.rel}/{name}" if parent.rel else name
            system = name in SYSTEM_DIRS or (os.path.basename(parent.path), name) in SYSTEM_DIR_PAIRS
            hidden = not self.include_hidden and name.startswith(".")
            if not (system or hidden or path in self.index_dirs):
                linked = os.path.islink(path)
                if (not linked or self.follow_symlinks) and self._wanted(name, rel, path, True, parent.rules):
                    frame = self._open(path, rel, parent.rules, None)
        found = frame if isinstance(frame, _Frame) else None
        self._folders[path] = found
        return found

    def _single(self, path: str, st: os.stat_result) -> Files | Skip:
        """A root that is a file."""
        if st.st_size > self.max_file_bytes:
            return self._too_big(path, st.st_size)
        return Files([path], [st.st_size], [st.st_mtime_ns])

    def _too_big(self, path: str, size: int) -> Skip:
        return Skip(
            path,
            f"file is {_size(size)}, over the {_size(self.max_file_bytes)} limit; raise it with --max-file-mb",
        )

    def _open(
        self, path: str, rel: str, rules: _Rules, ident: tuple[int, int] | None, is_root: bool = False
    ) -> _Frame | Skip | None:
        """List one folder and stat its files; None when it is a Python environment (skipped unless
        it is the root)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY) if _BY_FD else None
        except OSError as exc:
            return Skip(path, _os_reason(exc))
        try:
            try:
                with os.scandir(path if fd is None else fd) as it:
                    entries = sorted(it, key=_NAME)
            except OSError as exc:
                return Skip(path, _os_reason(exc))
            names = {e.name for e in entries}
            if not is_root and any(marker in names for marker in ENV_MARKERS):
                return None
            files = rules.files
            lines: list[str] = []
            for ignore_name in IGNORE_FILES:
                if ignore_name in names:
                    try:
                        with open(os.path.join(path, ignore_name), encoding="utf-8", errors="replace") as f:
                            lines.extend(f.read().splitlines())
                    except OSError:
                        pass  # an unreadable ignore file ignores nothing; the folder is still walked
            if lines:
                files = (*files, _IgnoreFile(rel, lines))
            here = _Rules(files)
            items: list[Files | Skip | _Sub] = []
            self._list_files(entries, path, rel, here, items)
        finally:
            if fd is not None:
                os.close(fd)
        return _Frame(path=path, rel=rel, items=iter(items), rules=here, ident=ident)

    def _list_files(
        self,
        entries: list[os.DirEntry[str]],
        path: str,
        rel: str,
        rules: _Rules,
        items: list[Files | Skip | _Sub],
    ) -> None:
        """Sort one folder's entries into runs of files (stat'ed now, while the folder is open),
        problems and subfolders, in order. The loop is the walk's whole per-file cost: the common
        case (no excludes, no ignore file, a plain file) is a name check, a stat and three appends."""
        prefix = path if path.endswith(os.sep) else path + os.sep
        hidden = self.include_hidden
        plain = not (self._has_excludes or rules.files)  # no rule can leave a file out by its name
        cap = self.max_file_bytes
        run = Files([], [], [])
        paths, sizes, mtimes = run
        for entry in entries:
            name = entry.name
            if not hidden and name[0] == ".":
                continue
            found: tuple[int, int] | Skip | _Sub | None
            try:
                # The common case, a plain file (d_type says so: no system call) in a folder without
                # rules, inline; links, folders and rules go the long way.
                simple = plain and entry.is_file(follow_symlinks=False) and name not in SYSTEM_FILES
                if simple:
                    st = entry.stat(follow_symlinks=False)  # the one stat per file
                    if st.st_mode & _S_IFMT == _S_IFREG and st.st_size <= cap:
                        paths.append(prefix + name)
                        sizes.append(st.st_size)
                        mtimes.append(st.st_mtime_ns)
                        continue
                    found = self._checked_file(prefix + name, st)
                else:
                    found = self._entry(entry, name, prefix + name, rel, rules)
            except FileNotFoundError:
                continue  # gone since the listing
            except OSError as exc:
                found = Skip(prefix + name, _os_reason(exc))
            if found is None:
                continue
            if isinstance(found, (Skip, _Sub)):  # (not `tuple`: a _Sub is a NamedTuple)
                if paths:
                    items.append(run)
                    run = Files([], [], [])
                    paths, sizes, mtimes = run
                items.append(found)
                continue
            paths.append(prefix + name)
            sizes.append(found[0])
            mtimes.append(found[1])
        if paths:
            items.append(run)

    def _entry(
        self, entry: os.DirEntry[str] | _PathEntry, name: str, full: str, rel: str, rules: _Rules
    ) -> tuple[int, int] | Skip | _Sub | None:
        """One entry the long way: a subfolder to enter later, a file as (size, mtime_ns), a Skip,
        or None when the rules leave it out."""
        is_link = entry.is_symlink()
        if entry.is_dir():  # follows symlinks; free for non-links (d_type from readdir)
            return self._sub(entry, is_link, full)
        if name in SYSTEM_FILES:
            return None
        if (self._has_excludes or rules.files) and not self._wanted(
            name, f"{rel}/{name}" if rel else name, full, False, rules
        ):
            return None
        try:
            st = entry.stat()  # follows a symlinked file to its target
        except FileNotFoundError:
            # A dangling link is worth a note; a file that vanished since the listing is not.
            return Skip(full, "broken symlink") if is_link else None
        if is_link and self.index_dirs and any(inside(os.path.realpath(full), d) for d in self.index_dirs):
            return None  # a link into the index is still the index
        return self._checked_file(full, st)

    def _checked_file(self, full: str, st: os.stat_result) -> tuple[int, int] | Skip:
        """A stat'ed file as (size, mtime_ns), or why it is left out."""
        if st.st_mode & _S_IFMT != _S_IFREG:
            return Skip(full, "not a regular file")
        if st.st_size > self.max_file_bytes:
            return self._too_big(full, st.st_size)
        return (st.st_size, st.st_mtime_ns)

    def _sub(self, entry: os.DirEntry[str] | _PathEntry, is_link: bool, path: str | None = None) -> _Sub:
        """A subfolder, with its identity when following symlinks (stat'ed while its parent is open)."""
        ident: tuple[int, int] | None = None
        error: OSError | None = None
        if self.follow_symlinks:
            try:
                st = entry.stat()  # only when following: real folders otherwise cost no stat
                ident = (st.st_dev, st.st_ino)
            except OSError as exc:
                error = exc
        return _Sub(entry.name, path or entry.path, is_link, ident, error)

    def _walk(self, root: str, root_ident: tuple[int, int]) -> Iterator[Files | Skip]:
        # An explicit stack instead of recursion: folder depth is not bounded by Python's stack.
        first = self._open(root, "", _Rules(), root_ident if self.follow_symlinks else None, is_root=True)
        if isinstance(first, Skip):
            yield first
        if not isinstance(first, _Frame):
            return
        if self.follow_symlinks:
            self.seen_dirs.add(root_ident)
        yield from self._walk_frames([first])

    def _walk_frames(self, stack: list[_Frame]) -> Iterator[Files | Skip]:
        while stack:
            frame = stack[-1]
            item = next(frame.items, None)
            if item is None:
                stack.pop()
            elif isinstance(item, _Sub):
                child = self._enter(item, frame, stack)
                if isinstance(child, _Frame):
                    stack.append(child)
                elif child is not None:
                    yield child
            else:
                yield item

    def _wanted(self, name: str, rel: str, path: str, is_dir: bool, rules: _Rules) -> bool:
        """Whether excludes and ignore files let this entry through."""
        if self._has_excludes and self.excludes.match(name, rel, path, is_dir):
            return False
        return not (rules.files and rules.ignored(rel, is_dir))

    def _enter(self, sub: _Sub, parent: _Frame, stack: list[_Frame]) -> _Frame | Skip | None:
        """The frame for a subfolder to descend into, a Skip, or None when it is left out by design."""
        name = sub.name
        rel = f"{parent.rel}/{name}" if parent.rel else name
        if name in SYSTEM_DIRS or (os.path.basename(parent.path), name) in SYSTEM_DIR_PAIRS:
            return None
        if not self._wanted(name, rel, sub.path, True, parent.rules) or sub.path in self.index_dirs:
            return None
        if self.follow_symlinks:
            if sub.error is not None:
                return Skip(sub.path, _os_reason(sub.error))
            ident = sub.ident
            assert ident is not None
            if ident in self.seen_dirs:
                if any(f.ident == ident for f in stack):
                    return Skip(sub.path, "symlink loop; folder is its own ancestor")
                return Skip(sub.path, "folder already scanned through another path")
            if sub.is_link and os.path.realpath(sub.path) in self.index_dirs:
                return None
            self.seen_dirs.add(ident)
        elif sub.is_link:
            return Skip(sub.path, "symlinked folder not followed; use --follow-symlinks to walk it")
        return self._open(sub.path, rel, parent.rules, sub.ident)


class _PathEntry:
    """An os.DirEntry look-alike for one path named by an event rather than listed by scandir."""

    def __init__(self, path: str, name: str) -> None:
        self.path = path
        self.name = name

    def is_symlink(self) -> bool:
        return os.path.islink(self.path)

    def is_dir(self) -> bool:
        try:
            return stat.S_ISDIR(os.stat(self.path).st_mode)
        except FileNotFoundError:
            if os.path.lexists(self.path):
                return False  # a dangling link, as DirEntry.is_dir() says
            raise

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        try:
            return stat.S_ISREG(os.stat(self.path, follow_symlinks=follow_symlinks).st_mode)
        except FileNotFoundError:
            return False

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        return os.stat(self.path, follow_symlinks=follow_symlinks)


def _size(n: int) -> str:
    """A byte count for a message: '512 bytes', '300 kb', '1.5 mb', '12 mb', '2.0 gb'."""
    for unit, scale in (("gb", 2**30), ("mb", 2**20), ("kb", 2**10)):
        if n >= scale:
            value = n / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{n} bytes"


def _os_reason(exc: OSError) -> str:
    """One lowercase line for an OSError, without the path (the Skip carries it)."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    text = (exc.strerror or type(exc).__name__).lower()
    return f"cannot read: {text}"
