"""Talk to KServe's client from the tests: one ``worker.py`` process in ``.venv-kserve``, one JSON line per call."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.support.kserve import venv

WORKER = Path(__file__).resolve().with_name("worker.py")


class KServeError(Exception):
    """KServe's client raised: ``status`` is the HTTP status it got, None when it failed otherwise."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status


class KServeWorker:
    def __init__(self) -> None:
        python = venv.ensure()
        self.process = subprocess.Popen(
            [str(python), "-I", str(WORKER)],  # -I: nothing of the project (or this folder) on sys.path
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def call(self, op: str, **message: Any) -> Any:
        """The result of ``op`` (see ``worker.py``); raises KServeError with what the client raised."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"op": op, **message}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the KServe worker exited with {self.process.wait(10)}")
        answer = json.loads(line)
        if not answer["ok"]:
            raise KServeError(answer["status"], answer["error"])
        return answer["result"]

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()  # the worker's loop ends
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
