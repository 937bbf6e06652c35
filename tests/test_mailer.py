"""The mailer (app/services/mail.py): templates, the file mailer, and SMTP against a real
aiosmtpd server (tests/smtp_support.py): plain, STARTTLS with AUTH, implicit TLS, refusals.
No database."""

import asyncio
import logging
import stat
import time
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from jinja2 import UndefinedError
from pydantic import ValidationError

from app.services import mail
from app.services.mail import MailError, MailRejected, Message
from app.settings import Settings, mail_transport_description
from tests.conftest import make_settings
from tests.process_support import free_port
from tests.smtp_support import SmtpServer, TlsFiles

Start = Callable[..., SmtpServer]

CODE = "482913"
LINK = "https://id.example.com/verify?token=abc&next=%2F"
SENDER = "Example <no-reply@example.com>"
TO = "alice@example.org"


def mail_settings(tmp_path: Path, **overrides: Any) -> Settings:
    # A database URL that is never used: these tests open no connection.
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "mail_url": None,
        "mail_timeout": 3,
        **overrides,
    }
    return make_settings("postgresql+asyncpg://unused@127.0.0.1:1/unused", **values)


def verify_context(**changes: Any) -> dict[str, Any]:
    context = {
        "app_name": "Example",
        "user_name": "Alice",
        "code": CODE,
        "link": LINK,
        "expires_hours": 24,
    }
    return {**context, **changes}


def verify_message(settings: Settings, to: str = TO, **changes: Any) -> Message:
    return mail.render(settings, "verify_email", verify_context(**changes), to=to, sender=SENDER)


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return str(text.get_content()), str(html.get_content())


def eml_files(settings: Settings) -> list[Path]:
    return sorted((settings.data_dir / "mail").glob("*"))


# --- The file mailer ----------------------------------------------------------------------


async def test_file_mailer_writes_a_private_eml_with_both_parts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = mail_settings(tmp_path)
    with caplog.at_level(logging.INFO, logger="userkeep.mail"):
        where = await mail.send(settings, verify_message(settings))

    [path] = eml_files(settings)  # no temporary file left beside it
    assert where == str(path) and path.suffix == ".eml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    parsed = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert isinstance(parsed, EmailMessage)
    assert parsed["From"] == SENDER and parsed["To"] == TO
    assert parsed["Subject"] == "Verify your e-mail address for Example"
    assert parsed["Date"] and parsed["Message-ID"].endswith("@example.com>")
    assert parsed.get_content_type() == "multipart/alternative"
    text, html = parts(parsed)
    assert CODE in text and LINK in text
    assert CODE in html and 'href="https://id.example.com/verify?token=abc&amp;next=%2F"' in html
    # The log names the file, never what is in it.
    assert path.name in caplog.text and CODE not in caplog.text


async def test_file_names_sort_by_time(tmp_path: Path) -> None:
    settings = mail_settings(tmp_path)
    first = await mail.send(settings, verify_message(settings, code="111111"))
    second = await mail.send(settings, verify_message(settings, code="222222"))
    assert [str(p) for p in eml_files(settings)] == [first, second]


# --- SMTP ---------------------------------------------------------------------------------


async def test_plain_smtp_delivers_both_parts(tmp_path: Path, smtp_server: Start) -> None:
    server = smtp_server()
    settings = mail_settings(tmp_path, mail_url=server.url())

    where = await mail.send(settings, verify_message(settings))

    assert where == f"smtp 127.0.0.1:{server.port}"
    [received] = server.received
    assert received.mail_from == "no-reply@example.com" and received.rcpt_tos == (TO,)
    assert not received.tls
    sent = server.last_to(TO)
    assert sent["From"] == SENDER and sent["To"] == TO
    assert sent["Subject"] == "Verify your e-mail address for Example"
    text, html = parts(sent)
    assert CODE in text and CODE in html
    assert eml_files(settings) == []


async def test_starttls_with_auth_delivers_encrypted(
    tmp_path: Path, smtp_server: Start, tls_files: TlsFiles
) -> None:
    # Percent-encoded in MAIL_URL, decoded before AUTH.
    credentials = ("mailer@example.com", "p@ss:w/rd%")
    server = smtp_server(require_starttls=True, auth=credentials)
    settings = mail_settings(
        tmp_path, mail_url=server.url(credentials=credentials), mail_tls_ca_file=tls_files.ca_file
    )

    await mail.send(settings, verify_message(settings))

    [received] = server.received
    assert received.tls and received.authenticated
    assert server.auth_attempts == ["mailer@example.com"]


