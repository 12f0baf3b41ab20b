"""The loopback client: how the CLI talks to the resident process (`launcher launch`).

Standard library only, so `launcher search` stays quick to start. Proxies are bypassed (the
process is on this machine), and every request carries the token from the user's run file.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from launcher.app.runfile import RunInfo, read_running
from launcher.core.errors import LauncherError, NotRunning, ServerError
from launcher.query.dates import parsed_from_json
from launcher.query.rerank import RerankedHits
from launcher.query.session import Query, hit_from_json

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Unreachable(Exception):
    """The run file names a process that does not answer (it may be starting or stopping)."""


class Client:
    """Requests to one running process, authenticated with its token."""

    def __init__(self, info: RunInfo):
        self.info = info

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 10) -> Any:
        """JSON in, JSON out; an error answer becomes the same LauncherError as in-process."""
        data = json.dumps(body, ensure_ascii=True).encode() if body is not None else None
        req = urllib.request.Request(self.info.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.info.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with _OPENER.open(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                answer = json.loads(exc.read())
            except ValueError:
                answer = {}
            err = LauncherError(answer.get("error") or f"the launcher answered HTTP {exc.code}")
            err.exit_code = int(answer.get("exit_code") or ServerError.exit_code)
            raise err from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise Unreachable(str(exc)) from None

    def search(
        self,
        query: Query,
        rerank: bool = False,
        rerank_top: int | None = None,
        reranker_file: Path | None = None,
        timeout: float = 600,
    ) -> RerankedHits:
        """The same hits as Searcher.search, computed by the running process (and reranked there
        when asked and it reranks with `reranker_file`)."""
        body: dict[str, Any] = {
            "text": query.text,
            "top_k": query.top_k,
            "kinds": list(query.kinds),
            "under": query.under,
            "after": query.after.isoformat() if query.after else None,
            "before": query.before.isoformat() if query.before else None,
            "min_score": query.min_score,
            "like": query.like,
            "dates": query.dates,
            "rerank": rerank,  # always said: the process's own default must not decide for the CLI
            "rerank_top": rerank_top,
            "reranker_file": str(reranker_file) if reranker_file else None,
        }
        if query.image is not None:
            path = Path(query.image)
            body["image_b64"] = base64.b64encode(path.read_bytes()).decode("ascii")
            body["image_name"] = path.name
        answer = self.request("POST", "/api/search", body, timeout=timeout)
        return RerankedHits(
            [hit_from_json(h) for h in answer["hits"]],
            reranked=bool(answer.get("reranked")),
            rerank_error=answer.get("rerank_error"),
            parsed=parsed_from_json(answer.get("parsed")),
        )

    def toggle(self) -> dict[str, Any]:
        """Ask the process to show its window."""
        return dict(self.request("POST", "/api/toggle", {}))

    def status(self) -> dict[str, Any]:
        """The process's /api/status."""
        return dict(self.request("GET", "/api/status"))


def running() -> Client | None:
    """A client for this user's running process, or None when there is none."""
    info = read_running()
    return Client(info) if info is not None else None


def require_running() -> Client:
    """A client for the running process, or NotRunning saying how to start one."""
    client = running()
    if client is None:
        raise NotRunning("launcher is not running: start it with `launcher launch`")
    return client


def serves(info: RunInfo, index_dir: Path, model_file: Path | None) -> bool:
    """Whether the running process searches this index with this model (None: whichever built it)."""
    try:
        if Path(info.index_dir).resolve() != Path(index_dir).expanduser().resolve():
            return False
        return model_file is None or Path(info.model).resolve() == model_file.resolve()
    except OSError:
        return False


def search_through_server(
    index_dir: Path,
    query: Query,
    model_file: Path | None = None,
    reranker_file: Path | None = None,
    rerank_top: int | None = None,
) -> RerankedHits | None:
    """Hits from the running process when it serves this index, else None (search in-process).

    With `reranker_file` the process reranks them too if that is the reranker it uses; otherwise
    `reranked` is False and the caller reranks itself.
    """
    client = running()
    if client is None or not serves(client.info, index_dir, model_file):
        return None
    try:
        return client.search(
            query, rerank=reranker_file is not None, rerank_top=rerank_top, reranker_file=reranker_file
        )
    except Unreachable:
        return None
