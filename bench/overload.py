"""Overload control: a burst of concurrent sign-ins against the real server.

    .venv/bin/python -m bench.overload [--concurrency 64] [--rounds 3] [--database-url URL]

With HASH_QUEUE_MAX (default 16) requests waiting for a hashing slot, the rest are answered
503 `service_unavailable` with Retry-After at once instead of queueing for seconds. Prints the
status counts and the latency of each kind of answer. RATE_LIMITS=off, asked for by name: the
burst comes from one address and would otherwise be cut by the per-IP sign-in limit.
"""

import argparse
import asyncio
import json
import time

import httpx

from bench.common import bench_db, percentile, start_server

PASSWORD = "overload-bench-password-1"


async def burst(base: str, email: str, concurrency: int) -> list[tuple[int, float, str]]:
    """Open every connection first, then send every request at once, so the server sees a
    true burst (a pooled HTTP client trickles new connections and hides the burst)."""
    host, port = base.removeprefix("http://").split(":")
    body = json.dumps({"email": email, "password": PASSWORD}).encode()
    request = (
        b"POST /v1/auth/signin HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    streams = await asyncio.gather(
        *(asyncio.open_connection(host, int(port)) for _ in range(concurrency))
    )

    async def one(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[int, float, str]:
        start = time.perf_counter()
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        elapsed = (time.perf_counter() - start) * 1000
        writer.close()
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        return int(lines[0].split()[1]), elapsed, headers.get("retry-after", "")

    return await asyncio.gather(*(one(r, w) for r, w in streams))


async def main(base: str, concurrency: int, rounds: int) -> None:
    email = f"overload-{int(time.time())}@example.com"
    async with httpx.AsyncClient(base_url=base) as client:
        response = await client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD})
        response.raise_for_status()
    results: list[tuple[int, float, str]] = []
    for _ in range(rounds):
        results += await burst(base, email, concurrency)
    print(f"\n{concurrency} concurrent sign-ins x {rounds} rounds (HASH_QUEUE_MAX default 16)\n")
    print("| answer | count | p50 ms | p95 ms | max ms | Retry-After |")
    print("|---|---:|---:|---:|---:|---|")
    for status in sorted({s for s, _, _ in results}):
        times = [t for s, t, _ in results if s == status]
        retry = sorted({r for s, _, r in results if s == status and r})
        print(
            f"| {status} | {len(times)} | {percentile(times, 50):.1f} | "
            f"{percentile(times, 95):.1f} | {max(times):.1f} | {','.join(retry) or '-'} |"
        )
    errors = [s for s, _, _ in results if s not in (200, 503)]
    print(f"\nother answers (errors): {len(errors)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with bench_db(args.database_url) as url:
        server, base = start_server(url, RATE_LIMITS="off")
        try:
            asyncio.run(main(base, args.concurrency, args.rounds))
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(
        "\ncommand: .venv/bin/python -m bench.overload "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None)
    )
