"""Opaque bearer secrets: 256 random bits, shown once, stored only as SHA-256."""

import hashlib
import secrets

SESSION_PREFIX = "ukst_"
REFRESH_PREFIX = "ukrt_"
API_KEY_PREFIX = "ask_"  # admin API keys (services/api_keys)


def new_token(prefix: str) -> str:
    # The prefix lets secret scanners and people tell the kinds apart; 32 bytes = 256 bits.
    return prefix + secrets.token_urlsafe(32)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
