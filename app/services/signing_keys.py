"""The key ring of JWT access tokens: the keys in the `signing_keys` table, which one signs
now, and which public keys GET /.well-known/jwks.json publishes.

Several nodes sign with one key because the ring lives in PostgreSQL; each process keeps a copy
(`KeyRing`) and reads the table again at most every `RELOAD_EVERY`. Rotation is safe without any
node being told:

- `rotate` adds the next key with `activated_at` = now + `ROTATION_GRACE`, and marks the newest
  key retired at that instant. The next key is published at once, but signs nothing yet.
- ROTATION_GRACE equals the JWKS's `max-age`: by the time any node signs with the new key, every
  resource server's cached JWKS (fetched before the rotation) has expired and holds it.
- RELOAD_EVERY is far below ROTATION_GRACE, so every node has read the next key before it
  becomes current, and each switches on its own clock at `activated_at`, none later.
- A retired key stays published until `retired_at` + JWT_TTL: every token it signed has expired.

The first key is made lazily, by the first token request, under an advisory lock (and the
unique index on the newest key): nodes racing to make it end up with one.
"""

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app import clock
from app.ids import Prefix, new_id
from app.models import SigningKey
from app.security import secret_box
from app.services import audit
from app.services.audit import Origin
from app.settings import Settings

PURPOSE = "jwt-signing-key"
JWKS_MAX_AGE = 300
ROTATION_GRACE = timedelta(seconds=JWKS_MAX_AGE)
RELOAD_EVERY = timedelta(seconds=60)
# pg_advisory_xact_lock's key for changes of the ring ("ajwk" in ASCII).
_RING_LOCK = 0x616A776B


@dataclass(frozen=True)
class Key:
    """One row of the ring as a node holds it: the private key stays sealed until it signs."""

    id: str
    algorithm: str
    public_jwk: dict[str, Any]
    activated_at: datetime
    retired_at: datetime | None
    sealed: str

    def signs_at(self, now: datetime) -> bool:
        return self.activated_at <= now and (self.retired_at is None or now < self.retired_at)

    def published_at(self, now: datetime, jwt_ttl: int) -> bool:
        """Next (not yet signing), current, or retired less than a token's lifetime ago."""
        return self.retired_at is None or now < self.retired_at + timedelta(seconds=jwt_ttl)


PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Signer:
    kid: str
    algorithm: str
    private_key: PrivateKey


def _generate(algorithm: str) -> tuple[PrivateKey, dict[str, Any]]:
    if algorithm == "ES256":
        ec_key = ec.generate_private_key(ec.SECP256R1())
        return ec_key, ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    return ed_key, OKPAlgorithm.to_jwk(ed_key.public_key(), as_dict=True)


def _new_row(settings: Settings, created_at: datetime, activated_at: datetime) -> SigningKey:
    key_id = new_id(Prefix.SIGNING_KEY)
    algorithm = settings.jwt_algorithm
    private, jwk = _generate(algorithm)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return SigningKey(
        id=key_id,
        algorithm=algorithm,
        private_key=secret_box.box(settings).encrypt(PURPOSE, pem, key_id),
        public_jwk={**jwk, "kid": key_id, "alg": algorithm, "use": "sig"},
        created_at=created_at,
        activated_at=activated_at,
    )


async def _lock(db: AsyncSession) -> None:
    await db.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _RING_LOCK})


async def _newest(db: AsyncSession) -> SigningKey | None:
    found: SigningKey | None = (
        await db.execute(select(SigningKey).where(col(SigningKey.retired_at).is_(None)))
    ).scalar_one_or_none()
    return found


async def ensure_first(db: AsyncSession, settings: Settings) -> None:
    """Make the first key, signing now, unless some node already has (one transaction)."""
    async with db.begin():
        await _lock(db)
        if await _newest(db) is None:
            # No token was ever signed, so no cached JWKS can lack it: no grace needed.
            now = clock.now()
            db.add(_new_row(settings, created_at=now, activated_at=now))
            audit.record(
                db,
                "signing_key.created",
                origin=Origin(),
                app_id=None,
                actor_type="system",
                metadata={"reason": "first token"},
            )


