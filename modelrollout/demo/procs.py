"""Child processes that die with the demo: every process the demo starts goes through ``spawn``.

Each child runs in its own session, so a Ctrl-C in the terminal reaches only the demo, which then stops
its children in order (load first, servers next, Prometheus last). If the demo is killed outright
(SIGKILL), Linux's parent-death signal still stops them: a tiny Python trampoline sets
``PR_SET_PDEATHSIG`` and then ``exec``s the real program. The trampoline is used instead of
``preexec_fn``, which is unsafe in a process that already runs threads.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

STOP_TIMEOUT = 15.0

# argv: <parent pid> <program> <args...>. Exits quietly if the parent is already gone.
_TRAMPOLINE = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)
os.execv(sys.argv[2], sys.argv[2:])
"""


def free_port() -> int:
    """A loopback port that was free a moment ago (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(command: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``command`` (its first item an executable path) with stdout and stderr in ``log_path``.

    Must be called from the main thread: the parent-death signal follows the thread that forked.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-c", _TRAMPOLINE, str(os.getpid()), *command]
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; the exit code. Idempotent."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def stop_all(processes: Sequence[subprocess.Popen[bytes]], timeout: float = STOP_TIMEOUT) -> None:
    """Signal every process first, then wait for each, so they drain in parallel."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        stop(process, max(0.1, deadline - time.monotonic()))


def last_line(path: Path) -> str:
    """The last non-empty line of a log file, for one-line error messages."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""
