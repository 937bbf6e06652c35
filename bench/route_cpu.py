"""Worker CPU per request, route by route, on one Userkeep worker: the comparison that holds on
a shared machine, where req/s moves with whatever else runs.

    .venv/bin/python -m bench.route_cpu [--routes me,token,introspect,faroe] [--rounds 2]
        [--seconds 15] [--connections 8] [--env FAROE_AUTH=none ...]

Starts `python -m app serve` with one worker (RATE_LIMITS=off, no job worker) on the bench
database (run `make bench` once first), drives each route with wrk for `--seconds`, and prints
the CPU seconds the server's processes spent per request (psutil), next to /me's. The routes
alternate for `--rounds` rounds, so a change in the machine's load shows as a spread, not as a
difference between routes. Routes: those of bench.profile_me (me, token, introspect, faroe,
forgot). `--env FAROE_AUTH=none` serves Faroe unsigned, without the replay guard: the guard's
cost is the difference.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile

from bench.common import ROOT, bench_db, postmaster_pid, purge_queued_jobs, start_server, tree_cpu
from bench.profile_me import requests_for
from bench.run import FAROE_SECRET


def drive(base: str, requests: list[str], seconds: float, connections: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as spec:
        json.dump({"url": base, "expect": [200], "requests": requests}, spec)
    try:
        command = [sys.executable, "-m", "bench.loadgen", spec.name, "--tool", "wrk"]
        command += ["--connections", str(connections), "--duration", str(seconds)]
        command += ["--warmup", "0"]
        out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)  # noqa: S603
        result: dict = json.loads(out.stdout.strip().splitlines()[-1])
        return result
    finally:
        os.unlink(spec.name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--routes", default="me,token,introspect,faroe")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    args = parser.parse_args()
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    env = dict(item.split("=", 1) for item in args.env)
    costs: dict[str, list[float]] = {route: [] for route in routes}
    pg_costs: dict[str, list[float]] = {route: [] for route in routes}
    with bench_db(os.environ.get("BENCH_DATABASE_URL")) as url:
        server, base = start_server(url, 1, RATE_LIMITS="off", FAROE_SECRET=FAROE_SECRET, **env)
        postgres = asyncio.run(postmaster_pid(url))
        try:
            for _ in range(args.rounds):
                for route in routes:
                    requests = requests_for(route, base, url, 1000)
                    before = tree_cpu(server.pid) or 0.0, tree_cpu(postgres) if postgres else None
                    result = drive(base, requests, args.seconds, args.connections)
                    done = max(1, result["requests"])
                    cost = 1000 * ((tree_cpu(server.pid) or 0.0) - before[0]) / done
                    costs[route].append(cost)
                    pg = ""
                    if before[1] is not None and postgres:
                        pg_cost = 1000 * ((tree_cpu(postgres) or 0.0) - before[1]) / done
                        pg_costs[route].append(pg_cost)
                        pg = f", PostgreSQL CPU {pg_cost:.3f} ms/request"
                    print(
                        f"  {route}: {result['requests']:,} requests, {result['rps']:,.0f} req/s, "
                        f"{result['errors']} errors, server CPU {cost:.3f} ms/request{pg}",
                        flush=True,
                    )
        finally:
            server.terminate()
            server.wait(timeout=30)
            purge_queued_jobs_sync(url)
    me = sum(costs["me"]) / len(costs["me"]) if costs.get("me") else None
    print(
        f"\nserver CPU per request, mean of {args.rounds} rounds (load: {os.getloadavg()[0]:.1f})"
    )
    for route, values in costs.items():
        mean = sum(values) / len(values)
        ratio = f"  {me / mean:.2f}x /me by CPU" if me and route != "me" else ""
        print(f"  {route:12} {mean:.3f} ms (spread {min(values):.3f} to {max(values):.3f}){ratio}")
    if all(pg_costs.values()):
        print("PostgreSQL CPU per request")
        for route, values in pg_costs.items():
            print(f"  {route:12} {sum(values) / len(values):.3f} ms")
    extra = "".join(f" --env {item}" for item in args.env)
    print(
        f"\ncommand: .venv/bin/python -m bench.route_cpu --routes {args.routes} "
        f"--rounds {args.rounds} --seconds {args.seconds:g} --connections {args.connections}{extra}"
    )


def purge_queued_jobs_sync(url: str) -> None:
    asyncio.run(purge_queued_jobs(url))


if __name__ == "__main__":
    main()
