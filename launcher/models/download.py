"""Files from the Hugging Face hub: their metadata, and a resumable download hashed as it arrives.

The hub's protocol, as huggingface_hub speaks it: `HEAD {endpoint}/{repo}/resolve/{revision}/{file}`
answers (without following a redirect to the CDN) with `X-Repo-Commit` (the commit the revision
names), `X-Linked-Etag` (for a file stored with LFS, its sha256) and `X-Linked-Size`; `GET` on the
same address redirects to the bytes and honours `Range`. The endpoint is `HF_ENDPOINT`, read at
each call (so a test's local hub works without reloading anything); a token saved by
`huggingface-cli login` or `HF_TOKEN` is sent to the endpoint only.

A download goes to `<file>.part` beside the final name, and every byte is hashed as it is written:
an interrupted download (a dropped connection, Ctrl+C) resumes from the bytes already there (they
are hashed again first), and the caller decides from the sha256 whether the file counts.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlparse

import httpx

from launcher.core.errors import LauncherError

DEFAULT_ENDPOINT = "https://huggingface.co"
CHUNK = 1 << 20
RETRIES = 5  # reconnections per file after a dropped connection, each resuming where it stopped
TIMEOUT = httpx.Timeout(30.0, read=60.0)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(LauncherError):
    """The hub could not be reached, refused, or the download stopped."""


class Offline(DownloadError):
    """No connection to the hub."""


class Interrupted(DownloadError):
    """The connection kept dropping: the bytes so far are kept in the .part file for a resume."""


@dataclass(frozen=True)
class HubFile:
    """What the hub says about one file at one revision."""

    repo: str
    revision: str  # as asked for (a commit id, or a branch such as "main")
    name: str
    commit: str | None  # X-Repo-Commit: the commit that revision names
    sha256: str | None  # for an LFS file, its sha256; None when the hub gives none
    size: int | None


def endpoint() -> str:
    """The hub's address: `HF_ENDPOINT` or huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def file_url(repo: str, revision: str, name: str) -> str:
    """The `resolve` address of a file at a revision (huggingface_hub's hf_hub_url)."""
    return f"{endpoint()}/{repo}/resolve/{quote(revision, safe='')}/{quote(name)}"


