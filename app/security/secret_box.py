"""Secrets stored encrypted under SECRET_KEY: webhook signing secrets now, TOTP secrets and JWT
signing keys later. One module, so there is one format and one key story.

- The key: SECRET_KEY (at least 32 bytes), or, unset, a random one generated at first start
  into DATA_DIR/secret_key (mode 0600) and reused, so `make run` needs no configuration. Nodes
  sharing a database must share the key, or each reads the others' secrets as garbage: the
  generated file is announced with a warning at each start.
- Each purpose ("webhook-secret", "totp-secret", …) encrypts under its own key derived with
  HKDF-SHA256, so a ciphertext of one purpose never decrypts as another's.
- AES-256-GCM with a random 96-bit nonce; the associated data names the row (e.g. the
  endpoint's id), so a ciphertext copied into another row fails to decrypt instead of lending
  that row its secret.
- Format `v1.<urlsafe base64 of nonce || ciphertext || tag>`: the version says how to read it,
  so a later format can be told apart from this one.
- Rotation: the new key goes into SECRET_KEY, the old ones into SECRET_KEY_PREVIOUS. Secrets
  are always sealed under SECRET_KEY and opened under any of them; `open` says when an old key
  was needed, so a caller can seal the secret again (TOTP does at each use), and
  `python -m app reseal-secrets` (services/secret_rotation) does every stored secret at once,
  after which the old keys can go.
"""

import base64
import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.errors import ServiceUnavailable
from app.settings import Settings

log = logging.getLogger("userkeep.secret_box")

KEY_FILE = "secret_key"
VERSION = "v1"
NONCE_BYTES = 12


class SecretBoxError(Exception):
    """A ciphertext that does not open: another key, purpose or row, or altered bytes."""


class KeyUnavailable(ServiceUnavailable):
    """No key to be had: SECRET_KEY unset and DATA_DIR/secret_key neither readable nor
    creatable. A 503 naming the reason on every route that needs the box, not a 500; the
    routes that need no secret keep working."""


class SecretBox:
    def __init__(self, master: bytes, previous: Sequence[bytes] = ()) -> None:
        self._master = master
        self._keys: dict[str, AESGCM] = {}
        self._previous = [SecretBox(key) for key in previous]

    def _aead(self, purpose: str) -> AESGCM:
        aead = self._keys.get(purpose)
        if aead is None:
            key = HKDF(
                algorithm=hashes.SHA256(),
                length=32,
                salt=None,
                info=f"userkeep/{purpose}".encode(),
            ).derive(self._master)
            aead = self._keys[purpose] = AESGCM(key)
        return aead

    def encrypt(self, purpose: str, plaintext: str, associated: str) -> str:
        """`plaintext` sealed for `purpose`, bound to the row named by `associated`."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead(purpose).encrypt(nonce, plaintext.encode(), associated.encode())
        return f"{VERSION}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, purpose: str, token: str, associated: str) -> str:
        return self.open(purpose, token, associated)[0]

    def open(self, purpose: str, token: str, associated: str) -> tuple[str, bool]:
        """(plaintext, stale): `stale` when only a previous key opened it, so the caller may
        seal it again under the current one. SecretBoxError when no key does."""
        try:
            return self._decrypt(purpose, token, associated), False
        except SecretBoxError as failed:
            for old in self._previous:
                try:
                    return old._decrypt(purpose, token, associated), True
                except SecretBoxError:
                    continue
            raise failed

    def _decrypt(self, purpose: str, token: str, associated: str) -> str:
        version, _, body = token.partition(".")
        if version != VERSION:
            raise SecretBoxError(f"unknown ciphertext version {version!r}")
        try:
            raw = base64.urlsafe_b64decode(body.encode())
            opened = self._aead(purpose).decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated.encode()
            )
        except (InvalidTag, ValueError) as exc:
            raise SecretBoxError("the ciphertext does not open with this key and row") from exc
        return opened.decode()


def _key_file(path: Path) -> bytes:
    """The generated key at `path`, made now if absent. Created atomically with 0600: written
    to a private temporary file, then linked into place — link() never replaces an existing
    file, so of two processes starting at once both end up with the one that won."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_urlsafe(32).encode())
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temporary, path)
            log.warning("generated a SECRET_KEY into %s", path)
        except FileExistsError:
            pass  # another process made it first: use theirs
    finally:
        temporary.unlink(missing_ok=True)
    return path.read_bytes().strip()


_boxes: dict[tuple[str, str, tuple[str, ...]], SecretBox] = {}


def master_key(settings: Settings) -> bytes:
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    path = settings.data_dir.resolve() / KEY_FILE
    try:
        key = _key_file(path)
    except OSError as exc:
        raise KeyUnavailable(
            f"SECRET_KEY is not set and {path} cannot be read or created "
            f"({exc.strerror or type(exc).__name__}): set SECRET_KEY"
        ) from exc
    if not key:
        raise KeyUnavailable(f"SECRET_KEY is not set and {path} is empty: set SECRET_KEY")
    return key


def box(settings: Settings) -> SecretBox:
    """The box of `settings`' key (read or generated once per process and key source)."""
    previous = tuple(previous_keys(settings))
    source = (
        ("env", settings.secret_key.get_secret_value(), previous)
        if settings.secret_key is not None
        else ("file", str(settings.data_dir.resolve() / KEY_FILE), previous)
    )
    found = _boxes.get(source)
    if found is None:
        keys = [key.encode() for key in previous]
        found = _boxes[source] = SecretBox(master_key(settings), keys)
    return found


def previous_keys(settings: Settings) -> list[str]:
    """SECRET_KEY_PREVIOUS: the earlier keys, comma-separated (checked by Settings)."""
    if settings.secret_key_previous is None:
        return []
    return [
        k.strip() for k in settings.secret_key_previous.get_secret_value().split(",") if k.strip()
    ]


def announce(settings: Settings) -> None:
    """At start-up: make sure there is a key (generating the file now, not at the first
    secret), and say so when it is a generated one, which other nodes do not have. No key
    to be had is logged, not fatal: only the routes that need one answer 503."""
    try:
        box(settings)
    except KeyUnavailable as exc:
        log.error("stored secrets are unavailable: %s", exc.message)
        return
    if settings.secret_key is None:
        log.warning(
            "SECRET_KEY is not set: stored secrets are encrypted with the generated key in %s; "
            "every node of this service must be given the same SECRET_KEY",
            settings.data_dir.resolve() / KEY_FILE,
        )
