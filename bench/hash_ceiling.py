"""The password-hash ceiling: argon2id hashes per second on every core, with Userkeep's own
CryptContext (the ARGON2_* settings, as the served app reads them), one process per core and
nothing else running.

    .venv/bin/python -m bench.hash_ceiling [--seconds 10] [--processes N]

A sign-in verifies one hash (the same work as computing one), so this is what sign-in can
reach at most on this machine.
"""

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor


def parameters() -> str:
    """The argon2id parameters measured, as `m=…,t=…,p=…`."""
    from app.security.argon2_params import Argon2Parameters
    from app.settings import get_settings

    p = Argon2Parameters.from_settings(get_settings())
    return f"m={p.memory_kib},t={p.time_cost},p={p.parallelism}"


def _hash_for(seconds: float) -> tuple[int, float]:
    from app.security.argon2_params import Argon2Parameters
    from app.security.passwords import make_context
    from app.settings import get_settings

    context = make_context(Argon2Parameters.from_settings(get_settings()))
    context.hash("warm-up password")
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        context.hash("correct horse battery staple")
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
        f"argon2id {parameters()}: {result['hashes_per_second']:.1f} hashes/s "
        f"on {result['processes']} processes ({args.seconds:g} s)"
    )


if __name__ == "__main__":
    main()
