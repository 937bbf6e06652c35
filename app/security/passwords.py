"""Password policy and hashing.

Hashing goes through libpass's CryptContext: new hashes are argon2id (m=19456 KiB, t=2, p=1,
the OWASP minimum), while imported bcrypt hashes still verify and are re-hashed on sign-in.
Hashing is CPU-bound, so it runs in worker threads, at most `concurrency` at a time; when more
than `queue_max` requests already wait, the caller gets a 503 at once instead of a long queue.
"""

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import cache
from importlib import resources
from typing import TypeVar

from passlib.context import CryptContext

from app.errors import HashingOverloaded, ValidationFailed

T = TypeVar("T")

CONTEXT = CryptContext(
    schemes=["argon2", "bcrypt"],
    deprecated=["bcrypt"],
    argon2__type="ID",
    argon2__memory_cost=19456,
    argon2__rounds=2,
    argon2__parallelism=1,
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
    def __init__(self, concurrency: int = 0, queue_max: int = 16) -> None:
        self.concurrency = concurrency or os.cpu_count() or 1
        self.queue_max = queue_max
        self._slots = asyncio.Semaphore(self.concurrency)
        self.waiting = 0
        self.hashing = 0  # hashes running now (GET /metrics)
        self.admitted = 0
        self._dummy_hash: str | None = None

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
        result: str = await self._run(CONTEXT.hash, password)
        return result

    async def verify(self, password: str, stored: str | None) -> tuple[bool, str | None]:
        """(ok, replacement hash or None). With no stored hash, a dummy hash is verified so an
        unknown account costs the same time as a wrong password."""
        if stored is None or not CONTEXT.identify(stored):
            await self._run(CONTEXT.verify, password, await self._dummy())
            return False, None
        ok, new_hash = await self._run(CONTEXT.verify_and_update, password, stored)
        return bool(ok), new_hash

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = str(await asyncio.to_thread(CONTEXT.hash, os.urandom(16).hex()))
        return self._dummy_hash
