"""Enumeration resistance: the answers that must not tell whether an account exists look and
time the same.

    .venv/bin/python -m bench.enumeration [--samples 200] [--database-url URL] [--jobs-in-serve]

Pairs (side A vs side B):
- sign-in with an unknown e-mail vs with a known e-mail and a wrong password, and vs a wrong
  password of a user with MFA on (`mfa_required` comes only after the right password);
- change-password with a wrong current password for a user who has a password vs one who has
  none (created by an admin without one);
- forgot-password for a known address vs an unknown one;
- verify-email/send, signed out, for a known unverified address vs an unknown one, and for a
  known verified address vs the same unknown one (all three sides interleaved in one run).

Samples are interleaved, one request at a time, after a warm-up, so drift in machine load hits
every side alike; each round takes the sides in a shuffled order. Prints the statuses, whether
the bodies are identical, and the medians; the bar is identical status and body and a median
difference of at most 5 ms (MAX_DIFFERENCE_MS).
The table is also written to bench/results/enumeration.md (enumeration-jobs-in-serve.md with
`--jobs-in-serve`).

The server runs with RATE_LIMITS=off, asked for by name: the samples would otherwise hit the
per-account sign-in limit and the per-address mail limit (5 an hour) at once. Its job worker
is off (JOBS_IN_SERVE=false, bench.common.start_server): the request is what is measured, and
a worker in the same process would spend CPU between samples, on the known side's mail only.
The mail jobs the requests queue are purged afterwards. `--jobs-in-serve` runs the worker in
the server as a default deployment does (mail to .eml files in a temporary directory under
.data/bench, removed afterwards): then the work a known address causes after the answer can
show up in the request after it.
"""

import argparse
import asyncio
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import httpx

from app import db as database
from bench.common import BENCH_DATA, ROOT, bench_db, purge_queued_jobs, start_server

PASSWORD = "enumeration-bench-pass-1"
MAX_DIFFERENCE_MS = 5.0
RESULTS = ROOT / "bench" / "results"
Call = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


