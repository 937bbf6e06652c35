"""Unsafe modes (asked for by name: FAROE_AUTH=none, RATE_LIMITS=off) are announced when the app
starts, one warning each, whether or not anything uses them yet."""

import logging

import pytest

from app.main import create_app
from tests.conftest import make_settings

SAFE: dict[str, object] = {
    "faroe_auth": "hmac",
    "rate_limits": "on",
    "webhook_allow_private": False,
}


async def _start_and_stop(database_url: str, caplog: pytest.LogCaptureFixture, **overrides: object):
    caplog.set_level(logging.WARNING, logger="userkeep")
    application = create_app(make_settings(database_url, **{**SAFE, **overrides}))
    async with application.router.lifespan_context(application):
        pass
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("userkeep") and r.levelno == logging.WARNING
    ]


@pytest.mark.parametrize(
    ("overrides", "disabled"),
    [
        ({"faroe_auth": "none"}, "signature"),
        ({"rate_limits": "off"}, "rate limit"),
        ({"webhook_allow_private": True}, "private"),
    ],
    ids=["faroe-auth-none", "rate-limits-off", "webhook-allow-private"],
)
async def test_an_unsafe_mode_is_logged_once_at_start(
    database_url: str, caplog: pytest.LogCaptureFixture, overrides: dict[str, object], disabled: str
) -> None:
    warnings = await _start_and_stop(database_url, caplog, **overrides)
    ((name, value),) = overrides.items()
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"{name.upper()}={str(value).lower()}")
    assert disabled in warnings[0]


async def test_each_unsafe_mode_gets_its_own_line(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    warnings = await _start_and_stop(database_url, caplog, faroe_auth="none", rate_limits="off")
    assert sorted(w.split(":")[0] for w in warnings) == ["FAROE_AUTH=none", "RATE_LIMITS=off"]


async def test_safe_defaults_log_no_warning(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert await _start_and_stop(database_url, caplog) == []
