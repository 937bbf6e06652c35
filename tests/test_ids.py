"""app.ids.is_valid: the TypeID spec's rule as a regular expression, held to the typeid library."""

import random

import pytest
from typeid import TypeID

from app.ids import Prefix, is_valid, new_id

VALID = "ausr_01h455vb4pex5vsknk084sn02q"


def library_says(value: str, prefix: Prefix) -> bool:
    if not value.startswith(prefix.value + "_") or len(value) != len(prefix.value) + 27:
        return False
    try:
        return TypeID.from_string(value).prefix == prefix.value
    except Exception:
        return False


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (VALID, True),
        ("ausr_71h455vb4pex5vsknk084sn02q", True),  # the largest first character
        ("ausr_81h455vb4pex5vsknk084sn02q", False),  # over 128 bits
        (VALID.upper(), False),
        ("ausr_01H455VB4PEX5VSKNK084SN02Q", False),  # the suffix is lower case only
        ("ausr_01h455vb4pex5vsknk084sn02i", False),  # i, l, o, u are not Crockford base32
        ("ausr_01h455vb4pex5vsknk084sn02l", False),
        ("ausr_01h455vb4pex5vsknk084sn02o", False),
        ("ausr_01h455vb4pex5vsknk084sn02u", False),
        ("aapp_01h455vb4pex5vsknk084sn02q", False),  # another prefix
        ("ausr_01h455vb4pex5vsknk084sn02", False),  # short
        ("ausr_01h455vb4pex5vsknk084sn02qq", False),  # long
        ("ausr-01h455vb4pex5vsknk084sn02q", False),
        ("ausr_01h455vb4pex5vsknk084sn0\u0662q", False),  # a non-ASCII digit
        ("", False),
    ],
)
def test_the_spec_cases(value, valid):
    assert is_valid(value, Prefix.USER) is valid
    assert library_says(value, Prefix.USER) is valid


def test_it_agrees_with_the_library_on_ten_thousand_mutated_ids():
    rng = random.Random(7)
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-."
    for _ in range(10_000):
        value = new_id(Prefix.USER)
        at = rng.randrange(len(value))
        value = value[:at] + rng.choice(alphabet) + value[at + 1 :]
        assert is_valid(value, Prefix.USER) == library_says(value, Prefix.USER), value