async def sample(client: httpx.AsyncClient, sides: dict[str, Call], n: int) -> list[str]:
    """Interleave `n` rounds of every side; one table row per side after the first, against
    the first."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    answers: dict[str, set[tuple[int, str]]] = {name: set() for name in sides}
    # Warm-up: the first calls pay for connections, prepared statements and caches.
    for _ in range(5):
        for call in sides.values():
            await call(client)
    # Each round takes the sides in a new order: work one request leaves behind (a mail job,
    # with --jobs-in-serve) lands on the request after it, which must not always be the same.
    order = random.Random(len(sides))
    for _ in range(n):
        for name, call in order.sample(list(sides.items()), len(sides)):
            start = time.perf_counter()
            response = await call(client)
            times[name].append((time.perf_counter() - start) * 1000)
            answers[name].add((response.status_code, response.text))
    first, *others = sides
    rows = []
    for other in others:
        same = answers[first] == answers[other] and len(answers[first]) == 1
        status = ",".join(str(s) for s, _ in sorted(answers[first] | answers[other]))
        ma, mb = statistics.median(times[first]), statistics.median(times[other])
        difference = abs(ma - mb)
        verdict = "met" if same and difference <= MAX_DIFFERENCE_MS else "MISSED"
        rows.append(
            f"| {first} vs {other} | {status} | {'yes' if same else 'NO'} | {ma:.2f} | "
            f"{mb:.2f} | {difference:.2f} | {verdict} |"
        )
        print(rows[-1], flush=True)
    return rows


async def main(base: str, url: str, samples: int) -> list[str]:
    stamp = int(time.time())
    known = f"known-{stamp}@example.com"
    verified = f"verified-{stamp}@example.com"
    with_mfa = f"mfa-{stamp}@example.com"
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        created = {}
        for email in (known, f"np-{stamp}@example.com", verified, with_mfa):
            response = await client.post(
                "/v1/auth/signup", json={"email": email, "password": PASSWORD}
            )
            response.raise_for_status()
            created[email] = response.json()
        tokens, nopass = created[known], created[f"np-{stamp}@example.com"]
        conn = await asyncpg.connect(**database._asyncpg_args(url))
        try:
            # The second user loses its password, as a user created by an admin without one.
            await conn.execute(
                "UPDATE users SET password_hash = NULL WHERE id = $1", nopass["user"]["id"]
            )
            # The third has proved its address (sign-up leaves it unverified).
            await conn.execute(
                "UPDATE users SET email_verified = true WHERE id = $1",
                created[verified]["user"]["id"],
            )
            # The fourth has MFA on: sign-in reads only this column, and only after the
            # password was right.
            await conn.execute(
                "UPDATE users SET mfa_enabled = true WHERE id = $1",
                created[with_mfa]["user"]["id"],
            )
        finally:
            await conn.close()

        def signin(email: str) -> Call:
            body = {"email": email, "password": "not-the-password-9"}
            return lambda c: c.post("/v1/auth/signin", json=body)

        def change(token: str) -> Call:
            body = {"current_password": "not-the-password-9", "new_password": "fresh-pass-42x"}
            headers = {"Authorization": f"Bearer {token}"}
            return lambda c: c.post("/v1/auth/change-password", json=body, headers=headers)

        def by_address(path: str, email: str) -> Call:
            # Signed out: no Authorization header, the address in the body.
            return lambda c: c.post(path, json={"email": email})

        unknown = f"nobody-{stamp}@example.com"
        print(f"\n{samples} samples per side, interleaved, one request at a time\n")
        print(HEADER, flush=True)
        rows = await sample(
            client,
            {
                "sign-in, unknown e-mail": signin(unknown),
                "sign-in, wrong password": signin(known),
                "sign-in, wrong password, MFA on": signin(with_mfa),
            },
            samples,
        )
        rows += await sample(
            client,
            {
                "change-password, user without password": change(nopass["session_token"]),
                "change-password, wrong current password": change(tokens["session_token"]),
            },
            samples,
        )
        forgot = "/v1/auth/forgot-password"
        rows += await sample(
            client,
            {
                "forgot-password, unknown address": by_address(forgot, unknown),
                "forgot-password, known address": by_address(forgot, known),
            },
            samples,
        )
        send = "/v1/auth/verify-email/send"
        rows += await sample(
            client,
            {
                "verify-email/send, unknown address": by_address(send, unknown),
                "verify-email/send, known unverified address": by_address(send, known),
                "verify-email/send, known verified address": by_address(send, verified),
            },
            samples,
        )
    return rows


HEADER = (
    "| pair | status | same body | median A ms | median B ms | difference ms | ≤ 5 ms, same |\n"
    "|---|---|---|---:|---:|---:|---|"
)


def write_results(rows: list[str], command: str, jobs_in_serve: bool, purged: int) -> None:
    load = os.getloadavg()
    worker = (
        "JOBS_IN_SERVE=true (the job worker in the server, mail to .eml files)"
        if jobs_in_serve
        else "JOBS_IN_SERVE=false (no job worker: the request is measured)"
    )
    text = "\n".join(
        [
            f"## Enumeration bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "",
            f"- machine: {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}; load average at the end "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
            f"- command: `{command}`",
            f"- server: 1 uvicorn worker, RATE_LIMITS=off, {worker}; {purged:,} mail jobs "
            "queued by the samples purged afterwards",
            "",
            HEADER,
            *rows,
            "",
        ]
    )
    path = RESULTS / ("enumeration-jobs-in-serve.md" if jobs_in_serve else "enumeration.md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    print(f"\nwritten to {path.relative_to(ROOT)}")


def run(url: str, samples: int, jobs_in_serve: bool) -> tuple[list[str], int]:
    env = {"RATE_LIMITS": "off"}
    with tempfile.TemporaryDirectory(prefix="enumeration-", dir=BENCH_DATA) as data:
        if jobs_in_serve:
            env |= {"JOBS_IN_SERVE": "true", "DATA_DIR": data}
        server, base = start_server(url, 1, **env)
        try:
            rows = asyncio.run(main(base, url, samples))
        finally:
            server.terminate()
            server.wait(timeout=30)
    # With the worker off, every mail job of the run is still queued: none may be sent later.
    return rows, asyncio.run(purge_queued_jobs(url))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--database-url")
    parser.add_argument(
        "--jobs-in-serve", action="store_true", help="run the job worker inside the server"
    )
    args = parser.parse_args()
    BENCH_DATA.mkdir(parents=True, exist_ok=True)
    with bench_db(args.database_url) as url:
        rows, purged = run(url, args.samples, args.jobs_in_serve)
    command = f".venv/bin/python -m bench.enumeration --samples {args.samples}"
    command += " --database-url …" if args.database_url else ""
    command += " --jobs-in-serve" if args.jobs_in_serve else ""
    print(f"\n{purged:,} queued mail jobs purged")
    print(f"command: {command}")
    write_results(rows, command, args.jobs_in_serve, purged)
