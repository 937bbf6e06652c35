"""The client's IP address, for rate limits and the audit log.

X-Forwarded-For is written by whoever sends the request, so it is believed only when the socket
peer is a configured trusted proxy (TRUSTED_PROXIES), and then only as far as the chain of
trusted proxies goes: the right-most address that is not a trusted proxy is the client.

Whatever is returned is an IP address in its canonical spelling, or None: the value is stored
in audit and session rows and shown to admins and users, so text that merely claims to be an
address (a peer name from a server in front of us, a header) never gets that far.
"""

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


# Parsing an address costs more than the rest of a rate-limited route's bookkeeping, and the
# peers a server sees are few (its proxies, its clients): parsed once each. Addresses are
# immutable, and the cache is bounded against a header that varies per request.
@lru_cache(maxsize=4096)
def _address(value: str | None) -> Address | None:
    if not value:
        return None
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def client_ip(
    peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]
) -> str | None:
    address = _address(peer)
    if address is None:
        return None
    if not trusted or not forwarded_for or not any(address in net for net in trusted):
        return str(address)
    hops = [_address(hop) for hop in forwarded_for.split(",")]
    for hop in reversed(hops):
        if hop is None:
            # A malformed entry: nothing to its left can be trusted either.
            return str(address)
        if not any(hop in net for net in trusted):
            return str(hop)
    # Every hop is a proxy of ours: the left-most is as close to the client as we can know.
    return str(hops[0])
