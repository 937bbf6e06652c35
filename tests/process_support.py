"""For tests that run the app as a process (`python -m app …`): its environment, a free port,
and a server started, waited for and always stopped."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def process_env(**extra: str) -> dict[str, str]:
    """This environment without the settings a test must choose itself, plus `extra`."""
    dropped = {"DATABASE_URL", "TEST_DATABASE_URL", "USERKEEP_ADMIN_PASSWORD", "TRUSTED_PROXIES"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    # A server on the suite's database must not run its jobs (the mails of other tests' sign-ups)
    # beside the tests' own workers: the test that wants it says so.
    env["JOBS_IN_SERVE"] = "false"
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(
    base: str, process: subprocess.Popen[Any], output: Callable[[], str], seconds: float = 60
) -> None:
    """Until GET /v1/ready answers 200; fails with the process's output if it exits or the
    time runs out."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"{base}/v1/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert process.poll() is None, output()
        assert time.monotonic() < deadline, "server did not become ready\n" + output()
        time.sleep(0.1)


@contextmanager
def serving(env: dict[str, str], port: int) -> Iterator[str]:
    """`python -m app serve` with `env` on `port`, ready: its base URL. Stopped with Ctrl-C
    (SIGINT) on the way out, killed if that does not end it."""
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve"],
        cwd=ROOT,
        env={**env, "HOST": "127.0.0.1", "PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server, lambda: server.stdout.read() if server.stdout else "")
        yield base
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            # Shown with the failure this is bound to cause (a server left running, …).
            print("server killed: not stopped 30 s after SIGINT", file=sys.stderr)
        if server.stdout is not None:
            print(server.stdout.read()[-4000:], file=sys.stderr)
            server.stdout.close()
