"""A FAKE Hugging Face hub for the tests: a local HTTP server that speaks the hub's file protocol.

It answers what `hf_hub_download` and `launcher models pull` ask (HF_ENDPOINT pointed at it):
`HEAD /{repo}/resolve/{revision}/{file}` with a 302 to its CDN (itself, as `localhost`) carrying `X-Repo-Commit`,
`X-Linked-Etag` (the sha256 of an LFS file), `X-Linked-Size` and `ETag`; `GET` on the same address
redirects to `/cdn/{sha256}`, which serves the bytes with `Range` support; unknown repositories,
revisions and files get 404 with the hub's `X-Error-Code`. It can also misbehave on purpose: drop
the connection after some bytes, serve other bytes than it advertises. It records every request.
It is not the hub and holds no real model: the files are whatever a test gives it.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


@dataclass
class Request:
    method: str
    path: str
    range: str | None


@dataclass
class FakeHub:
    """Repositories of files by commit, branches naming commits, and the faults to inject."""

    files: dict[tuple[str, str], dict[str, bytes]] = field(default_factory=dict)  # (repo, commit)
    branches: dict[tuple[str, str], str] = field(default_factory=dict)  # (repo, branch) -> commit
    lfs: bool = True  # False: files answer like small git files (no X-Linked-Etag / sha256)
    drops: dict[str, list[int]] = field(default_factory=dict)  # file -> bytes sent per GET, then cut
    instead: dict[str, bytes] = field(default_factory=dict)  # file -> bytes served in its place
    requests: list[Request] = field(default_factory=list)

    def add(self, repo: str, commit: str, files: dict[str, bytes], branch: str | None = "main") -> None:
        self.files[(repo, commit)] = dict(files)
        if branch:
            self.branches[(repo, branch)] = commit

    def _blobs(self) -> dict[str, bytes]:
        return {hashlib.sha256(b).hexdigest(): b for fs in self.files.values() for b in fs.values()}

    def start(self) -> str:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._answer(head=True)

            def do_GET(self) -> None:
                self._answer(head=False)

            def _answer(self, head: bool) -> None:
                path = unquote(urlparse(self.path).path)
                hub.requests.append(Request(self.command, path, self.headers.get("Range")))
                if path.startswith("/cdn/"):
                    return self._cdn(path.removeprefix("/cdn/").split("/")[0], head)
                parts = path.strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._missing("RepoNotFound")
                repo, revision, name = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                commit = hub.branches.get((repo, revision), revision)
                files = hub.files.get((repo, commit))
                if files is None:
                    known = any(r == repo for r, _ in hub.files)
                    return self._missing("RevisionNotFound" if known else "RepoNotFound")
                if name not in files:
                    return self._missing("EntryNotFound")
                data = files[name]
                sha = hashlib.sha256(data).hexdigest()
                self.send_response(302 if hub.lfs else 200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
                if hub.lfs:
                    self.send_header("X-Linked-Etag", f'"{sha}"')
                    self.send_header("X-Linked-Size", str(len(data)))
                    # To another host, as the hub's CDN is (the same server, under its other name).
                    port = hub._server.server_address[1]
                    self.send_header("Location", f"http://localhost:{port}/cdn/{sha}/{name}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)
                return None

            def _missing(self, code: str) -> None:
                self.send_response(404)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _cdn(self, sha: str, head: bool) -> None:
                blobs = hub._blobs()
                if sha not in blobs:
                    return self._missing("EntryNotFound")
                data = blobs[sha]
                name = next(n for fs in hub.files.values() for n, b in fs.items() if b is data)
                data = hub.instead.get(name, data)
                start = 0
                wanted = self.headers.get("Range")
                if wanted and wanted.startswith("bytes="):
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                if start >= len(data) and start > 0:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                body = data[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if head:
                    return None
                cuts = hub.drops.get(name)
                if cuts:
                    self.wfile.write(body[: cuts.pop(0)])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.close()  # the connection drops mid-file
                    return None
                self.wfile.write(body)
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def asked(self, method: str = "GET") -> list[str]:
        """The paths requested with this method, in order."""
        return [r.path for r in self.requests if r.method == method]


def gguf_bytes(
    meta: dict[str, str | int | bool], tensors: tuple[str, ...] = (), pad_to: int = 0, seed: int = 0
) -> bytes:
    """A GGUF file with this header (strings, uint32s, bools; tensor entries of shape [2048, 2] and
    type f32 pointing at zeros) and pseudo-random filler up to `pad_to` bytes: enough for the
    header checks and for a download that takes several reads, not a model llama.cpp can run."""
    import random
    import struct

    def s(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)))
    for key, value in meta.items():
        out += s(key)
        if isinstance(value, bool):
            out += struct.pack("<I?", 7, value)
        elif isinstance(value, int):
            out += struct.pack("<II", 4, value)
        else:
            out += struct.pack("<I", 8) + s(value)
    for i, name in enumerate(tensors):
        out += s(name) + struct.pack("<I2QIQ", 2, 2048, 2, 0, i * 2048 * 2 * 4)
    out += bytes(-len(out) % 32) + bytes(len(tensors) * 2048 * 2 * 4)
    if len(out) < pad_to:
        out += random.Random(seed).randbytes(pad_to - len(out))
    return bytes(out)
