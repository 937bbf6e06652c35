"""Sending mail: the one owner of it. Flows render a template and hand the message to the job
layer; a job handler calls `send`.

- `render(settings, template, context, to=…, sender=…)` fills the three files of a template
  (app/mail_templates/<name>.subject.txt, .txt, .html) with Jinja2. The HTML part is
  autoescaped, the text part is not; the subject is folded onto one line (no header can be
  smuggled in). A file in MAIL_TEMPLATES replaces the built-in one of the same name. A missing
  context key raises (StrictUndefined): a typo fails in the tests, not in someone's inbox.
- `send(settings, message)` delivers it: to an .eml file under DATA_DIR/mail/ when MAIL_URL is
  unset (the file mailer: development needs no SMTP server), else over SMTP with aiosmtplib.
  `MailError` is transient (the job retries); `MailRejected` is a 5xx refusal of the
  recipient, sender or message, which no retry can change.

Neither the body nor the code is ever logged, and MAIL_URL's credentials appear in no log
line and no exception (`MailUrl.describe`).
"""

import asyncio
import email.policy
import logging
import os
import socket
import ssl
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from functools import lru_cache
from pathlib import Path
from typing import Any

import aiosmtplib
from jinja2 import (
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    select_autoescape,
)

from app import clock
from app.security import tls
from app.settings import MailUrl, Settings, parse_mail_url, sender_address

log = logging.getLogger("userkeep.mail")

BUILTIN_TEMPLATES = Path(__file__).resolve().parent.parent / "mail_templates"
# The templates the flows use, each with its context keys besides the ones every template gets
# (app_name, user_name, email): the operator's documentation, and what the tests render.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "verify_email": ("code", "link", "expires_hours"),
    "reset_password": ("code", "link", "expires_minutes"),
    "change_email": ("code", "link", "expires_minutes", "new_email"),
    "email_changed": ("old_email", "new_email"),
}


@dataclass(frozen=True)
class Message:
    to: str  # one address
    sender: str  # From:, e.g. "Userkeep <no-reply@localhost>" (an app's mail_from or MAIL_FROM)
    subject: str
    text: str  # the plain-text part
    html: str  # the HTML part


class MailError(Exception):
    """Transient: the SMTP server is down, slow, answered 4xx, or TLS failed; a later try may
    succeed, so the job layer retries. The message names the server, never the credentials or
    the body."""


