"""ASGI middleware: the body-size cap, the request id, the access log and request metrics,
and the security headers. Pure ASGI, so the hot path pays little.

Order, outermost first (app/main.py): SecurityHeaders, RequestId, Observe, BodyLimit. Observe
answers unhandled exceptions itself, inside the other two, so a 500 or a database 503 carries
the request id and the security headers like every other answer.
"""

import inspect
import json
import logging
import random
import time
from collections.abc import Collection, Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import logs
from app.errors import ApiError, PayloadTooLarge
from app.metrics import Metrics
from app.services import audit

access_log = logging.getLogger("userkeep.access")

BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


async def send_error(send: Send, error: ApiError) -> None:
    body = json.dumps(error.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse bodies over `max_bytes` with 413, whether Content-Length says so or the stream
    turns out longer; the app then sees the buffered body as usual."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, larger: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.default_max_bytes = max_bytes
        self.larger = dict(larger or {})  # path -> its own cap (the bulk import)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        max_bytes = self.larger.get(scope["path"], self.default_max_bytes)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > max_bytes:
                    await send_error(send, PayloadTooLarge())
                    return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_bytes:
                await send_error(send, PayloadTooLarge())
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class RequestId:
    """Give every request an id (or keep a sane one from the caller), echo it in X-Request-ID."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id" and 0 < len(value) <= 64 and value.isascii():
                request_id = value.decode()
        if request_id is None:
            # Unique, not secret (it is echoed and logged): the process's PRNG, which Python
            # reseeds in every forked child, is enough; no system call per request.
            request_id = f"{random.getrandbits(64):016x}"
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        token = logs.request_id.set(request_id)
        # A request is nobody's impersonation until its session says so (api/deps); in-process
        # transports (tests) run requests one after another in a single context.
        acting = audit.impersonation.set(None)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            audit.impersonation.reset(acting)
            logs.request_id.reset(token)


def route_path(scope: Scope) -> str:
    """The path without the root_path a proxy mounted the app under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class Observe:
    """One `userkeep.access` log line and the request metrics per HTTP request, with the route
    template (not the raw path) and the authenticated caller the dependencies recorded in the
    scope state (`user_id`, `api_key_id`).

    An exception no handler caught is answered here with the app's own 500/Exception handler
    and not re-raised: that handler already logs it (with the request id), and answering here
    keeps the request id and security headers on the response, which Starlette's outermost
    ServerErrorMiddleware would send without them."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        except Exception as exc:
            handler = _error_handler(scope)
            if status or handler is None:
                status = status or 500
                raise
            request = Request(scope, receive)
            if inspect.iscoroutinefunction(handler):
                response = await handler(request, exc)
            else:
                response = await run_in_threadpool(handler, request, exc)
            await response(scope, receive, send_recording)
        finally:
            # No answer at all: the client went away first (nginx's 499).
            self._record(scope, status or 499, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        template: str | None = getattr(route, "path_format", None) or getattr(route, "path", None)
        method: str = scope["method"]
        self.metrics.observe(template, method, status, seconds)
        if not access_log.isEnabledFor(logging.INFO):
            return
        state: dict[str, Any] = scope.get("state", {})
        fields: dict[str, Any] = {
            "request_id": state.get("request_id"),
            "method": method,
            "route": template,
            "status": status,
            "latency_ms": round(seconds * 1000, 2),
        }
        for key in ("user_id", "api_key_id"):
            if state.get(key):
                fields[key] = state[key]
        access_log.info("%s %s %d", method, template or "-", status, extra=fields)


def _error_handler(scope: Scope) -> Any:
    """The handler Starlette's ServerErrorMiddleware would use: the app's 500 or Exception one."""
    handlers: dict[Any, Any] = getattr(scope.get("app"), "exception_handlers", {})
    return handlers.get(500) or handlers.get(Exception)


# ---- security headers ------------------------------------------------------------------------

SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
# The API answers JSON only: nothing in it may load, run or be framed.
API_CSP = b"default-src 'none'; frame-ancestors 'none'"
# Every /v1/ answer may carry a token or personal data; Pragma for HTTP/1.0 caches.
NO_STORE: list[tuple[bytes, bytes]] = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]


class SecurityHeaders:
    """nosniff, DENY framing and no referrer on every answer; `Cache-Control: no-store` on every
    /v1/ answer; a deny-all CSP on the API. The HTML pages (`pages`: the docs, app/api/docs.py,
    and the mails' link pages, app/api/pages.py) set a policy of their own, which is kept;
    should one of them answer without it (an error), the deny-all one applies."""

    def __init__(self, app: ASGIApp, pages: Collection[str] = ()) -> None:
        self.app = app
        self.pages = frozenset(pages)
        self.api_headers = [*SECURITY_HEADERS, (b"content-security-policy", API_CSP)]
        self.v1_headers = [*self.api_headers, *NO_STORE]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        added = self.v1_headers if path.startswith("/v1/") else self.api_headers
        own_policy = path in self.pages

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                extra = added
                if own_policy and any(n.lower() == b"content-security-policy" for n, _ in headers):
                    extra = SECURITY_HEADERS
                message = {**message, "headers": _replace(headers, extra)}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _replace(
    headers: Collection[tuple[bytes, bytes]], added: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """`headers` with `added` set, replacing any the app set under the same names (the routes'
    own Cache-Control, say), so no header appears twice."""
    names = {name for name, _ in added}
    return [(name, value) for name, value in headers if name.lower() not in names] + added
