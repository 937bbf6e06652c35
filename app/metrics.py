"""Prometheus metrics of one app: request counts and latencies (recorded by the Observe
middleware), and gauges read at scrape time from the password hasher and the database pool.

Each app has its own CollectorRegistry, so several apps in one process (the tests) do not
collide; with WORKERS > 1 each worker answers /metrics for itself (scrape them one by one).
"""

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.datastructures import State

from app.security.passwords import PasswordHasher

# Anything else a client sends as a method is counted as "OTHER", so a scanner cannot mint
# an unbounded number of label values.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route label of a request no route answered (404, 413 early)


class Metrics:
    def __init__(self, state: State) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "userkeep_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "userkeep_http_request_duration_seconds",
            "Time from the request's arrival to the end of its response, by route template.",
            ["route", "method"],
            registry=self.registry,
        )
        self.registry.register(_Gauges(state))
        # labels() locks and builds a key on every call; the label sets are few (routes x
        # methods x statuses), so keep their children at hand for the per-request path.
        self._children: dict[tuple[str | None, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, route: str | None, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            label = route or UNMATCHED
            verb = method if method in METHODS else "OTHER"
            children = (
                self.requests.labels(label, verb, str(status)),
                self.latency.labels(label, verb),
            )
            if verb != "OTHER":  # a scanner's made-up methods would grow the cache
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class _Gauges(Collector):
    """Read at each scrape from app.state, which holds the hasher and engine once started."""

    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        hasher: PasswordHasher | None = getattr(self.state, "hasher", None)
        if hasher is not None:
            yield _gauge(
                "userkeep_password_hash_queue_depth",
                "Requests waiting for a password hashing slot (503 past HASH_QUEUE_MAX).",
                hasher.waiting,
            )
            yield _gauge(
                "userkeep_password_hashes_in_flight",
                "Password hashes (or verifications) being computed now.",
                hasher.hashing,
            )
            yield _gauge(
                "userkeep_password_hash_slots",
                "Password hashes computed at once at most (HASH_CONCURRENCY).",
                hasher.concurrency,
            )
        engine = getattr(self.state, "engine", None)
        pool = getattr(engine, "pool", None)
        if pool is not None and hasattr(pool, "checkedout"):
            yield _gauge(
                "userkeep_db_pool_checked_out",
                "Database connections in use by requests now.",
                pool.checkedout(),
            )
            yield _gauge(
                "userkeep_db_pool_size", "Connections the pool keeps (DB_POOL_SIZE).", pool.size()
            )
            # QueuePool counts overflow from -size upwards as it opens connections; only the
            # part above zero is connections beyond the pool size (at most DB_MAX_OVERFLOW).
            yield _gauge(
                "userkeep_db_pool_overflow",
                "Connections open beyond DB_POOL_SIZE now.",
                max(0, pool.overflow()),
            )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
