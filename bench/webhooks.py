"""Webhooks: end-to-end latency, delivery throughput, and what fan-out costs the request.

    make bench-webhooks                 # or: .venv/bin/python -m bench.webhooks
    .venv/bin/python -m bench.webhooks [--rate 200] [--seconds 20] [--events 10000]
        [--concurrency 4,16] [--requests 300] [--database-url URL]
        [--only latency|throughput|fanout ...]   # a partial run prints, writes no file

Every event goes to a fast local receiver: a process of its own (this module, `--receiver`)
on 127.0.0.1 answering 204 at once and noting each webhook-id with its arrival time
(CLOCK_MONOTONIC, the same clock as the bench process's). WEBHOOK_ALLOW_PRIVATE=true.

1. Latency. `python -m app serve` with its job worker inside (JOBS_IN_SERVE=true, the default
   JOBS_CONCURRENCY) and one endpoint subscribed to user.updated. Admin PATCHes of distinct
   users' names are sent at a steady --rate per second for --seconds (open loop: each at its
   moment, whatever the answers before it). An event's latency is its arrival at the receiver
   minus the moment the PATCH that made it returned (webhook-id = the audit row's id → its
   user → that user's PATCH); negative when the delivery beat the answer to the client.
2. Throughput. With no worker running, --events user.updated events are raised the way a
   change raises them (audit rows written through a session: audit.py's flush hook adds one
   fan-out job each); then `python -m app worker` at each JOBS_CONCURRENCY delivers them.
   Events/s from the first arrival to the last; the worker's CPU per event (fan-out and
   delivery both run there) and PostgreSQL's (when it runs on this machine).
3. Fan-out cost. The PATCH's latency (one client, one request at a time) and the server's CPU
   per request with 0, 1 and 10 endpoints subscribed, no worker running, and the job rows each
   request added; then a worker delivers the 10-endpoint case's queued events, for the
   worker's CPU per delivery when one event goes to ten endpoints.

The table goes to stdout and to bench/results/webhooks.md. What a phase made (jobs, audit
rows, deliveries, endpoints) is deleted after it.
"""

import argparse
import asyncio
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from app import db as database
from app.services import audit, webhooks
from app.services.audit import Origin
from bench import fixtures, seed_users
from bench.admin_search import admin_token
from bench.common import (
    BENCH_DATA,
    ROOT,
    bench_db,
    free_port,
    percentile,
    postmaster_pid,
    purge_queued_jobs,
    settings_for,
    start_server,
    tree_cpu,
)
from bench.mail_queue import children_cpu

RESULTS = ROOT / "bench" / "results"
# (`webhooks` is imported for its side effects too: the flush hook that raises events, and the
# job kinds the worker and enqueue know.)
PHASES = ("latency", "throughput", "fanout")
# The audit rows the throughput phase raises carry this user agent: the cleanup finds them.
AGENT = "userkeep-bench-webhooks"
# One key for the server and the workers: both must read the endpoints' secrets.
SECRET_KEY = "bench-webhooks-secret-key-of-32-bytes-or-more"
# Requests of the latency run on their way at once, at most.
IN_FLIGHT = 64
# RATE_LIMITS=off as in bench/run.py: all the load comes from one address, and the admin
# limit (600/60 s per IP) would refuse most of a 200/s run.
WEBHOOK_ENV = {"WEBHOOK_ALLOW_PRIVATE": "true", "SECRET_KEY": SECRET_KEY, "RATE_LIMITS": "off"}


# ---- the receiver (a process of its own) ---------------------------------------------------


def receiver_main(port: int, out: Path) -> None:
    """HTTP/1.1 on 127.0.0.1:port: every request answered 204 at once (keep-alive honoured);
    on SIGTERM, the "webhook-id monotonic-arrival" lines are written to `out`."""
    arrivals: list[tuple[str, float]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived = time.monotonic()
                length, event_id = 0, ""
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"webhook-id":
                        event_id = value.strip().decode()
                await reader.readexactly(length)
                arrivals.append((event_id, arrived))
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024)
        print("ready", flush=True)
        await stop.wait()
        server.close()

    asyncio.run(main())
    out.write_text("".join(f"{i} {t:.6f}\n" for i, t in arrivals))


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.out = BENCH_DATA / f"webhook-arrivals-{self.port}.txt"
        self.process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "bench.webhooks", "--receiver", str(self.port), str(self.out)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the receiver did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def stop(self) -> list[tuple[str, float]]:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        lines = self.out.read_text().split()
        self.out.unlink()
        return [(lines[i], float(lines[i + 1])) for i in range(0, len(lines), 2)]


