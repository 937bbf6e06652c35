"""Where the CPU of POST /v1/auth/signin goes: the server, PostgreSQL and the load generator.

    .venv/bin/python -m bench.signin_cpu [--seconds 15] [--connections 16]

Starts Userkeep (2 workers, RATE_LIMITS=off) on the bench database (run `make bench` once
first, for the sign-in accounts), drives sign-ins from this process with httpx, and prints the
CPU seconds each group of processes spent per sign-in. Next to bench.hash_ceiling it shows how
much of the server's time is the argon2id hash itself and how much is everything else.
"""

import argparse
import asyncio
import collections
import time

import httpx
import psutil

from bench import fixtures
from bench.common import bench_db, start_server


def cpu_by_group(server_pid: int) -> collections.Counter[str]:
    groups: collections.Counter[str] = collections.Counter()
    server = psutil.Process(server_pid)
    mine = {p.pid for p in [server, *server.children(recursive=True)]}
    me = psutil.Process().pid
    for p in psutil.process_iter(["name", "cpu_times", "pid"]):
        times = p.info["cpu_times"]
        if times is None:
            continue
        used = times.user + times.system
        if p.info["pid"] in mine:
            groups["userkeep server"] += used
        elif (p.info["name"] or "").startswith("postgres"):
            groups["postgres"] += used
        elif p.info["pid"] == me:
            groups["load generator (httpx)"] += used
        else:
            groups["everything else"] += used
    return groups


async def drive(base: str, seconds: float, connections: int) -> int:
    done = 0
    stop_at = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:

        async def worker(first: int) -> None:
            nonlocal done
            i = first
            while time.monotonic() < stop_at:
                body = {
                    "email": fixtures.SIGNIN_EMAIL.format(i % 1000),
                    "password": fixtures.SIGNIN_PASSWORD,
                }
                response = await client.post("/v1/auth/signin", json=body)
                assert response.status_code == 200, response.text
                done += 1
                i += connections

        await asyncio.gather(*(worker(k) for k in range(connections)))
    return done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    with bench_db(None) as url:
        server, base = start_server(url, 2, RATE_LIMITS="off")
        try:
            asyncio.run(drive(base, 3, args.connections))  # warm-up
            before = cpu_by_group(server.pid)
            started = time.monotonic()
            count = asyncio.run(drive(base, args.seconds, args.connections))
            after = cpu_by_group(server.pid)
            elapsed = time.monotonic() - started
        finally:
            server.terminate()
            server.wait()
    cores = psutil.cpu_count() or 1
    rate = count / elapsed
    print(f"\n{count:,} sign-ins in {elapsed:.1f} s = {rate:.1f}/s, {args.connections} connections")
    print("| processes | CPU s | ms per sign-in | share of the machine |\n|---|---:|---:|---:|")
    for group, total in after.most_common():
        used = total - before.get(group, 0.0)
        share = 100 * used / (cores * elapsed)
        print(f"| {group} | {used:.2f} | {1000 * used / count:.2f} | {share:.1f}% |")
    print(f"\ncommand: .venv/bin/python -m bench.signin_cpu --seconds {args.seconds:g}")


if __name__ == "__main__":
    main()
