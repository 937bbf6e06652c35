"""The COUNT/SECONDS syntax of the RATE_LIMIT_* settings (the counting is services/ratelimit.py).

Kept apart so Settings can check a limit at start-up without importing the service that uses it.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    count: int
    window: int  # seconds

    @classmethod
    def parse(cls, spec: str) -> "Limit":
        """`"100/3600"` = 100 events per hour."""
        count, sep, window = spec.strip().partition("/")
        if not sep or not count.isdigit() or not window.isdigit() or int(window) == 0:
            raise ValueError(f"rate limit {spec!r} is not COUNT/SECONDS[,COUNT/SECONDS…]")
        return cls(int(count), int(window))


def parse_limits(spec: str) -> tuple[Limit, ...]:
    """`"10/60,100/3600"`: every limit must hold."""
    return tuple(Limit.parse(part) for part in spec.split(",") if part.strip())
