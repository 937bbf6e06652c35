"""`python -m app serve` on its embedded PostgreSQL across the life of its process: each way it
can end (Ctrl-C, SIGTERM, a closed terminal's SIGHUP, SIGKILL), then a second start on the same
data, which must find exactly one PostgreSQL, the data intact, and leave none behind; and a
port that is already taken.

Linux only: the PostgreSQL processes are found through /proc. One data directory is
initialised (initdb, migrations) for the module and copied for each case.
"""

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import PASSWORD, unique_email
from tests.process_support import ROOT, free_port, process_env

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc to find PostgreSQL"
)

_cases = itertools.count()
READY_TIMEOUT = 60.0
EXIT_TIMEOUT = 30.0


def postmasters(pgdata: Path) -> list[int]:
    """The live postmasters serving `pgdata`: argv[0] is the postgres binary, with `-D pgdata`.
    A postmaster's children rewrite their command line ("postgres: checkpointer"), and a zombie
    has none, so neither is counted."""
    target = pgdata.resolve()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or Path(os.fsdecode(argv[0])).name != "postgres":
            continue
        for flag, value in itertools.pairwise(argv):
            if flag == b"-D" and Path(os.fsdecode(value)).resolve() == target:
                found.append(int(entry.name))
    return sorted(found)


