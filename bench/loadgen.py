"""A closed-loop HTTP/1.1 load generator, run as its own process (never inside the server's).

    .venv/bin/python -m bench.loadgen SPEC.json [--connections 16] [--duration 15]
        [--warmup 3] [--tool auto|python|wrk]

SPEC.json: `{"url": "http://127.0.0.1:PORT", "expect": [200], "requests": ["GET / HTTP/1.1…"]}`
— complete raw requests (keep-alive, with Host and Content-Length), cycled through so the
server sees many different tokens/users. Each of the `connections` sends one request, waits
for the whole answer, sends the next (no pipelining). Requests answered during the warm-up are
not counted. Prints one JSON line: requests, errors, rps, p50/p90/p99/max (ms), tool, and with
`--watch PID` (repeatable) `cpu`: the CPU seconds each watched process and its descendants spent
during the measured run (bench.common.tree_cpu), for a cost per request that the machine's
other load does not move the way it moves req/s.

`--tool auto` uses wrk when `command -v wrk` finds it (C, so the generator takes less of the
CPU the server needs), else the asyncio client below (on uvloop when installed): raw streams,
a status line and Content-Length parsed, nothing more, so it costs a small fraction of what
httpx or aiohttp would per request.
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from bench.common import percentile, tree_cpu

TIMEOUT = 10.0  # seconds one request may take before it counts as an error
DRAIN = 2.0  # seconds between the warm-up and the measured run (wrk)


def load_spec(path: str) -> dict:
    spec = json.loads(Path(path).read_text("utf-8"))
    spec["raw"] = [r.encode("latin-1") for r in spec["requests"]]
    return spec


# ---- the asyncio client --------------------------------------------------------------------


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.error_kinds: dict[str, int] = {}

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, server wants the connection closed); the body is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    close = b"\r\nconnection: close" in lower
    match = re.search(rb"\r\ncontent-length:\s*(\d+)", lower)
    if match:
        await reader.readexactly(int(match.group(1)))
    elif b"\r\ntransfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif status not in (204, 304):
        await reader.read()  # no length: the body ends with the connection
        close = True
    return status, close


async def _connection(
    host: str,
    port: int,
    raw: list[bytes],
    first: int,
    stride: int,
    expect: set[int],
    measure_from: float,
    stop_at: float,
    stats: Stats,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    index = first
    count = len(raw)
    try:
        while True:
            started = time.perf_counter()
            if started >= stop_at:
                return
            request = raw[index % count]
            index += stride
            try:
                writer.write(request)
                status, close = await asyncio.wait_for(_read_response(reader), TIMEOUT)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                if started >= measure_from:
                    stats.error("connection")
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            finished = time.perf_counter()
            if started >= measure_from and finished <= stop_at:
                stats.latencies.append(finished - started)
                if status not in expect:
                    stats.error(str(status))
            if close:
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
    finally:
        writer.close()


class CpuWatch:
    """CPU seconds of the watched process trees between `start()` and `stop()`."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.before: dict[int, float | None] = {}
        self.spent: dict[str, float] = {}

    def start(self) -> None:
        self.before = {pid: tree_cpu(pid) for pid in self.pids}

    def stop(self) -> None:
        for pid, before in self.before.items():
            after = tree_cpu(pid)
            if before is not None and after is not None:
                self.spent[str(pid)] = after - before


async def run_python(
    spec: dict, connections: int, duration: float, warmup: float, watch: CpuWatch
) -> dict:
    url = urlsplit(spec["url"])
    host, port = url.hostname or "127.0.0.1", url.port or 80
    expect = set(spec.get("expect", [200]))
    stats = Stats()
    measure_from = time.perf_counter() + warmup
    stop_at = measure_from + duration
    tasks = [
        asyncio.create_task(
            _connection(
                host, port, spec["raw"], i, connections, expect, measure_from, stop_at, stats
            )
        )
        for i in range(connections)
    ]

    async def watch_window() -> None:
        await asyncio.sleep(max(measure_from - time.perf_counter(), 0))
        watch.start()
        await asyncio.sleep(max(stop_at - time.perf_counter(), 0))
        watch.stop()

    watcher = asyncio.create_task(watch_window())
    done, pending = await asyncio.wait(tasks, timeout=warmup + duration + TIMEOUT + 5)
    await watcher
    for task in pending:
        task.cancel()
        stats.error("timeout")
    for task in done:
        if task.exception() is not None:
            stats.error(type(task.exception()).__name__)
    samples = [s * 1000 for s in stats.latencies]
    return {
        "tool": "python asyncio" + (" (uvloop)" if _uvloop() else ""),
        "requests": len(samples),
        "errors": stats.errors,
        "error_kinds": stats.error_kinds,
        "duration": duration,
        "rps": len(samples) / duration,
        "p50": percentile(samples, 50) if samples else None,
        "p90": percentile(samples, 90) if samples else None,
        "p99": percentile(samples, 99) if samples else None,
        "max": max(samples) if samples else None,
        "cpu": watch.spent,
    }


