"""Password policy and hashing.

Hashing goes through libpass's CryptContext: new hashes are argon2id with the ARGON2_* settings,
while imported bcrypt and Django PBKDF2-SHA256 hashes still verify and are re-hashed on sign-in,
as is any argon2 hash weaker than ARGON2_* (and argon2i/argon2d). An argon2id hash at least as
strong is never re-hashed: a Faroe server can verify only the algorithm ids it knows (DESIGN
"Faroe door details"). A stored hash whose cost is out of bounds is never verified (see
argon2_params, stored_hash_problem).

Hashing is CPU-bound, so it runs in worker threads, at most `concurrency` at a time; when more
than `queue_max` requests already wait, the caller gets a 503 at once instead of a long queue.
"""

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, TypeVar

from passlib.context import CryptContext

from app.errors import HashingOverloaded, ValidationFailed
from app.security.argon2_params import VERSION, Argon2Bounds, Argon2Parameters, parse_phc

if TYPE_CHECKING:
    from app.settings import Settings

T = TypeVar("T")

log = logging.getLogger("userkeep.passwords")


# What sign-in verifies: argon2 (new hashes), and the imported formats, re-hashed once verified.
SCHEMES = ("argon2", "bcrypt", "django_pbkdf2_sha256")
DEPRECATED = ("bcrypt", "django_pbkdf2_sha256")
# Tells the formats apart (identify) whatever the ARGON2_* settings.
_FORMATS = CryptContext(schemes=list(SCHEMES))


def make_context(parameters: Argon2Parameters) -> CryptContext:
    """The CryptContext that hashes new passwords with `parameters` (hash and salt lengths are
    libpass's, argon2_params.HASH_LENGTH and SALT_LENGTH)."""
    return CryptContext(
        schemes=list(SCHEMES),
        deprecated=list(DEPRECATED),
        argon2__type="ID",
        argon2__memory_cost=parameters.memory_kib,
        argon2__rounds=parameters.time_cost,
        argon2__parallelism=parameters.parallelism,
    )


@cache
def common_passwords() -> frozenset[str]:
    text = resources.files("app.security").joinpath("common_passwords.txt").read_text("utf-8")
    return frozenset(line for line in text.splitlines() if line)


def check_policy(password: str, min_length: int, max_length: int, field: str = "password") -> None:
    """Length bounds and the common-password list; no composition rules (NIST SP 800-63B)."""
    if len(password) < min_length:
        raise ValidationFailed(field, f"must be at least {min_length} characters")
    if len(password) > max_length:
        raise ValidationFailed(field, f"must be at most {max_length} characters")
    if password.lower() in common_passwords():
        raise ValidationFailed(field, "is too common; choose a less guessable password")


