"""The password-hash ceiling: argon2id hashes per second on every core, with Userkeep's own
CryptContext (m=19456 KiB, t=2, p=1), one process per core and nothing else running.

    .venv/bin/python -m bench.hash_ceiling [--seconds 10] [--processes N]

A sign-in verifies one hash (the same work as computing one), so this is what sign-in can
reach at most on this machine.
"""

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor


def _hash_for(seconds: float) -> tuple[int, float]:
    from app.security.passwords import CONTEXT

    CONTEXT.hash("warm-up password")
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        CONTEXT.hash("correct horse battery staple")
        count += 1
    return count, time.perf_counter() - started


def measure(seconds: float = 10, processes: int | None = None) -> dict:
    processes = processes or os.cpu_count() or 1
    with ProcessPoolExecutor(processes) as pool:
        results = list(pool.map(_hash_for, [seconds] * processes))
    rate = sum(count / elapsed for count, elapsed in results)
    return {"processes": processes, "seconds": seconds, "hashes_per_second": rate}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--processes", type=int)
    args = parser.parse_args()
    result = measure(args.seconds, args.processes)
    print(
        f"argon2id m=19456,t=2,p=1: {result['hashes_per_second']:.1f} hashes/s "
        f"on {result['processes']} processes ({args.seconds:g} s)"
    )


if __name__ == "__main__":
    main()
