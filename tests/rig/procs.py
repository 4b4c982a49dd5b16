"""Child processes of the rig: free loopback ports, a started component with its own log file, polling.

Every component writes to a log file in one directory so a failing test can point at the whole picture
(apiserver audit of why, scheduler decisions, kwok transitions) instead of a bare timeout.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: if pytest is killed outright, the kernel stops the rig with it."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the fixtures' teardown alone stops it
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (the kernel picks it; races are unlikely)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
    alive: Callable[[], None] | None = None,
) -> T:
    """Poll ``probe`` until it returns something other than None/False; ``alive`` may raise early."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        if alive is not None:
            alive()
        try:
            result = probe()
        except Exception as error:  # the probe's own failures are expected while things come up
            last_error = error
            result = None
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def run_phases(
    phases: Sequence[tuple[str, Callable[[], None]]], timings: dict[str, float], on_failure: Callable[[], None]
) -> None:
    """Run start-up phases in order, recording each one's seconds in ``timings``; if any fails (or is
    interrupted), ``on_failure`` undoes what the earlier ones started before the error goes on."""
    try:
        for phase, action in phases:
            phase_started = time.monotonic()
            action()
            timings[phase] = time.monotonic() - phase_started
    except BaseException:
        on_failure()
        raise


@dataclass
class Component:
    """One long-running rig process; stdout and stderr go to ``<log_dir>/<name>.log``."""

    name: str
    command: Sequence[str]
    log_dir: Path
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self) -> Component:
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            log.write(f"$ {' '.join(self.command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                list(self.command),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,  # a Ctrl-C in the terminal reaches pytest, which stops us in order
                preexec_fn=_die_with_parent,
            )
        return self

    def check_alive(self) -> None:
        """Raise with the log's tail when the process has exited: a crash must not look like a timeout."""
        if self.process is None:
            raise RuntimeError(f"{self.name} was never started")
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with code {code}; log tail:\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``: components shut down gracefully when they can."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
