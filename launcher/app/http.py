"""The resident process over HTTP: the token gate, the JSON API's request parsing, and the app
that serves the API and mounts the search window (launcher.app.window) at /."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from fastapi import Request

from launcher.app.runfile import same_secret
from launcher.app.service import COOKIE, LOOPBACK, PING_S, LauncherService
from launcher.core import config
from launcher.core.errors import InputError, LauncherError, NotIndexed, ServerError
from launcher.query.session import Query, hit_to_json


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


class TokenGate:
    """ASGI middleware in front of everything (API and Gradio): host, origin, then the token."""

    def __init__(self, app: Any, service: LauncherService):
        self.app = app
        self.service = service

    def _allowed_hosts(self) -> set[str]:
        port = self.service.port
        return {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http":
            send = _unframeable(send)
        headers = _headers(scope)
        loopback = self.service.options.host in LOOPBACK
        hosts = self._allowed_hosts()
        if loopback and headers.get("host", "") not in hosts:
            await _deny(
                scope, send, 403, "refused: wrong Host header (the launcher answers only on loopback)"
            )
            return
        origin = headers.get("origin")
        own = hosts if loopback else {headers.get("host", "")}
        if origin is not None and origin.removeprefix("http://") not in own:
            await _deny(scope, send, 403, "refused: cross-origin request")
            return
        if scope["path"] == "/auth":
            await self.app(scope, receive, send)
            return
        given = _presented_token(headers)
        if given is None:
            await _deny(
                scope, send, 401, "not authorized: no launcher token (open the window with `launcher toggle`)"
            )
            return
        if not same_secret(given, self.service.token):
            await _deny(scope, send, 403, "not authorized: wrong launcher token")
            return
        await self.app(scope, receive, send)


FRAME_HEADERS = [
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
]


def _unframeable(send: Any) -> Any:
    """`send` with the headers that stop any page (another local service's too) from framing ours."""

    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            names = {k.lower() for k, _ in message.get("headers", [])}
            extra = [(k, v) for k, v in FRAME_HEADERS if k not in names]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped


def _presented_token(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if "cookie" in headers:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(headers["cookie"])
        except Exception:
            return None
        if COOKIE in jar:
            return jar[COOKIE].value
    return None


EXPIRED_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Launcher search</title>
<style>body{font:15px system-ui,sans-serif;color:#334;background:#f6f7fb;display:grid;place-items:center;
height:100vh;margin:0}div{max-width:28em;text-align:center}code{background:#e8eaf2;padding:2px 6px;
border-radius:4px}</style></head><body><div><h2>This window has expired</h2><p>{msg}</p>
<p>Press the launcher hotkey or run <code>launcher toggle</code> to open a fresh one.</p></div></body></html>"""


async def _deny(scope: dict[str, Any], send: Any, status: int, message: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    accept = _headers(scope).get("accept", "")
    if scope["path"].startswith("/api/") or "text/html" not in accept:
        body = json.dumps({"error": message, "exit_code": ServerError.exit_code}).encode()
        ctype = b"application/json"
    else:
        import html

        body = EXPIRED_PAGE.replace("{msg}", html.escape(message)).encode()
        ctype = b"text/html; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _show(value: Any) -> str:
    """A malformed value as an error line quotes it: JSON, cut short."""
    text = json.dumps(value, ensure_ascii=True, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _text(data: dict[str, Any], key: str) -> str | None:
    """A string field; None when absent or null."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or "\x00" in value:
        raise InputError(f"{key}: {_show(value)} is not a string")
    return value


def _whole(data: dict[str, Any], key: str, low: int, high: int) -> int | None:
    """A whole-number field within [low, high]; None when absent or null."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"{key}: {_show(value)} is not a whole number from {low} to {high}")
    return value


def _flag(data: dict[str, Any], key: str) -> bool | None:
    """A true/false field (JSON booleans, or the words config.boolean reads); None when absent."""
    value = data.get(key)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return config.boolean(value)
    raise InputError(f"{key}: {_show(value)} is not true or false")


def _number(data: dict[str, Any], key: str) -> float | None:
    """A finite number field; None when absent or null."""
    import math

    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{key}: {_show(value)} is not a number")
    return float(value)


def query_from_json(data: dict[str, Any], upload_dir: Path) -> tuple[Query, Path | None]:
    """A Query from the API's JSON body, every field checked (InputError names a malformed one); an
    inline image is written to a private temp file."""
    from launcher.core.records import KINDS

    text = _text(data, "text") or ""
    top_k = _whole(data, "top_k", 1, 1000)
    kinds = data.get("kinds")
    if kinds is not None and (
        not isinstance(kinds, list) or not all(isinstance(k, str) and k in KINDS for k in kinds)
    ):
        raise InputError(f"kinds: {_show(kinds)} is not a list of {', '.join(KINDS)}")
    under = _text(data, "under")
    like = _text(data, "like")
    min_score = _number(data, "min_score")

    def date(key: str) -> datetime | None:
        v = _text(data, key)
        if not v:
            return None
        try:
            return datetime.fromisoformat(v)
        except ValueError:
            raise InputError(f"{key}: {v!r} is not a date like 2023-04-30") from None

    after, before = date("after"), date("before")
    image_name = _text(data, "image_name")
    image_b64 = _text(data, "image_b64")
    image: Path | None = None
    if image_b64:
        import base64
        import binascii

        try:
            raw = base64.b64decode(image_b64, validate=True)
        except (ValueError, binascii.Error):
            raise InputError("image_b64: the image is not valid base64") from None
        suffix = Path(image_name or "image.png").suffix.lower()[:8] or ".png"
        if not suffix[1:].isalnum():
            suffix = ".png"
        upload_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        image = upload_dir / f"query-{secrets.token_hex(8)}{suffix}"
        with os.fdopen(os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(raw)
    query = Query(
        text=text,
        image=image,
        top_k=top_k or 10,
        kinds=list(kinds or []),
        under=under or None,
        after=after,
        before=before,
        min_score=min_score,
        like=like or None,
        dates=_flag(data, "dates"),
    )
    return query, image


@dataclass
class RerankRequest:
    """The reranking part of a search request."""

    wanted: bool | None = None  # None: the process's `rerank` setting
    top: int | None = None  # None: the process's `rerank_top` setting
    only_file: str | None = None  # rerank only with this model file (the CLI's own choice)


def rerank_from_json(data: dict[str, Any]) -> RerankRequest:
    """`rerank`, `rerank_top` and `reranker_file` of a search request."""
    wanted = _flag(data, "rerank")
    top = _whole(data, "rerank_top", 1, config.RERANK_TOP_MAX)
    only = _text(data, "reranker_file")
    return RerankRequest(wanted, top, only or None)


def open_from_json(data: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """`action`, `file_id` and `path` of an open request."""
    action = _text(data, "action") or "open"
    if action not in ("open", "reveal", "copy"):
        raise InputError(f"action: {_show(action)} is not open, reveal or copy")
    return action, _text(data, "file_id") or None, _text(data, "path") or None


def _error_response(exc: LauncherError) -> Any:
    from fastapi.responses import JSONResponse

    # 503: the process is shutting down (ServerError), a client may try again once it is back.
    status = 403 if isinstance(exc, NotIndexed) else 503 if isinstance(exc, ServerError) else 400
    return JSONResponse({"error": str(exc), "exit_code": exc.exit_code}, status_code=status)


def build_app(service: LauncherService) -> Any:
    """The FastAPI app: the JSON API, the window login, and the Gradio window mounted at /."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    upload_dir = config.run_dir() / "uploads"
    shutil.rmtree(upload_dir, ignore_errors=True)
    upload_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Images dropped into the window land here, private to the user, not in a shared /tmp/gradio.
    os.environ["GRADIO_TEMP_DIR"] = str(upload_dir / "window")

    warnings.filterwarnings("ignore", module="gradio")
    warnings.filterwarnings("ignore", message=".*HTTP_422_UNPROCESSABLE_ENTITY.*")
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response, StreamingResponse

    from launcher.app import window as ui

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/auth")
    def auth(code: str = "") -> Any:
        if not service.windows.redeem(code):
            from fastapi.responses import HTMLResponse

            page = EXPIRED_PAGE.replace("{msg}", "This link was already used or is too old.")
            return HTMLResponse(page, status_code=403)
        # A page that forwards itself, not a redirect: the browser came here from the login file,
        # a cross-site start, and would not send a SameSite=Strict cookie along a redirect chain
        # begun there; the page's own navigation to / is same-site, so the cookie goes with it.
        from fastapi.responses import HTMLResponse

        resp = HTMLResponse(
            '<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url=/">'
            "<title>Launcher search</title></head><body></body></html>",
            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
        )
        resp.set_cookie(COOKIE, service.token, httponly=True, samesite="strict", path="/")
        return resp

    @app.get("/api/status")
    def status() -> Any:
        return service.status()

    @app.post("/api/search")
    async def search(request: Request) -> Any:
        try:
            data = await _json(request)
        except LauncherError as exc:
            return _error_response(exc)
        return await asyncio.to_thread(_search, data)

    def _search(data: dict[str, Any]) -> Any:
        image: Path | None = None
        try:
            rerank = rerank_from_json(data)
            query, image = query_from_json(data, upload_dir)
            result = service.search(
                query, rerank.wanted, rerank_top=rerank.top, reranker_file=rerank.only_file
            )
        except LauncherError as exc:
            return _error_response(exc)
        finally:
            if image is not None:
                image.unlink(missing_ok=True)
        return {
            "parsed": result.parsed.to_json() if result.parsed else None,
            "hits": [{**hit_to_json(h), "piece_id": h.piece_id} for h in result.hits],
            "reranked": result.reranked,
            "rerank_error": result.rerank_error,
        }

    @app.post("/api/toggle")
    def toggle() -> Any:
        try:
            return {"action": service.toggle(), "windows": service.windows.count}
        except LauncherError as exc:
            return _error_response(exc)

    @app.post("/api/open")
    async def open_(request: Request) -> Any:
        try:
            action, file_id, path = open_from_json(await _json(request))
            return service.act(action, file_id=file_id, path=path)
        except LauncherError as exc:
            return _error_response(exc)

    @app.post("/api/watch")
    async def watch(request: Request) -> Any:
        try:
            paused = bool(_flag(await _json(request), "paused"))
            service.set_watching(paused)
        except LauncherError as exc:
            return _error_response(exc)
        return {"ok": True, "paused": paused}

    @app.get("/api/thumb/{file_id}")
    def thumb(file_id: str) -> Any:
        data = service.thumbnail(file_id)
        if data is None:
            return JSONResponse({"error": "no thumbnail"}, status_code=404)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/events")
    async def events() -> Any:
        wid, queue = service.windows.connect()

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\nevent: hello\ndata: {}\n\n"
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), PING_S)
                    except asyncio.TimeoutError:
                        yield ": ping\n\n"
                        continue
                    if event is None:
                        return
                    yield f"event: {event}\ndata: {{}}\n\n"
            finally:
                service.windows.disconnect(wid)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    app = ui.mount(app, service)
    return TokenGate(app, service)


async def _json(request: Any) -> dict[str, Any]:
    """The request's JSON object; an empty body is an empty object, anything else not an object a
    one-line InputError."""
    body = await request.body()
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to be a real request
        raise InputError("the request body is not JSON: send a JSON object") from None
    if not isinstance(data, dict):
        raise InputError(f"the request body must be a JSON object, not {_show(data)}")
    return data


__all__ = [
    "TokenGate",
    "build_app",
    "query_from_json",
    "rerank_from_json",
]
