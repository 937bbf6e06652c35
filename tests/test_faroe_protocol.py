"""Conformance tests for app.faroe.protocol against /work/shared/faroe-protocol.md (§3.1, §6.1).

Pure and synchronous: no database, no HTTP, nothing from conftest.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from app.faroe.protocol import (
    ACTION_NAMES,
    Action,
    ActionError,
    CreateUser,
    DeleteUser,
    FaroeUser,
    GetUser,
    GetUserByEmailAddress,
    IncrementUserSessionsCounter,
    InvalidRequest,
    UpdateUserEmailAddress,
    UpdateUserPasswordHash,
    empty_result,
    error_result,
    generate_action_invocation_id,
    parse_request,
    user_result,
)

HASH = bytes(range(32))
SALT = bytes(range(16))
HASH_B64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
SALT_B64 = "AAECAwQFBgcICQoLDA0ODw=="
USER_ID = "2mwe2e3ihz6ktm5puegeryhe"
ALGORITHM_ID = "argon2id.3.65536.1.32"
INVOCATION_ID = "x2mhb6rjz8wvq3ntkfpa5ceo"
ID_ALPHABET = "abcdefghjkmnopqrstuvwxyz23456789"


def body(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# --- §6.1 request vectors ------------------------------------------------------------------

REQUEST_VECTORS: list[tuple[str, bytes, Action]] = [
    (
        "create_user",
        b'{"action":"create_user","arguments":{"email_address":"user@example.com",'
        b'"password_hash":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",'
        b'"password_hash_algorithm_id":"argon2id.3.65536.1.32",'
        b'"password_salt":"AAECAwQFBgcICQoLDA0ODw=="}}',
        CreateUser("user@example.com", HASH, ALGORITHM_ID, SALT),
    ),
    (
        "get_user",
        b'{"action":"get_user","arguments":{"user_id":"2mwe2e3ihz6ktm5puegeryhe"}}',
        GetUser(USER_ID),
    ),
    (
        "get_user_by_email_address",
        b'{"action":"get_user_by_email_address","arguments":{"email_address":"user@example.com"}}',
        GetUserByEmailAddress("user@example.com"),
    ),
    (
        "update_user_email_address",
        b'{"action":"update_user_email_address","arguments":{"user_id":"2mwe2e3ihz6ktm5puegeryhe",'
        b'"email_address":"new@example.com","user_email_address_counter":0}}',
        UpdateUserEmailAddress(USER_ID, "new@example.com", 0),
    ),
    (
        "update_user_password_hash",
        b'{"action":"update_user_password_hash","arguments":{"user_id":"2mwe2e3ihz6ktm5puegeryhe",'
        b'"password_hash":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",'
        b'"password_hash_algorithm_id":"argon2id.3.65536.1.32",'
        b'"password_salt":"AAECAwQFBgcICQoLDA0ODw==","user_password_hash_counter":3}}',
        UpdateUserPasswordHash(USER_ID, HASH, ALGORITHM_ID, SALT, 3),
    ),
    (
        "increment_user_sessions_counter",
        b'{"action":"increment_user_sessions_counter","arguments":'
        b'{"user_id":"2mwe2e3ihz6ktm5puegeryhe","user_sessions_counter":0}}',
        IncrementUserSessionsCounter(USER_ID, 0),
    ),
    (
        "delete_user",
        b'{"action":"delete_user","arguments":{"user_id":"2mwe2e3ihz6ktm5puegeryhe"}}',
        DeleteUser(USER_ID),
    ),
]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [pytest.param(raw, expected, id=name) for name, raw, expected in REQUEST_VECTORS],
)
def test_request_vector_parses(raw: bytes, expected: Action) -> None:
    parsed = parse_request(raw)
    assert type(parsed) is type(expected)
    assert parsed == expected


def test_request_vectors_cover_every_action() -> None:
    assert tuple(name for name, _, _ in REQUEST_VECTORS) == ACTION_NAMES
    assert len(set(ACTION_NAMES)) == 7


def test_parsed_bytes_are_bytes_and_counters_are_ints() -> None:
    parsed = parse_request(REQUEST_VECTORS[4][1])
    assert isinstance(parsed, UpdateUserPasswordHash)
    assert type(parsed.password_hash) is bytes
    assert type(parsed.password_salt) is bytes
    assert type(parsed.user_password_hash_counter) is int


def test_repr_hides_hashes_and_salts() -> None:
    parsed = parse_request(REQUEST_VECTORS[0][1])
    assert HASH_B64 not in repr(parsed)
    assert repr(HASH) not in repr(parsed)
    assert repr(SALT) not in repr(parsed)


# --- §6.1 response vectors -----------------------------------------------------------------

USER = FaroeUser(
    id=USER_ID,
    email_address="user@example.com",
    password_hash=HASH,
    password_hash_algorithm_id=ALGORITHM_ID,
    password_salt=SALT,
    disabled=False,
    display_name="",
    email_address_counter=0,
    password_hash_counter=0,
    disabled_counter=0,
    sessions_counter=0,
)


def test_user_result_vector() -> None:
    assert user_result(INVOCATION_ID, USER) == (
        b'{"ok":true,"action_invocation_id":"x2mhb6rjz8wvq3ntkfpa5ceo","values":{"user":{'
        b'"id":"2mwe2e3ihz6ktm5puegeryhe","email_address":"user@example.com",'
        b'"password_hash":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",'
        b'"password_hash_algorithm_id":"argon2id.3.65536.1.32",'
        b'"password_salt":"AAECAwQFBgcICQoLDA0ODw==","disabled":false,"display_name":"",'
        b'"email_address_counter":0,"password_hash_counter":0,"disabled_counter":0,'
        b'"sessions_counter":0}}}'
    )


def test_empty_result_vector() -> None:
    assert empty_result(INVOCATION_ID) == (
        b'{"ok":true,"action_invocation_id":"x2mhb6rjz8wvq3ntkfpa5ceo","values":{}}'
    )


def test_error_result_vector() -> None:
    assert error_result(INVOCATION_ID, "user_not_found") == (
        b'{"ok":false,"action_invocation_id":"x2mhb6rjz8wvq3ntkfpa5ceo",'
        b'"error_code":"user_not_found"}'
    )


def test_user_result_non_default_values() -> None:
    user = replace(
        USER,
        password_hash=b"",
        password_salt=b"\xff",
        disabled=True,
        display_name="Ann",
        email_address_counter=1,
        password_hash_counter=2,
        disabled_counter=3,
        sessions_counter=2147483647,
    )
    assert user_result(INVOCATION_ID, user) == (
        b'{"ok":true,"action_invocation_id":"x2mhb6rjz8wvq3ntkfpa5ceo","values":{"user":{'
        b'"id":"2mwe2e3ihz6ktm5puegeryhe","email_address":"user@example.com",'
        b'"password_hash":"","password_hash_algorithm_id":"argon2id.3.65536.1.32",'
        b'"password_salt":"/w==","disabled":true,"display_name":"Ann",'
        b'"email_address_counter":1,"password_hash_counter":2,"disabled_counter":3,'
        b'"sessions_counter":2147483647}}}'
    )


def test_string_escaping_matches_json_stringify() -> None:
    # Node 20: JSON.stringify({a: "é\u2028\u0001\u007f\"\\/\t<>&"}) — U+2028 and U+007F raw,
    # U+0001 as a lowercase \u escape, "/" not escaped, no HTML escaping.
    user = replace(USER, display_name='é\u2028\u0001\u007f"\\/\t<>&')
    expected = (
        b'"display_name":"'
        + "é\u2028".encode()
        + b"\\u0001"
        + b"\x7f"
        + b'\\"'
        + b"\\\\"
        + b"/"
        + b"\\t"
        + b'<>&"'
    )
    assert expected == b'"display_name":"\xc3\xa9\xe2\x80\xa8\\u0001\x7f\\"\\\\/\\t<>&"'
    output = user_result(INVOCATION_ID, user)
    assert expected in output
    assert b'"display_name":"Ann"' not in output
    assert json.loads(output)["values"]["user"]["display_name"] == user.display_name


def test_non_ascii_is_emitted_raw_utf8() -> None:
    output = error_result("é€😀", "user_not_found")
    assert "é€😀".encode() in output
    assert b"\\u" not in output


# --- serializer refusals (§2.3: what the Faroe server cannot parse) --------------------------

COUNTER_FIELDS = [
    "email_address_counter",
    "password_hash_counter",
    "disabled_counter",
    "sessions_counter",
]


@pytest.mark.parametrize("field_name", COUNTER_FIELDS)
@pytest.mark.parametrize(
    "value",
    [
        pytest.param(-1, id="negative"),
        pytest.param(-2147483648, id="int32-min"),
        pytest.param(2147483648, id="above-int32"),
        pytest.param(1.0, id="float"),
        pytest.param(True, id="bool"),
        pytest.param(None, id="none"),
        pytest.param("0", id="str"),
    ],
)
def test_user_result_refuses_bad_counter(field_name: str, value: Any) -> None:
    user = replace(USER, **{field_name: value})
    with pytest.raises(ValueError):
        user_result(INVOCATION_ID, user)


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        pytest.param("display_name", None, id="display_name-none"),
        pytest.param("display_name", 5, id="display_name-int"),
        pytest.param("id", None, id="id-none"),
        pytest.param("email_address", b"a@b.c", id="email_address-bytes"),
        pytest.param("password_hash_algorithm_id", None, id="algorithm-none"),
        pytest.param("password_hash", HASH_B64, id="password_hash-str"),
        pytest.param("password_salt", None, id="password_salt-none"),
        pytest.param("disabled", 0, id="disabled-int"),
        pytest.param("disabled", None, id="disabled-none"),
        pytest.param("display_name", "\ud800", id="display_name-lone-surrogate"),
        pytest.param("id", "a\udfffb", id="id-lone-surrogate"),
    ],
)
def test_user_result_refuses_bad_field(field_name: str, value: Any) -> None:
    user = replace(USER, **{field_name: value})
    with pytest.raises(ValueError):
        user_result(INVOCATION_ID, user)


def test_lone_surrogate_from_request_cannot_be_echoed() -> None:
    # JSON.parse and json.loads both accept a "\ud800" escape, so the request is valid ...
    parsed = parse_request(b'{"action":"get_user","arguments":{"user_id":"\\ud800"}}')
    assert parsed == GetUser("\ud800")
    # ... but the id has no UTF-8 form, and Faroe rejects lone surrogates anyway.
    with pytest.raises(ValueError):
        user_result(INVOCATION_ID, replace(USER, id="\ud800"))


# Typed as Any so that deliberately wrong arguments need no type: ignore.
NOT_A_STR: Any = None


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: empty_result(NOT_A_STR), id="empty-none-id"),
        pytest.param(lambda: error_result(INVOCATION_ID, NOT_A_STR), id="error-none-code"),
        pytest.param(lambda: error_result(NOT_A_STR, "internal_error"), id="error-none-id"),
        pytest.param(lambda: error_result("\udc00", "internal_error"), id="error-surrogate-id"),
        pytest.param(lambda: error_result(INVOCATION_ID, "\ud800"), id="error-surrogate-code"),
        pytest.param(lambda: user_result(NOT_A_STR, USER), id="user-none-id"),
    ],
)
def test_envelope_refuses_bad_values(call: Callable[[], bytes]) -> None:
    with pytest.raises(ValueError):
        call()


def test_max_counter_accepted_by_serializer() -> None:
    user = replace(USER, email_address_counter=2147483647, password_hash_counter=2147483647)
    assert b'"email_address_counter":2147483647' in user_result(INVOCATION_ID, user)


# --- invalid requests (§3.1, §6.1) -----------------------------------------------------------

_UPH_PREFIX = '{"action":"update_user_password_hash","arguments":{"user_id":"u","password_hash":'
_ISC_PREFIX = '{"action":"increment_user_sessions_counter","arguments":{"user_id":"u",'

DOC_INVALID: list[tuple[str, bytes]] = [
    ("not-json", b"not json"),
    ("top-level-array", b"[]"),
    ("top-level-null", b"null"),
    ("empty-object", b"{}"),
    ("action-not-string", b'{"action":1,"arguments":{}}'),
    ("arguments-missing", b'{"action":"get_user"}'),
    ("arguments-null", b'{"action":"get_user","arguments":null}'),
    ("unknown-action", b'{"action":"nope","arguments":{}}'),
    ("user_id-missing", b'{"action":"get_user","arguments":{}}'),
    ("user_id-number", b'{"action":"get_user","arguments":{"user_id":5}}'),
    (
        "password_hash-unpadded",
        b'{"action":"create_user","arguments":{"email_address":"a@b.c","password_hash":"AA",'
        b'"password_hash_algorithm_id":"x","password_salt":""}}',
    ),
    ("counter-1.5", (_ISC_PREFIX + '"user_sessions_counter":1.5}}').encode()),
    ("counter-2147483648", (_ISC_PREFIX + '"user_sessions_counter":2147483648}}').encode()),
    ("counter-true", (_ISC_PREFIX + '"user_sessions_counter":true}}').encode()),
    ("arguments-array", b'{"action":"get_user","arguments":[]}'),
    (
        "password_hash-nonzero-trailing-bits",
        (
            _UPH_PREFIX + '"AB==","password_hash_algorithm_id":"x","password_salt":"",'
            '"user_password_hash_counter":0}}'
        ).encode(),
    ),
]

EXTRA_INVALID: list[tuple[str, bytes]] = [
    ("empty-body", b""),
    ("whitespace-body", b" \n"),
    ("top-level-string", b'"get_user"'),
    ("top-level-number", b"1"),
    ("top-level-true", b"true"),
    ("top-level-array-of-request", b'[{"action":"get_user","arguments":{"user_id":"u"}}]'),
    ("action-missing", b'{"arguments":{"user_id":"u"}}'),
    ("action-null", b'{"action":null,"arguments":{"user_id":"u"}}'),
    ("action-array", b'{"action":["get_user"],"arguments":{"user_id":"u"}}'),
    ("action-wrong-case", b'{"action":"GET_USER","arguments":{"user_id":"u"}}'),
    ("action-trailing-space", b'{"action":"get_user ","arguments":{"user_id":"u"}}'),
    ("arguments-string", b'{"action":"get_user","arguments":"{}"}'),
    ("arguments-number", b'{"action":"get_user","arguments":0}'),
    ("arguments-array-of-value", b'{"action":"get_user","arguments":["u"]}'),
    ("user_id-null", b'{"action":"get_user","arguments":{"user_id":null}}'),
    ("user_id-true", b'{"action":"get_user","arguments":{"user_id":true}}'),
    ("user_id-object", b'{"action":"get_user","arguments":{"user_id":{}}}'),
    ("user_id-nested-proto", b'{"action":"get_user","arguments":{"__proto__":{"user_id":"u"}}}'),
    ("trailing-garbage", b'{"action":"get_user","arguments":{"user_id":"u"}}x'),
    ("two-objects", b'{"action":"get_user","arguments":{"user_id":"u"}}{}'),
    ("trailing-comma", b'{"action":"get_user","arguments":{"user_id":"u",}}'),
    ("single-quotes", b"{'action':'get_user','arguments':{'user_id':'u'}}"),
    ("raw-control-char-in-string", b'{"action":"get_user","arguments":{"user_id":"a\x01"}}'),
    ("invalid-escape", b'{"action":"get_user","arguments":{"user_id":"\\x41"}}'),
    ("double-bom", b"\xef\xbb\xbf\xef\xbb\xbf" + REQUEST_VECTORS[1][1]),
    ("nan", b'{"action":"get_user","arguments":{"user_id":"u","x":NaN}}'),
    ("infinity", b'{"action":"get_user","arguments":{"user_id":"u","x":Infinity}}'),
    ("minus-infinity", b'{"action":"get_user","arguments":{"user_id":"u","x":-Infinity}}'),
    ("nan-counter", (_ISC_PREFIX + '"user_sessions_counter":NaN}}').encode()),
    ("infinity-counter", (_ISC_PREFIX + '"user_sessions_counter":Infinity}}').encode()),
    ("counter-1e400", (_ISC_PREFIX + '"user_sessions_counter":1e400}}').encode()),
    ("counter-minus-1e400", (_ISC_PREFIX + '"user_sessions_counter":-1e400}}').encode()),
    ("counter-5000-digits", (_ISC_PREFIX + f'"user_sessions_counter":{"9" * 5000}}}}}').encode()),
    ("counter-minus-2147483649", (_ISC_PREFIX + '"user_sessions_counter":-2147483649}}').encode()),
    ("counter-2147483648.0", (_ISC_PREFIX + '"user_sessions_counter":2147483648.0}}').encode()),
    ("counter-2147483647.5", (_ISC_PREFIX + '"user_sessions_counter":2147483647.5}}').encode()),
    ("counter-0.1", (_ISC_PREFIX + '"user_sessions_counter":0.1}}').encode()),
    ("counter-string", (_ISC_PREFIX + '"user_sessions_counter":"1"}}').encode()),
    ("counter-false", (_ISC_PREFIX + '"user_sessions_counter":false}}').encode()),
    ("counter-null", (_ISC_PREFIX + '"user_sessions_counter":null}}').encode()),
    ("counter-array", (_ISC_PREFIX + '"user_sessions_counter":[1]}}').encode()),
    ("counter-leading-zero", (_ISC_PREFIX + '"user_sessions_counter":01}}').encode()),
    ("counter-plus-sign", (_ISC_PREFIX + '"user_sessions_counter":+1}}').encode()),
    ("counter-hex", (_ISC_PREFIX + '"user_sessions_counter":0x1}}').encode()),
    ("invalid-utf8-only", b"\xff\xfe"),
    ("invalid-utf8-outside-string", b'{"action":"get_user","arguments":{"user_id":"u"}\xff}'),
    ("deeply-nested-arrays", b"[" * 100_000),
    (
        "deeply-nested-well-formed-member",
        b'{"action":"get_user","arguments":{"user_id":"u","x":'
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}}",
    ),
    ("deeply-nested-objects", b'{"a":' * 100_000),
]


def _argument_variants() -> list[tuple[str, bytes]]:
    """Each argument of each §6.1 vector dropped, nulled, or replaced by a wrong JSON type."""
    wrong_values: dict[str, list[tuple[str, object]]] = {
        "string": [("number", 1), ("true", True), ("null", None), ("array", ["u"]), ("obj", {})],
        "bytes": [("number", 0), ("null", None), ("array", []), ("bad-char", "AA*=")],
        "counter": [("str", "0"), ("null", None), ("true", True), ("array", [0]), ("1.5", 1.5)],
    }
    variants = []
    for name, raw, _ in REQUEST_VECTORS:
        request = json.loads(raw)
        for key, value in request["arguments"].items():
            if isinstance(value, int):
                kind = "counter"
            elif key in ("password_hash", "password_salt"):
                kind = "bytes"
            else:
                kind = "string"
            dropped = {k: v for k, v in request["arguments"].items() if k != key}
            variants.append((f"{name}-{key}-missing", body({"action": name, "arguments": dropped})))
            for label, wrong in wrong_values[kind]:
                changed = {**request["arguments"], key: wrong}
                variants.append(
                    (f"{name}-{key}-{label}", body({"action": name, "arguments": changed}))
                )
    return variants


INVALID = DOC_INVALID + EXTRA_INVALID + _argument_variants()


def test_invalid_case_ids_are_unique() -> None:
    ids = [case_id for case_id, _ in INVALID]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("raw", [pytest.param(raw, id=case_id) for case_id, raw in INVALID])
def test_invalid_request(raw: bytes) -> None:
    with pytest.raises(InvalidRequest):
        parse_request(raw)


def test_deep_nesting_is_invalid_request_not_recursion_error() -> None:
    try:
        parse_request(b"[" * 100_000)
    except InvalidRequest:
        pass
    except RecursionError:  # pragma: no cover - the point of the test
        pytest.fail("RecursionError escaped parse_request")
    else:  # pragma: no cover
        pytest.fail("deeply nested body accepted")


# --- accepted edge cases (§6.1) ------------------------------------------------------------


def _sessions(counter_literal: str) -> bytes:
    return (_ISC_PREFIX + f'"user_sessions_counter":{counter_literal}}}}}').encode()


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        pytest.param("1.0", 1, id="1.0"),
        pytest.param("1e0", 1, id="1e0"),
        pytest.param("1E+0", 1, id="1E+0"),
        pytest.param("10e-1", 1, id="10e-1"),
        pytest.param("-5", -5, id="-5"),
        pytest.param("-2147483648", -2147483648, id="int32-min"),
        pytest.param("2147483647", 2147483647, id="int32-max"),
        pytest.param("2147483647.0", 2147483647, id="int32-max-float"),
        pytest.param("-2147483648.0", -2147483648, id="int32-min-float"),
        pytest.param("-0", 0, id="-0"),
        pytest.param("-0.0", 0, id="-0.0"),
        pytest.param("0", 0, id="0"),
    ],
)
def test_counter_accepted(literal: str, expected: int) -> None:
    parsed = parse_request(_sessions(literal))
    assert parsed == IncrementUserSessionsCounter("u", expected)
    assert isinstance(parsed, IncrementUserSessionsCounter)
    assert type(parsed.user_sessions_counter) is int
    assert str(parsed.user_sessions_counter) == str(expected)


def test_extra_members_ignored() -> None:
    raw = (
        b'{"version":2,"action":"update_user_email_address","arguments":{"x":[1,{"y":null}],'
        b'"user_id":"u","email_address":"e@x.y","user_email_address_counter":7,"z":"w"},'
        b'"action_invocation_id":"abc"}'
    )
    assert parse_request(raw) == UpdateUserEmailAddress("u", "e@x.y", 7)


def test_over_long_number_in_extra_member_ignored() -> None:
    # JSON.parse turns it into Infinity and JSUS ignores the member; Python's int() digit limit
    # must not turn it into an invalid request.
    raw = b'{"action":"get_user","arguments":{"user_id":"u","x":' + b"9" * 5000 + b"}}"
    assert parse_request(raw) == GetUser("u")


def test_duplicate_keys_last_wins() -> None:
    raw = b'{"action":"get_user","arguments":{"user_id":"u","user_id":"v"}}'
    assert parse_request(raw) == GetUser("v")


def test_duplicate_action_last_wins() -> None:
    raw = b'{"action":"nope","action":"delete_user","arguments":{"user_id":"u"}}'
    assert parse_request(raw) == DeleteUser("u")


def test_padding_in_middle_quantum_accepted() -> None:
    raw = body(
        {
            "action": "create_user",
            "arguments": {
                "email_address": "a@b.c",
                "password_hash": "AA==AAAA",
                "password_hash_algorithm_id": "x",
                "password_salt": "",
            },
        }
    )
    assert parse_request(raw) == CreateUser("a@b.c", bytes(4), "x", b"")


def test_empty_salt_accepted() -> None:
    raw = body(
        {
            "action": "update_user_password_hash",
            "arguments": {
                "user_id": "u",
                "password_hash": HASH_B64,
                "password_hash_algorithm_id": "x",
                "password_salt": "",
                "user_password_hash_counter": 0,
            },
        }
    )
    assert parse_request(raw) == UpdateUserPasswordHash("u", HASH, "x", b"", 0)


def test_empty_strings_accepted() -> None:
    raw = b'{"action":"get_user_by_email_address","arguments":{"email_address":""}}'
    assert parse_request(raw) == GetUserByEmailAddress("")


def test_surrounding_json_whitespace_accepted() -> None:
    raw = b' \t\r\n{ "action" : "get_user" , "arguments" : { "user_id" : "u" } } \n'
    assert parse_request(raw) == GetUser("u")


def test_leading_bom_stripped() -> None:
    assert parse_request(b"\xef\xbb\xbf" + REQUEST_VECTORS[1][1]) == GetUser(USER_ID)


def test_invalid_utf8_inside_string_becomes_replacement_char() -> None:
    raw = b'{"action":"get_user","arguments":{"user_id":"a\xffb\xc3"}}'
    assert parse_request(raw) == GetUser("a\ufffdb\ufffd")


def test_escapes_decoded() -> None:
    raw = b'{"action":"get_user","arguments":{"user_id":"\\u00e9\\ud83d\\ude00\\/\\n"}}'
    assert parse_request(raw) == GetUser("é😀/\n")


def test_case_preserved() -> None:
    raw = b'{"action":"get_user_by_email_address","arguments":{"email_address":"User@Example.COM"}}'
    assert parse_request(raw) == GetUserByEmailAddress("User@Example.COM")


# --- OSLO decodeBase64 table (§3.1), through the public parser -------------------------------


def _create_user_with_hash(encoded: str) -> bytes:
    return body(
        {
            "action": "create_user",
            "arguments": {
                "email_address": "a@b.c",
                "password_hash": encoded,
                "password_hash_algorithm_id": "x",
                "password_salt": "",
            },
        }
    )


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        # §3.1 table, row by row.
        pytest.param("", b"", id="empty"),
        pytest.param("AA==", b"\x00", id="AA=="),
        pytest.param("AAA=", b"\x00\x00", id="AAA="),
        pytest.param("/w==", b"\xff", id="/w=="),
        pytest.param("AA", None, id="AA-unpadded"),
        pytest.param("AB==", None, id="AB==-trailing-bits"),
        pytest.param("A===", None, id="A==="),
        pytest.param("AA=A", None, id="AA=A"),
        pytest.param("AAAA\n", None, id="AAAA-newline"),
        pytest.param("-w==", None, id="-w==-url-alphabet"),
        pytest.param("AA==AAAA", b"\x00" * 4, id="AA==AAAA"),
        # Further cases checked against @oslojs/encoding 1.1.0.
        pytest.param("AAAA", b"\x00\x00\x00", id="AAAA"),
        pytest.param("+/+/", b"\xfb\xff\xbf", id="plus-slash"),
        pytest.param("AAB=", None, id="AAB=-trailing-bits"),
        pytest.param("AA==AA==", b"\x00\x00", id="AA==AA=="),
        pytest.param("====", None, id="only-padding"),
        pytest.param("=AAA", None, id="leading-padding"),
        pytest.param("A=AA", None, id="A=AA"),
        pytest.param("AAAAA", None, id="length-5"),
        pytest.param("AAA", None, id="length-3"),
        pytest.param("AA=", None, id="AA=-short"),
        pytest.param("AA==\n", None, id="padded-newline"),
        pytest.param(" AA=", None, id="leading-space"),
        pytest.param("_w==", None, id="underscore"),
        pytest.param("AAé=", None, id="non-ascii"),
        pytest.param("AA😀", None, id="astral"),
        pytest.param(HASH_B64, HASH, id="hash-vector"),
        pytest.param(SALT_B64, SALT, id="salt-vector"),
    ],
)
def test_oslo_base64(encoded: str, expected: bytes | None) -> None:
    raw = _create_user_with_hash(encoded)
    if expected is None:
        with pytest.raises(InvalidRequest):
            parse_request(raw)
    else:
        parsed = parse_request(raw)
        assert isinstance(parsed, CreateUser)
        assert parsed.password_hash == expected


def test_base64_round_trips_every_length() -> None:
    for length in range(64):
        data = bytes((i * 37 + length) % 256 for i in range(length))
        user = replace(USER, password_hash=data)
        encoded = json.loads(user_result(INVOCATION_ID, user))["values"]["user"]["password_hash"]
        parsed = parse_request(_create_user_with_hash(encoded))
        assert isinstance(parsed, CreateUser)
        assert parsed.password_hash == data


# --- action invocation id (§2.5) -----------------------------------------------------------


def test_invocation_id_shape() -> None:
    first = generate_action_invocation_id()
    second = generate_action_invocation_id()
    for invocation_id in (first, second):
        assert len(invocation_id) == 24
        assert set(invocation_id) <= set(ID_ALPHABET)
    assert first != second


def test_invocation_id_maps_bytes_like_jsus(monkeypatch: pytest.MonkeyPatch) -> None:
    random_bytes = bytes([0, 7, 8, 15, 16, 127, 128, 248, 255] + [64] * 15)

    def fake_token_bytes(n: int) -> bytes:
        assert n == 24
        return random_bytes

    monkeypatch.setattr(secrets, "token_bytes", fake_token_bytes)
    assert generate_action_invocation_id() == "aabbcrs99" + "j" * 15


# --- ActionError ---------------------------------------------------------------------------


def test_action_error_code() -> None:
    error = ActionError("user_not_found")
    assert error.code == "user_not_found"
    assert isinstance(error, Exception)
    assert not isinstance(error, InvalidRequest)
    assert error_result(INVOCATION_ID, error.code).endswith(b'"error_code":"user_not_found"}')
