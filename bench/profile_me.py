"""Where GET /v1/auth/me (or POST /v1/auth/forgot-password) spends its time under load: py-spy
on one Userkeep worker.

    .venv/bin/python -m bench.profile_me [--seconds 20] [--connections 16]
        [--route me|forgot|faroe|faroe-email|token|introspect|signin]

Starts `python -m app serve` with one worker (one process, so py-spy sees every request) on the
bench database, drives the route from bench.loadgen in another process, records the worker
with `py-spy record --pid --gil` (only samples in which the worker holds the GIL: its CPU, not
its waits), writes the collapsed stacks to bench/results/profile-<route>.txt (input for
speedscope or flamegraph.pl), then prints a summary: the share of samples by package
(inclusive, and self time with stdlib frames counted for their caller) and the functions with
the most self and inclusive time. Run `python -m bench.run` (or
`make bench`) once first, so the database holds the bench sessions. The server runs without a
job worker (bench.common.start_server); the mail jobs `--route forgot` queues are purged after.
"""

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from app.faroe.client import ENDPOINT as FAROE_ENDPOINT
from app.faroe.client import encode_request, sign
from bench import fixtures
from bench.common import ROOT, bench_db, purge_queued_jobs, start_server
from bench.run import FAROE_SECRET, check, freshen, raw_request

RESULTS = ROOT / "bench" / "results"
T = TypeVar("T")
PACKAGES = [
    ("app/", "app (Userkeep)"),
    ("sqlalchemy/", "sqlalchemy"),
    ("sqlmodel/", "sqlmodel"),
    ("asyncpg/", "asyncpg"),
    ("fastapi/", "fastapi"),
    ("starlette/", "starlette"),
    ("pydantic/", "pydantic"),
    ("pydantic_core/", "pydantic"),
    ("uvicorn/", "uvicorn"),
    ("anyio/", "anyio"),
    ("typeid/", "typeid"),
    ("greenlet/", "greenlet"),
]


def summarize(collapsed: Path, top: int = 30) -> str:
    """Package shares and self-time leaders from py-spy's collapsed (raw) output."""
    total = 0
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    owners: Counter[str] = Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        seen = set()
        for frame in frames:
            for marker, name in PACKAGES:
                if marker in frame and name not in seen:
                    seen.add(name)
                    inclusive[name] += count
        for frame in set(frames):
            functions[_short(frame)] += count
        self_time[_short(frames[-1])] += count
        owners[_owner(frames)] += count
    if not total:
        return "no samples"
    lines = [
        f"{total} samples (in which the worker held the GIL)",
        "",
        "inclusive share by package (greenlet stacks are separate roots):",
    ]
    for name, count in inclusive.most_common():
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    lines += ["", "self time by package (stdlib frames count for the package calling them):"]
    for name, count in owners.most_common():
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    lines += ["", f"top {top} functions by self time:"]
    for name, count in self_time.most_common(top):
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    lines += ["", f"top {top} functions by inclusive time:"]
    for name, count in functions.most_common(top):
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    return "\n".join(lines)


def _owner(frames: list[str]) -> str:
    """The package whose code was running: the innermost frame of a known package (so time
    in asyncio, contextlib or Cython code called from SQLAlchemy counts for SQLAlchemy)."""
    for frame in reversed(frames):
        for marker, name in PACKAGES:
            if marker in frame:
                return name
    return "other (stdlib, interpreter, event loop)"


def _short(frame: str) -> str:
    # py-spy frames look like "function (path/to/file.py:123)"; keep the tail of the path.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/work/main/", str(ROOT) + "/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})"