def default_concurrency(workers: int) -> int:
    """Hashes at once per worker process when HASH_CONCURRENCY is 0: the cores shared among the
    WORKERS processes, at least one. Each argon2id hash holds ARGON2_MEMORY_KIB (19 MiB) and
    works it from one core: more hashes than cores only evict each other from the caches.
    Measured (`BENCH_ONLY=hash,signin`, 2 cores, 2 workers): one per core in each worker (four
    at once) made sign-in 0.75-0.77x of the argon2id ceiling, one per worker 0.85-0.89x."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


class PasswordHasher:
    def __init__(
        self,
        parameters: Argon2Parameters,
        bounds: Argon2Bounds,
        concurrency: int = 0,
        queue_max: int = 16,
    ) -> None:
        self.parameters = parameters
        self.bounds = bounds
        self.context = make_context(parameters)
        self.concurrency = concurrency or os.cpu_count() or 1
        self.queue_max = queue_max
        self._slots = asyncio.Semaphore(self.concurrency)
        self.waiting = 0
        self.hashing = 0  # hashes running now (GET /metrics)
        self.admitted = 0
        self._dummy_hash: str | None = None

    @classmethod
    def from_settings(cls, settings: "Settings") -> "PasswordHasher":
        return cls(
            Argon2Parameters.from_settings(settings),
            Argon2Bounds.from_settings(settings),
            settings.hash_concurrency or default_concurrency(settings.workers),
            settings.hash_queue_max,
        )

    @asynccontextmanager
    async def admission(self) -> AsyncIterator[None]:
        """A place in line for a request that will hash, taken when the request starts. A
        burst is refused here, before any database work, so the 503 is immediate; checking
        only at the hash itself would let every request of a burst do its queries first."""
        if self.admitted >= self.concurrency + self.queue_max:
            raise HashingOverloaded()
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._slots.locked() and self.waiting >= self.queue_max:
            raise HashingOverloaded()
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.hashing += 1
        try:
            return await asyncio.to_thread(fn, *args)
        finally:
            self.hashing -= 1
            self._slots.release()

    async def hash(self, password: str) -> str:
        result: str = await self._run(self.context.hash, password)
        return result

    async def verify(self, password: str, stored: str | None) -> tuple[bool, str | None]:
        """(ok, replacement hash or None). With no stored hash, or one this service does not
        verify, a dummy hash is verified so it costs the same time as a wrong password."""
        if stored is None or not self._verifiable(stored):
            await self._run(self.context.verify, password, await self._dummy())
            return False, None
        return await self._run(self._verify_and_update, password, stored)

    def _verifiable(self, stored: str) -> bool:
        if not recognised(stored):
            return False  # e.g. a Faroe algorithm kept intact (services/faroe): not ours to verify
        problem = stored_hash_problem(stored, self.bounds)
        if problem is not None:
            log.warning("stored password hash not verified: %s", problem)
            return False
        return True

    def _verify_and_update(self, password: str, stored: str) -> tuple[bool, str | None]:
        """In a worker thread: the verify and, when the hash is to be replaced, the new hash."""
        if not self.context.verify(_as_bcrypt_saw_it(password, stored), stored):
            return False, None
        return True, self.context.hash(password) if self._needs_rehash(stored) else None

    def _needs_rehash(self, stored: str) -> bool:
        parsed = parse_phc(stored)
        if parsed is not None and parsed.type == "id" and parsed.version == VERSION:
            # libpass would re-hash any parameters other than its own, a downgrade for a
            # stronger hash and, for one from Faroe, an id that Faroe server cannot verify.
            return not parsed.parameters.at_least_as_strong_as(self.parameters)
        return bool(self.context.needs_update(stored))

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = str(await asyncio.to_thread(self.context.hash, os.urandom(16).hex()))
        return self._dummy_hash


# Above ~2 s per verify on a server core; imported hashes use 10-12.
BCRYPT_MAX_COST = 15
BCRYPT_MAX_BYTES = 72
# Django's own default is 1,000,000-1,200,000 (5.x, 6.0); 2,000,000 is ~1.5 s in one slot.
PBKDF2_MAX_ITERATIONS = 2_000_000


def recognised(stored: str) -> bool:
    """Whether `stored` is in a format sign-in verifies (its bounds aside)."""
    return _FORMATS.identify(stored) is not None


def stored_hash_problem(stored: str, bounds: Argon2Bounds) -> str | None:
    """None when `stored` is a hash this service verifies within its bounds, else why not (a
    reason naming the format or the bound, never the hash): the one decision for a stored hash
    at sign-in and for an imported one (services/user_import)."""
    scheme = _FORMATS.identify(stored)
    if scheme is None:
        return "not a password hash format this service verifies"
    if scheme == "argon2":
        # The parameters come from the stored string: bounded before argon2 sees them.
        parsed = parse_phc(stored)
        if parsed is None:
            return "unreadable argon2 hash"
        return bounds.violation(parsed.parameters, len(parsed.salt), len(parsed.hash))
    if scheme == "bcrypt":
        if not _BCRYPT.fullmatch(stored):
            return "malformed bcrypt hash"  # libpass would raise at verify: a 500
        if _bcrypt_cost(stored) > BCRYPT_MAX_COST:
            # $2b$31$ is 2^31 rounds: hours in a hashing slot.
            return f"bcrypt cost over {BCRYPT_MAX_COST}"
    if scheme == "django_pbkdf2_sha256":
        if not _DJANGO_PBKDF2.fullmatch(stored):
            return "malformed pbkdf2_sha256 hash"
        if _pbkdf2_iterations(stored) > PBKDF2_MAX_ITERATIONS:
            return f"pbkdf2 iterations over {PBKDF2_MAX_ITERATIONS:,}"
    return None


# bcrypt's own minimum cost is 4; 22 characters of salt and 31 of hash in its base64 alphabet.
_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[1-9][0-9])\$[./A-Za-z0-9]{53}")
# Django's `pbkdf2_sha256$<iterations>$<salt>$<base64 of the 32-byte SHA-256 output>`.
_DJANGO_PBKDF2 = re.compile(
    r"pbkdf2_sha256\$[1-9][0-9]{0,9}\$[A-Za-z0-9./+_-]{1,128}\$[A-Za-z0-9+/]{43}="
)


def _pbkdf2_iterations(stored: str) -> int:
    """The iterations of `pbkdf2_sha256$<iterations>$<salt>$<hash>`; past the bound when
    unreadable (or too long to be worth converting)."""
    iterations = stored.split("$", 2)[1] if stored.count("$") >= 2 else ""
    if iterations.isdigit() and len(iterations) <= 10:
        return int(iterations)
    return PBKDF2_MAX_ITERATIONS + 1


def _bcrypt_cost(stored: str) -> int:
    """The cost of a `$2a$`/`$2b$`/`$2y$` hash (the two digits after the prefix)."""
    cost = stored[4:6]
    return int(cost) if cost.isdigit() else BCRYPT_MAX_COST + 1


def _as_bcrypt_saw_it(password: str, stored: str) -> str:
    """bcrypt only ever read the first 72 bytes of a password, so a hash imported from a system
    using it was made from those; bcrypt >= 5 raises instead of truncating (a 500 for any longer
    password). The new hash after a successful sign-in is made from the whole password."""
    if not stored.startswith(("$2a$", "$2b$", "$2y$")):
        return password
    data = password.encode("utf-8")
    if len(data) <= BCRYPT_MAX_BYTES:
        return password
    return data[:BCRYPT_MAX_BYTES].decode("utf-8", errors="ignore")