def _stop_postmasters(pgdata: Path) -> None:
    """Whatever a failed case left running on `pgdata`: a fast shutdown, then SIGKILL."""
    pids = postmasters(pgdata)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + 15
    while postmasters(pgdata) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in postmasters(pgdata):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Serve:
    """One `python -m app serve` in a process group of its own (a terminal's job), its output
    in a file (a pipe nobody reads would block it)."""

    def __init__(self, data_dir: Path, port: int, name: str, **env: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.log = data_dir.parent / f"{data_dir.name}-{name}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app", "serve"],
                cwd=ROOT,
                env=process_env(
                    DATA_DIR=str(data_dir),
                    HOST="127.0.0.1",
                    PORT=str(port),
                    RATE_LIMITS="off",
                    LOG_LEVEL="info",
                    **env,
                ),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/v1/ready", timeout=2).status_code == 200:
                    return
            assert self.process.poll() is None, f"serve exited early:\n{self.output()[-4000:]}"
            assert time.monotonic() < deadline, f"serve not ready:\n{self.output()[-4000:]}"
            time.sleep(0.1)

    def signal(self, sig: signal.Signals) -> None:
        """To the whole group, as a terminal sends Ctrl-C or a hang-up to its foreground job."""
        os.killpg(self.process.pid, sig)

    def wait_exit(self) -> int:
        try:
            return self.process.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve did not exit:\n{self.output()[-4000:]}")

    def kill(self) -> None:
        # The group, not just the leader: workers of WORKERS>1 may outlive it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="userkeep-life-"))
    root.chmod(0o755)  # as root, the embedded server runs as another user
    try:
        yield root
    finally:
        for pgdata in root.glob("*/postgres"):
            _stop_postmasters(pgdata)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def template(workdir: Path) -> Path:
    """A DATA_DIR whose PostgreSQL is initialised and migrated, and stopped."""
    data = workdir / "template"
    result = subprocess.run(
        [sys.executable, "-m", "app", "migrate"],
        cwd=ROOT,
        env=process_env(DATA_DIR=str(data), LOG_LEVEL="warning"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert postmasters(data / "postgres") == [], "migrate left PostgreSQL running"
    return data


@pytest.fixture
def data_dir(template: Path, workdir: Path) -> Iterator[Path]:
    """A copy of the template for one case (`cp -a`: as root the files belong to the server's
    own user, which a plain copy would not keep); its PostgreSQL is stopped afterwards."""
    # Short: the server's socket lives in the data directory, and a socket path has ~100 bytes.
    data = workdir / f"case{next(_cases)}"
    subprocess.run(["cp", "-a", str(template), str(data)], check=True)
    try:
        yield data
    finally:
        _stop_postmasters(data / "postgres")
        shutil.rmtree(data, ignore_errors=True)


def _signup(base: str) -> str:
    email = unique_email("life")
    response = httpx.post(
        f"{base}/v1/auth/signup", json={"email": email, "password": PASSWORD}, timeout=30
    )
    assert response.status_code == 201, response.text
    return email


def _signin(base: str, email: str) -> httpx.Response:
    return httpx.post(
        f"{base}/v1/auth/signin", json={"email": email, "password": PASSWORD}, timeout=30
    )


def _only_postmaster(pgdata: Path) -> int:
    running = postmasters(pgdata)
    assert len(running) == 1, f"expected one postmaster for {pgdata}, found {running}"
    recorded = int((pgdata / "postmaster.pid").read_text().split()[0])
    assert running == [recorded], f"postmaster.pid names {recorded}, running: {running}"
    return recorded


@pytest.mark.parametrize(
    "sig",
    [
        pytest.param(signal.SIGINT, id="sigint"),
        pytest.param(signal.SIGTERM, id="sigterm"),
        pytest.param(signal.SIGHUP, id="sighup"),
        pytest.param(signal.SIGKILL, id="sigkill"),
    ],
)
def test_serve_ends_and_the_next_start_finds_one_server_and_the_data(
    data_dir: Path, sig: signal.Signals
) -> None:
    pgdata = data_dir / "postgres"
    port = free_port()
    started: list[Serve] = []
    try:
        first = Serve(data_dir, port, "first")
        started.append(first)
        first.wait_ready()
        email = _signup(first.base)

        first.signal(sig)
        code = first.wait_exit()
        if sig == signal.SIGKILL:
            # The unclean exit: nothing could stop PostgreSQL, which runs in its own session.
            _only_postmaster(pgdata)
        else:
            left = first.output()[-4000:]
            assert postmasters(pgdata) == [], f"{sig.name} left PostgreSQL running:\n{left}"
            assert code == 0, left  # a requested stop, done: not a failure

        second = Serve(data_dir, port, "second")
        started.append(second)
        second.wait_ready()
        _only_postmaster(pgdata)
        signin = _signin(second.base, email)
        assert signin.status_code == 200, signin.text

        second.signal(signal.SIGTERM)
        second.wait_exit()
        assert postmasters(pgdata) == [], "PostgreSQL left running:\n" + second.output()[-4000:]
        for run in started:
            assert "remaining pids" not in run.output(), run.output()[-4000:]
    finally:
        for run in started:
            run.kill()


def _group(pgid: int) -> list[int]:
    """The live processes of process group `pgid`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    pids.append(int(entry.name))
    return pids


def test_with_workers_a_hang_up_stops_the_supervisor_the_workers_and_postgres(
    data_dir: Path,
) -> None:
    """WORKERS=2: uvicorn's supervisor, for which SIGHUP would mean "restart the workers",
    ends the run instead; no worker and no PostgreSQL is left. (SIGINT and SIGTERM it always
    ended on; its `finally` is the same as with one process.)"""
    run = Serve(data_dir, free_port(), "first", WORKERS="2")
    try:
        run.wait_ready()
        _signup(run.base)
        # The supervisor, its two workers and multiprocessing's resource tracker.
        assert len(_group(run.process.pid)) >= 3
        run.signal(signal.SIGHUP)
        run.wait_exit()
        assert _group(run.process.pid) == [], run.output()[-4000:]
        assert postmasters(data_dir / "postgres") == [], run.output()[-4000:]
    finally:
        run.kill()


def _children(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                    pids.append(int(entry.name))
    return pids


def test_a_postmaster_pid_left_by_a_killed_server_is_no_obstacle(data_dir: Path) -> None:
    """serve and its PostgreSQL both SIGKILLed (a power cut, the OOM killer): postmaster.pid
    and the holders list name dead processes. The next start recovers the data and is, as
    the list's only live holder, the one to stop the server."""
    pgdata = data_dir / "postgres"
    started: list[Serve] = []
    try:
        first = Serve(data_dir, free_port(), "first")
        started.append(first)
        first.wait_ready()
        email = _signup(first.base)
        postmaster = _only_postmaster(pgdata)
        first.signal(signal.SIGKILL)
        first.wait_exit()
        os.kill(postmaster, signal.SIGKILL)
        deadline = time.monotonic() + 15
        # Its backends notice the death of the postmaster and exit; until they have, they
        # hold the shared memory a new server must not share.
        while (postmasters(pgdata) or _children(postmaster)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert postmasters(pgdata) == [] and _children(postmaster) == []
        assert int((pgdata / "postmaster.pid").read_text().split()[0]) == postmaster
        assert (pgdata / ".handle_pids.json").read_text() == f"[{first.process.pid}]"

        second = Serve(data_dir, free_port(), "second")
        started.append(second)
        second.wait_ready()
        _only_postmaster(pgdata)
        assert _signin(second.base, email).status_code == 200
        second.signal(signal.SIGTERM)
        second.wait_exit()
        assert postmasters(pgdata) == [], second.output()[-4000:]
        assert (pgdata / ".handle_pids.json").read_text() == "[]"
    finally:
        for run in started:
            run.kill()


def _state(pid: int) -> str:
    return (Path("/proc", str(pid)) / "stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.parametrize("holder", ["another program", "a zombie"])
def test_lock_files_naming_a_pid_that_is_no_postgres_are_stale(data_dir: Path, holder: str) -> None:
    """postmaster.pid and the socket's lock file name a pid that is alive but no server: the
    system gave it to another program since, or it is the killed postmaster itself, a zombie
    nobody reaped (PID 1 of a container often does not). PostgreSQL takes either for a running
    server and refuses to start; the wheel would hand out a socket nobody listens on."""
    pgdata = data_dir / "postgres"
    # The server's own user (its own when we are root): PostgreSQL takes a pid of another
    # user for no server of its own.
    user = "embedded_postgres" if os.geteuid() == 0 else None
    command = ["sleep", "60"] if holder == "another program" else ["true"]
    other = subprocess.Popen(command, user=user, cwd="/")
    started: list[Serve] = []
    try:
        if holder == "a zombie":
            deadline = time.monotonic() + 5
            while _state(other.pid) != "Z" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _state(other.pid) == "Z"
        lines = [str(other.pid), str(pgdata), "1796000000", "5432", str(pgdata), "", "0 0", "ready"]
        lock = "\n".join(f"{line:<10}" for line in lines) + "\n"
        (pgdata / "postmaster.pid").write_text(lock)
        (pgdata / ".s.PGSQL.5432.lock").write_text(lock)
        run = Serve(data_dir, free_port(), "first")
        started.append(run)
        run.wait_ready()
        _only_postmaster(pgdata)
        _signup(run.base)
        run.signal(signal.SIGTERM)
        run.wait_exit()
        assert postmasters(pgdata) == [], run.output()[-4000:]
        assert _state(other.pid) in ("S", "Z"), "the process with that pid was touched"
    finally:
        for started_run in started:
            started_run.kill()
        other.kill()
        other.wait()


def test_a_taken_port_is_one_line_and_starts_no_postgres(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "app", "serve"],
            cwd=ROOT,
            env=process_env(
                DATA_DIR=str(data_dir), HOST="127.0.0.1", PORT=str(port), RATE_LIMITS="off"
            ),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "PORT=" in lines[0], lines[0]
    assert postmasters(data_dir / "postgres") == []
    assert not (data_dir / "postgres" / "postmaster.pid").exists()