# ---- database helpers ----------------------------------------------------------------------


async def _connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(**database._asyncpg_args(url))


async def _fetchval(url: str, query: str, *args: Any) -> Any:
    conn = await _connect(url)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def set_endpoints(base: str, token: str, url: str, receiver_url: str, count: int) -> None:
    """Exactly `count` endpoints of the default app, each subscribed to user.updated."""
    await _fetchval(url, "DELETE FROM webhook_endpoints")
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c:
        for n in range(count):
            answer = await c.post(
                "/v1/admin/webhooks",
                json={"url": f"{receiver_url}?n={n}", "events": ["user.updated"]},
            )
            answer.raise_for_status()


async def wait_jobs_done(url: str, after: int, seconds: float) -> dict[str, int]:
    """Until no job newer than `after` is queued or running (or the timeout): the counts."""
    deadline = time.monotonic() + seconds
    while True:
        conn = await _connect(url)
        try:
            rows = await conn.fetch(
                "SELECT status, count(*) FROM jobs WHERE id > $1 GROUP BY status", after
            )
        finally:
            await conn.close()
        counts = {row[0]: row[1] for row in rows}
        if not counts.get("queued") and not counts.get("running"):
            return counts
        if time.monotonic() > deadline:
            return counts | {"timed out": 1}
        await asyncio.sleep(0.5)


async def clean(url: str, after: int, since: datetime) -> None:
    """Remove what a phase left: its jobs, the deliveries, the audit rows written since it
    began (the bench database has no other writer)."""
    for kind in (webhooks.FANOUT_JOB, webhooks.DELIVER_JOB):
        await purge_queued_jobs(url, kind)
    conn = await _connect(url)
    try:
        await conn.execute("DELETE FROM pgqueuer_log WHERE job_id > $1", after)
        await conn.execute("DELETE FROM jobs WHERE id > $1", after)
        await conn.execute("DELETE FROM webhook_deliveries")
        await conn.execute(
            "DELETE FROM audit_events WHERE created_at >= $1 OR user_agent = $2", since, AGENT
        )
        for table in ("pgqueuer", "pgqueuer_log", "jobs", "audit_events", "webhook_deliveries"):
            await conn.execute(f"VACUUM ANALYZE {table}")
    finally:
        await conn.close()


async def job_rows(url: str) -> int:
    """Rows pgqueuer holds (queued, running, failed): a request's enqueue adds to them."""
    return int(await _fetchval(url, "SELECT count(*) FROM pgqueuer"))


async def mark(url: str) -> tuple[int, datetime]:
    """Where a phase starts: the last job's id (every job of the phase has a greater one) and
    the database's time."""
    return (
        int(await _fetchval(url, "SELECT coalesce(max(id), 0) FROM jobs")),
        await _fetchval(url, "SELECT now()"),
    )


async def users_of(url: str, event_ids: list[str]) -> dict[str, str]:
    conn = await _connect(url)
    try:
        rows = await conn.fetch(
            "SELECT id, target_user_id FROM audit_events WHERE id = ANY($1)", event_ids
        )
    finally:
        await conn.close()
    return {row[0]: row[1] for row in rows}


# ---- 1. latency ----------------------------------------------------------------------------


async def drive(base: str, token: str, user_ids: list[str], rate: float) -> dict[str, Any]:
    """One PATCH per user at `rate`/s, open loop. Returns when each returned, and statuses."""
    returned: dict[str, float] = {}
    statuses: dict[int | str, int] = {}
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    headers = {"Authorization": f"Bearer {token}"}
    # Thousands of requests waiting inside httpx's pool cost the client more CPU than the
    # server (seen: 274 of 4,000 sent in six minutes); they wait here instead.
    in_flight = asyncio.Semaphore(IN_FLIGHT)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as c:

        async def patch(n: int, user_id: str) -> None:
            async with in_flight:
                try:
                    answer = await c.patch(
                        f"/v1/admin/users/{user_id}", json={"name": f"bench {n}"}
                    )
                except httpx.TransportError as exc:
                    # A connection the server closed (seen once under load): counted, not fatal.
                    key: int | str = type(exc).__name__
                    statuses[key] = statuses.get(key, 0) + 1
                    return
            returned[user_id] = time.monotonic()
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1

        started = time.monotonic()
        tasks = []
        for n, user_id in enumerate(user_ids):
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(patch(n, user_id)))
        sent = time.monotonic() - started
        await asyncio.gather(*tasks)
    return {"returned": returned, "statuses": statuses, "sent_seconds": sent}