async def test_credentials_are_never_sent_without_tls(tmp_path: Path, smtp_server: Start) -> None:
    # A server that offers no STARTTLS and would take AUTH in clear.
    credentials = ("mailer", "secret-password")
    server = smtp_server(auth=credentials, auth_require_tls=False)
    settings = mail_settings(tmp_path, mail_url=server.url(credentials=credentials))

    with pytest.raises(MailError) as raised:
        await mail.send(settings, verify_message(settings))

    assert not isinstance(raised.value, MailRejected)
    assert "STARTTLS" in str(raised.value) and "secret-password" not in str(raised.value)
    assert server.auth_attempts == [] and server.received == []


async def test_a_certificate_of_an_unknown_ca_is_refused(
    tmp_path: Path, smtp_server: Start
) -> None:
    # Without MAIL_TLS_CA_FILE the test CA is unknown: the mail is not sent, not sent in clear.
    server = smtp_server(require_starttls=True)
    settings = mail_settings(tmp_path, mail_url=server.url())

    with pytest.raises(MailError, match=r"TLS|certificate"):
        await mail.send(settings, verify_message(settings))

    assert server.received == []


async def test_implicit_tls_delivers(
    tmp_path: Path, smtp_server: Start, tls_files: TlsFiles
) -> None:
    server = smtp_server(implicit_tls=True)
    settings = mail_settings(tmp_path, mail_url=server.url(), mail_tls_ca_file=tls_files.ca_file)
    assert settings.mail_url is not None
    assert settings.mail_url.get_secret_value().startswith("smtps://")

    await mail.send(settings, verify_message(settings))

    [received] = server.received
    assert received.tls
    assert CODE in parts(received.message)[0]


async def test_a_server_that_is_down_is_a_transient_error_at_once(tmp_path: Path) -> None:
    settings = mail_settings(tmp_path, mail_url=f"smtp://127.0.0.1:{free_port()}")
    started = time.monotonic()

    with pytest.raises(MailError) as raised:
        await mail.send(settings, verify_message(settings))

    assert not isinstance(raised.value, MailRejected)
    assert time.monotonic() - started < 2