def _fixture(url: str, make: Callable[[Any], Awaitable[T]]) -> T:
    """`make(connection)` on a connection of its own to the bench database (a bench.fixtures
    function: addresses, ids, an API key)."""
    import asyncpg

    from app import db as database

    async def run() -> T:
        conn = await asyncpg.connect(**database._asyncpg_args(url))
        try:
            return await make(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


def faroe_requests(route: str, base: str, url: str, count: int) -> list[str]:
    """Signed get_user (or, for faroe-email, get_user_by_email_address) calls, each served
    once: enough distinct signatures (timestamps from now on, and a nonce per round) for the
    whole run."""
    if route == "faroe-email":
        emails = _fixture(url, lambda conn: fixtures.sample_emails(conn, count))
        bodies = [encode_request("get_user_by_email_address", {"email_address": e}) for e in emails]
    else:
        ids = _fixture(url, lambda conn: fixtures.sample_user_ids(conn, count))
        bodies = [encode_request("get_user", {"user_id": i}) for i in ids]
    now = int(time.time())
    signed = []
    for round_ in range(max(1, 50_000 // len(bodies))):
        for body in bodies:
            headers = {"Content-Type": "application/json"}
            headers |= sign(FAROE_SECRET, body, now, f"profile-round-{round_:08d}")
            signed.append(raw_request("POST", base, FAROE_ENDPOINT, headers, body))
    return signed


def token_requests(route: str, base: str, url: str, indexes: list[int]) -> list[str]:
    """POST /v1/auth/token with each session's bearer, or POST /v1/auth/introspect of each
    session token with an API key of the default app."""
    tokens = [fixtures.session_token(i) for i in indexes]
    if route == "token":
        bearer = {"Authorization": f"Bearer {tokens[0]}"}
        check(base, ("POST", "/v1/auth/token"), 200, headers=bearer)  # makes the first key
        return [
            raw_request("POST", base, "/v1/auth/token", {"Authorization": f"Bearer {t}"})
            for t in tokens
        ]
    api_key = _fixture(url, fixtures.seed_api_key)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    bodies = [json.dumps({"token": t}).encode() for t in tokens]
    check(base, ("POST", "/v1/auth/introspect"), 200, headers=headers, content=bodies[0])
    return [raw_request("POST", base, "/v1/auth/introspect", headers, b) for b in bodies]


def requests_for(route: str, base: str, url: str, tokens: int) -> list[str]:
    if route == "forgot":
        path, json_type = "/v1/auth/forgot-password", {"Content-Type": "application/json"}
        bodies = [
            json.dumps({"email": e}).encode()
            for e in _fixture(url, lambda conn: fixtures.forgot_addresses(conn, tokens))
        ]
        check(base, ("POST", path), 200, content=bodies[0], headers=json_type)
        return [raw_request("POST", base, path, json_type, b) for b in bodies]
    if route in ("faroe", "faroe-email"):
        return faroe_requests(route, base, url, tokens)
    if route == "signin":
        # The accounts bench.run seeds (BENCH_SIGNIN_USERS, 1000): argon2id is verified in a
        # worker thread, which `--gil` samples only while it holds the GIL (argon2 releases it).
        path, json_type = "/v1/auth/signin", {"Content-Type": "application/json"}
        bodies = [
            json.dumps(
                {"email": fixtures.SIGNIN_EMAIL.format(i), "password": fixtures.SIGNIN_PASSWORD}
            ).encode()
            for i in range(min(tokens, 1000))
        ]
        check(base, ("POST", path), 200, content=bodies[0], headers=json_type)
        return [raw_request("POST", base, path, json_type, b) for b in bodies]
    indexes = list(range(tokens))
    asyncio.run(freshen(url, indexes))
    if route in ("token", "introspect"):
        return token_requests(route, base, url, indexes)
    if route == "me":
        token = fixtures.session_token(0)
        check(base, ("GET", "/v1/auth/me"), 200, headers={"Authorization": f"Bearer {token}"})
        return [
            raw_request(
                "GET", base, "/v1/auth/me", {"Authorization": f"Bearer {fixtures.session_token(i)}"}
            )
            for i in indexes
        ]
    raise SystemExit(f"unknown route {route}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=1000)
    routes = ["me", "forgot", "faroe", "faroe-email", "token", "introspect", "signin"]
    parser.add_argument("--route", default="me", choices=routes)
    parser.add_argument("--tool", default="auto", choices=["auto", "python", "wrk"])
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    RESULTS.mkdir(parents=True, exist_ok=True)
    raw = RESULTS / f"profile-{args.route}.txt"
    with bench_db(os.environ.get("BENCH_DATABASE_URL")) as url:
        server, base = start_server(url, 1, RATE_LIMITS="off", FAROE_SECRET=FAROE_SECRET)
        try:
            requests = requests_for(args.route, base, url, args.tokens)
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as spec:
                json.dump({"url": base, "expect": [200], "requests": requests}, spec)
            load = subprocess.Popen(  # noqa: S603
                [
                    sys.executable,
                    "-m",
                    "bench.loadgen",
                    spec.name,
                    "--connections",
                    str(args.connections),
                    "--duration",
                    str(args.seconds + 2),
                    "--warmup",
                    "0" if args.route == "faroe" else "2",
                    "--tool",
                    args.tool,
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            # Let the load reach its steady state, then sample the whole worker.
            time.sleep(2)
            common = [
                "--pid",
                str(server.pid),
                "--duration",
                str(args.seconds),
                "--rate",
                "250",
                *([] if os.environ.get("PROFILE_ALL") else ["--gil"]),
                *(["--threads", "--native"] if os.environ.get("PROFILE_ALL") else []),
            ]
            subprocess.run(  # noqa: S603
                [py_spy, "record", *common, "--format", "raw", "-o", str(raw)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            out, _ = load.communicate()
            os.unlink(spec.name)
            print("load:", out.strip())
        finally:
            server.terminate()
            server.wait(timeout=30)
            purged = asyncio.run(purge_queued_jobs(url))
    if purged:
        print(f"{purged:,} queued mail jobs purged")
    print(summarize(raw))
    print(f"\ncollapsed stacks: {raw.relative_to(ROOT)} (speedscope / flamegraph.pl input)")


if __name__ == "__main__":
    main()
