"""TypeID prefixes and the one parser every path or body id goes through."""

import re
from collections.abc import Callable
from enum import StrEnum

from typeid import TypeID


class Prefix(StrEnum):
    USER = "ausr"
    APP = "aapp"
    ENV = "aenv"
    SESSION = "ases"
    FAMILY = "asfm"
    API_KEY = "akey"
    AUDIT = "aevt"
    WEBHOOK = "awhk"
    WEBHOOK_DELIVERY = "awdl"
    SIGNING_KEY = "ajwk"
    MFA_ENROLLMENT = "amfa"


def new_id(prefix: Prefix) -> str:
    return str(TypeID(prefix=prefix.value))


# A TypeID's suffix: 26 characters of lower-case Crockford base32, the first at most "7" (the
# 128 bits of a UUID). The spec's rule as one regular expression: TypeID.from_string, which
# checks the same, cost 10 µs a call, and every id of a request goes through here (a Faroe
# get_user checks two).
_SUFFIX = re.compile(r"[0-7][0-9a-hjkmnp-tv-z]{25}")


def is_valid(value: str, prefix: Prefix) -> bool:
    """True when `value` is a well-formed TypeID with exactly this prefix."""
    return (
        len(value) == len(prefix.value) + 27
        and value.startswith(prefix.value + "_")
        and _SUFFIX.fullmatch(value, len(prefix.value) + 1) is not None
    )


def checker(prefix: Prefix) -> Callable[[str], str]:
    """A validator for request models and path parameters: wrong shape or prefix -> 422."""

    def check(value: str) -> str:
        if not is_valid(value, prefix):
            raise ValueError(f"must be a TypeID with prefix {prefix.value}_")
        return value

    return check