def latency(url: str, token: str, args: argparse.Namespace, user_ids: list[str]) -> dict[str, Any]:
    receiver = Receiver()
    server, base = start_server(url, 1, JOBS_IN_SERVE="true", **WEBHOOK_ENV)
    after, since = asyncio.run(mark(url))
    try:
        asyncio.run(set_endpoints(base, token, url, receiver.url, 1))
        count = int(args.rate * args.seconds)
        print(f"  latency: {count:,} PATCHes at {args.rate:.0f}/s", flush=True)
        driven = asyncio.run(drive(base, token, user_ids[:count], args.rate))
        jobs = asyncio.run(wait_jobs_done(url, after, seconds=600))
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
        arrivals = receiver.stop()
    owners = asyncio.run(users_of(url, [event_id for event_id, _ in arrivals]))
    samples = []
    for event_id, arrived in arrivals:
        user_id = owners.get(event_id)
        if user_id in driven["returned"]:
            samples.append(1000 * (arrived - driven["returned"][user_id]))
    asyncio.run(clean(url, after, since))
    return {
        "count": count,
        "statuses": driven["statuses"],
        "rate": count / driven["sent_seconds"] if driven["sent_seconds"] else 0.0,
        "arrived": len(arrivals),
        "distinct": len({event_id for event_id, _ in arrivals}),
        "matched": len(samples),
        "jobs": jobs,
        "p50": percentile(samples, 50) if samples else None,
        "p99": percentile(samples, 99) if samples else None,
        "max": max(samples) if samples else None,
        "min": min(samples) if samples else None,
    }


# ---- 2. throughput -------------------------------------------------------------------------


async def raise_events(url: str, user_ids: list[str]) -> float:
    """A user.updated audit row per user, in one transaction: audit.py's flush hook adds the
    fan-out jobs as it does for a change. Returns the seconds it took."""
    engine = database.create_engine(url, settings_for(url))
    conn = await _connect(url)
    try:
        app_id, env_id = await fixtures.default_env(conn)
    finally:
        await conn.close()
    started = time.perf_counter()
    try:
        async with database.session_factory(engine)() as db, db.begin():
            for user_id in user_ids:
                audit.record(
                    db,
                    "user.updated",
                    origin=Origin("127.0.0.1", AGENT),
                    app_id=app_id,
                    env_id=env_id,
                    actor_type="system",
                    target_user_id=user_id,
                    metadata={"fields": ["name"]},
                )
    finally:
        await engine.dispose()
    return time.perf_counter() - started


def start_worker(url: str, concurrency: int) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if k != "MAIL_URL"},
        "DATABASE_URL": url,
        "JOBS_CONCURRENCY": str(concurrency),
        "LOG_LEVEL": "warning",
        "DATA_DIR": str(BENCH_DATA),
        **WEBHOOK_ENV,
    }
    with open(BENCH_DATA / "worker.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "app", "worker"], cwd=ROOT, env=env, stdout=log, stderr=log
        )


def drain(url: str, concurrency: int, after: int, postmaster: int | None) -> dict[str, Any]:
    """A worker at `concurrency` delivers what is queued; its rate and CPU."""
    cpu_before = children_cpu()
    pg_before = tree_cpu(postmaster) if postmaster is not None else None
    spawned = time.monotonic()
    worker = start_worker(url, concurrency)
    try:
        jobs = asyncio.run(wait_jobs_done(url, after, seconds=900))
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    time.sleep(1)  # the worker's backends end with its connections
    pg_after = tree_cpu(postmaster) if postmaster is not None else None
    return {
        "jobs": jobs,
        "spawned": spawned,
        "worker_cpu": children_cpu() - cpu_before,
        "postgres_cpu": pg_after - pg_before
        if pg_before is not None and pg_after is not None
        else None,
    }


