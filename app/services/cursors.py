"""Opaque keyset cursors: base64url of a small JSON object; a bad one is a 422 on `cursor`.

A cursor only names a position (the last row's sort value and id); the filters and the app
scope are applied again on every call, so a forged cursor can move a page, never widen it.
"""

import base64
import binascii
import json
from typing import Any

from app.errors import ValidationFailed


def encode(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError):
        raise ValidationFailed("cursor", "is not a cursor of this list") from None
    if not isinstance(position, dict):
        raise ValidationFailed("cursor", "is not a cursor of this list")
    return position
