"""The client's IP address, for rate limits and the audit log.

X-Forwarded-For is written by whoever sends the request, so it is believed only when the socket
peer is a configured trusted proxy (TRUSTED_PROXIES), and then only as far as the chain of
trusted proxies goes: the right-most address that is not a trusted proxy is the client.
"""

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _trusted(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_ip(
    peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]
) -> str | None:
    if peer is None or not trusted or not forwarded_for or not _trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",")]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            # A malformed entry: nothing to its left can be trusted either.
            return peer
        if not _trusted(hop, trusted):
            return hop
    # Every hop is a proxy of ours: the left-most is as close to the client as we can know.
    return hops[0]
