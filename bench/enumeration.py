"""Enumeration resistance: failed sign-ins and change-passwords look and time the same.

    .venv/bin/python -m bench.enumeration [--samples 200] [--database-url URL]

Sign-in with an unknown e-mail vs with a known e-mail and a wrong password; change-password
with a wrong current password for a user who has a password vs one who has none (created by
an admin without one). Samples are interleaved, one request at a time, so drift in machine
load hits both sides alike. Prints status, whether the bodies are identical, and the medians.
RATE_LIMITS=off, asked for by name: the samples would otherwise hit the per-account limit.
"""

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import asyncpg
import httpx

from app import db as database
from bench.common import bench_db, start_server

PASSWORD = "enumeration-bench-pass-1"
Call = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


async def sample(client: httpx.AsyncClient, sides: dict[str, Call], n: int) -> None:
    times: dict[str, list[float]] = {name: [] for name in sides}
    answers: dict[str, set[tuple[int, str]]] = {name: set() for name in sides}
    for call in sides.values():  # warm-up: first calls pay for connections and caches
        await call(client)
    for _ in range(n):
        for name, call in sides.items():
            start = time.perf_counter()
            response = await call(client)
            times[name].append((time.perf_counter() - start) * 1000)
            answers[name].add((response.status_code, response.text))
    (a, b) = sides
    same = answers[a] == answers[b] and len(answers[a]) == 1
    status = ",".join(str(s) for s, _ in sorted(answers[a] | answers[b]))
    ma, mb = statistics.median(times[a]), statistics.median(times[b])
    print(
        f"| {a} vs {b} | {status} | {'yes' if same else 'NO'} | {ma:.2f} | {mb:.2f} | "
        f"{abs(ma - mb):.2f} |"
    )


async def main(base: str, url: str, samples: int) -> None:
    stamp = int(time.time())
    known = f"known-{stamp}@example.com"
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        tokens = (
            await client.post("/v1/auth/signup", json={"email": known, "password": PASSWORD})
        ).json()
        nopass = (
            await client.post(
                "/v1/auth/signup", json={"email": f"np-{stamp}@example.com", "password": PASSWORD}
            )
        ).json()
        # The second user loses its password, as a user created by an admin without one.
        conn = await asyncpg.connect(**database._asyncpg_args(url))
        await conn.execute(
            "UPDATE users SET password_hash = NULL WHERE id = $1", nopass["user"]["id"]
        )
        await conn.close()

        def signin(email: str) -> Call:
            body = {"email": email, "password": "not-the-password-9"}
            return lambda c: c.post("/v1/auth/signin", json=body)

        def change(token: str) -> Call:
            body = {"current_password": "not-the-password-9", "new_password": "fresh-pass-42x"}
            headers = {"Authorization": f"Bearer {token}"}
            return lambda c: c.post("/v1/auth/change-password", json=body, headers=headers)

        print(f"\n{samples} samples per side, interleaved, one request at a time\n")
        print("| pair | status | same body | median A ms | median B ms | difference ms |")
        print("|---|---|---|---:|---:|---:|")
        await sample(
            client,
            {
                "sign-in, unknown e-mail": signin(f"nobody-{stamp}@example.com"),
                "sign-in, wrong password": signin(known),
            },
            samples,
        )
        await sample(
            client,
            {
                "change-password, user without password": change(nopass["session_token"]),
                "change-password, wrong current password": change(tokens["session_token"]),
            },
            samples,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with bench_db(args.database_url) as url:
        server, base = start_server(url, RATE_LIMITS="off")
        try:
            asyncio.run(main(base, url, args.samples))
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"\ncommand: .venv/bin/python -m bench.enumeration --samples {args.samples}")
