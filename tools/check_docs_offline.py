"""`make docs-offline`: the API docs pages in headless Chromium with the network off.

    .venv/bin/python -m tools.check_docs_offline [--screenshots DIR] [--chromium PATH]

Serves the app as `python -m app serve` (uvicorn on a free loopback port) on a throwaway
database: a new embedded PostgreSQL in a temporary directory, or, when TEST_DATABASE_URL is set,
a new database on that server, dropped at the end. Starts the system's Chromium (Debian's
`chromium` package, /usr/bin/chromium) headless on a fresh profile, with the network off for
it: no host name resolves but userkeep.test, which is 127.0.0.1 (so the pages are reached by
name, as in a deployment), and anything else goes to a dead proxy (tools/cdp.py). Then drives
both docs pages over the DevTools protocol (tools/docs_checks.py):

    /docs    renders its operations; through the UI itself, "Try it out" on POST
             /v1/auth/signup answers 201, its session token goes into "Authorize", and
             "Try it out" on GET /v1/auth/me answers 200 for the new user;
    /redoc   renders the API's title and operations, and its search (a blob: worker) finds
             the sign-up operation;

and on each page: every request went to the app and succeeded, no console error, no CSP
violation. Prints what it saw (with every request, and the access-log route of each request
the server answered), and exits 0 only when all passed. --screenshots DIR saves PNGs of the
pages. About 15 s; downloads nothing. Needs `apt-get install -y chromium`.
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from app import db as database
from app.embedded import EmbeddedPostgres
from tools.cdp import CHROMIUM, SITE, chromium
from tools.docs_checks import check_pages
from tools.processes import exit_on_sigterm, free_port

ROOT = Path(__file__).resolve().parent.parent


async def _execute(url: str, statement: str) -> None:
    conn = await asyncpg.connect(**database._asyncpg_args(url, "postgres"))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextmanager
def throwaway_database() -> Iterator[str]:
    """The URL of an empty database that is gone afterwards."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        name = f"userkeep_docs_{uuid.uuid4().hex[:12]}"
        url = make_url(external).set(database=name).render_as_string(hide_password=False)
        asyncio.run(_execute(url, f'CREATE DATABASE "{name}"'))
        try:
            yield url
        finally:
            asyncio.run(_execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        return
    tmp = Path(tempfile.mkdtemp(prefix="userkeep-docs-"))
    tmp.chmod(0o755)  # the embedded server may run as another user than root
    server = EmbeddedPostgres(tmp / "pg", delete_on_stop=True)
    try:
        url = server.url("userkeep_docs")
        asyncio.run(database.ensure_database(url))
        yield url
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def app_server(url: str, log_path: Path) -> Iterator[str]:
    """`python -m app serve` on `url` (it migrates first) on a free loopback port, its JSON log
    in `log_path`; its base URL. Stopped with SIGINT, as Ctrl-C would, killed if that fails."""
    port = free_port()
    dropped = {"TEST_DATABASE_URL", "REDIS_URL", "TRUSTED_PROXIES", "USERKEEP_ADMIN_PASSWORD"}
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    env.update(DATABASE_URL=url, HOST="127.0.0.1", PORT=str(port), LOG_LEVEL="info")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the server exited with {process.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"{base}/v1/ready", timeout=2) as answer:  # noqa: S310
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server was not ready within 90 s")
            time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def access_routes(log_path: Path) -> list[str]:
    """`METHOD route status` of each access-log line the server wrote."""
    lines = []
    for raw in log_path.read_text(errors="replace").splitlines():
        try:
            record: dict[str, Any] = json.loads(raw)
        except ValueError:
            continue
        if record.get("logger") == "userkeep.access":
            lines.append(f"{record.get('method')} {record.get('route')} {record.get('status')}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The API docs in Chromium, network off.")
    parser.add_argument("--chromium", default=CHROMIUM, help="the browser binary")
    parser.add_argument("--screenshots", type=Path, help="save PNGs of the pages here")
    args = parser.parse_args(argv)
    if not Path(args.chromium).exists():
        print(f"{args.chromium} is missing: apt-get install -y chromium", file=sys.stderr)
        return 2
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="userkeep-docs-log-") as tmp:
        log_path = Path(tmp) / "server.log"
        with throwaway_database() as url, app_server(url, log_path) as base:
            site = base.replace("127.0.0.1", SITE)
            with chromium(args.chromium, offline=True) as endpoint:
                reports = asyncio.run(check_pages(endpoint, site, args.screenshots))
        routes = access_routes(log_path)
    for report in reports:
        print("\n" + "\n".join(report.lines()))
    print("\n== the server's access log (method, route, status)")
    print("\n".join(f"        {line}" for line in routes))
    failed = any(report.problems for report in reports)
    print(f"\n{'FAILED' if failed else 'passed'} in {time.monotonic() - started:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
