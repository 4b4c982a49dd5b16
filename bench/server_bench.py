"""Side-by-side HTTP benchmark of one fitted iris model served three ways: ours, Seldon MLServer, plain FastAPI.

Run it with ``make bench-server`` (``.venv/bin/python -m bench.server_bench``). Method:

1. Train ``examples/iris-v1.yaml`` with ``modelrollout train`` into ``bench/.work/bundle`` (scaled
   LogisticRegression pipeline, skops). Load that exact fitted pipeline with skops and dump it with joblib
   for the two peers, so every server computes the same function; every server's answer to the same row
   is checked against the pipeline's own ``predict_proba`` before it is measured.
2. Install MLServer + mlserver-sklearn into ``bench/.work/venv-mlserver`` (its own venv: its pins are not
   ours), pinned to our scikit-learn version so the joblib pickle loads as the same object; reused while
   the pins are unchanged.
3. Start one server at a time in its own process group, poll its readiness URL, then wait until the whole
   group is idle (so a second worker still importing does not steal CPU from the first level).
4. For each endpoint and each concurrency level: a short ``wrk`` warm-up, then a timed ``wrk`` run
   (1 thread, N keep-alive connections, closed loop, ``bench/post.lua`` posting a fixed JSON body from
   ``bench/bodies/``). The Lua ``done()`` prints requests, errors and HdrHistogram percentiles as JSON.
   Any non-2xx answer, socket error or timeout fails the run. CPU seconds of the server's process group,
   of wrk and of everything else on the machine are recorded per level, so a noisy neighbour is visible.
5. Stop the server (SIGTERM to the group, SIGKILL after a grace period; also on error and on Ctrl-C).
6. Write ``bench/results/server-<UTC>.json`` and ``server-latest.json``, a chart ``server-latest.png``, and the
   table between the markers in ``bench/README.md``.

wrk and the servers share the machine's cores (2 on the project's machines): the numbers are for the whole
box, load generator included, and comparable only with each other.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
WORK = BENCH / ".work"
LOGS = WORK / "logs"
RESULTS = BENCH / "results"
BODIES = BENCH / "bodies"
LUA = BENCH / "post.lua"
README = BENCH / "README.md"
VENV_BIN = Path(sys.executable).parent
CONFIG = REPO / "examples" / "iris-v1.yaml"

LEVELS = (1, 8, 32, 64)
DURATION_S = 10
WARMUP_S = 2
FIRST_WARMUP_S = 3
STARTUP_TIMEOUT_S = 180.0
STOP_GRACE_S = 20.0
PROBABILITY_ATOL = 1e-5
ROW = (5.1, 3.5, 1.4, 0.2)
CLASSES = ("setosa", "versicolor", "virginica")
MLSERVER_VERSION = "1.7.1"
# uvloop >= 0.22 makes MLServer 1.7.1's inference worker die at start ("no current event loop").
MLSERVER_UVLOOP = "uvloop==0.21.0"
README_START = "<!-- latest-results:start -->"
README_END = "<!-- latest-results:end -->"
CLK_TCK = os.sysconf("SC_CLK_TCK")
NOISY_SHARE = 0.1  # a level is re-measured (once by default) when others used > 10% of all cores' time

Json = dict[str, Any]


class BenchError(RuntimeError):
    """The benchmark cannot produce a trustworthy number (setup failed, a server erred, wrong answer)."""


# ---------------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _group_stats(pgid: int) -> list[list[str]]:
    """/proc/<pid>/stat fields after "(comm)" — state, ppid, pgrp, … — of every process in group ``pgid``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            found.append(fields)
    return found


def group_cpu_seconds(pgid: int) -> float:
    """User+system CPU seconds of the live processes in process group ``pgid``."""
    return sum(int(f[11]) + int(f[12]) for f in _group_stats(pgid)) / CLK_TCK  # utime, stime


def group_members(pgid: int) -> int:
    """Processes of group ``pgid`` that are not zombies."""
    return sum(1 for f in _group_stats(pgid) if f[0] != "Z")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (all cores), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def raise_priority(nice: int, pid: int = 0) -> int:
    """Nice value ``nice`` for ``pid`` (0: this process; children inherit it) and for its session's autogroup.

    With ``kernel.sched_autogroup_enabled`` the scheduler shares CPU between sessions first, so the
    process nice value alone does nothing against another session's build; the autogroup's nice does.
    """
    if not nice:
        return os.getpriority(os.PRIO_PROCESS, pid)
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid or os.getpid()}/autogroup").write_text(f"{nice}\n")
    return os.getpriority(os.PRIO_PROCESS, pid)


