"""A small client for Userkeep's Faroe endpoint (POST /v1/faroe/actions) that signs requests.

For operators (a smoke test of a deployment, a script) and for the tests. A Faroe server does
the same signing in Go in its ActionInvocationEndpointClient (docs/faroe.md)::

    async with FaroeClient("https://users.example.com", secret) as faroe:
        result = await faroe.invoke("get_user_by_email_address", {"email_address": "a@b.co"})
        if result["ok"]:
            user = result["values"]["user"]

Each request carries `X-Faroe-Timestamp` (Unix seconds) and `X-Faroe-Signature`:
`v1=` + hex HMAC-SHA256(secret, timestamp + "." + body); with `X-Faroe-Nonce`, the nonce is
signed too (timestamp + "." + nonce + "." + body). The endpoint accepts each signature once, so
`Signer` (which FaroeClient uses) sends a fresh nonce with every request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx

ENDPOINT = "/v1/faroe/actions"
TIMESTAMP_HEADER = "X-Faroe-Timestamp"
SIGNATURE_HEADER = "X-Faroe-Signature"
NONCE_HEADER = "X-Faroe-Nonce"


class FaroeHTTPError(Exception):
    """The endpoint answered something other than 200 (400 invalid request, 401 bad signature,
    503 not configured, …): the action was not invoked."""

    def __init__(self, status_code: int, body: bytes) -> None:
        super().__init__(f"faroe endpoint answered HTTP {status_code}")
        self.status_code = status_code
        self.body = body


def sign(
    secret: str | bytes, body: bytes, timestamp: int | None = None, nonce: str | None = None
) -> dict[str, str]:
    """The headers that authenticate `body` (signed now, unless `timestamp` is given). With a
    `nonce` the signature covers it too (timestamp + "." + nonce + "." + body) and it is sent
    as X-Faroe-Nonce; without one, the plain contract form (timestamp + "." + body)."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signed = stamp.encode("ascii") + b"." + (b"" if nonce is None else nonce.encode() + b".")
    mac = hmac.new(key, signed + body, hashlib.sha256).hexdigest()
    headers = {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: "v1=" + mac}
    if nonce is not None:
        headers[NONCE_HEADER] = nonce
    return headers


class Signer:
    """Signs every request with a fresh random nonce. The endpoint serves each signature once,
    and Faroe sends byte-identical requests in normal use (two session checks of one user in
    the same second, from one node or two, or a retry): the nonce makes each signature new."""

    def __init__(self, secret: str | bytes) -> None:
        self.secret = secret

    def headers(self, body: bytes) -> dict[str, str]:
        return sign(self.secret, body, nonce=secrets.token_hex(16))


def encode_request(action: str, arguments: Mapping[str, Any]) -> bytes:
    """The request body as the Faroe server writes it: compact JSON, `action` then `arguments`,
    arguments in the given order, `bytes` values as padded standard base64."""
    encoded = {
        name: base64.b64encode(value).decode("ascii") if isinstance(value, bytes) else value
        for name, value in arguments.items()
    }
    request = {"action": action, "arguments": encoded}
    try:
        return json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate has no UTF-8 form; as a \uXXXX escape it is still valid JSON.
        return json.dumps(request, separators=(",", ":")).encode("ascii")


class FaroeClient:
    """Signs and sends action invocations. `target` is a base URL (the client owns its HTTP
    connection pool then; close it with `aclose()` or `async with`) or an `httpx.AsyncClient`
    whose base URL points at Userkeep (left open). `secret` None sends unsigned requests, for
    a server running with FAROE_AUTH=none."""

    def __init__(
        self,
        target: str | httpx.AsyncClient,
        secret: str | bytes | None,
        *,
        path: str = ENDPOINT,
        timeout: float = 10.0,
    ) -> None:
        if isinstance(target, httpx.AsyncClient):
            self._http = target
            self._owned = False
        else:
            self._http = httpx.AsyncClient(base_url=target, timeout=timeout)
            self._owned = True
        self._signer = None if secret is None else Signer(secret)
        self._path = path

    async def send(self, body: bytes, *, timestamp: int | None = None) -> bytes:
        """POST raw body bytes, signed (at `timestamp` when given, else by the Signer); the raw
        bytes of the 200 answer, else FaroeHTTPError."""
        if self._signer is None:
            headers = {}
        elif timestamp is None:
            headers = self._signer.headers(body)
        else:
            headers = sign(self._signer.secret, body, timestamp)
        response = await self._http.post(self._path, content=body, headers=headers)
        if response.status_code != 200:
            raise FaroeHTTPError(response.status_code, response.content)
        return response.content

    async def invoke_raw(self, action: str, arguments: Mapping[str, Any]) -> bytes:
        """Invoke an action; the exact bytes of the result."""
        return await self.send(encode_request(action, arguments))

    async def invoke(self, action: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Invoke an action; the decoded result: `{"ok": True, "action_invocation_id": …,
        "values": {…}}` or `{"ok": False, "action_invocation_id": …, "error_code": …}`."""
        result: dict[str, Any] = json.loads(await self.invoke_raw(action, arguments))
        return result

    async def aclose(self) -> None:
        if self._owned:
            await self._http.aclose()

    async def __aenter__(self) -> FaroeClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