def _uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


# ---- wrk -----------------------------------------------------------------------------------


def _lua_string(value: str) -> str:
    out = []
    for char in value:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 32 <= code < 127:
            out.append(char)
        else:
            out.append(f"\\{code:03d}")  # bytes (latin-1), \r and \n included
    return '"' + "".join(out) + '"'


LUA = """
local requests = {%s}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("offset", counter)
end

function init(args)
  index = offset or 1
end

function request()
  local r = requests[index]
  index = index + %d
  if index > #requests then index = ((index - 1) %% #requests) + 1 end
  return r
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %%d, "duration_us": %%d, "connect": %%d, "read": %%d, ' ..
    '"write": %%d, "status": %%d, "timeout": %%d, "p50": %%f, "p90": %%f, "p99": %%f, ' ..
    '"max": %%f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
"""


def _wrk(script: Path, url: str, connections: int, seconds: float) -> dict:
    threads = max(1, min(connections, os.cpu_count() or 1))
    command = [
        shutil.which("wrk") or "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={int(TIMEOUT)}s",
        "-s",
        str(script),
        url,
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True)  # noqa: S603
    for line in output.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            result: dict = json.loads(line[len("BENCHJSON ") :])
            return result
    raise RuntimeError(f"wrk printed no result:\n{output.stdout}\n{output.stderr}")


def run_wrk(spec: dict, connections: int, duration: float, warmup: float, watch: CpuWatch) -> dict:
    # wrk threads each run their own copy of the script; `setup` staggers their start index.
    threads = max(1, min(connections, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "bench.lua"
        requests = ",\n".join(_lua_string(r) for r in spec["requests"])
        script.write_text(LUA % (requests, threads), "latin-1")
        if warmup > 0:
            # Requests that are served once (signed Faroe calls) warm up with their own list:
            # the measured run starts the main list from its beginning again.
            warm = script
            if spec.get("warmup_requests"):
                warm = Path(tmp) / "warmup.lua"
                listed = ",\n".join(_lua_string(r) for r in spec["warmup_requests"])
                warm.write_text(LUA % (listed, threads), "latin-1")
            _wrk(warm, spec["url"], connections, warmup)
            # The warm-up wrk leaves with requests in flight, which the server still finishes
            # (a sign-in: its hash). Starting at once would put twice the connections' load on
            # it for a moment, and the hashing line rightly answers part of that with 503s.
            time.sleep(DRAIN)
        watch.start()
        result = _wrk(script, spec["url"], connections, duration)
        watch.stop()
    seconds = result["duration_us"] / 1e6
    # wrk counts answers >= 400 as status errors; any other code not in `expect` is not
    # reported, so a bench whose expected codes are not all 2xx should use --tool python.
    errors = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    version = subprocess.run(  # noqa: S603
        [shutil.which("wrk") or "wrk", "-v"], capture_output=True, text=True, check=False
    ).stdout.split()
    return {
        "tool": "wrk " + (version[1] if len(version) > 1 else ""),
        "requests": result["requests"],
        "errors": errors,
        "error_kinds": {k: result[k] for k in ("connect", "read", "write", "status", "timeout")},
        "duration": seconds,
        "rps": result["requests"] / seconds,
        "p50": result["p50"],
        "p90": result["p90"],
        "p99": result["p99"],
        "max": result["max"],
        "cpu": watch.spent,
    }


def run(
    spec: dict,
    connections: int,
    duration: float,
    warmup: float,
    tool: str,
    watch: list[int] | None = None,
) -> dict:
    cpu = CpuWatch(watch or [])
    if tool == "auto":
        tool = "wrk" if shutil.which("wrk") else "python"
    if tool == "wrk":
        return run_wrk(spec, connections, duration, warmup, cpu)
    if _uvloop():
        import uvloop

        return uvloop.run(run_python(spec, connections, duration, warmup, cpu))
    return asyncio.run(run_python(spec, connections, duration, warmup, cpu))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("spec")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--tool", choices=["auto", "python", "wrk"], default="auto")
    parser.add_argument("--watch", type=int, action="append", default=[], metavar="PID")
    args = parser.parse_args()
    spec = load_spec(args.spec)
    result = run(spec, args.connections, args.duration, args.warmup, args.tool, args.watch)
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
