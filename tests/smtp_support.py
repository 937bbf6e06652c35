"""A real SMTP server for the tests: aiosmtpd on 127.0.0.1 and a free port, in a thread of its
own (aiosmtpd's Controller), keeping every message it accepted, parsed.

Options: STARTTLS (offered, or required before MAIL) and implicit TLS, both with a certificate
of a throwaway CA whose PEM file is `tls.ca_file` (for MAIL_TLS_CA_FILE); AUTH with one
user name and password (only over TLS unless a test asks otherwise); recipients refused with
550; and a switch that answers every recipient with 451.

    server = smtp_server(require_starttls=True, auth=("user", "secret"))
    url = server.url(credentials=("user", "secret"))  # MAIL_URL; MAIL_TLS_CA_FILE=tls.ca_file
"""

import asyncio
import datetime
import ipaddress
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.process_support import free_port

REJECT_REPLY = "550 5.1.1 no such user"
DEFER_REPLY = "451 4.3.0 try later"


@dataclass(frozen=True)
class TlsFiles:
    """A CA and a server certificate it signed, for a name (localhost) and 127.0.0.1."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_tls_files(directory: Path, name: str = "localhost") -> TlsFiles:
    """A CA certificate and a server certificate for `name` and 127.0.0.1, both shaped the way
    strict verifiers want them (basic constraints, key usages, key identifiers, a SAN): Python
    3.13 checks with VERIFY_X509_STRICT by default."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Userkeep test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@dataclass(frozen=True)
class Received:
    """One accepted message, as the server saw it."""

    message: EmailMessage
    mail_from: str
    rcpt_tos: tuple[str, ...]
    tls: bool  # the session was encrypted (STARTTLS or implicit TLS)
    authenticated: bool


@dataclass
class _Handler:
    reject: set[str]
    defer: bool = False
    received: list[Received] = field(default_factory=list)
    auth_attempts: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.defer:
            return DEFER_REPLY
        if address.lower() in self.reject:
            return REJECT_REPLY
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        parsed = BytesParser(policy=policy.default).parsebytes(content)
        assert isinstance(parsed, EmailMessage)
        transport = server.transport
        tls = session.ssl is not None or (
            transport is not None and transport.get_extra_info("ssl_object") is not None
        )
        with self.lock:
            self.received.append(
                Received(
                    message=parsed,
                    mail_from=str(envelope.mail_from),
                    rcpt_tos=tuple(envelope.rcpt_tos),
                    tls=tls,
                    authenticated=bool(session.authenticated),
                )
            )
        return "250 Message accepted for delivery"


class SmtpServer:
    """One running aiosmtpd server; stopped by the fixture."""

    def __init__(
        self,
        tls: TlsFiles,
        *,
        starttls: bool = False,
        require_starttls: bool = False,
        implicit_tls: bool = False,
        auth: tuple[str, str] | None = None,
        auth_require_tls: bool = True,
        reject: set[str] | frozenset[str] = frozenset(),
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.tls = tls
        self.implicit_tls = implicit_tls
        self.auth = auth
        self.handler = _Handler(reject={address.lower() for address in reject})
        kwargs: dict[str, Any] = {}
        if starttls or require_starttls:
            kwargs["tls_context"] = tls.server_context()
            kwargs["require_starttls"] = require_starttls
        if auth is not None:
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_required"] = True
            kwargs["auth_require_tls"] = auth_require_tls
        self.controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=self.port,
            ssl_context=tls.server_context() if implicit_tls else None,
            # aiosmtpd would otherwise look up this host's name (DNS) at every connection.
            server_hostname="smtp.test",
            **kwargs,
        )
        self.controller.start()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self.auth is not None
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = data.login.decode(), data.password.decode()
        with self.handler.lock:
            self.handler.auth_attempts.append(login)
        # handled=False: aiosmtpd answers a failure with 535 itself.
        return AuthResult(success=(login, password) == self.auth, handled=False)

    def stop(self) -> None:
        self.controller.stop()

    def url(self, *, credentials: tuple[str, str] | None = None) -> str:
        """MAIL_URL for this server; smtps:// when it speaks TLS from the first byte."""
        scheme = "smtps" if self.implicit_tls else "smtp"
        userinfo = ""
        if credentials is not None:
            userinfo = f"{quote(credentials[0], safe='')}:{quote(credentials[1], safe='')}@"
        return f"{scheme}://{userinfo}127.0.0.1:{self.port}"

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    @property
    def messages(self) -> list[EmailMessage]:
        return [entry.message for entry in self.received]

    @property
    def auth_attempts(self) -> list[str]:
        with self.handler.lock:
            return list(self.handler.auth_attempts)

    def defer_all(self, on: bool = True) -> None:
        """Answer every RCPT with 451 (a transient refusal) while on."""
        self.handler.defer = on

    # A deadline on polling a list another thread fills, named `timeout` for its callers.
    async def wait_for(self, count: int, timeout: float = 5.0) -> list[EmailMessage]:  # noqa: ASYNC109
        """At least `count` messages, polled in small steps; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} of {count} messages"
            await asyncio.sleep(0.01)
        return self.messages

    def last_to(self, address: str) -> EmailMessage:
        """The newest message whose envelope went to `address`."""
        for entry in reversed(self.received):
            if address.lower() in (rcpt.lower() for rcpt in entry.rcpt_tos):
                return entry.message
        raise AssertionError(f"no message to {address}")


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def smtp_server(tls_files: TlsFiles) -> Iterator[Callable[..., SmtpServer]]:
    """Starts servers with SmtpServer's options: `smtp_server(require_starttls=True)`; all
    stopped after the test."""
    servers: list[SmtpServer] = []

    def start(**options: Any) -> SmtpServer:
        server = SmtpServer(tls_files, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