def throughput(
    url: str, token: str, concurrency: int, user_ids: list[str], postmaster: int | None
) -> dict[str, Any]:
    receiver = Receiver()
    server, base = start_server(url, 1, **WEBHOOK_ENV)  # only to create the endpoint
    try:
        asyncio.run(set_endpoints(base, token, url, receiver.url, 1))
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
    after, since = asyncio.run(mark(url))
    raised = asyncio.run(raise_events(url, user_ids))
    print(
        f"  throughput at JOBS_CONCURRENCY {concurrency}: {len(user_ids):,} events raised in "
        f"{raised:.1f} s",
        flush=True,
    )
    try:
        drained = drain(url, concurrency, after, postmaster)
    finally:
        arrivals = receiver.stop()
    asyncio.run(clean(url, after, since))
    times = sorted(t for _, t in arrivals)
    result = {
        "concurrency": concurrency,
        "events": len(user_ids),
        "arrived": len(arrivals),
        "distinct": len({event_id for event_id, _ in arrivals}),
        **drained,
    }
    if len(times) > 1:
        result["rate"] = (len(times) - 1) / (times[-1] - times[0])
        result["startup"] = times[0] - drained["spawned"]
        result["end_to_end"] = times[-1] - drained["spawned"]
    return result


# ---- 3. fan-out cost -----------------------------------------------------------------------


async def sequential_patches(base: str, token: str, user_ids: list[str]) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"}
    samples = []
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as c:
        for n, user_id in enumerate(user_ids):
            started = time.perf_counter()
            answer = await c.patch(f"/v1/admin/users/{user_id}", json={"name": f"fan {n}"})
            samples.append(1000 * (time.perf_counter() - started))
            answer.raise_for_status()
    return samples


def fanout_cost(
    url: str, token: str, requests: int, user_ids: list[str], postmaster: int | None
) -> list[dict[str, Any]]:
    results = []
    for endpoints in (0, 1, 10):
        receiver = Receiver()
        server, base = start_server(url, 1, **WEBHOOK_ENV)
        after, since = asyncio.run(mark(url))
        try:
            asyncio.run(set_endpoints(base, token, url, receiver.url, endpoints))
            warm, measured = user_ids[:30], user_ids[30 : 30 + requests]
            asyncio.run(sequential_patches(base, token, warm))
            jobs_before = asyncio.run(job_rows(url))
            cpu_before = tree_cpu(server.pid)
            samples = asyncio.run(sequential_patches(base, token, measured))
            cpu_after = tree_cpu(server.pid)
            jobs_added = asyncio.run(job_rows(url)) - jobs_before
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
        result: dict[str, Any] = {
            "endpoints": endpoints,
            "requests": len(measured),
            "p50": percentile(samples, 50),
            "p99": percentile(samples, 99),
            "mean": sum(samples) / len(samples),
            "server_cpu_ms": 1000 * (cpu_after - cpu_before) / len(measured)
            if cpu_before is not None and cpu_after is not None
            else None,
            "jobs_per_request": jobs_added / len(measured),
        }
        if endpoints == 10:
            # The queued fan-outs (plus the warm-up's) delivered by a worker: its CPU per delivery.
            drained = drain(url, 4, after, postmaster)
            arrivals = receiver.stop()
            result["deliveries"] = len(arrivals)
            result["worker_cpu_ms"] = 1000 * drained["worker_cpu"] / max(len(arrivals), 1)
        else:
            receiver.stop()
        asyncio.run(clean(url, after, since))
        print(f"  fan-out, {endpoints} endpoints: {result}", flush=True)
        results.append(result)
    return results