def is_offline() -> bool:
    """HF_HUB_OFFLINE is set, or the hub's host name does not resolve."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    url = urlparse(endpoint())
    import socket

    try:
        socket.getaddrinfo(url.hostname or "huggingface.co", url.port or 443)
    except OSError:
        return True
    return False


def _headers() -> dict[str, str]:
    headers = {"User-Agent": "launcher (huggingface-hub protocol)", "Accept-Encoding": "identity"}
    token = os.environ.get("HF_TOKEN")
    if not token:
        try:
            from huggingface_hub import get_token

            token = get_token()
        except Exception:  # an old or absent huggingface_hub: public files need no token
            token = None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


@contextmanager
def client() -> Iterator[httpx.Client]:
    """An HTTP client for the hub (the token goes only to the endpoint's host: httpx drops it on a
    redirect to another host)."""
    with httpx.Client(headers=_headers(), timeout=TIMEOUT, follow_redirects=False) as c:
        yield c


def _fail(what: str, exc: Exception) -> DownloadError:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return Offline(f"cannot reach {urlparse(endpoint()).hostname} for {what}: you seem to be offline")
    return DownloadError(f"{what} failed: {type(exc).__name__}: {exc}".splitlines()[0])


def _status_error(what: str, response: httpx.Response) -> DownloadError:
    code = response.status_code
    if code == 404:
        return DownloadError(f"{what}: not found on the hub (HTTP 404)")
    if code in (401, 403):
        return DownloadError(
            f"{what}: the hub refused access (HTTP {code}); log in with `huggingface-cli login` if the "
            "repository is gated"
        )
    return DownloadError(f"{what}: the hub answered HTTP {code}")


def _etag(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"').lower()


def file_metadata(c: httpx.Client, repo: str, revision: str, name: str) -> HubFile:
    """HEAD the file: its commit, sha256 (LFS files) and size. Redirects on the hub's own host (a
    renamed repository) are followed; one to another host (the CDN) carries the metadata itself."""
    what = f"{repo}/{name} at {revision}"
    url = file_url(repo, revision, name)
    try:
        for _ in range(5):
            r = c.head(url)
            location = r.headers.get("location")
            if r.is_redirect and location:
                target = urljoin(url, location)
                if urlparse(target).netloc == urlparse(url).netloc:
                    url = target
                    continue
            break
    except httpx.HTTPError as exc:
        raise _fail(f"reading {what}", exc) from None
    if r.status_code >= 400:
        raise _status_error(what, r)
    sha = _etag(r.headers.get("x-linked-etag"))
    size = r.headers.get("x-linked-size") or r.headers.get("content-length")
    return HubFile(
        repo,
        revision,
        name,
        r.headers.get("x-repo-commit"),
        sha if sha and _SHA256.match(sha) else None,
        int(size) if size and size.isdigit() else None,
    )


class _Bar:
    """A byte progress bar on stderr when it is a terminal (rich), else nothing."""

    def __init__(self, label: str, total: int | None, done: int, show: bool):
        self._progress: Any = None
        if show and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                "{task.description}",
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(label, total=total, completed=done)

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def _hash_existing(path: Path, hasher: Any) -> int:
    n = 0
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            hasher.update(block)
            n += len(block)
    return n


def download(
    c: httpx.Client,
    hub: HubFile,
    part: Path,
    *,
    progress: bool = True,
    retries: int = RETRIES,
) -> tuple[str, int]:
    """Fetch the file at its commit into `part` (resuming what is there); its sha256 and size.

    A dropped connection is retried `retries` times, each time from the last byte written. The
    file is not checked here: the caller compares the sha256 and size with what it expects."""
    revision = hub.commit or hub.revision
    url = file_url(hub.repo, revision, hub.name)
    what = f"download of {hub.repo}/{hub.name}"
    hasher = hashlib.sha256()
    done = _hash_existing(part, hasher) if part.exists() else 0
    if hub.size is not None and done > hub.size:  # not a prefix of this file: start again
        part.unlink()
        hasher, done = hashlib.sha256(), 0
    bar = _Bar(hub.name, hub.size, done, progress)
    attempt = 0
    try:
        while hub.size is None or done < hub.size:
            headers = {"Range": f"bytes={done}-"} if done else {}
            try:
                with c.stream("GET", url, headers=headers, follow_redirects=True) as r:
                    if r.status_code == 416 and hub.size is None:
                        break  # asked past the end: what is there is the whole file
                    if r.status_code >= 400:
                        raise _status_error(what, r)
                    if done and r.status_code != 206:  # the server ignored the range: from the start
                        hasher, done = hashlib.sha256(), 0
                    with part.open("ab" if done else "wb") as f:
                        for block in r.iter_bytes():  # as they arrive: a cut loses nothing
                            f.write(block)
                            hasher.update(block)
                            done += len(block)
                            bar.advance(len(block))
                if hub.size is None:
                    break
                if done < hub.size:  # the server closed the stream early without an error
                    raise httpx.RemoteProtocolError("the connection closed early")
            except (httpx.TransportError, httpx.StreamError) as exc:
                if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout) and done == 0 and attempt == 0:
                    raise _fail(what, exc) from None
                attempt += 1
                if attempt > retries:
                    raise Interrupted(
                        f"{what} stopped at {done:,} of {hub.size or 0:,} bytes "
                        f"({type(exc).__name__}) after {retries} retries"
                    ) from None
                time.sleep(min(0.25 * 2**attempt, 8.0))
    finally:
        bar.close()
    return hasher.hexdigest(), done


def sha256_of(path: Path) -> str:
    """The sha256 of a file on disk."""
    hasher = hashlib.sha256()
    _hash_existing(path, hasher)
    return hasher.hexdigest()
