"""Argon2 parameters: those new hashes get, how two sets compare, and the one reader and writer
of argon2 PHC strings."""

import base64
import binascii
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.settings import Settings


@dataclass(frozen=True, slots=True)
class Argon2Parameters:
    time_cost: int
    memory_kib: int
    parallelism: int

    @classmethod
    def from_settings(cls, settings: "Settings") -> "Argon2Parameters":
        return cls(
            settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism
        )

    def at_least_as_strong_as(self, other: "Argon2Parameters") -> bool:
        """Whether a hash with these parameters costs an attacker at least what `other` does per
        guess in each of the two costs on its own: memory (what limits guessing in parallel on
        GPUs) and passes over it. One is not counted against the other, so a hash below ARGON2_*
        in either is brought to ARGON2_*. Lanes are not compared: they split the same memory and
        the same passes between threads, so the work per guess is the same whatever their
        number."""
        return self.memory_kib >= other.memory_kib and self.time_cost >= other.time_cost


# ---- PHC strings: $argon2<type>$v=<version>$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash> --------

# Every form argon2's own decoder verifies (version optional, meaning 0x10); libpass's keyid and
# data extensions are not among them. Numbers past 20 digits (far past any bound) are not read,
# so int() never meets its digit limit.
_PHC = re.compile(
    r"\$argon2(id|i|d)\$(?:v=([0-9]{1,20})\$)?m=([0-9]{1,20}),t=([0-9]{1,20}),p=([0-9]{1,20})"
    r"\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)"
)
_VERSION_1_0 = 0x10
VERSION = 0x13  # 19, the version argon2 writes today and the one Faroe's ids stand for


@dataclass(frozen=True, slots=True)
class Argon2Hash:
    type: str  # "id", "i" or "d"
    version: int
    parameters: Argon2Parameters
    salt: bytes
    hash: bytes

    def to_phc(self) -> str:
        """The canonical PHC string (standard base64 without padding), as argon2 writes it."""
        p = self.parameters
        version = "" if self.version == _VERSION_1_0 else f"v={self.version}$"
        return (
            f"$argon2{self.type}${version}m={p.memory_kib},t={p.time_cost},p={p.parallelism}"
            f"${_b64_nopad(self.salt)}${_b64_nopad(self.hash)}"
        )


def _b64_nopad(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def parse_phc(stored: str) -> Argon2Hash | None:
    """The argon2 hash a PHC string holds, or None when it is not one argon2 could verify. Not
    necessarily canonical: compare `to_phc()` with the input where that matters."""
    match = _PHC.fullmatch(stored)
    if match is None:
        return None
    type_, version, memory, time, parallelism, salt, hash_ = match.groups()
    try:
        salt_bytes = base64.b64decode(salt + "=" * (-len(salt) % 4), validate=True)
        hash_bytes = base64.b64decode(hash_ + "=" * (-len(hash_) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return Argon2Hash(
        type=type_,
        version=int(version) if version is not None else _VERSION_1_0,
        parameters=Argon2Parameters(int(time), int(memory), int(parallelism)),
        salt=salt_bytes,
        hash=hash_bytes,
    )