def wait_for_quiet_machine(max_wait_s: float, busy_cores_below: float = 0.25) -> Json:
    """Wait (bounded) until other processes use < ``busy_cores_below`` cores; report what was seen."""
    started = time.monotonic()
    busy = math.inf
    while True:
        before = machine_busy_seconds()
        time.sleep(2.0)
        busy = (machine_busy_seconds() - before) / 2.0
        waited = time.monotonic() - started
        if busy < busy_cores_below or waited >= max_wait_s:
            break
        print(f"   machine busy ({busy:.2f} cores used by other processes), waiting ...", flush=True)
    return {"other_cores_busy": round(busy, 2), "waited_s": round(waited, 1), "quiet": busy < busy_cores_below}


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


_LIVE: dict[int, subprocess.Popen[bytes]] = {}


def _kill_group(process: subprocess.Popen[bytes], grace: float) -> None:
    pgid = process.pid  # start_new_session=True: the server leads its own session and process group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        process.wait(10)
    deadline = time.monotonic() + grace
    while group_members(pgid) and time.monotonic() < deadline:  # workers the leader left behind
        time.sleep(0.2)
    if group_members(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    _LIVE.pop(process.pid, None)


def _stop_all() -> None:
    for process in list(_LIVE.values()):
        _kill_group(process, grace=5.0)


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every ``finally``: servers get stopped


def http(method: str, url: str, body: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


# ---------------------------------------------------------------------------------------------- targets


def ours_probabilities(body: Json) -> list[float]:
    return [float(body["probabilities"][name]) for name in CLASSES]


def v2_probabilities(body: Json) -> list[float]:
    for output in body["outputs"]:
        if output["name"] == "predict_proba":
            return [float(v) for v in output["data"]]
    raise KeyError("no predict_proba output")


@dataclass(frozen=True)
class Endpoint:
    key: str
    label: str
    path: str
    body: Path
    probabilities: Callable[[Json], list[float]]


@dataclass
class Server:
    key: str
    label: str
    command: list[str]
    port: int
    ready_path: str
    endpoints: list[Endpoint]
    config: Json
    cwd: Path = REPO
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    nice: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pgid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_tail(self, chars: int = 4000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    @contextlib.contextmanager
    def running(self) -> Iterator[Json]:
        """Start, wait for readiness and idleness, yield start-up facts, and always stop the process group."""
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"{self.key}.log"
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        _LIVE[self.process.pid] = self.process
        if self.nice:
            raise_priority(self.nice, self.process.pid)  # its own session: its own autogroup
        try:
            ready_s = self._wait_ready(started)
            settled_s = self._wait_idle(started)
            yield {"ready_s": round(ready_s, 2), "settled_s": round(settled_s, 2)}
        finally:
            _kill_group(self.process, STOP_GRACE_S)

    def _wait_ready(self, started: float) -> float:
        assert self.process is not None
        url = self.base_url + self.ready_path
        while time.monotonic() - started < STARTUP_TIMEOUT_S:
            if self.process.poll() is not None:
                raise BenchError(f"{self.label} exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if http("GET", url, timeout=1.0)[0] == 200:
                    return time.monotonic() - started
            time.sleep(0.25)
        raise BenchError(f"{self.label} not ready after {STARTUP_TIMEOUT_S:.0f}s:\n{self.log_tail()}")

    def _wait_idle(self, started: float, window: float = 1.0, busy_below: float = 0.05) -> float:
        """Until the process group uses < 5% of a core over a second (every worker done importing)."""
        previous = group_cpu_seconds(self.pgid)
        while time.monotonic() - started < STARTUP_TIMEOUT_S:
            time.sleep(window)
            current = group_cpu_seconds(self.pgid)
            if current - previous < busy_below * window:
                return time.monotonic() - started
            previous = current
        raise BenchError(f"{self.label} never went idle after start-up:\n{self.log_tail()}")


# ---------------------------------------------------------------------------------------------- setup


def run_checked(command: Sequence[str | Path], what: str, timeout: float = 600, **kwargs: Any) -> str:
    try:
        done = subprocess.run(
            [str(c) for c in command], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{what}: timed out after {timeout}s") from exc
    if done.returncode != 0:
        raise BenchError(f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return str(done.stdout)


def train_bundle() -> Path:
    bundle = WORK / "bundle"
    shutil.rmtree(bundle, ignore_errors=True)
    run_checked(
        [VENV_BIN / "modelrollout", "train", "--config", CONFIG, "--out", bundle], "modelrollout train", cwd=REPO
    )
    return bundle


def export_joblib(bundle: Path) -> tuple[Path, list[float], str]:
    """The bundle's fitted pipeline re-saved with joblib, its probabilities for ``ROW``, and its repr."""
    import joblib
    import numpy as np
    import skops.io

    model_file = bundle / json.loads((bundle / "model.json").read_text())["model_file"]
    model = skops.io.load(model_file, trusted=skops.io.get_untrusted_types(file=model_file))
    target = WORK / "model.joblib"
    joblib.dump(model, target)
    expected = model.predict_proba(np.array([ROW], dtype=np.float64))[0].tolist()
    return target, [float(p) for p in expected], " ".join(repr(model).split())


def mlserver_requirements(sklearn_version: str) -> list[str]:
    return [
        f"mlserver=={MLSERVER_VERSION}",
        f"mlserver-sklearn=={MLSERVER_VERSION}",
        f"scikit-learn=={sklearn_version}",  # same as ours: the joblib pickle must load as the same object
        MLSERVER_UVLOOP,
    ]


def ensure_mlserver_venv(sklearn_version: str) -> tuple[Path, Json]:
    venv = WORK / "venv-mlserver"
    python = venv / "bin" / "python"
    requirements = mlserver_requirements(sklearn_version)
    stamp = venv / "bench-requirements.txt"
    installed_s = 0.0
    if not (python.exists() and stamp.exists() and stamp.read_text().split() == requirements):
        print(f"installing {' '.join(requirements)} into {venv.relative_to(REPO)} ...", flush=True)
        started = time.monotonic()
        shutil.rmtree(venv, ignore_errors=True)
        run_checked([sys.executable, "-m", "venv", venv], "python -m venv")
        uv = VENV_BIN / "uv"
        if uv.exists():
            run_checked([uv, "pip", "install", "--quiet", "--python", python, *requirements], "uv pip install")
        else:
            run_checked([python, "-m", "pip", "install", "--quiet", *requirements], "pip install")
        stamp.write_text("\n".join(requirements) + "\n")
        installed_s = time.monotonic() - started
    probe = (
        "import importlib.metadata as m, json, sys\n"
        "from mlserver.settings import Settings\n"
        "s = Settings()\n"
        "names = ['mlserver', 'mlserver-sklearn', 'scikit-learn', 'numpy', 'joblib', 'fastapi', 'uvicorn',"
        " 'uvloop', 'pydantic']\n"
        "print(json.dumps({'python': sys.version.split()[0], 'packages': {n: m.version(n) for n in names},"
        " 'defaults': {'parallel_workers': s.parallel_workers, 'debug': s.debug,"
        " 'metrics_endpoint': s.metrics_endpoint}}))\n"
    )
    facts: Json = json.loads(run_checked([python, "-c", probe], "probe MLServer venv", cwd=WORK).strip())
    facts["requirements"] = requirements
    facts["install_s"] = round(installed_s, 1)
    if facts["packages"]["scikit-learn"] != sklearn_version:
        raise BenchError(f"MLServer venv has scikit-learn {facts['packages']['scikit-learn']}, ours {sklearn_version}")
    return venv, facts


def write_mlserver_repo(model: Path, name: str, settings: Json) -> Path:
    root = WORK / name
    shutil.rmtree(root, ignore_errors=True)
    (root / "iris").mkdir(parents=True)
    shutil.copy2(model, root / "iris" / "model.joblib")
    model_settings = {
        "name": "iris",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "1.0.0"},
    }
    (root / "iris" / "model-settings.json").write_text(json.dumps(model_settings, indent=2) + "\n")
    (root / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    return root


def build_servers(bundle: Path, model: Path, mlserver_venv: Path, *, extended: bool) -> list[Server]:
    ours_command = [str(VENV_BIN / "modelrollout"), "serve", f"file://{bundle}", "--host", "127.0.0.1"]
    body_predict = BODIES / "predict.json"
    body_v2 = BODIES / "v2-infer.json"
    body_v2_proba = BODIES / "v2-infer-proba.json"

    def ours(key: str, label: str, extra: list[str], endpoints: list[Endpoint]) -> Server:
        port = free_port()
        command = [*ours_command, "--port", str(port), "--workers", "2", *extra]
        return Server(key, label, command, port, "/health/ready", endpoints, {"workers": 2, "args": extra})

    def plain(workers: int) -> Server:
        port = free_port()
        command = [str(VENV_BIN / "uvicorn"), "bench.plain_app:app", "--host", "127.0.0.1", "--port", str(port)]
        if workers > 1:
            command += ["--workers", str(workers)]
        key = f"plain-{workers}w"
        endpoint = Endpoint(
            key,
            f"plain FastAPI+joblib, {workers} worker{'s' if workers > 1 else ''}",
            "/predict",
            body_predict,
            ours_probabilities,
        )
        config = {"workers": workers, "uvicorn_defaults": "access log on, uvloop+httptools auto-selected"}
        return Server(
            key, endpoint.label, command, port, "/health", [endpoint], config, env={"PLAIN_MODEL_PATH": str(model)}
        )

    def mlserver(key: str, label: str, overrides: Json) -> Server:
        port = free_port()
        settings = {
            "host": "127.0.0.1",
            "http_port": port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            **overrides,
        }
        root = write_mlserver_repo(model, f"mlserver-{key}", settings)
        endpoint = Endpoint(key, label, "/v2/models/iris/infer", body_v2_proba, v2_probabilities)
        command = [str(mlserver_venv / "bin" / "mlserver"), "start", str(root)]
        return Server(
            key, label, command, port, "/v2/models/iris/ready", [endpoint], {"settings.json": settings}, cwd=root
        )

    servers = [
        ours(
            "ours",
            "ours (2 workers)",
            [],
            [
                Endpoint("ours-predict", "ours /predict", "/predict", body_predict, ours_probabilities),
                Endpoint("ours-v2", "ours /v2 infer", "/v2/models/iris/infer", body_v2, v2_probabilities),
            ],
        ),
        mlserver("mlserver", "MLServer (defaults)", {}),
        plain(1),
        plain(2),
    ]
    if extended:
        servers.insert(
            1,
            ours(
                "ours-sklearn",
                "ours --engine sklearn",
                ["--engine", "sklearn"],
                [
                    Endpoint(
                        "ours-sklearn-predict",
                        "ours /predict, --engine sklearn",
                        "/predict",
                        body_predict,
                        ours_probabilities,
                    )
                ],
            ),
        )
        servers.insert(
            3,
            mlserver(
                "mlserver-tuned", "MLServer (parallel_workers=0, debug=false)", {"parallel_workers": 0, "debug": False}
            ),
        )
    return servers


# ---------------------------------------------------------------------------------------------- measuring


def check_answer(server: Server, endpoint: Endpoint, expected: list[float]) -> Json:
    status, raw = http("POST", server.base_url + endpoint.path, endpoint.body.read_bytes())
    if status != 200:
        raise BenchError(f"{endpoint.label}: HTTP {status}: {raw[:500]!r}\n{server.log_tail()}")
    body: Json = json.loads(raw)
    got = endpoint.probabilities(body)
    if len(got) != len(expected) or any(abs(g - e) > PROBABILITY_ATOL for g, e in zip(got, expected, strict=False)):
        raise BenchError(f"{endpoint.label}: probabilities {got} differ from the pipeline's {expected}")
    return body


def run_wrk(url: str, body: Path, connections: int, seconds: int, log_name: str | None) -> Json:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(LUA),
        url,
        "--",
        str(body),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False, cwd=REPO)
    if log_name is not None:
        (LOGS / log_name).write_text(" ".join(command) + "\n" + done.stdout + done.stderr)
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_JSON ")]
    if done.returncode != 0 or not lines:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    result: Json = json.loads(lines[-1].removeprefix("BENCH_JSON "))
    return result


def measure_level(server: Server, endpoint: Endpoint, connections: int, seconds: int, warmup: int) -> Json:
    url = server.base_url + endpoint.path
    warmup_errors = 0
    if warmup:
        warmup_errors = int(sum(run_wrk(url, endpoint.body, connections, warmup, None)["errors"].values()))
    server_before = group_cpu_seconds(server.pgid)
    wrk_before = children_cpu_seconds()
    busy_before = machine_busy_seconds()
    raw = run_wrk(url, endpoint.body, connections, seconds, f"wrk-{endpoint.key}-c{connections}.txt")
    server_cpu = group_cpu_seconds(server.pgid) - server_before
    wrk_cpu = children_cpu_seconds() - wrk_before
    busy = machine_busy_seconds() - busy_before
    duration = raw["duration_us"] / 1e6
    requests = int(raw["requests"])
    latency = raw["latency_us"]
    errors = raw["errors"]
    return {
        "connections": connections,
        "duration_s": round(duration, 3),
        "requests": requests,
        "rps": round(requests / duration, 1),
        "latency_ms": {k: round(float(latency[k]) / 1000, 3) for k in ("p50", "p90", "p99", "p999", "mean", "max")},
        "errors": errors,
        "error_count": int(sum(errors.values())) + warmup_errors,
        "warmup_error_count": warmup_errors,
        "cpu_s": {
            "server": round(server_cpu, 2),
            "wrk": round(wrk_cpu, 2),
            "other": round(max(busy - server_cpu - wrk_cpu, 0.0), 2),
            "machine_busy": round(busy, 2),
        },
        "server_cpu_us_per_request": round(server_cpu / requests * 1e6, 1) if requests else None,
    }


def noisy(row: Json) -> bool:
    """Other processes took > ``NOISY_SHARE`` of all cores' time while the machine was saturated.

    At low concurrency the server and wrk leave a core idle; another process using that idle core is not
    counted as interference.
    """
    capacity = row["duration_s"] * (os.cpu_count() or 1)
    cpu = row["cpu_s"]
    return bool(cpu["other"] > NOISY_SHARE * capacity and cpu["machine_busy"] > (1 - NOISY_SHARE) * capacity)


def engine_from_log(server: Server) -> str | None:
    for line in server.log_tail(200_000).splitlines():
        if '"model ready"' in line:
            with contextlib.suppress(ValueError, KeyError):
                return str(json.loads(line)["engine"])
    return None


# ---------------------------------------------------------------------------------------------- reporting


def ratios(endpoints: dict[str, Json], ours_key: str, peer_key: str, factor: float) -> Json | None:
    ours, peer = endpoints.get(ours_key), endpoints.get(peer_key)
    if ours is None or peer is None:
        return None
    peer_levels = {row["connections"]: row for row in peer["levels"]}
    rows = []
    for row in ours["levels"]:
        other = peer_levels.get(row["connections"])
        if other is None:
            continue
        throughput = row["rps"] / other["rps"] if other["rps"] else math.inf
        p99 = row["latency_ms"]["p99"] / other["latency_ms"]["p99"] if other["latency_ms"]["p99"] else math.inf
        rows.append(
            {
                "connections": row["connections"],
                "throughput_ratio": round(throughput, 2),
                "p99_ratio": round(p99, 2),
                "meets_target": throughput >= factor and p99 <= 1.0,
            }
        )
    best_ours = max(r["rps"] for r in ours["levels"])
    best_peer = max(r["rps"] for r in peer["levels"])
    return {
        "ours": ours_key,
        "peer": peer_key,
        "target_throughput_factor": factor,
        "levels": rows,
        "peak_throughput_ratio": round(best_ours / best_peer, 2) if best_peer else None,
        "meets_target_at_every_level": bool(rows) and all(r["meets_target"] for r in rows),
    }


def markdown_table(result: Json) -> str:
    endpoints: dict[str, Json] = result["endpoints"]
    levels = sorted({row["connections"] for e in endpoints.values() for row in e["levels"]})
    lines = [
        f"Run {result['started_utc']} — {result['machine']['cpus']} CPUs ({result['machine']['cpu_model']}), "
        f"wrk 1 thread on the same cores, {result['method']['duration_s']} s per level after a "
        f"{result['method']['warmup_s']} s warm-up, nice {result['method']['nice']}. "
        f"Total runtime {result['runtime_s']:.0f} s.",
        "",
        "| server | " + " | ".join(f"c={c} req/s · p50 · p99 (ms)" for c in levels) + " |",
        "|---|" + "---|" * len(levels),
    ]
    for endpoint in endpoints.values():
        by_level = {row["connections"]: row for row in endpoint["levels"]}
        cells = []
        for c in levels:
            row = by_level.get(c)
            cells.append(
                "—"
                if row is None
                else f"{row['rps']:,.0f} · {row['latency_ms']['p50']:.2f} · {row['latency_ms']['p99']:.2f}"
            )
        lines.append(f"| {endpoint['label']} | " + " | ".join(cells) + " |")
    lines += ["", "Ours (/predict) relative to each peer: throughput x (p99 ratio; < 1 means ours is lower).", ""]
    lines += ["| ours vs | target | " + " | ".join(f"c={c}" for c in levels) + " | peak req/s | target met |"]
    lines += ["|---|---|" + "---|" * len(levels) + "---|---|"]
    for comparison in result["comparisons"]:
        by_level = {r["connections"]: r for r in comparison["levels"]}
        cells = [
            f"{by_level[c]['throughput_ratio']:.2f}x ({by_level[c]['p99_ratio']:.2f})" if c in by_level else "—"
            for c in levels
        ]
        peer = endpoints[comparison["peer"]]["label"]
        ours = endpoints[comparison["ours"]]["label"]
        met = "yes" if comparison["meets_target_at_every_level"] else "no"
        lines.append(
            f"| {peer} ({ours}) | ≥{comparison['target_throughput_factor']:g}x | "
            + " | ".join(cells)
            + f" | {comparison['peak_throughput_ratio']:.2f}x | {met} |"
        )
    cpu = [
        f"{e['label']}: {sum(r['server_cpu_us_per_request'] or 0 for r in e['levels']) / len(e['levels']):.0f} µs"
        for e in endpoints.values()
    ]
    lines += ["", "Server CPU per request (mean over levels): " + "; ".join(cpu) + "."]
    busy = [
        f"{e['key']} c={r['connections']} ({r['cpu_s']['other']:.1f} s)"
        for e in endpoints.values()
        for r in e["levels"]
        if noisy(r)
    ]
    if busy:
        lines += [
            "",
            f"Processes outside the bench used more than {NOISY_SHARE:.0%} of the machine's CPU time during: "
            + "; ".join(busy)
            + ". Those numbers are depressed; CPU per request is the least affected figure.",
        ]
    return "\n".join(lines)


def write_chart(result: Json, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    figure, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    throughput, p99, cpu = axes
    for endpoint in result["endpoints"].values():
        rows = endpoint["levels"]
        xs = [row["connections"] for row in rows]
        ours = endpoint["server"].startswith("ours")
        style: Json = {"marker": "o", "label": endpoint["label"], "linewidth": 2.4 if ours else 1.4}
        if not ours:
            style["linestyle"] = "--"
        throughput.plot(xs, [row["rps"] for row in rows], **style)
        p99.plot(xs, [row["latency_ms"]["p99"] for row in rows], **style)
        cpu.plot(xs, [row["server_cpu_us_per_request"] for row in rows], **style)
    levels = sorted({row["connections"] for e in result["endpoints"].values() for row in e["levels"]})
    panels = (
        (throughput, "Throughput (higher is better)", "requests/s"),
        (p99, "p99 latency (lower is better)", "ms, log scale"),
        (cpu, "Server CPU per request (lower is better)", "µs of CPU (all server processes), log scale"),
    )
    for axis, title, unit in panels:
        axis.set_xscale("log", base=2)
        axis.set_xticks(levels, [str(c) for c in levels])
        axis.set_xlabel("concurrent connections (wrk, 1 thread)")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    for axis in (p99, cpu):
        axis.set_yscale("log")
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        axis.yaxis.set_major_formatter(plain)
        axis.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
        axis.yaxis.set_minor_formatter(plain)
        axis.tick_params(axis="y", which="minor", labelsize=7)
    throughput.set_ylim(bottom=0)
    throughput.legend(fontsize=8)
    machine = result["machine"]
    busy = [e["key"] for e in result["endpoints"].values() if not e["machine_before_start"]["quiet"]]
    figure.suptitle(
        f"iris StandardScaler+LogisticRegression, the same fitted pipeline in every server — {machine['cpus']} CPUs "
        f"shared with wrk — {result['started_utc']}" + (f" — busy machine during: {', '.join(busy)}" if busy else ""),
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def update_readme(table: str) -> None:
    if not README.exists():
        return
    text = README.read_text()
    if README_START not in text or README_END not in text:
        return
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    README.write_text(f"{head}{README_START}\n{table}\n{README_END}{tail}")


def git_state() -> Json:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    dirty = [line[3:] for line in git("status", "--porcelain", "--", "model_server", "modelrollout").splitlines()]
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_server_files": dirty}


def machine_facts() -> Json:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": (wrk.stdout + wrk.stderr).splitlines()[0] if (wrk.stdout + wrk.stderr) else "",
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def our_versions() -> Json:
    from importlib.metadata import version

    names = [
        "scikit-learn",
        "numpy",
        "skops",
        "joblib",
        "fastapi",
        "starlette",
        "uvicorn",
        "uvloop",
        "pydantic",
        "orjson",
        "onnxruntime",
    ]
    found: Json = {}
    for name in names:
        with contextlib.suppress(Exception):
            found[name] = version(name)
    return found


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="concurrency levels, comma-separated")
    parser.add_argument("--duration", type=int, default=DURATION_S, help="seconds measured per level")
    parser.add_argument("--warmup", type=int, default=WARMUP_S, help="seconds of warm-up before each level")
    parser.add_argument("--only", default="", help="server keys to run, comma-separated (default: all)")
    parser.add_argument(
        "--core-only",
        action="store_true",
        help="skip the two fairness variants (ours --engine sklearn, MLServer without access log and IPC): -2 min",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=6.0,
        help="seconds to wait for other processes to go idle before each server",
    )
    parser.add_argument(
        "--noisy-retries", type=int, default=1, help="re-measure a level this often while other processes were busy"
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=-10,
        help="nice value for the bench, the servers and wrk (inherited); negative needs root, 0 leaves it alone",
    )
    parser.add_argument(
        "--retry-budget", type=float, default=60.0, help="at most this many seconds in total for re-measuring"
    )
    parser.add_argument("--no-write", action="store_true", help="print only: no results files, chart or README")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    levels = [int(c) for c in args.levels.split(",") if c]
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed: apt-get update && apt-get install -y wrk")
    started = time.monotonic()
    started_utc = dt.datetime.now(dt.UTC)
    WORK.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _on_signal)
    niceness = raise_priority(args.priority)
    if niceness != args.priority:
        print(f"   could not set nice {args.priority}; running at {niceness}", flush=True)
    atexit.register(_stop_all)

    print("training the bundle ...", flush=True)
    bundle = train_bundle()
    model, expected, model_repr = export_joblib(bundle)
    ours = our_versions()
    mlserver_venv, mlserver_facts = ensure_mlserver_venv(ours["scikit-learn"])
    servers = build_servers(bundle, model, mlserver_venv, extended=not args.core_only)
    if args.only:
        wanted = set(args.only.split(","))
        servers = [s for s in servers if s.key in wanted]
    for server in servers:
        server.nice = niceness
    setup_s = time.monotonic() - started

    endpoints: dict[str, Json] = {}
    failures: list[str] = []
    quiet: dict[str, Json] = {}
    retry_seconds = 0.0
    for server in servers:
        print(f"== {server.label}: {' '.join(server.command)}", flush=True)
        quiet[server.key] = wait_for_quiet_machine(args.quiet_wait)
        if not quiet[server.key]["quiet"]:
            print(f"   WARNING: measuring on a busy machine: {quiet[server.key]}", flush=True)
        with server.running() as startup:
            print(f"   ready after {startup['ready_s']} s, idle after {startup['settled_s']} s", flush=True)
            samples = {e.key: check_answer(server, e, expected) for e in server.endpoints}
            run_wrk(server.base_url + server.endpoints[0].path, server.endpoints[0].body, 8, FIRST_WARMUP_S, None)
            engine = engine_from_log(server)
            for endpoint in server.endpoints:
                rows = []
                for connections in levels:
                    row = measure_level(server, endpoint, connections, args.duration, args.warmup)
                    for _ in range(args.noisy_retries):
                        if row["error_count"] or not noisy(row) or retry_seconds >= args.retry_budget:
                            break
                        retry_started = time.monotonic()
                        print(f"   (c={connections}: other processes used {row['cpu_s']['other']} s CPU: again)")
                        again = measure_level(server, endpoint, connections, args.duration, args.warmup)
                        keep = again if again["cpu_s"]["other"] < row["cpu_s"]["other"] else row
                        row = {**keep, "retried": row.get("retried", 0) + 1}
                        retry_seconds += time.monotonic() - retry_started
                    rows.append(row)
                    print(
                        f"   {endpoint.label:<42} c={connections:<3} {row['rps']:>8,.0f} req/s  "
                        f"p50 {row['latency_ms']['p50']:7.2f} ms  p99 {row['latency_ms']['p99']:7.2f} ms  "
                        f"cpu/req {row['server_cpu_us_per_request']} µs  other-cpu {row['cpu_s']['other']} s"
                        + (f"  ERRORS {row['errors']}" if row["error_count"] else ""),
                        flush=True,
                    )
                    if row["error_count"]:
                        failures.append(f"{endpoint.label} c={connections}: {row['errors']}")
                endpoints[endpoint.key] = {
                    "key": endpoint.key,
                    "label": endpoint.label,
                    "server": server.key,
                    "url_path": endpoint.path,
                    "request_body": json.loads(endpoint.body.read_text()),
                    "sample_response": samples[endpoint.key],
                    "command": server.command,
                    "config": server.config,
                    "engine": engine,
                    "startup": startup,
                    "machine_before_start": quiet[server.key],
                    "levels": rows,
                }

    comparisons = [
        c
        for c in (
            ratios(endpoints, "ours-predict", "mlserver", 3.0),
            ratios(endpoints, "ours-v2", "mlserver", 3.0),
            ratios(endpoints, "ours-predict", "plain-1w", 2.0),
            ratios(endpoints, "ours-predict", "plain-2w", 2.0),
            ratios(endpoints, "ours-predict", "mlserver-tuned", 3.0),
        )
        if c is not None
    ]
    result: Json = {
        "benchmark": "server",
        "started_utc": started_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "runtime_s": round(time.monotonic() - started, 1),
        "setup_s": round(setup_s, 1),
        "ok": not failures,
        "failures": failures,
        "machine": machine_facts(),
        "git": git_state(),
        "model": {
            "config": str(CONFIG.relative_to(REPO)),
            "pipeline": model_repr,
            "row": list(ROW),
            "expected_probabilities": expected,
        },
        "method": {
            "load_generator": "wrk, 1 thread, closed loop, keep-alive, bench/post.lua",
            "levels": levels,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "first_warmup_s": FIRST_WARMUP_S,
            "note": "wrk shares the CPUs with the server under test; one server runs at a time",
            "nice": niceness,
            "noisy_retries": args.noisy_retries,
            "retry_budget_s": args.retry_budget,
            "retry_seconds_used": round(retry_seconds, 1),
        },
        "versions": {"ours": ours, "mlserver_venv": mlserver_facts},
        "endpoints": endpoints,
        "comparisons": comparisons,
    }
    table = markdown_table(result) if endpoints else ""
    print("\n" + table, flush=True)
    if not args.no_write and endpoints:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = started_utc.strftime("%Y%m%dT%H%M%SZ")
        text = json.dumps(result, indent=2) + "\n"
        (RESULTS / f"server-{stamp}.json").write_text(text)
        (RESULTS / "server-latest.json").write_text(text)
        write_chart(result, RESULTS / "server-latest.png")
        if not args.only and failures == []:
            update_readme(table)
        print(f"\nwrote bench/results/server-{stamp}.json, server-latest.json, server-latest.png", flush=True)
    print(f"total runtime {time.monotonic() - started:.0f} s", flush=True)
    if failures:
        print("\nFAILED: servers answered with errors (non-2xx, socket errors or timeouts):", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"\nbench-server FAILED: {exc}", file=sys.stderr)
        sys.exit(2)
