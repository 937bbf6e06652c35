"""Every knob of the service, read from environment variables (see the README's settings table)."""

import email.policy
import ipaddress
from dataclasses import dataclass
from email.headerregistry import Address
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.limits import parse_limits
from app.security import tls

FAROE_SECRET_MIN_BYTES = 32
SECRET_KEY_MIN_BYTES = 32


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="postgresql+asyncpg://… of an external server; unset = embedded PostgreSQL",
    )
    data_dir: Path = Field(
        default=Path(".data"), description="where the embedded server keeps data"
    )
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    log_level: str = "info"
    # Background jobs (app/services/jobs.py): mail and webhooks leave through PostgreSQL.
    jobs_in_serve: bool = Field(
        default=True,
        description="run job workers inside `serve` (off: only `python -m app worker` runs jobs)",
    )
    jobs_concurrency: int = Field(
        default=4,
        ge=2,
        le=256,
        description="jobs run at once per `worker` process, and by all of `serve`'s WORKERS "
        "together",
    )
    jobs_heartbeat_timeout: float = Field(
        default=30.0,
        ge=0.5,
        le=3600,
        description="seconds without a heartbeat after which a running job counts as abandoned "
        "(its worker died) and runs again",
    )
    jobs_poll_interval: float = Field(
        default=2.0,
        ge=0.05,
        le=60,
        description="seconds between a worker's looks for jobs that no notification announced "
        "(a retry coming due, a job abandoned by a dead worker)",
    )
    jobs_shutdown_grace: float = Field(
        default=20.0,
        ge=0,
        le=3600,
        description="seconds a stopping worker waits for its running jobs; one still running "
        "then is left to the heartbeat timeout and runs again elsewhere",
    )
    jobs_modules: str = Field(
        default="",
        description="comma-separated modules imported by workers to register extra job kinds "
        "(the tests' kinds: tests.job_kinds)",
    )
    # Mail (app/services/mail.py). Without MAIL_URL each message is written as an .eml file
    # under DATA_DIR/mail/, so development needs no SMTP server.
    mail_url: SecretStr | None = Field(
        default=None,
        description="smtp://[user:password@]host[:port] (STARTTLS; port 587 by default) or "
        "smtps://[user:password@]host[:port] (implicit TLS; 465); unset or empty = the file "
        "mailer (DATA_DIR/mail/*.eml)",
    )
    mail_from: str = Field(
        default="Userkeep <no-reply@localhost>",
        description="From: of the mails (an app's own mail_from wins), e.g. "
        "'Example <no-reply@example.com>'",
    )
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="http(s) base of the links in mails (an app's own link_base_url wins)",
    )
    mail_templates: Path | None = Field(
        default=None,
        description="directory of operator templates: a file there replaces the built-in "
        "template of the same name (app/mail_templates/); unset = the built-in ones",
    )
    mail_tls_ca_file: Path | None = Field(
        default=None,
        description="PEM bundle of extra CAs trusted for the SMTP server's certificate (a "
        "private CA), besides the system's; certificates are always verified",
    )
    mail_timeout: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="seconds each step of an SMTP delivery (connect, TLS, a command) may take",
    )

    session_ttl: int = Field(default=3600, ge=60, description="session token lifetime, seconds")
    refresh_ttl: int = Field(default=30 * 86400, ge=60, description="refresh token lifetime, s")
    refresh_family_ttl: int = Field(
        default=90 * 86400,
        ge=60,
        description="absolute lifetime of a sign-in, seconds: refreshing never goes past it",
    )
    require_email_verification: bool = Field(
        default=False,
        description="sign-in and refresh need a verified e-mail address; an app's own "
        "require_email_verification, when set, wins over this",
    )
    password_min_length: int = Field(default=8, ge=8, le=128)
    password_max_length: int = 128
    retention_days: int = Field(default=30, ge=0)
    # A filtered total must visit every match: past this many the admin list stops counting
    # (total_exact=false) unless the request asks for count=exact.
    admin_count_limit: int = Field(
        default=1_000, ge=1, description="GET /v1/admin/users counts matches up to this many"
    )
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    import_max_body_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="body cap of POST /v1/admin/users/import (up to 1,000 users)",
    )

    # Hashing is CPU-bound: at most `hash_concurrency` at once per worker process (default:
    # the cores shared among the workers); past a queue of `hash_queue_max` waiting requests
    # the answer is 503 instead of a long wait.
    hash_concurrency: int = Field(
        default=0, ge=0, description="per worker process; 0 = cores / WORKERS, at least 1"
    )
    hash_queue_max: int = Field(default=16, ge=0)

    # argon2id for new hashes (and the re-hash of a weaker one at sign-in). The defaults are
    # OWASP's minimum; a stock Faroe server uses argon2id.3.65536.1.32 (time 3, 64 MiB, 1 lane),
    # and with the same values here the REST door's hashes are ones it can verify.
    argon2_time_cost: int = Field(default=2, ge=1, description="argon2id passes over memory")
    argon2_memory_kib: int = Field(default=19456, ge=8, description="argon2id memory, KiB")
    argon2_parallelism: int = Field(default=1, ge=1, description="argon2id lanes")
    # A hash carries its own cost, and one from Faroe or an import is verified like ours: past
    # these it is refused (Faroe: 400) or fails like a wrong password (stored). Worst case at
    # once: HASH_CONCURRENCY hashes of ARGON2_MAX_MEMORY_KIB each.
    argon2_max_time_cost: int = Field(default=10, ge=1, description="largest argon2 t verified")
    argon2_max_memory_kib: int = Field(
        default=262144, ge=8, description="largest argon2 m (KiB) verified"
    )
    argon2_max_parallelism: int = Field(default=16, ge=1, description="largest argon2 p verified")

    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    # A dead or stalled database must answer 503 within seconds, never hang a request.
    db_connect_timeout: float = Field(
        default=3, gt=0, description="seconds to open a database connection before giving up"
    )
    db_pool_timeout: float = Field(
        default=5, gt=0, description="seconds to wait for a free pooled connection"
    )
    db_command_timeout: float = Field(
        default=10, gt=0, description="seconds one SQL statement may take before it fails"
    )
    # Migrations run at start-up by default so `make run` is one command; disable when a
    # deploy step runs `python -m app migrate` once for many nodes.
    migrate_on_start: bool = True

    # The Faroe user-server endpoint (POST /v1/faroe/actions, docs/faroe.md). Requests must be
    # signed with FAROE_SECRET (HMAC-SHA256); with no secret the endpoint answers 503. Only
    # FAROE_AUTH=none, asked for by name, serves unsigned requests (a private network).
    faroe_secret: SecretStr | None = Field(
        default=None,
        description=f"HMAC-SHA256 key the Faroe server signs its requests with, at least "
        f"{FAROE_SECRET_MIN_BYTES} bytes; unset or empty = the endpoint answers 503",
    )
    faroe_auth: Literal["hmac", "none"] = Field(
        default="hmac", description="'hmac' (signed requests) or 'none' (no check at all)"
    )
    faroe_app: str = Field(
        default="default",
        description="app (slug or aapp_ id) whose default environment Faroe's users live in",
    )
    # A Faroe server cannot ask for a second factor: by default it sees users with MFA on as
    # disabled. `allow` lets them sign in there with the password alone (an unsafe mode).
    faroe_mfa_users: Literal["disabled", "allow"] = Field(
        default="disabled",
        description="'disabled': Faroe sees users with MFA on as disabled; 'allow': as they "
        "are (the password alone signs them in through Faroe)",
    )

    # The key of app/security/secret_box.py: what it encrypts (webhook secrets, later TOTP
    # secrets and JWT signing keys) is unreadable without it. Unset: one is made at first start
    # into DATA_DIR/secret_key and reused; several nodes must then be given one SECRET_KEY.
    secret_key: SecretStr | None = Field(
        default=None,
        description=f"key (at least {SECRET_KEY_MIN_BYTES} bytes) the service encrypts its stored "
        "secrets under; unset or empty = one generated into DATA_DIR/secret_key at first start",
    )
    # JWT access tokens (app/services/access_tokens.py, signing_keys.py): POST /v1/auth/token.
    jwt_ttl: int = Field(
        default=300,
        ge=30,
        le=86400,
        description="lifetime of a JWT access token, seconds; a revoked session's JWTs keep "
        "verifying until they expire",
    )
    jwt_algorithm: Literal["EdDSA", "ES256"] = Field(
        default="EdDSA",
        description="algorithm of new signing keys (EdDSA: Ed25519; ES256: P-256); a key "
        "keeps its algorithm for life",
    )
    # A rotation: the new key in SECRET_KEY, the old one(s) here until `python -m app
    # reseal-secrets` has sealed every stored secret under the new one.
    secret_key_previous: SecretStr | None = Field(
        default=None,
        description="earlier SECRET_KEYs, comma-separated, that still open secrets stored "
        "before a rotation (new secrets are always sealed under SECRET_KEY)",
    )
    # Webhooks (app/services/webhooks.py). Refusing private destinations keeps an app's admin
    # from making the service probe its own network; allowing them is an unsafe mode.
    webhook_allow_private: bool = Field(
        default=False,
        description="deliver webhooks to loopback, private and link-local addresses (tests, "
        "a receiver on the same private network)",
    )
    webhook_tls_ca_file: Path | None = Field(
        default=None,
        description="PEM bundle of extra CAs trusted for webhook receivers' certificates (a "
        "private CA), besides the system's; certificates are always verified",
    )

    # Rate limits, shared by every node: in PostgreSQL, or in Redis when REDIS_URL is set. Each
    # rule is a comma-separated list of COUNT/SECONDS windows that must all hold. Turning them
    # off is an unsafe mode that must be asked for by name (RATE_LIMITS=off).
    rate_limits: Literal["on", "off"] = Field(
        default="on", description="'off' disables every rate limit (benchmarks, tests)"
    )
    redis_url: str | None = Field(
        default=None, description="redis://… for the rate-limit counters; unset = PostgreSQL"
    )
    # Several deployments (or test runs) may share one Redis: each keeps its keys apart.
    redis_prefix: str = Field(
        default="userkeep", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Redis key prefix"
    )
    trusted_proxies: str = Field(
        default="",
        description="comma-separated IPs/CIDRs of reverse proxies whose X-Forwarded-For is "
        "believed; empty = the client IP is the socket peer",
    )
    rate_limit_signin_ip: str = Field(
        default="30/60,300/3600", description="sign-in attempts per client IP"
    )
    rate_limit_account_failures: str = Field(
        default="10/300,100/3600",
        description="failed password checks per account (sign-in identifier or user)",
    )
    rate_limit_signup_ip: str = Field(default="10/60,100/3600", description="sign-ups per IP")
    rate_limit_refresh_ip: str = Field(default="60/60,1000/3600", description="refreshes per IP")
    rate_limit_admin_ip: str = Field(default="600/60", description="admin calls per IP")
    rate_limit_faroe_ip: str = Field(default="3000/60", description="Faroe actions per IP")
    rate_limit_mail_ip: str = Field(
        default="10/60,100/3600",
        description="requests that send a mail (verify-email/send, forgot-password, "
        "change-email) per IP",
    )
    rate_limit_mail_address: str = Field(
        default="5/3600", description="mails asked for one address, known or not"
    )
    rate_limit_code_ip: str = Field(
        default="30/60,300/3600",
        description="codes and link tokens presented (verify-email, reset-password, "
        "change-email/confirm) per IP",
    )
    rate_limit_introspect_ip: str = Field(
        default="30000/60",
        description="POST /v1/auth/introspect calls per IP (a resource server asks once per "
        "request it serves)",
    )
    rate_limit_mfa_ip: str = Field(
        default="30/60,300/3600",
        description="MFA codes presented (challenge, confirm, disable, new recovery codes) per IP",
    )
    # A TOTP code is 1 in 10^6 (3 steps accepted): a day's budget keeps a holder of the
    # password far from guessing one.
    rate_limit_mfa_account: str = Field(
        default="5/300,20/3600,100/86400",
        description="wrong MFA codes per account (any route, any number of mfa_tokens)",
    )

    @field_validator(
        "rate_limit_signin_ip",
        "rate_limit_account_failures",
        "rate_limit_signup_ip",
        "rate_limit_refresh_ip",
        "rate_limit_admin_ip",
        "rate_limit_faroe_ip",
        "rate_limit_mail_ip",
        "rate_limit_mail_address",
        "rate_limit_code_ip",
        "rate_limit_introspect_ip",
        "rate_limit_mfa_ip",
        "rate_limit_mfa_account",
    )
    @classmethod
    def _limit_spec(cls, value: str) -> str:
        # A typo in a limit must stop the start-up, not silently disable the limit.
        parse_limits(value)
        return value

    @field_validator("faroe_secret")
    @classmethod
    def _faroe_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # Empty is how env files and compose files leave a variable unset.
        if value is None or not value.get_secret_value():
            return None
        # A short key can be guessed offline from one signed request; 32 bytes is HMAC-SHA256's
        # output size (RFC 2104 section 3).
        if len(value.get_secret_value().encode("utf-8")) < FAROE_SECRET_MIN_BYTES:
            raise ValueError(
                f"must be at least {FAROE_SECRET_MIN_BYTES} bytes (UTF-8); make one with "
                '`python -c "import secrets; print(secrets.token_hex(32))"`'
            )
        return value

    @field_validator("secret_key")
    @classmethod
    def _secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        # Every stored secret's safety rests on this key: 32 bytes is AES-256's key size.
        if len(value.get_secret_value().encode("utf-8")) < SECRET_KEY_MIN_BYTES:
            raise ValueError(
                f"must be at least {SECRET_KEY_MIN_BYTES} bytes (UTF-8); make one with "
                '`python -c "import secrets; print(secrets.token_urlsafe(32))"`'
            )
        return value

    @field_validator("secret_key_previous")
    @classmethod
    def _secret_key_previous(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        for key in value.get_secret_value().split(","):
            if key.strip() and len(key.strip().encode("utf-8")) < SECRET_KEY_MIN_BYTES:
                raise ValueError(f"each key must be at least {SECRET_KEY_MIN_BYTES} bytes (UTF-8)")
        return value

    @field_validator("mail_url")
    @classmethod
    def _mail_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        parse_mail_url(value.get_secret_value())  # a typo stops the start-up
        return value

    @field_validator("mail_from")
    @classmethod
    def _mail_from(cls, value: str) -> str:
        return check_mail_from(value)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        return check_link_base(value)

    @field_validator("mail_templates", "mail_tls_ca_file", "webhook_tls_ca_file", mode="before")
    @classmethod
    def _empty_path(cls, value: object) -> object:
        # Empty is how env files leave a variable unset; Path("") would mean the current
        # directory.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("mail_templates")
    @classmethod
    def _mail_templates(cls, value: Path | None) -> Path | None:
        # A mistyped directory would silently fall back to the built-in templates.
        if value is not None and not value.is_dir():
            raise ValueError("must be an existing directory")
        return value

    @field_validator("mail_tls_ca_file", "webhook_tls_ca_file")
    @classmethod
    def _ca_file(cls, value: Path | None) -> Path | None:
        return tls.check_ca_file(value)

    @model_validator(mode="after")
    def _argon2_within_bounds(self) -> "Settings":
        # The service must be able to verify its own hashes.
        from app.security.argon2_params import (
            HASH_LENGTH,
            SALT_LENGTH,
            Argon2Bounds,
            Argon2Parameters,
        )

        bounds = Argon2Bounds.from_settings(self)
        problem = bounds.violation(Argon2Parameters.from_settings(self), SALT_LENGTH, HASH_LENGTH)
        if problem is not None:
            raise ValueError(f"ARGON2_* settings: {problem}")
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        for part in value.split(","):
            if part.strip():
                ipaddress.ip_network(part.strip(), strict=False)
        return value

    def trusted_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        parts = [p.strip() for p in self.trusted_proxies.split(",") if p.strip()]
        return [ipaddress.ip_network(p, strict=False) for p in parts]


@dataclass(frozen=True)
class MailUrl:
    """MAIL_URL taken apart. `tls`: "implicit" (smtps://, TLS from the first byte),
    "required" (STARTTLS or no delivery: credentials are given, or port 587), "opportunistic"
    (STARTTLS when the server offers it, plain otherwise: a local relay or a test server).
    Whenever TLS is used the certificate is verified."""

    scheme: Literal["smtp", "smtps"]
    host: str
    port: int
    username: str | None
    password: str | None
    tls: Literal["implicit", "required", "opportunistic"]

    def describe(self) -> str:
        """For logs and error messages: never the credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        mode = {
            "implicit": "implicit TLS",
            "required": "STARTTLS required",
            "opportunistic": "STARTTLS if offered",
        }[self.tls]
        auth = ", AUTH" if self.username is not None else ""
        return f"{self.scheme}://{host}:{self.port} ({mode}{auth})"


def parse_mail_url(url: str) -> MailUrl:
    """MAIL_URL's syntax. Errors never quote the URL: it may hold a password."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError("is not a valid URL (check the port)") from None
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps"):
        raise ValueError("must start with smtp:// (STARTTLS) or smtps:// (implicit TLS)")
    if not parts.hostname:
        raise ValueError("must name a host: smtp://host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be only smtp(s)://[user:password@]host[:port]")
    # Mail submission (RFC 6409, RFC 8314): 587 with STARTTLS, 465 with TLS from the start.
    if port is None:
        port = 465 if scheme == "smtps" else 587
    # Percent-encoding lets a password hold '@', ':' or '/'.
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is not None and username is None:
        raise ValueError("has a password but no user name")
    tls: Literal["implicit", "required", "opportunistic"]
    if scheme == "smtps":
        tls = "implicit"
    elif username is not None or port == 587:
        # Credentials never cross the network in clear, and port 587 is submission: both
        # refuse a server that does not offer STARTTLS.
        tls = "required"
    else:
        tls = "opportunistic"
    return MailUrl(scheme, parts.hostname, port, username, password, tls)  # type: ignore[arg-type]


def sender_address(value: str) -> Address:
    """The one address of a From: value ("Name <a@b.example>" or "a@b.example"); ValueError
    when it is not exactly one. MAIL_FROM, an app's mail_from, and the SMTP envelope use it."""
    problem = "must be one address, e.g. 'Userkeep <no-reply@example.com>'"
    if "\r" in value or "\n" in value:
        raise ValueError("must be one line")
    try:
        header = email.policy.default.header_factory("From", value.strip())
    except Exception:  # the stdlib parser can fail with IndexError as well as its own errors
        raise ValueError(problem) from None
    addresses: tuple[Address, ...] = getattr(header, "addresses", ())
    if header.defects or len(addresses) != 1:
        raise ValueError(problem)
    address = addresses[0]
    if not address.username or not address.domain or " " in address.addr_spec:
        raise ValueError(problem)
    return address


def check_mail_from(value: str) -> str:
    """MAIL_FROM (or an app's mail_from) checked: returned stripped, or ValueError."""
    sender_address(value)
    return value.strip()


def check_link_base(value: str) -> str:
    """PUBLIC_URL (or an app's link_base_url): the base of the links in mails, checked and
    returned without a trailing slash, or ValueError."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError("must have no ?query or #fragment (links are built on it)")
    # Links are built as f"{base}/path": one slash between, however it was written.
    return value.strip().rstrip("/")


def mail_transport_description(settings: Settings) -> str:
    """Where mail goes, for a start-up log line: "file mailer: .data/mail" or
    "smtp://mail.example.com:587 (STARTTLS required, AUTH)". Never the credentials."""
    if settings.mail_url is None:
        return f"file mailer: {settings.data_dir / 'mail'}"
    return parse_mail_url(settings.mail_url.get_secret_value()).describe()


def unsafe_modes(settings: Settings) -> list[str]:
    """One line for each unsafe mode `settings` asks for, saying what it disables: logged at
    every start, so a mode left on by mistake is seen before anything relies on it."""
    modes = []
    if settings.faroe_auth == "none":
        modes.append(
            "FAROE_AUTH=none: POST /v1/faroe/actions serves unsigned requests (no signature "
            "check); keep it reachable only from the Faroe server's private network"
        )
    if settings.rate_limits == "off":
        modes.append(
            "RATE_LIMITS=off: no rate limit on any route (sign-in, sign-up, refresh, admin, "
            "Faroe); password guessing is unlimited"
        )
    if settings.faroe_mfa_users == "allow":
        modes.append(
            "FAROE_MFA_USERS=allow: users with MFA on are not disabled for Faroe, which signs "
            "them in with the password alone (it cannot ask for a second factor)"
        )
    if settings.webhook_allow_private:
        modes.append(
            "WEBHOOK_ALLOW_PRIVATE=true: webhooks may be delivered to loopback, private and "
            "link-local addresses; an app's admin can make the service call its own network"
        )
    return modes


@lru_cache
def get_settings() -> Settings:
    return Settings()
