"""The webhooks' test rig: a real HTTP receiver on 127.0.0.1 that records each request and
answers what the test programs, and a job worker in this process that delivers to it."""

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

from app.services import jobs
from tests.conftest import make_settings


@dataclass(frozen=True)
class Received:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a slow receiver)


class Receiver:
    """A minimal HTTP/1.1 server (asyncio streams): one request per connection, answered with
    the next programmed `Answer` (the last one repeats). On 127.0.0.1, on `port` (0: a free
    one); with `tls`, HTTPS, and `url` names `host` (which the test maps to 127.0.0.1)."""

    def __init__(self, port: int = 0, tls: ssl.SSLContext | None = None, host: str = "") -> None:
        self.requests: list[Received] = []
        self.answers: list[Answer] = [Answer()]
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = port
        self.tls = tls
        self.host = host or "127.0.0.1"
        # The server names the clients asked for in their TLS hello (SNI), in order.
        self.server_names: list[str | None] = []
        if tls is not None:
            tls.sni_callback = self._sni

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self.host}:{self.port}/hooks"

    def answer(self, *answers: Answer) -> None:
        self.answers = list(answers)

    def _sni(self, _socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        self.server_names.append(name)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            # A handler still holding a request (a delayed answer) ends with the receiver.
            for handler in self._handlers:
                handler.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Received(method, target, headers, body))
            answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
            await asyncio.sleep(answer.delay)
            extra = "".join(f"{k}: {v}\r\n" for k, v in answer.headers.items())
            writer.write(
                f"HTTP/1.1 {answer.status} X\r\ncontent-length: {len(answer.body)}\r\n"
                f"connection: close\r\n{extra}\r\n".encode()
                + answer.body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)

    async def wait_for(self, count: int, seconds: float = 20) -> list[Received]:
        deadline = time.monotonic() + seconds
        while len(self.requests) < count:
            assert time.monotonic() < deadline, f"{len(self.requests)} of {count} requests"
            await asyncio.sleep(0.02)
        return self.requests


@asynccontextmanager
async def receiver(
    port: int = 0, tls: ssl.SSLContext | None = None, host: str = ""
) -> AsyncIterator[Receiver]:
    found = Receiver(port, tls, host)
    await found.start()
    try:
        yield found
    finally:
        await found.stop()


@asynccontextmanager
async def worker(app: FastAPI, database_url: str, **settings: Any) -> AsyncIterator[jobs.Worker]:
    """A job worker on this app's engine (WEBHOOK_ALLOW_PRIVATE as the tests' settings say,
    unless overridden)."""
    running = jobs.Worker(
        make_settings(database_url, jobs_poll_interval=0.1, **settings),
        database_url,
        app.state.sessions,
        concurrency=4,
    )
    running.start()
    try:
        yield running
    finally:
        await running.stop()
