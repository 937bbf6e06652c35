"""The one TLS client context of the service's outgoing connections (SMTP, webhooks)."""

import ssl
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=8)
def client_context(ca_file: Path | None) -> ssl.SSLContext:
    """The system's CAs, plus the operator's PEM bundle for a private CA; certificate and host
    name always checked. There is deliberately no setting that turns verification off.
    Cached: loading the CAs costs milliseconds, a context is safe to share."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


def check_ca_file(value: Path | None) -> Path | None:
    """For the settings' validators: a wrong file stops the start-up, not the first connection
    hours later."""
    if value is None:
        return None
    try:
        ssl.create_default_context(cafile=str(value))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load it as a PEM CA bundle: {exc}") from None
    return value
