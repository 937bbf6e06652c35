"""What the scripts that start their own servers (tools/check_docs_offline.py, fuzz/run.py)
share: a free loopback port, and SIGTERM turned into an exception so their `finally` blocks
stop what they started."""

import socket
from types import FrameType


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """A signal handler: SIGTERM (a CI timeout, `kill`) as SystemExit."""
    raise SystemExit(128 + signum)
