"""How a `python -m app …` process ends on a signal: SIGTERM and SIGHUP unwind it like Ctrl-C,
so every `finally` runs (above all the one that stops the embedded PostgreSQL), and no signal
cuts the start or the stop of that server in half."""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

# The signals that end a run: Ctrl-C, `kill`/systemd/docker stop, and a closed terminal (which
# sends SIGHUP to every process of its foreground job).
ENDING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """SIGTERM or SIGHUP arrived. A BaseException, like KeyboardInterrupt, so that no
    `except Exception` swallows it on its way up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


def _hang_up(signum: int, frame: FrameType | None) -> None:
    # Whoever handles SIGTERM at this moment handles the hang-up too: uvicorn's graceful
    # shutdown while it serves (uvicorn itself ignores SIGHUP), _stop before and after.
    signal.raise_signal(signal.SIGTERM)


def ignored(sig: signal.Signals) -> bool:
    """Whether the process was started with `sig` ignored, and should go on ignoring it:
    `nohup` ignores SIGHUP so the run outlives its terminal, and a shell without job control
    starts background commands with SIGINT ignored so Ctrl-C does not reach them."""
    return signal.getsignal(sig) == signal.SIG_IGN


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Stopped in the main thread instead of their default action,
    which ends the process on the spot and skips every `finally`. SIGINT keeps Python's
    KeyboardInterrupt; a signal the process was started with ignored stays ignored."""
    handlers = {signal.SIGTERM: _stop, signal.SIGHUP: _hang_up}
    previous = {sig: signal.signal(sig, h) for sig, h in handlers.items() if not ignored(sig)}
    try:
        yield
    finally:
        _restore(previous)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold the ending signals until the block is done, then deliver them: a stop requested
    while the embedded server starts or stops happens after that, never halfway (half a start
    is a server nobody stops; half a stop is one stopped by SIGKILL)."""
    if threading.current_thread() is not threading.main_thread():
        # Only the main thread receives signals in Python (and may set handlers).
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in ENDING if not ignored(sig)}
    try:
        yield
    finally:
        _restore(previous)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)


def _restore(handlers: dict[signal.Signals, Any]) -> None:
    for sig, handler in handlers.items():
        # None: a handler installed outside Python, which cannot be put back; the default is
        # the closest.
        signal.signal(sig, signal.SIG_DFL if handler is None else handler)
