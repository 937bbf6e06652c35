"""Password policy and hashing.

Hashing goes through libpass's CryptContext: new hashes are argon2id with the ARGON2_* settings,
while imported bcrypt hashes still verify and are re-hashed on sign-in, as is any argon2 hash
weaker than ARGON2_*. An argon2id hash at least as strong is never re-hashed: a Faroe server can
verify only the algorithm ids it knows (DESIGN "Faroe door details"). A stored argon2 hash whose
parameters are out of bounds is never verified (see argon2_params).

Hashing is CPU-bound, so it runs in worker threads, at most `concurrency` at a time; when more
than `queue_max` requests already wait, the caller gets a 503 at once instead of a long queue.
"""

import asyncio
import logging
import os
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


def make_context(parameters: Argon2Parameters) -> CryptContext:
    """The CryptContext that hashes new passwords with `parameters` (hash and salt lengths are
    libpass's, argon2_params.HASH_LENGTH and SALT_LENGTH)."""
    return CryptContext(
        schemes=["argon2", "bcrypt"],
        deprecated=["bcrypt"],
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
            settings.hash_concurrency,
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
        scheme = self.context.identify(stored)
        if scheme is None:
            return False
        if scheme == "argon2":
            # The parameters come from the stored string: bounded before argon2 sees them.
            parsed = parse_phc(stored)
            problem = (
                "unreadable argon2 hash"
                if parsed is None
                else self.bounds.violation(parsed.parameters, len(parsed.salt), len(parsed.hash))
            )
            if problem is not None:
                log.warning("stored password hash not verified: %s", problem)
                return False
        if scheme == "bcrypt" and _bcrypt_cost(stored) > BCRYPT_MAX_COST:
            # $2b$31$ is 2^31 rounds: hours in a hashing slot.
            log.warning("stored password hash not verified: bcrypt cost over %d", BCRYPT_MAX_COST)
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