async def rotate(db: AsyncSession, settings: Settings, origin: Origin) -> SigningKey:
    """Add the next key, signing from now + ROTATION_GRACE (or now, when the ring is empty),
    and retire the newest key at that instant. Returns the new key."""
    async with db.begin():
        await _lock(db)
        newest = await _newest(db)
        now = clock.now()
        activated_at = now if newest is None else now + ROTATION_GRACE
        if newest is not None:
            # A next key rotated again before it began signing just signs for a shorter while.
            newest.retired_at = activated_at
            await db.flush()  # the unique index allows one newest key at a time
        row = _new_row(settings, created_at=now, activated_at=activated_at)
        db.add(row)
        audit.record(
            db,
            "signing_key.rotated",
            origin=origin,
            app_id=None,
            actor_type="system",
            metadata={
                "signing_key_id": row.id,
                "algorithm": row.algorithm,
                "activated_at": activated_at.isoformat(),
                "previous_signing_key_id": newest.id if newest is not None else None,
            },
        )
    return row


async def load(db: AsyncSession, settings: Settings) -> list[Key]:
    """Every key that is still published (see Key.published_at), oldest first."""
    horizon = clock.now() - timedelta(seconds=settings.jwt_ttl)
    rows = (
        await db.execute(
            select(SigningKey)
            .where(col(SigningKey.retired_at).is_(None) | (col(SigningKey.retired_at) > horizon))
            .order_by(col(SigningKey.activated_at))
        )
    ).scalars()
    return [
        Key(
            id=row.id,
            algorithm=row.algorithm,
            public_jwk=dict(row.public_jwk),
            activated_at=row.activated_at,
            retired_at=row.retired_at,
            sealed=row.private_key,
        )
        for row in rows
    ]


def unseal(settings: Settings, key: Key) -> PrivateKey:
    """The key's private half, opened with SECRET_KEY (SecretBoxError under another key)."""
    pem = secret_box.box(settings).decrypt(PURPOSE, key.sealed, key.id)
    private = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(private, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise TypeError(f"signing key {key.id} is a {type(private).__name__}")
    return private


class KeyRing:
    """A process's copy of the ring (app.state.signing_keys): read again at most every
    RELOAD_EVERY, or at once when it holds no key that signs now."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self._sessions = sessions
        self._settings = settings
        self._keys: list[Key] = []
        self._loaded_at: datetime | None = None
        self._reload = asyncio.Lock()
        self._signers: dict[str, Signer] = {}

    def _fresh(self, now: datetime) -> bool:
        # A clock moved backwards (tests) also reads the table again.
        loaded = self._loaded_at
        return loaded is not None and loaded <= now < loaded + RELOAD_EVERY

    async def keys(self) -> list[Key]:
        if not self._fresh(clock.now()):
            async with self._reload:
                if not self._fresh(clock.now()):  # another request reloaded meanwhile
                    await self._load()
        return self._keys

    async def _load(self) -> None:
        async with self._sessions() as db:
            self._keys = await load(db, self._settings)
        self._loaded_at = clock.now()

    async def signer(self) -> Signer:
        """The key that signs now, with its private key opened (once per process)."""
        key = self._current(await self.keys())
        if key is None:
            async with self._reload:
                key = self._current(self._keys)
                if key is None:
                    async with self._sessions() as db:
                        await ensure_first(db, self._settings)
                    await self._load()
                    key = self._current(self._keys)
        if key is None:
            raise RuntimeError("the signing key ring is empty after making its first key")
        signer = self._signers.get(key.id)
        if signer is None:
            signer = Signer(key.id, key.algorithm, unseal(self._settings, key))
            self._signers = {key.id: signer}  # only the current key is ever needed
        return signer

    @staticmethod
    def _current(keys: list[Key]) -> Key | None:
        now = clock.now()
        signing = [key for key in keys if key.signs_at(now)]
        if signing:
            return max(signing, key=lambda key: key.activated_at)
        # A node whose clock is behind the one that made the first key sees it "not yet
        # active": it signs with it all the same (it is published) rather than fail.
        live = [key for key in keys if key.retired_at is None or now < key.retired_at]
        return min(live, key=lambda key: key.activated_at) if live else None

    async def jwks(self) -> dict[str, Any]:
        """The public keys a verifier needs: next, current and recently retired."""
        now = clock.now()
        ttl = self._settings.jwt_ttl
        return {"keys": [k.public_jwk for k in await self.keys() if k.published_at(now, ttl)]}

    def forget(self) -> None:
        """Read the table again at the next use (tests, after changing it behind our back)."""
        self._loaded_at = None
