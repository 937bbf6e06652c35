"""TypeID prefixes and the one parser every path or body id goes through."""

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


def is_valid(value: str, prefix: Prefix) -> bool:
    """True when `value` is a well-formed TypeID with exactly this prefix."""
    if not value.startswith(prefix.value + "_") or len(value) != len(prefix.value) + 27:
        return False
    try:
        parsed = TypeID.from_string(value)
    except Exception:  # the library raises several types for malformed suffixes
        return False
    return parsed.prefix == prefix.value


def checker(prefix: Prefix) -> Callable[[str], str]:
    """A validator for request models and path parameters: wrong shape or prefix -> 422."""

    def check(value: str) -> str:
        if not is_valid(value, prefix):
            raise ValueError(f"must be a TypeID with prefix {prefix.value}_")
        return value

    return check
