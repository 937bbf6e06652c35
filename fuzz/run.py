"""`make fuzz`: Schemathesis against the real app, on a throwaway embedded PostgreSQL.

    .venv/bin/python -m fuzz.run [--max-examples N] [--seed N] [--only PHASE ...]

Starts an embedded PostgreSQL in a temporary directory, migrates it, serves the app with
uvicorn on a free loopback port (rate limits off, a Faroe secret set), then runs
`schemathesis run` against the app's own /openapi.json once per caller:

    anonymous  every operation, no credentials
    user       /v1/auth/*, a regular user's session token
    admin      /v1/admin/*, a session of an admin of the default app (reaches every app)
    api_key    /v1/admin/* and /v1/auth/introspect, an API key of the default app

with every check Schemathesis enables by default and all four of its phases (examples,
coverage, fuzzing, stateful). Credentials come from fuzz/hooks.py, which mints a new caller
whenever the API answers 401. The server and the database are stopped and the temporary
directory deleted at the end, whatever happens. Exit status 0 only when every run passed.
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from app import db as database
from app.embedded import EmbeddedPostgres
from tools.processes import exit_on_sigterm, free_port

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "fuzz" / "schemathesis.toml"
REPORTS = ROOT / ".data" / "fuzz"  # the last run's JSON reports and server log
FAROE_SECRET = "fuzz-faroe-secret-of-at-least-32-bytes"  # noqa: S105 - a throwaway key


@dataclass(frozen=True)
class Phase:
    name: str
    role: str  # "" = anonymous
    include_path_regex: str  # the operations this caller is meant for


PHASES = (
    Phase("anonymous", "", "^/"),
    Phase("user", "user", "^/v1/auth/"),
    Phase("admin", "admin", "^/v1/admin/"),
    # Introspection is the one /v1/auth route an API key is for.
    Phase("api_key", "api_key", "^/v1/(admin/|auth/introspect$)"),
)


@dataclass
class Outcome:
    phase: str
    returncode: int
    seconds: float
    operations: int
    cases: int


async def _execute(url: str, statement: str) -> None:
    conn = await asyncpg.connect(**database._asyncpg_args(url))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextmanager
def embedded_database(tmp: Path) -> Iterator[str]:
    """A migrated database on a new embedded server under `tmp`; stopped and deleted after."""
    server = EmbeddedPostgres(tmp / "pg", delete_on_stop=True)
    try:
        url = server.url("userkeep_fuzz")
        asyncio.run(database.ensure_database(url))
        # A throwaway database: no need to wait for the WAL flush of every commit.
        asyncio.run(_execute(url, "ALTER DATABASE userkeep_fuzz SET synchronous_commit = off"))
        database.migrate(url)
        yield url
    finally:
        server.stop()


@contextmanager
def live_server(url: str, log_path: Path) -> Iterator[str]:
    """uvicorn serving create_app() on a free loopback port; the base URL."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "MIGRATE_ON_START": "false",
        # The fuzzer sends hundreds of sign-ins and sign-ups from one address.
        "RATE_LIMITS": "off",
        "REDIS_URL": "",
        "FAROE_SECRET": FAROE_SECRET,
        "FAROE_AUTH": "hmac",
        # Sign-ups hash passwords; a burst must queue, not turn into 503s.
        "HASH_QUEUE_MAX": "1000",
        "LOG_LEVEL": "warning",
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "app.main:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        # As `python -m app serve`: X-Forwarded-For is TRUSTED_PROXIES' business alone.
        "--no-proxy-headers",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)  # noqa: S603
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            _wait_ready(base, process)
        except RuntimeError:
            print(log_path.read_text(errors="replace")[-5000:], file=sys.stderr)
            raise
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(base: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{base}/v1/ready", timeout=2) as answer:  # noqa: S310
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server was not ready within {timeout:.0f} s")


def run_phase(
    phase: Phase,
    base: str,
    url: str,
    tmp: Path,
    reports: Path,
    max_examples: int,
    seed: int | None,
) -> Outcome:
    report = reports / f"{phase.name}.json"
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{base}/openapi.json",
        "--include-path-regex",
        phase.include_path_regex,
        "--max-examples",
        str(max_examples),
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    if seed is not None:
        command += ["--seed", str(seed)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "SCHEMATHESIS_HOOKS": "fuzz.hooks",
        "FUZZ_ROLE": phase.role,
        "FUZZ_DATABASE_URL": url,
    }
    print(f"\n== fuzz: {phase.name} ==", flush=True)
    started = time.monotonic()
    # In the temporary directory: Hypothesis keeps its .hypothesis/ in the working directory.
    returncode = subprocess.call(command, cwd=tmp, env=env)  # noqa: S603
    seconds = time.monotonic() - started
    operations, cases = _count(report)
    return Outcome(phase.name, returncode, seconds, operations, cases)


def _count(report: Path) -> tuple[int, int]:
    """(operations tested, test cases generated) from Schemathesis' JSON report."""
    try:
        data = json.loads(report.read_text())
        return int(data["operations"]["tested"]), int(data["test_cases"]["generated"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0, 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__)
    parser.add_argument(
        "--max-examples",
        type=int,
        default=int(os.environ.get("FUZZ_MAX_EXAMPLES", "25")),
        help="test cases per operation and generation phase (default 25, or FUZZ_MAX_EXAMPLES)",
    )
    parser.add_argument("--seed", type=int, default=None, help="reproduce an earlier run")
    parser.add_argument(
        "--only", action="append", choices=[p.name for p in PHASES], help="run only these callers"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)

    phases = [p for p in PHASES if not args.only or p.name in args.only]
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="userkeep-fuzz-"))
    tmp.chmod(0o755)  # as root, the embedded server runs as another user
    outcomes: list[Outcome] = []
    # The reports and the server log outlive the run (the throwaway database does not):
    # Schemathesis prints their paths, which must still exist when someone follows them.
    reports = REPORTS
    shutil.rmtree(reports, ignore_errors=True)
    reports.mkdir(parents=True)
    log_path = reports / "server.log"
    try:
        with embedded_database(tmp) as url, live_server(url, log_path) as base:
            for phase in phases:
                outcomes.append(
                    run_phase(phase, base, url, tmp, reports, args.max_examples, args.seed)
                )
        server_log = log_path.read_text(errors="replace")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print("\n== fuzz: summary ==")
    for o in outcomes:
        verdict = "passed" if o.returncode == 0 else f"FAILED (exit {o.returncode})"
        print(
            f"  {o.phase:<10} {verdict:<18} {o.operations:>3} operations "
            f"{o.cases:>6} test cases  {o.seconds:6.1f} s"
        )
    if "Traceback" in server_log:
        print("\n== server log (errors) ==\n" + server_log[-20000:])
    failed = sum(o.returncode != 0 for o in outcomes)
    print(f"  total {time.monotonic() - started:.1f} s")
    print(f"fuzz: {len(outcomes) - failed} passed, {failed} failed; reports in {reports}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
