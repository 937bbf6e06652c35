"""Where the CPU of POST /v1/auth/signin goes: the server, PostgreSQL and the load generator.

    .venv/bin/python -m bench.signin_cpu [--seconds 15] [--connections 16]

Starts Userkeep (2 workers, RATE_LIMITS=off) on the bench database (run `make bench` once
first, for the sign-in accounts), drives sign-ins from this process with httpx, and prints the
CPU seconds each group of processes spent per sign-in. It also times the argon2id verify of a
hash like the seeded accounts' after the run, one process per core at once as in
bench.hash_ceiling (a verify on a busy machine costs more CPU than on an idle one: caches and
memory bandwidth are shared), and subtracts its CPU time from the server's CPU per sign-in: the
rest is the server's non-hash work per sign-in.
"""

import argparse
import asyncio
import collections
import os
import time
from concurrent.futures import ProcessPoolExecutor

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


def server_threads(server_pid: int) -> dict[str, float]:
    """CPU seconds of the server's processes by thread: each process's main thread (the event
    loop: everything a sign-in does but the hash) and its other threads (the hashing threads of
    asyncio.to_thread, where argon2id runs)."""
    split = {"event loop (main threads)": 0.0, "other threads (hashing)": 0.0}
    server = psutil.Process(server_pid)
    for p in [server, *server.children(recursive=True)]:
        try:
            for thread in p.threads():
                used = thread.user_time + thread.system_time
                key = (
                    "event loop (main threads)" if thread.id == p.pid else "other threads (hashing)"
                )
                split[key] += used
        except psutil.NoSuchProcess:
            continue
    return split


def verify_cpu_ms(count: int = 100) -> float:
    """CPU ms of one verify of SIGNIN_PASSWORD against a hash made with the served ARGON2_*
    settings (what the server's hashing thread does per sign-in), as thread CPU time, while
    every core does the same."""
    cores = os.cpu_count() or 1
    with ProcessPoolExecutor(cores) as pool:
        spent = list(pool.map(_verify_cpu_ms, [count] * cores))
    return sum(spent) / len(spent)


def _verify_cpu_ms(count: int) -> float:
    from app.security.argon2_params import Argon2Parameters
    from app.security.passwords import make_context
    from app.settings import get_settings

    context = make_context(Argon2Parameters.from_settings(get_settings()))
    stored = context.hash(fixtures.SIGNIN_PASSWORD)
    context.verify(fixtures.SIGNIN_PASSWORD, stored)  # warm-up
    started = time.thread_time()
    for _ in range(count):
        context.verify(fixtures.SIGNIN_PASSWORD, stored)
    return 1000 * (time.thread_time() - started) / count


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
            threads_before = server_threads(server.pid)
            started = time.monotonic()
            count = asyncio.run(drive(base, args.seconds, args.connections))
            after = cpu_by_group(server.pid)
            threads_after = server_threads(server.pid)
            elapsed = time.monotonic() - started
        finally:
            server.terminate()
            server.wait()
    hash_ms = verify_cpu_ms()
    cores = psutil.cpu_count() or 1
    rate = count / elapsed
    print(f"\n{count:,} sign-ins in {elapsed:.1f} s = {rate:.1f}/s, {args.connections} connections")
    print("| processes | CPU s | ms per sign-in | share of the machine |\n|---|---:|---:|---:|")
    for group, total in after.most_common():
        used = total - before.get(group, 0.0)
        share = 100 * used / (cores * elapsed)
        print(f"| {group} | {used:.2f} | {1000 * used / count:.2f} | {share:.1f}% |")
    server_ms = 1000 * (after["userkeep server"] - before.get("userkeep server", 0.0)) / count
    print(
        f"\nserver: {server_ms:.2f} ms per sign-in = argon2id verify {hash_ms:.2f} ms (timed "
        f"here, all cores busy) + non-hash {server_ms - hash_ms:.2f} ms"
    )
    for name, spent in threads_after.items():
        print(f"server {name}: {1000 * (spent - threads_before[name]) / count:.2f} ms per sign-in")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"command: .venv/bin/python -m bench.signin_cpu --seconds {args.seconds:g}")


if __name__ == "__main__":
    main()
