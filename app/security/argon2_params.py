"""Argon2 parameters: those new hashes get, the bounds on those the service will store or verify,
and the one reader and writer of argon2 PHC strings.

The bounds exist because a hash carries its own cost: verifying `m=4294967295` tries to allocate
4 TiB (a 500), and `t=4294967295` holds a hashing slot for hours. So whatever writes a hash the
service will verify later (Faroe's create_user and update_user_password_hash) is refused out of
bounds, and a hash already stored out of bounds is never handed to argon2 at all.
"""

import base64
import binascii
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.settings import Settings

# What new hashes get besides ARGON2_*: libpass's defaults, and what a stock Faroe server uses.
HASH_LENGTH = 32
SALT_LENGTH = 16

# Not settings: they cost nothing to allow and no deployment needs others. 16 bytes is the
# shortest tag that still has 128 bits; 8 bytes is argon2's own minimum salt.
MIN_HASH_LENGTH, MAX_HASH_LENGTH = 16, 128
MIN_SALT_LENGTH, MAX_SALT_LENGTH = 8, 128
# argon2 needs 8 KiB (two blocks per slice of four) for each lane.
MIN_MEMORY_KIB_PER_LANE = 8


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


@dataclass(frozen=True, slots=True)
class Argon2Bounds:
    max_time_cost: int
    max_memory_kib: int
    max_parallelism: int

    @classmethod
    def from_settings(cls, settings: "Settings") -> "Argon2Bounds":
        return cls(
            settings.argon2_max_time_cost,
            settings.argon2_max_memory_kib,
            settings.argon2_max_parallelism,
        )

    def violation(
        self, parameters: Argon2Parameters, salt_length: int, hash_length: int
    ) -> str | None:
        """None when argon2 may run with these, else why not: the one decision, for what Faroe
        sends, for what is stored, and for the service's own ARGON2_* settings. The reason names
        the bound only, never a user, a salt or a hash, so it can be logged."""
        t, m, p = parameters.time_cost, parameters.memory_kib, parameters.parallelism
        if not 1 <= t <= self.max_time_cost:
            return f"argon2 time cost {t} outside 1..{self.max_time_cost} (ARGON2_MAX_TIME_COST)"
        if not 1 <= p <= self.max_parallelism:
            return (
                f"argon2 parallelism {p} outside 1..{self.max_parallelism} (ARGON2_MAX_PARALLELISM)"
            )
        if not MIN_MEMORY_KIB_PER_LANE * p <= m <= self.max_memory_kib:
            return (
                f"argon2 memory {m} KiB outside {MIN_MEMORY_KIB_PER_LANE * p}.."
                f"{self.max_memory_kib} (8 KiB per lane; ARGON2_MAX_MEMORY_KIB)"
            )
        if not MIN_SALT_LENGTH <= salt_length <= MAX_SALT_LENGTH:
            return (
                f"argon2 salt of {salt_length} bytes outside {MIN_SALT_LENGTH}..{MAX_SALT_LENGTH}"
            )
        if not MIN_HASH_LENGTH <= hash_length <= MAX_HASH_LENGTH:
            return (
                f"argon2 hash of {hash_length} bytes outside {MIN_HASH_LENGTH}..{MAX_HASH_LENGTH}"
            )
        return None


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