async def test_a_silent_server_times_out_as_a_transient_error(tmp_path: Path) -> None:
    # Accepts the connection, never greets.
    server = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = mail_settings(tmp_path, mail_url=f"smtp://127.0.0.1:{port}", mail_timeout=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(MailError, match="timed out") as raised:
            await mail.send(settings, verify_message(settings))
    finally:
        server.close()
    assert not isinstance(raised.value, MailRejected)
    assert time.monotonic() - started < 2


async def test_a_refused_login_is_transient(
    tmp_path: Path, smtp_server: Start, tls_files: TlsFiles
) -> None:
    # 535 is the operator's MAIL_URL to fix, not the message's fault: once fixed, retries go.
    server = smtp_server(require_starttls=True, auth=("mailer", "right"))
    settings = mail_settings(
        tmp_path,
        mail_url=server.url(credentials=("mailer", "wrong")),
        mail_tls_ca_file=tls_files.ca_file,
    )

    with pytest.raises(MailError, match="535") as raised:
        await mail.send(settings, verify_message(settings))

    assert not isinstance(raised.value, MailRejected)
    assert "wrong" not in str(raised.value) and server.received == []


async def test_a_550_recipient_is_rejected_for_good(tmp_path: Path, smtp_server: Start) -> None:
    server = smtp_server(reject={"nobody@example.org"})
    settings = mail_settings(tmp_path, mail_url=server.url())

    with pytest.raises(MailRejected) as raised:
        await mail.send(settings, verify_message(settings, to="nobody@example.org"))

    assert raised.value.code == 550
    assert "550" in str(raised.value) and "no such user" in str(raised.value)
    assert CODE not in str(raised.value)
    assert server.received == []


async def test_a_451_is_transient(tmp_path: Path, smtp_server: Start) -> None:
    server = smtp_server()
    server.defer_all()
    settings = mail_settings(tmp_path, mail_url=server.url())

    with pytest.raises(MailError) as raised:
        await mail.send(settings, verify_message(settings))

    assert not isinstance(raised.value, MailRejected)
    assert "451" in str(raised.value)
    server.defer_all(False)
    await mail.send(settings, verify_message(settings))  # the retry goes through
    await server.wait_for(1)


# --- Templates ----------------------------------------------------------------------------


def test_every_template_renders_with_its_keys(tmp_path: Path) -> None:
    settings = mail_settings(tmp_path)
    values = {
        "code": CODE,
        "link": LINK,
        "expires_hours": 24,
        "expires_minutes": 60,
        "new_email": "new@example.org",
        "old_email": "old@example.org",
    }
    for name, keys in mail.TEMPLATES.items():
        context = {"app_name": "Example", "user_name": "", **{k: values[k] for k in keys}}
        message = mail.render(settings, name, context, to=TO, sender=SENDER)
        assert message.subject and "\n" not in message.subject
        assert message.text.startswith("Hello,")  # no name: no dangling space
        if "code" in keys:
            assert CODE in message.text and CODE in message.html
            assert LINK in message.text and 'href="https://id.example.com/' in message.html
        for key in keys:
            assert str(values[key]) in message.text, (name, key)


def test_an_operator_template_replaces_only_its_own_file(tmp_path: Path) -> None:
    override = tmp_path / "templates"
    override.mkdir()
    (override / "verify_email.subject.txt").write_text("{{ app_name }}: confirm it's you\n")
    settings = mail_settings(tmp_path, mail_templates=override)

    message = verify_message(settings)

    assert message.subject == "Example: confirm it's you"
    assert message.text == verify_message(mail_settings(tmp_path)).text
    assert message.html == verify_message(mail_settings(tmp_path)).html


def test_html_is_escaped_and_text_is_not(tmp_path: Path) -> None:
    settings = mail_settings(tmp_path)
    message = verify_message(settings, user_name="<script>alert(1)</script>")
    assert "Hello <script>alert(1)</script>," in message.text
    assert "<script>" not in message.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in message.html


async def test_a_newline_in_the_subject_cannot_add_a_header(tmp_path: Path) -> None:
    settings = mail_settings(tmp_path)
    message = verify_message(settings, app_name="Example\r\nBcc: eve@example.net\n")
    assert message.subject == "Verify your e-mail address for Example Bcc: eve@example.net"

    await mail.send(settings, message)

    [path] = eml_files(settings)
    parsed = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert parsed["Bcc"] is None
    assert parsed["Subject"] == message.subject


def test_a_missing_context_key_fails_loudly(tmp_path: Path) -> None:
    settings = mail_settings(tmp_path)
    context = verify_context()
    del context["code"]
    with pytest.raises(UndefinedError, match="code"):
        mail.render(settings, "verify_email", context, to=TO, sender=SENDER)


# --- Settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"mail_url": "http://mail.example.com"},
        {"mail_url": "smtp://"},
        {"mail_url": "smtp://mail.example.com:notaport"},
        {"mail_url": "smtp://mail.example.com/path"},
        {"mail_from": "not an address"},
        {"mail_from": "a@example.com, b@example.com"},
        {"mail_from": "Example <no-reply@example.com>\r\nBcc: eve@example.net"},
        {"public_url": "ftp://example.com"},
        {"public_url": "example.com"},
    ],
)
def test_invalid_mail_settings_stop_the_start(tmp_path: Path, overrides: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        mail_settings(tmp_path, **overrides)


def test_an_invalid_mail_url_is_reported_without_its_password(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as raised:
        mail_settings(tmp_path, mail_url="smtq://user:hunter2@mail.example.com")
    [error] = raised.value.errors()
    assert "hunter2" not in error["msg"]


def test_mail_settings_are_normalised_and_described(tmp_path: Path) -> None:
    settings = mail_settings(tmp_path, mail_url="", public_url="https://id.example.com/")
    assert settings.mail_url is None
    assert settings.public_url == "https://id.example.com"
    assert mail_transport_description(settings) == f"file mailer: {tmp_path / 'data' / 'mail'}"

    smtp = mail_settings(tmp_path, mail_url="smtp://user:hunter2@mail.example.com")
    assert mail_transport_description(smtp) == (
        "smtp://mail.example.com:587 (STARTTLS required, AUTH)"
    )
    relay = mail_settings(tmp_path, mail_url="smtp://127.0.0.1:1025")
    assert mail_transport_description(relay) == "smtp://127.0.0.1:1025 (STARTTLS if offered)"
    tls = mail_settings(tmp_path, mail_url="smtps://mail.example.com")
    assert mail_transport_description(tls) == "smtps://mail.example.com:465 (implicit TLS)"
