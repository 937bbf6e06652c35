"""app/security/secret_box.py: AES-256-GCM under SECRET_KEY, per purpose and per row."""

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.security import secret_box
from app.security.secret_box import SecretBox, SecretBoxError
from app.settings import Settings

KEY = b"k" * 32


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type,call-arg,unused-ignore]


def test_round_trip() -> None:
    sealed = SecretBox(KEY).encrypt("webhook-secret", "whsec_abc", "awhk_1")
    assert sealed.startswith("v1.") and "whsec_abc" not in sealed
    assert SecretBox(KEY).decrypt("webhook-secret", sealed, "awhk_1") == "whsec_abc"


def test_each_encryption_differs() -> None:
    box = SecretBox(KEY)
    assert box.encrypt("p", "same", "row") != box.encrypt("p", "same", "row")


def test_another_purpose_does_not_open_it() -> None:
    sealed = SecretBox(KEY).encrypt("webhook-secret", "whsec_abc", "awhk_1")
    with pytest.raises(SecretBoxError):
        SecretBox(KEY).decrypt("totp-secret", sealed, "awhk_1")


def test_another_row_does_not_open_it() -> None:
    sealed = SecretBox(KEY).encrypt("webhook-secret", "whsec_abc", "awhk_1")
    with pytest.raises(SecretBoxError):
        SecretBox(KEY).decrypt("webhook-secret", sealed, "awhk_2")


def test_another_key_does_not_open_it() -> None:
    sealed = SecretBox(KEY).encrypt("webhook-secret", "whsec_abc", "awhk_1")
    with pytest.raises(SecretBoxError):
        SecretBox(b"x" * 32).decrypt("webhook-secret", sealed, "awhk_1")


def test_tampering_is_detected() -> None:
    sealed = SecretBox(KEY).encrypt("webhook-secret", "whsec_abc", "awhk_1")
    body = bytearray(sealed.encode())
    body[10] = ord("A") if body[10] != ord("A") else ord("B")
    with pytest.raises(SecretBoxError):
        SecretBox(KEY).decrypt("webhook-secret", body.decode(), "awhk_1")
    with pytest.raises(SecretBoxError):
        SecretBox(KEY).decrypt("webhook-secret", "v2" + sealed[2:], "awhk_1")


def test_unset_key_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    settings = _settings(data_dir=tmp_path)
    first = secret_box.master_key(settings)
    key_file = tmp_path / secret_box.KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert secret_box.master_key(settings) == first  # reused, not made again
    assert [p.name for p in tmp_path.iterdir()] == [secret_box.KEY_FILE]  # no temporary left


def test_generated_key_is_announced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret_box.announce(_settings(data_dir=tmp_path))
    assert any("every node" in r.getMessage() for r in caplog.records)


def test_secret_key_wins_over_the_file(tmp_path: Path) -> None:
    settings = _settings(data_dir=tmp_path, secret_key="s" * 32)
    assert secret_box.master_key(settings) == b"s" * 32
    assert not (tmp_path / secret_box.KEY_FILE).exists()


def test_short_secret_key_stops_start_up() -> None:
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        _settings(secret_key="s" * 31)


def test_a_previous_key_still_opens_and_says_so() -> None:
    old = SecretBox(b"o" * 32).encrypt("totp-secret", "JBSW", "amfa_1")
    rotated = SecretBox(KEY, previous=[b"o" * 32])
    assert rotated.open("totp-secret", old, "amfa_1") == ("JBSW", True)
    assert rotated.decrypt("totp-secret", old, "amfa_1") == "JBSW"
    fresh = rotated.encrypt("totp-secret", "JBSW", "amfa_1")
    assert rotated.open("totp-secret", fresh, "amfa_1") == ("JBSW", False)
    with pytest.raises(SecretBoxError):
        SecretBox(b"o" * 32).decrypt("totp-secret", fresh, "amfa_1")  # sealed under the new one
    with pytest.raises(SecretBoxError):
        SecretBox(KEY, previous=[b"x" * 32]).open("totp-secret", old, "amfa_1")


def test_previous_keys_are_checked_like_the_key() -> None:
    with pytest.raises(ValidationError):
        _settings(secret_key="k" * 32, secret_key_previous="o" * 32 + ",short")
    settings = _settings(secret_key="k" * 32, secret_key_previous=f" {'o' * 32} , {'p' * 32} ")
    assert secret_box.previous_keys(settings) == ["o" * 32, "p" * 32]
    assert _settings(secret_key_previous="").secret_key_previous is None
