"""Headless Chromium driven over the Chrome DevTools Protocol, with nothing but `websockets`.

No driver download (chromedriver, a Playwright browser build): the system's Chromium is started
with --remote-debugging-port=0, the port it picked is read from its profile's DevToolsActivePort
file, and commands go over one websocket to the browser, to each page by its session id
(Target.attachToTarget with flatten).

    with chromium(offline=True) as endpoint:
        async with Browser.connect(endpoint) as browser:
            page = await browser.new_page()
            await page.goto("http://127.0.0.1:8000/docs")

Every event of a page is kept in `page.events`, in order, for the caller to judge.
"""

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

CHROMIUM = "/usr/bin/chromium"

# Quiet, repeatable headless runs: no first-run UI, no sync, no component or safe-browsing
# updates (which would otherwise try hosts outside at every start).
BASE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--window-size=1280,900",
)
# The network is off for the page but the loopback address: no host name resolves (so not even
# a DNS query leaves) except SITE, which is 127.0.0.1 by another name, as a deployment would be
# reached; anything else by IP address goes to a proxy on the discard port, where nothing listens.
SITE = "userkeep.test"
OFFLINE_FLAGS = (
    f"--host-resolver-rules=MAP {SITE} 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=127.0.0.1:9",
    f"--proxy-bypass-list=127.0.0.1;{SITE}",
)


class CdpError(RuntimeError):
    """A command the browser answered with an error, or a wait that ran out."""


@contextmanager
def chromium(binary: str = CHROMIUM, offline: bool = True, timeout: float = 20) -> Iterator[str]:
    """A headless Chromium on a fresh profile; its browser websocket URL. Killed on the way out,
    and the profile deleted."""
    profile = Path(tempfile.mkdtemp(prefix="userkeep-chromium-"))
    flags = [*BASE_FLAGS, *(OFFLINE_FLAGS if offline else ())]
    command = [binary, *flags, f"--user-data-dir={profile}", "--remote-debugging-port=0"]
    # A session of its own: the browser's helper processes (renderers, GPU, zygote) share its
    # process group, so they can be ended together, and only they.
    process = subprocess.Popen(  # noqa: S603 - our own fixed argument list
        [*command, "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (active.exists() and len(active.read_text().splitlines()) >= 2):
            if process.poll() is not None:
                error = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise CdpError(f"chromium exited with {process.returncode}: {error[-2000:]}")
            if time.monotonic() > deadline:
                raise CdpError(f"chromium did not open its debugging port within {timeout:.0f} s")
            time.sleep(0.05)
        port, path = active.read_text().splitlines()[:2]
        yield f"ws://127.0.0.1:{port}{path}"
    finally:
        _end_group(process)
        if process.stderr is not None:
            process.stderr.close()
        # Only once every helper is gone: they write to the profile until they exit.
        shutil.rmtree(profile, ignore_errors=True)


def _end_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the browser's process group, SIGKILL to what is left of it after 5 s."""
    group = process.pid  # start_new_session: the group id is the browser's pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            process.poll()  # reaps the browser itself; its helpers are reparented and reaped
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
    process.wait()


@dataclass
class Event:
    method: str
    params: dict[str, Any]


@dataclass
class Browser:
    """One DevTools websocket; answers are matched to commands by id, events go to the page
    whose session sent them."""

    socket: ClientConnection
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _waiting: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _pages: dict[str, "Page"] = field(default_factory=dict)

    @classmethod
    @asynccontextmanager
    async def connect(cls, endpoint: str) -> AsyncIterator["Browser"]:
        # Screenshots come back as one base64 message of a few MB.
        async with connect(endpoint, max_size=None, proxy=None) as socket:
            browser = cls(socket)
            reader = asyncio.create_task(browser._read())
            try:
                yield browser
            finally:
                reader.cancel()

    async def _read(self) -> None:
        async for raw in self.socket:
            message: dict[str, Any] = json.loads(raw)
            if "id" in message:
                future = self._waiting.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
            elif (page := self._pages.get(message.get("sessionId", ""))) is not None:
                page.events.append(Event(message["method"], message.get("params", {})))
        for future in self._waiting.values():
            future.set_exception(CdpError("the browser closed the connection"))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        command_id = next(self._ids)
        command: dict[str, Any] = {"id": command_id, "method": method, "params": params or {}}
        if session is not None:
            command["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[command_id] = future
        await self.socket.send(json.dumps(command))
        answer = await asyncio.wait_for(future, timeout=60)
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def new_page(self) -> "Page":
        """A new tab with the network, console, log and runtime events on."""
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, attached["sessionId"])
        self._pages[page.session] = page
        for domain in ("Page", "Network", "Runtime", "Log"):
            await page.send(f"{domain}.enable")
        # Every asset is fetched, never taken from a cache, so each run checks the server.
        await page.send("Network.setCacheDisabled", {"cacheDisabled": True})
        return page


@dataclass
class Page:
    browser: Browser
    session: str
    events: list[Event] = field(default_factory=list)

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, self.session)

    def seen(self, method: str) -> list[dict[str, Any]]:
        return [event.params for event in self.events if event.method == method]

    async def goto(self, url: str, within: float = 30) -> None:
        """Navigate and wait for the load event."""
        loads = len(self.seen("Page.loadEventFired"))
        await self.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + within
        while len(self.seen("Page.loadEventFired")) == loads:
            if time.monotonic() > deadline:
                raise CdpError(f"{url} did not load within {within:.0f} s")
            await asyncio.sleep(0.05)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JS expression in the page (awaited when it is a promise)."""
        answer = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
        )
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CdpError(f"JS error: {text}")
        return answer.get("result", {}).get("value")

    async def wait_for(self, expression: str, what: str, within: float = 20) -> Any:
        """Poll a JS expression until it is truthy; its value."""
        deadline = time.monotonic() + within
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise CdpError(f"timed out after {within:.0f} s waiting for {what}")
            await asyncio.sleep(0.1)

    async def type_text(self, element: str, text: str) -> None:
        """Replace the text of an input or textarea (a JS expression for it) as typing would:
        focus, select all, insert. React sees real input events, as from a person."""
        focus = "e => { if (!e) return false; e.focus(); e.select(); return true }"
        found = await self.evaluate(f"({focus})({element})")
        if not found:
            raise CdpError(f"no element for {element}")
        await self.send("Input.insertText", {"text": text})

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", {"format": "png"})
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))