# ---- the table -----------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render(facts: dict[str, Any], lat: dict[str, Any] | None, runs: list[dict[str, Any]],
           fan: list[dict[str, Any]] | None, command: str) -> str:  # fmt: skip
    """The results as markdown; a phase that did not run (--only) has no section."""
    load = facts["load"]
    lines = [
        f"## Webhooks bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}, PostgreSQL {facts['postgres']} (same machine); load "
        f"average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"- command: `{command}`",
        "- receiver: a process of its own on 127.0.0.1 answering 204 at once; one endpoint "
        "subscribed to user.updated unless said otherwise; WEBHOOK_ALLOW_PRIVATE=true",
    ]
    if lat is not None:
        lines += [
            "",
            "### End-to-end latency (a committed change → the receiver's request)",
            "",
            f"`python -m app serve` (WORKERS=1, JOBS_IN_SERVE=true, JOBS_CONCURRENCY=4); admin "
            f"PATCH of a user's name, {lat['count']:,} at {lat['rate']:.0f}/s (open loop), "
            f"answers {lat['statuses']}.",
            "",
            "| events arrived | distinct ids | p50 ms | p99 ms | max ms | min ms |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {lat['arrived']:,} of {lat['count']:,} | {lat['distinct']:,} | "
            f"{_ms(lat['p50'])} | {_ms(lat['p99'])} | {_ms(lat['max'])} | {_ms(lat['min'])} |",
        ]
    if runs:
        lines += [
            "",
            "### Delivery throughput (events queued with no worker, then one "
            "`python -m app worker`)",
            "",
            "| JOBS_CONCURRENCY | events/s | arrived | start-up s | end-to-end s | "
            "CPU ms/event: worker | postgres |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
    for r in runs:
        if "rate" not in r:
            lines.append(f"| {r['concurrency']} | - | {r['arrived']:,} of {r['events']:,} |||||")
            continue
        pg = r["postgres_cpu"]
        pg_ms = "-" if pg is None else f"{1000 * pg / max(r['arrived'], 1):.2f}"
        lines.append(
            f"| {r['concurrency']} | {r['rate']:,.0f} | {r['arrived']:,} of {r['events']:,} | "
            f"{r['startup']:.1f} | {r['end_to_end']:.1f} | "
            f"{1000 * r['worker_cpu'] / max(r['arrived'], 1):.2f} | "
            f"{pg_ms} |"
        )
    if fan is None:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "### Fan-out: the request's cost by endpoints subscribed (no worker running)",
        "",
        "| endpoints | PATCH p50 ms | p99 ms | mean ms | server CPU ms/request | "
        "job rows/request | worker CPU ms/delivery |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in fan:
        worker = ""
        if "worker_cpu_ms" in f:
            worker = f"{f['worker_cpu_ms']:.2f} ({f['deliveries']:,} deliveries)"
        lines.append(
            f"| {f['endpoints']} | {f['p50']:.1f} | {f['p99']:.1f} | {f['mean']:.1f} | "
            f"{_ms(f['server_cpu_ms'])} | {f['jobs_per_request']:.2f} | {worker} |"
        )
    return "\n".join(lines) + "\n"


async def sample(url: str, count: int) -> tuple[list[str], str]:
    conn = await _connect(url)
    try:
        ids = await fixtures.sample_user_ids(conn, count)
        return ids, await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()


def main() -> None:
    if sys.argv[1:2] == ["--receiver"]:
        receiver_main(int(sys.argv[2]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200, help="PATCHes/s of the latency run")
    parser.add_argument("--seconds", type=float, default=20, help="length of the latency run")
    parser.add_argument("--events", type=int, default=10_000, help="events of a throughput run")
    parser.add_argument("--concurrency", default="4,16", help="JOBS_CONCURRENCY of the runs")
    parser.add_argument("--requests", type=int, default=300, help="PATCHes per fan-out case")
    parser.add_argument("--database-url")
    parser.add_argument(
        "--only",
        choices=PHASES,
        action="append",
        help="run only this phase (repeatable); all three by default",
    )
    args = parser.parse_args()
    phases = set(args.only or PHASES)
    load = os.getloadavg()
    BENCH_DATA.mkdir(parents=True, exist_ok=True)
    needed = max(int(args.rate * args.seconds), args.events, args.requests + 30)
    with bench_db(args.database_url) as url:
        asyncio.run(seed_users.seed(url, needed + 1000))
        user_ids, version = asyncio.run(sample(url, needed))
        facts = {"load": load, "postgres": version}
        postmaster = asyncio.run(postmaster_pid(url))
        asyncio.run(clean(url, 0, datetime.now(UTC)))
        token = asyncio.run(admin_token(url))
        lat = latency(url, token, args, user_ids) if "latency" in phases else None
        print(f"    {lat}", flush=True)
        runs = []
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            if "throughput" not in phases:
                break
            run = throughput(url, token, concurrency, user_ids[: args.events], postmaster)
            print(f"    {run.get('rate', 0):.0f} events/s, {run['jobs']}", flush=True)
            runs.append(run)
        fan = (
            fanout_cost(url, token, args.requests, user_ids, postmaster)
            if "fanout" in phases
            else None
        )
        asyncio.run(_fetchval(url, "DELETE FROM webhook_endpoints"))
    command = " ".join([".venv/bin/python -m bench.webhooks", *sys.argv[1:]])
    if os.environ.get("MAKELEVEL") and not sys.argv[1:]:
        command = "make bench-webhooks"
    table = render(facts, lat, runs, fan, command)
    print("\n" + table)
    if phases != set(PHASES):
        return  # a partial run does not replace the results file
    path = RESULTS / "webhooks.md"
    path.write_text(table, "utf-8")
    print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
