"""The tables. Ids are TypeID strings; times are timezone-aware UTC; tokens are SHA-256 digests."""

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel


def _ts(nullable: bool = True, default_now: bool = False) -> Any:
    return Field(
        default=None,
        sa_column=Column(
            DateTime(timezone=True),
            nullable=nullable,
            server_default=func.now() if default_now else None,
        ),
    )


class App(SQLModel, table=True):
    __tablename__ = "apps"

    id: str = Field(primary_key=True)
    slug: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    name: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = _ts(nullable=False, default_now=True)
    # NULL = the service-wide setting (MAIL_FROM, PUBLIC_URL, REQUIRE_EMAIL_VERIFICATION).
    mail_from: str | None = Field(default=None, sa_column=Column(Text))
    link_base_url: str | None = Field(default=None, sa_column=Column(Text))
    require_email_verification: bool | None = Field(default=None, sa_column=Column(Boolean))


class Environment(SQLModel, table=True):
    __tablename__ = "environments"
    __table_args__ = (
        Index("uq_environments_app_slug", "app_id", "slug", unique=True),
        Index(
            "uq_environments_one_default",
            "app_id",
            unique=True,
            postgresql_where=text("is_default"),
        ),
    )

    id: str = Field(primary_key=True)
    app_id: str = Field(
        sa_column=Column(Text, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False)
    )
    slug: str = Field(sa_column=Column(String(64), nullable=False))
    name: str = Field(sa_column=Column(Text, nullable=False))
    is_default: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    created_at: datetime = _ts(nullable=False, default_now=True)


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (
        # E-mail and username are unique per (app, env) among live users, case-insensitively;
        # the names are matched when a unique violation is turned into email_taken/username_taken.
        Index(
            "uq_users_email_live",
            "app_id",
            "env_id",
            text("lower(email)"),
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index(
            "uq_users_username_live",
            "app_id",
            "env_id",
            "username",
            unique=True,
            postgresql_where=text("deleted_at IS NULL AND username IS NOT NULL"),
        ),
        Index("ix_users_app_env_created", "app_id", "env_id", "created_at"),
        Index("ix_users_deleted_at", "deleted_at", postgresql_where=text("deleted_at IS NOT NULL")),
    )

    id: str = Field(primary_key=True)
    app_id: str = Field(sa_column=Column(Text, ForeignKey("apps.id"), nullable=False))
    env_id: str = Field(sa_column=Column(Text, ForeignKey("environments.id"), nullable=False))
    email: str = Field(sa_column=Column(Text, nullable=False))
    email_verified: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    name: str | None = Field(default=None, sa_column=Column(Text))
    image: str | None = Field(default=None, sa_column=Column(Text))
    username: str | None = Field(default=None, sa_column=Column(Text))
    display_username: str | None = Field(default=None, sa_column=Column(Text))
    phone: str | None = Field(default=None, sa_column=Column(Text))
    phone_verified: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    role: str = Field(default="user", sa_column=Column(String(32), nullable=False))
    # A PHC string ($argon2id$…, $2b$…) or, for a Faroe algorithm we cannot verify, the
    # Faroe triple kept intact (see services/faroe). NULL = no password set.
    password_hash: str | None = Field(default=None, sa_column=Column(Text))
    password_changed_at: datetime | None = _ts()
    banned: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    ban_reason: str | None = Field(default=None, sa_column=Column(Text))
    ban_expires: datetime | None = _ts()
    # "metadata" is reserved on SQLAlchemy models, so the attribute has another name.
    user_metadata: dict[str, str] = Field(
        default_factory=dict,
        sa_column=Column("metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    )
    created_at: datetime = _ts(nullable=False, default_now=True)
    updated_at: datetime = _ts(nullable=False, default_now=True)
    deleted_at: datetime | None = _ts()
    # Faroe's per-field version counters (compare-and-swap on the Faroe door).
    email_address_counter: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    password_hash_counter: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    disabled_counter: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    sessions_counter: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    # Kept in step with mfa_enrollments by services/mfa (same transaction), so the hot path
    # (sessions.authenticate, GET /me) reads it from the users row without a join.
    mfa_enabled: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )


class Session(SQLModel, table=True):
    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_user_live", "user_id", postgresql_where=text("revoked_at IS NULL")),
        Index("ix_sessions_family", "family_id"),
        Index(
            "ix_sessions_impersonated_by",
            "impersonated_by",
            postgresql_where=text("impersonated_by IS NOT NULL"),
        ),
    )

    id: str = Field(primary_key=True)
    family_id: str = Field(sa_column=Column(Text, nullable=False))
    user_id: str = Field(
        sa_column=Column(Text, ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    )
    token_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False, unique=True))
    refresh_token_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False, unique=True))
    expires_at: datetime = _ts(nullable=False)
    refresh_expires_at: datetime = _ts(nullable=False)
    # The sign-in's absolute end, the same for every session of the family: refreshing
    # never reaches past it (REFRESH_FAMILY_TTL).
    family_expires_at: datetime = _ts(nullable=False)
    created_at: datetime = _ts(nullable=False, default_now=True)
    last_used_at: datetime | None = _ts()
    revoked_at: datetime | None = _ts()
    revoked_reason: str | None = Field(default=None, sa_column=Column(String(32)))
    ip: str | None = Field(default=None, sa_column=Column(Text))
    user_agent: str | None = Field(default=None, sa_column=Column(Text))
    # The admin (ausr_ id) holding this session as the user (migration 0015); NULL when it
    # is the user's own. Such a session has no usable refresh token and lasts at most 1 h;
    # it is revoked by trigger when that admin is demoted, banned or deleted.
    impersonated_by: str | None = Field(default=None, sa_column=Column(Text))


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_app_id", "app_id", "id"),
        Index("ix_audit_target_user", "target_user_id", "id"),
    )

    id: str = Field(primary_key=True)
    app_id: str | None = Field(default=None, sa_column=Column(Text))
    env_id: str | None = Field(default=None, sa_column=Column(Text))
    action: str = Field(sa_column=Column(String(64), nullable=False))
    actor_type: str = Field(sa_column=Column(String(16), nullable=False))
    actor_id: str | None = Field(default=None, sa_column=Column(Text))
    # No foreign key: the trail outlives a purged user.
    target_user_id: str | None = Field(default=None, sa_column=Column(Text))
    ip: str | None = Field(default=None, sa_column=Column(Text))
    user_agent: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = _ts(nullable=False, default_now=True)
    event_metadata: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column("metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    )


class ApiKey(SQLModel, table=True):
    """An admin API key (`ask_…`): the secret is shown once and stored only as its SHA-256;
    `prefix` and `last4` let people recognise a key in a list."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_app", "app_id", "id"),)

    id: str = Field(primary_key=True)
    app_id: str = Field(
        sa_column=Column(Text, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False)
    )
    name: str = Field(sa_column=Column(Text, nullable=False))
    key_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False, unique=True))
    prefix: str = Field(sa_column=Column(String(16), nullable=False))
    last4: str = Field(sa_column=Column(String(4), nullable=False))
    created_at: datetime = _ts(nullable=False, default_now=True)
    last_used_at: datetime | None = _ts()
    revoked_at: datetime | None = _ts()
    # The admin user or API key that made it; no foreign key, like the audit trail.
    created_by: str | None = Field(default=None, sa_column=Column(Text))


class EmailCode(SQLModel, table=True):
    """The one live code and link of a (user, purpose): verify_email, reset_password or
    change_email (migration 0010). Both secrets are stored only as SHA-256; `email` is the
    address they were sent to, `new_email` the one an e-mail change moves to."""

    __tablename__ = "email_codes"
    __table_args__ = (
        Index("uq_email_codes_user_purpose", "user_id", "purpose", unique=True),
        Index("uq_email_codes_token", "token_hash", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(
        sa_column=Column(Text, ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    )
    purpose: str = Field(sa_column=Column(String(16), nullable=False))
    email: str = Field(sa_column=Column(Text, nullable=False))
    new_email: str | None = Field(default=None, sa_column=Column(Text))
    code_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    token_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    created_at: datetime = _ts(nullable=False)
    expires_at: datetime = _ts(nullable=False)


class MfaEnrollment(SQLModel, table=True):
    """A user's TOTP factor (migration 0012): pending until a first code confirms it. `secret`
    is a secret_box ciphertext (purpose "totp-secret", bound to the enrollment's id);
    `last_used_step` is the newest 30-second step a code was accepted for, so a code works
    once."""

    __tablename__ = "mfa_enrollments"
    __table_args__ = (Index("uq_mfa_enrollments_user_type", "user_id", "type", unique=True),)

    id: str = Field(primary_key=True)
    user_id: str = Field(
        sa_column=Column(Text, ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    )
    type: str = Field(sa_column=Column(String(16), nullable=False))
    secret: str = Field(sa_column=Column(Text, nullable=False))
    confirmed_at: datetime | None = _ts()
    last_used_step: int | None = Field(default=None, sa_column=Column(BigInteger))
    created_at: datetime = _ts(nullable=False)
    last_used_at: datetime | None = _ts()


class MfaRecoveryCode(SQLModel, table=True):
    """One unused recovery code of a user, as SHA-256 of (user id, code); using it deletes
    the row."""

    __tablename__ = "mfa_recovery_codes"
    __table_args__ = (
        Index("uq_mfa_recovery_codes_user_hash", "user_id", "code_hash", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(
        sa_column=Column(Text, ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    )
    code_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = _ts(nullable=False)


class MfaToken(SQLModel, table=True):
    """The proof of a right password that an MFA challenge completes (`ukmt_…`, stored as
    SHA-256): 5 minutes, 5 wrong tries, deleted when used."""

    __tablename__ = "mfa_tokens"
    __table_args__ = (
        Index("uq_mfa_tokens_hash", "token_hash", unique=True),
        Index("ix_mfa_tokens_user", "user_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(
        sa_column=Column(Text, ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    )
    token_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    created_at: datetime = _ts(nullable=False)
    expires_at: datetime = _ts(nullable=False)


class WebhookEndpoint(SQLModel, table=True):
    """Where an app's events are POSTed (migration 0011). `secret` and `previous_secret` are
    secret_box ciphertexts bound to the endpoint's id, never the `whsec_…` itself."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (Index("ix_webhook_endpoints_app", "app_id", "id"),)

    id: str = Field(primary_key=True)
    app_id: str = Field(
        sa_column=Column(Text, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False)
    )
    url: str = Field(sa_column=Column(Text, nullable=False))
    description: str = Field(default="", sa_column=Column(Text, nullable=False))
    events: list[str] = Field(sa_column=Column(ARRAY(Text), nullable=False))
    enabled: bool = Field(default=True, sa_column=Column(Boolean, nullable=False))
    disabled_reason: str | None = Field(default=None, sa_column=Column(Text))
    secret: str = Field(sa_column=Column(Text, nullable=False))
    previous_secret: str | None = Field(default=None, sa_column=Column(Text))
    previous_secret_expires_at: datetime | None = _ts()
    failing_since: datetime | None = _ts()
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)


class WebhookDelivery(SQLModel, table=True):
    """One delivery attempt of one event to one endpoint."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),)

    id: str = Field(primary_key=True)
    endpoint_id: str = Field(
        sa_column=Column(
            Text, ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False
        )
    )
    event_id: str = Field(sa_column=Column(Text, nullable=False))
    event_type: str = Field(sa_column=Column(String(64), nullable=False))
    attempt: int = Field(sa_column=Column(Integer, nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    http_status: int | None = Field(default=None, sa_column=Column(Integer))
    duration_ms: int | None = Field(default=None, sa_column=Column(Integer))
    error: str | None = Field(default=None, sa_column=Column(Text))
    response_body: str | None = Field(default=None, sa_column=Column(Text))
    next_retry_at: datetime | None = _ts()
    created_at: datetime = _ts(nullable=False)


# Indexes of migration 0002 behind the admin user list: trigram GIN indexes for the partial
# matches, and one (app_id, sort key, id) btree per sort order (services/admin.SORT_KEYS).
_users = User.__table__  # type: ignore[attr-defined]
for _column in ("email", "username", "phone"):
    Index(
        f"ix_users_{_column}_trgm",
        _users.c[_column],
        postgresql_using="gin",
        postgresql_ops={_column: "gin_trgm_ops"},
    )
# Migration 0006 adds ix_users_search_trgm, the trigram index of `search` over the four fields
# (an expression index: services/admin.SEARCH_TEXT); it replaced the name index of 0002.
Index("ix_users_sort_created", _users.c.app_id, _users.c.created_at, _users.c.id)
Index("ix_users_sort_updated", _users.c.app_id, _users.c.updated_at, _users.c.id)
Index("ix_users_sort_email", _users.c.app_id, func.lower(_users.c.email), _users.c.id)
Index(
    "ix_users_sort_name",
    _users.c.app_id,
    func.coalesce(func.lower(_users.c.name), ""),
    _users.c.id,
)
Index("ix_users_sort_username", _users.c.app_id, func.coalesce(_users.c.username, ""), _users.c.id)
Index(
    "ix_users_live",
    _users.c.app_id,
    _users.c.env_id,
    postgresql_where=_users.c.deleted_at.is_(None),
)
Index(
    "ix_users_banned",
    _users.c.app_id,
    _users.c.ban_expires,
    postgresql_where=_users.c.banned,
)
# Migration 0015: the banned users GET /v1/admin/stats counts (services/stats).
Index(
    "ix_users_banned_live",
    _users.c.app_id,
    _users.c.env_id,
    _users.c.ban_expires,
    postgresql_where=text("banned AND deleted_at IS NULL"),
)
# Migration 0005: the role and email_verified filters, when the value asked for is rare.
Index("ix_users_role", _users.c.app_id, _users.c.role)
Index("ix_users_email_verified", _users.c.app_id, _users.c.email_verified)
_audit = AuditEvent.__table__  # type: ignore[attr-defined]
Index("ix_audit_actor", _audit.c.actor_id, _audit.c.id)


class SigningKey(SQLModel, table=True):
    """A key pair that signs JWT access tokens (app/services/signing_keys.py). `private_key` is
    a secret_box ciphertext of its PKCS#8 PEM (purpose "jwt-signing-key", bound to the id);
    `public_jwk` is what GET /.well-known/jwks.json publishes. A key signs from `activated_at`
    until `retired_at` (its successor's activation); NULL `retired_at` marks the newest key,
    of which the unique index allows one."""

    __tablename__ = "signing_keys"
    __table_args__ = (
        Index(
            "uq_signing_keys_one_newest",
            text("(retired_at IS NULL)"),
            unique=True,
            postgresql_where=text("retired_at IS NULL"),
        ),
    )

    id: str = Field(primary_key=True)
    algorithm: str = Field(sa_column=Column(String(16), nullable=False))
    private_key: str = Field(sa_column=Column(Text, nullable=False))
    public_jwk: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    created_at: datetime = _ts(nullable=False)
    activated_at: datetime = _ts(nullable=False)
    retired_at: datetime | None = _ts()