class MailRejected(MailError):
    """Permanent: the server refused the recipient, the sender or the message with a 5xx
    code (550 no such user, 554 rejected, …); retrying cannot help. Carries the SMTP code and
    the server's text."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# --- Templates ---------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _environment(override: Path | None) -> Environment:
    # One Environment per override directory: Jinja keeps compiled templates in it, and
    # re-reads a file whose mtime changed (auto_reload), so an operator's edit shows without
    # a restart.
    builtin = FileSystemLoader(BUILTIN_TEMPLATES)
    loader = builtin if override is None else ChoiceLoader([FileSystemLoader(override), builtin])
    return Environment(
        loader=loader,
        # .html escaped, .txt as written: a user name "<b>" is markup in neither.
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(
    settings: Settings, template: str, context: Mapping[str, Any], *, to: str, sender: str
) -> Message:
    """The message of `template` for `to`. `context` has the template's keys (TEMPLATES) and
    app_name and user_name ("" when there is none); `email` is `to` unless given."""
    environment = _environment(settings.mail_templates)
    values = {"email": to, **context}
    subject = environment.get_template(f"{template}.subject.txt").render(values)
    return Message(
        to=to,
        sender=sender,
        # One line whatever the template or a value in it holds: a newline in a subject would
        # start a header of its own.
        subject=" ".join(subject.split()),
        text=environment.get_template(f"{template}.txt").render(values),
        html=environment.get_template(f"{template}.html").render(values),
    )


def email_message(message: Message, *, eight_bit: bool = False) -> EmailMessage:
    """RFC 5322: multipart/alternative, plain text first (clients show the last part they can
    render, so HTML wins where it can). `eight_bit`: parts as written, not quoted-printable
    (the file mailer: a developer copies the link out of the file as it reads)."""
    sender = sender_address(message.sender)
    mail = EmailMessage(policy=email.policy.SMTP)
    mail["From"] = message.sender
    mail["To"] = message.to
    mail["Subject"] = message.subject
    mail["Date"] = format_datetime(clock.now())
    # An explicit domain: make_msgid would otherwise ask DNS for this host's name.
    mail["Message-ID"] = make_msgid(domain=sender.domain or "localhost")
    # Over SMTP the library's choice (quoted-printable for long lines) passes any relay.
    cte = "8bit" if eight_bit else None
    mail.set_content(message.text, cte=cte)
    mail.add_alternative(message.html, subtype="html", cte=cte)
    return mail


# --- Sending ------------------------------------------------------------------------------


async def send(settings: Settings, message: Message) -> str:
    """Deliver `message` by MAIL_URL's transport. Returns where it went, for logs: the file's
    path (file mailer) or "smtp host:port". Raises MailError / MailRejected."""
    if settings.mail_url is None:
        return await _write_file(settings.data_dir / "mail", email_message(message, eight_bit=True))
    target = parse_mail_url(settings.mail_url.get_secret_value())
    await _send_smtp(settings, target, email_message(message), message)
    return f"smtp {_host_port(target)}"


async def _write_file(directory: Path, mail: EmailMessage) -> str:
    now = clock.now()
    # Sorted by name = sorted by time; the suffix keeps two mails of one microsecond apart.
    name = f"{now:%Y%m%dT%H%M%S.%f}Z-{uuid.uuid4().hex[:8]}.eml"
    data = mail.as_bytes()
    try:
        path = await asyncio.to_thread(_write_atomically, directory, name, data)
    except OSError as exc:
        # A full disk or a wrong permission may be fixed before the next try.
        raise MailError(f"file mailer: cannot write to {directory}: {exc.strerror}") from exc
    # The name only: the file holds the code, the log line does not.
    log.info("mail written to %s", path, extra={"mail_file": name})
    return str(path)


def _write_atomically(directory: Path, name: str, data: bytes) -> Path:
    # The mails hold live codes and links: only the service's user may read them.
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / name
    # A reader (a developer's `ls`, a test polling) sees the whole file or none: written under
    # a dot-name, then renamed in one step.
    temporary = directory / f".{name}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


async def _send_smtp(
    settings: Settings, target: MailUrl, mail: EmailMessage, message: Message
) -> None:
    where = _host_port(target)
    tls_context = await asyncio.to_thread(tls.client_context, settings.mail_tls_ca_file)
    try:
        await aiosmtplib.send(
            mail,
            sender=sender_address(message.sender).addr_spec,
            recipients=[message.to],
            hostname=target.host,
            port=target.port,
            username=target.username,
            password=target.password,
            use_tls=target.tls == "implicit",
            # True: STARTTLS or fail before AUTH, so credentials never go out in clear.
            # None: STARTTLS when offered, with the certificate verified all the same.
            start_tls={"implicit": False, "required": True, "opportunistic": None}[target.tls],
            tls_context=tls_context,
            local_hostname=await _local_hostname(),
            timeout=settings.mail_timeout,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        refusals = exc.recipients
        if refusals and all(_permanent(r.code) for r in refusals):
            first = refusals[0]
            raise MailRejected(
                f"smtp {where} refused the recipient: {first.code} {first.message}", first.code
            ) from exc
        detail = "; ".join(f"{r.code} {r.message}" for r in refusals)
        raise MailError(f"smtp {where} deferred the recipient: {detail}") from exc
    except (
        aiosmtplib.SMTPRecipientRefused,
        aiosmtplib.SMTPSenderRefused,
        aiosmtplib.SMTPDataError,
    ) as exc:
        text = f"{exc.code} {exc.message}"
        if _permanent(exc.code):
            raise MailRejected(f"smtp {where} refused the message: {text}", exc.code) from exc
        raise MailError(f"smtp {where} deferred the message: {text}") from exc
    except aiosmtplib.SMTPAuthenticationError as exc:
        # A 535 is the operator's to fix (MAIL_URL); once fixed, the retries deliver.
        raise MailError(
            f"smtp {where} refused the login: {exc.code} {exc.message} (check MAIL_URL)"
        ) from exc
    except aiosmtplib.SMTPResponseException as exc:
        # The greeting, EHLO or STARTTLS refused: the server's state, not this message's.
        raise MailError(f"smtp {where} answered {exc.code} {exc.message}") from exc
    except aiosmtplib.SMTPTimeoutError as exc:
        raise MailError(f"smtp {where} timed out ({settings.mail_timeout:g} s): {exc}") from exc
    except aiosmtplib.SMTPException as exc:
        if "STARTTLS" in exc.message and target.tls == "required":
            raise MailError(
                f"smtp {where} does not offer STARTTLS, which this MAIL_URL requires "
                "(credentials, or port 587); nothing was sent"
            ) from exc
        raise MailError(f"smtp {where}: {exc.message}") from exc
    except ssl.SSLError as exc:
        raise MailError(
            f"smtp {where}: TLS failed: {exc} (a private CA goes in MAIL_TLS_CA_FILE)"
        ) from exc
    except (OSError, TimeoutError) as exc:
        raise MailError(f"smtp {where}: {exc}") from exc
    log.info("mail sent through smtp %s", where, extra={"message_id": mail["Message-ID"]})


def _permanent(code: int) -> bool:
    return 500 <= code < 600


def _host_port(target: MailUrl) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{host}:{target.port}"


_fqdn: str | None = None


async def _local_hostname() -> str:
    # EHLO's name. aiosmtplib would look it up (socket.getfqdn, DNS) on every connection; once
    # per process is enough.
    global _fqdn
    if _fqdn is None:
        _fqdn = await asyncio.to_thread(_fqdn_or_localhost)
    return _fqdn


def _fqdn_or_localhost() -> str:
    name = socket.getfqdn()
    # EHLO wants a name without spaces or controls; "localhost" beats a refused greeting.
    return name if name and name.isprintable() and " " not in name else "localhost"
