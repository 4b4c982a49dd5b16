"""``make demo-cluster``: the rollout story of ``make demo`` on the test rig's real control plane and Prometheus.

1.0.0 becomes stable, 2.0.0 goes canary 10 → 50 → 100 % and is promoted, 3.0.0 (the iris-v2 model served
with the test-only ``--fault-error-rate 0.3``) is rolled back. Everything is wired as the operator
integration tests wire it: etcd + kube-apiserver + controllers + kwok and Prometheus from ``$RIG_DIR``, the
Helm chart installed, the operator process running with the chart ServiceAccount's token, real model-server
processes scraped by Prometheus, and ``WeightedLoad`` standing in for the gateway (it reads the HTTPRoute's
weights). ``kubectl get md -w`` and the operator's Events stream to the terminal while it runs.

Run it with ``python -m tests.rig.demo_cluster [--out DIR]`` (default ``build/demo-cluster``; every log in
``DIR/logs``). Ctrl-C or an error stops every process it started and says so in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

try:  # seconds of imports (scikit-learn, kubernetes): a Ctrl-C meanwhile is an interruption, not a traceback
    from kubernetes import client as k8s

    from model_server.bundle import ModelManifest
    from model_server.training import load_config, train
    from tests.rig import Cluster, Prometheus, RigMissingError, paths
    from tests.rig.procs import _die_with_parent
    from tests.support.helm import CHART, Helm
    from tests.support.rollouts import OperatorProcess, WeightedLoad, model_deployment, model_ref
    from tests.support.servers import MODELROLLOUT, REPO, ServerProcess
except KeyboardInterrupt:
    if __name__ != "__main__":
        raise
    print("demo-cluster interrupted before it started anything", flush=True)
    os._exit(130)  # not sys.exit: after a KeyboardInterrupt inside an import Python would re-raise SIGINT on exit

NAMESPACE, NAME, SYSTEM = "models", "iris", "modelrollout-system"
DEFAULT_OUT = REPO / "build" / "demo-cluster"
EXAMPLES = REPO / "examples"
FAULT = ("--fault-error-rate", "0.3")
RIG_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "helm", "prometheus")
# Short analysis so the story fits in minutes (the shipped defaults are interval 20s, window 1m).
STEPS: list[dict[str, Any]] = [{"setWeight": 10}, {"pause": {"duration": "2s"}}, {"setWeight": 50}, {"setWeight": 100}]
ANALYSIS: dict[str, Any] = {
    "interval": "2s",
    "window": "8s",
    "failureLimit": 2,
    "minRequests": 10,
    "inconclusiveLimit": 10,
    "onNoData": "pause",
    # 500 ms, not the demo's 250 ms: on a busy 2-core machine a good model's p95 must not fail the story.
    "slo": {"maxErrorRate": 0.02, "maxLatencyP95": "500ms"},
}
RATE = 40.0  # requests/s in total, loopback only
SETTLE_TIMEOUT = 120.0  # first model stable: Deployment pods Ready under kwok
ROLLOUT_TIMEOUT = 150.0  # a canary reaches Succeeded or RolledBack
PREFIX_MD, PREFIX_EVENT, PREFIX_STATUS, PREFIX_DEMO = "[md]     ", "[event]  ", "[status] ", "==> "
log = logging.getLogger("demo-cluster")
# Set by Ctrl-C / SIGTERM. The handler raises KeyboardInterrupt too, but Python drops an exception raised while it
# runs its at-fork callbacks (a subprocess being spawned), so the demo also checks this flag.
INTERRUPTED = threading.Event()


class DemoClusterError(Exception):
    """The story could not be told; the message says why (one line) and the log has the details."""


class Console:
    """Lines from several threads (the narration and the kubectl streams), never interleaved mid-line."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()

    def say(self, text: str, prefix: str = PREFIX_DEMO) -> None:
        with self._lock:
            for line in text.splitlines() or [""]:
                with contextlib.suppress(BrokenPipeError, ValueError):  # a closed terminal must not stop cleanup
                    self._stream.write(f"{prefix}{line}\n")
                    self._stream.flush()


@dataclass
class Follower:
    """A long-running kubectl (``get ... -w``) whose output goes to the terminal, line by line, with a prefix."""

    command: list[str]
    prefix: str
    console: Console
    log_path: Path
    lines: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Follower:
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,  # Ctrl-C is ours to handle: it must not cut the stream before the summary
            preexec_fn=_die_with_parent,
        )
        self._thread = threading.Thread(target=self._pump, name=f"follow {self.prefix.strip()}", daemon=True)
        self._thread.start()
        return self

    def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with self.log_path.open("a", encoding="utf-8") as log_file:
            log_file.write(f"$ {' '.join(self.command)}\n")
            for raw in self.process.stdout:
                line = raw.rstrip("\n")
                self.lines.append(line)
                log_file.write(line + "\n")
                log_file.flush()
                self.console.say(line, self.prefix)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._thread is not None:
            self._thread.join(5)


@dataclass(frozen=True)
class Bundle:
    manifest: ModelManifest
    path: Path

    @property
    def version(self) -> str:
        return self.manifest.version

    def model(self) -> dict[str, str]:
        return model_ref(self.manifest, self.path)


@dataclass
class Outcome:
    """How one canary ended, as the API server and the gateway saw it."""

    canary: str
    phase: str
    stable: str
    seconds: float
    weights: list[int]
    sent: Counter[tuple[str, int]]
    rollback_latency: float | None = None


def md_body(bundle: Bundle, prometheus_url: str) -> dict[str, Any]:
    return model_deployment(NAME, NAMESPACE, bundle.model(), prometheus_url, STEPS, ANALYSIS)


def weights_seen(timeline: Sequence[tuple[float, int]]) -> list[int]:
    """The distinct non-zero canary weights the gateway applied, in order."""
    seen: list[int] = []
    for _, weight in timeline:
        if weight and (not seen or seen[-1] != weight):
            seen.append(weight)
    return seen


def rollback_latency(timeline: Sequence[tuple[float, int]]) -> float | None:
    """Seconds from the first moment the canary got traffic to the moment its weight was 0 again."""
    start = next((t for t, w in timeline if w > 0), None)
    if start is None:
        return None
    return next((t - start for t, w in timeline if t > start and w == 0), None)


def operator_rollback_seconds(metrics: str) -> float | None:
    """``modelrollout_rollback_duration_seconds`` (first failed analysis → weight 0), mean over its rollbacks."""
    found = {"sum": 0.0, "count": 0.0}
    pattern = r"^modelrollout_rollback_duration_seconds_(sum|count)(?:\{[^}]*\})?\s+(\S+)$"
    for kind, value in re.findall(pattern, metrics, re.M):
        found[kind] += float(value)  # summed over label sets (one per ModelDeployment)
    return found["sum"] / found["count"] if found["count"] else None


def checkpoint() -> None:
    """Raise KeyboardInterrupt if Ctrl-C or SIGTERM came, even when Python dropped the first one."""
    if INTERRUPTED.is_set():
        raise KeyboardInterrupt


def missing_rig_piece() -> str | None:
    """The first rig piece that is not there (checked before anything starts), or None."""
    for name in RIG_BINARIES:
        try:
            paths.binary(name)
        except RigMissingError:
            return str(paths.rig_dir() / "bin" / name)
    for what, probe in (("crds", paths.crd_dirs), ("kwok/stages", paths.kwok_stages)):
        try:
            probe()
        except RigMissingError:
            return str(paths.rig_dir() / what)
    return None


class Story:
    def __init__(self, out: Path, console: Console, stack: contextlib.ExitStack) -> None:
        self.out, self.console, self.stack = out, console, stack
        self.logs = out / "logs"

    def say(self, text: str) -> None:
        checkpoint()  # every step of the story is also a place to notice Ctrl-C
        self.console.say(text)

    def later(self, what: str, action: Callable[[], object]) -> None:
        """Register cleanup that never raises: a failing stop is logged, and the other stops still run."""

        def quietly() -> None:
            try:
                action()
            except Exception:
                log.exception("stopping %s failed", what)

        self.stack.callback(quietly)

    # --- setup ------------------------------------------------------------------------------------

    def train(self) -> dict[str, Bundle]:
        self.say("training iris 1.0.0 (iris-v1.yaml), 2.0.0 (iris-v2.yaml) and the bad 3.0.0 (iris-v2.yaml again)")
        bundles: dict[str, Bundle] = {}
        for stem, version in (("iris-v1", "1.0.0"), ("iris-v2", "2.0.0"), ("iris-v2", "3.0.0")):
            config = load_config(EXAMPLES / f"{stem}.yaml").model_copy(update={"version": version})
            path = self.out / "bundles" / f"iris-{version}"
            bundles[version] = Bundle(train(config, path), path)
        return bundles

    def server(self, bundle: Bundle, track: str, *extra: str) -> ServerProcess:
        server = ServerProcess(
            f"file://{bundle.path}", self.logs / f"server-{bundle.version}-{track}.log", ("--track", track, *extra)
        )
        self.later(f"server {bundle.version} {track}", server.stop)
        server.spawn()
        return server

    def start_rig(self) -> tuple[Cluster, Prometheus]:
        self.say(
            "starting the control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok) and Prometheus"
        )
        cluster = Cluster(work_dir=self.out / "cluster", log_dir=self.logs)
        self.later("the control plane", cluster.stop)
        cluster.start()
        phases = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in cluster.startup_phases.items())
        self.say(f"control plane ready in {cluster.startup_seconds:.1f}s ({phases}) at {cluster.server}")
        self.say(f"  kubeconfig: {cluster.kubeconfig}")
        prometheus = Prometheus(work_dir=self.out / "prometheus", log_dir=self.logs)
        self.later("Prometheus", prometheus.stop)
        prometheus.start()
        self.say(f"Prometheus ready at {prometheus.url} (scrapes every 1s)")
        return cluster, prometheus

    def install(self, cluster: Cluster, prometheus: Prometheus) -> OperatorProcess:
        cluster.apply(REPO / "crds" / "modeldeployments.yaml")
        cluster.kubectl("wait", "--for=condition=Established", "crd/modeldeployments.modelrollout.io", "--timeout=60s")
        restricted = {"pod-security.kubernetes.io/enforce": "restricted"}
        cluster.create_namespace(SYSTEM, restricted)
        cluster.create_namespace(NAMESPACE, restricted)
        self.say(f"helm install modelrollout charts/modelrollout -n {SYSTEM} --wait")
        Helm(self.out / "helm", cluster.kubeconfig).run("install", "modelrollout", str(CHART), "-n", SYSTEM, "--wait")
        # The chart's replicas are kwok pods (no container runs); this process is the operator that acts, with
        # exactly the RBAC the chart grants its ServiceAccount.
        kubeconfig = cluster.mint_service_account_kubeconfig(SYSTEM, "modelrollout-operator")
        self.say(f"starting the operator as ServiceAccount {SYSTEM}/modelrollout-operator (the chart's RBAC)")
        operator = OperatorProcess(kubeconfig, self.logs / "operator.log")  # the chart's lease timings
        self.later("the operator", operator.stop)
        try:
            operator.start()
        except AssertionError as exc:  # the support class reports a dead operator or a timeout this way
            raise DemoClusterError(f"the operator did not start leading: {str(exc).splitlines()[0]}") from exc
        prometheus.add_target("modelrollout-operator-metrics", f"127.0.0.1:{operator.metrics_port}")
        return operator

    def follow(self, cluster: Cluster) -> Follower:
        kubectl = [str(paths.kubectl()), f"--kubeconfig={cluster.kubeconfig}"]
        watch = Follower([*kubectl, "get", "md", "-n", NAMESPACE, "-w"], PREFIX_MD, self.console,
                         self.logs / "kubectl-get-md-w.log")  # fmt: skip
        events = Follower(
            [*kubectl, "get", "events", "-n", NAMESPACE, "-w", "--field-selector=involvedObject.kind=ModelDeployment",
             "-o", "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message"],
            PREFIX_EVENT, self.console, self.logs / "kubectl-get-events-w.log",
        )  # fmt: skip
        for follower in (watch, events):
            self.later("a kubectl watch", follower.stop)
            follower.start()
        self.say(f"streaming `kubectl get md -n {NAMESPACE} -w` ({PREFIX_MD.strip()}) and the operator's Events "
                 f"({PREFIX_EVENT.strip()})")  # fmt: skip
        return watch

    # --- the rollouts -----------------------------------------------------------------------------

    def status(self, cluster: Cluster) -> dict[str, Any]:
        obj = k8s.CustomObjectsApi(cluster.api_client).get_namespaced_custom_object(
            "modelrollout.io", "v1alpha1", NAMESPACE, "modeldeployments", NAME
        )
        status = obj.get("status") if isinstance(obj, dict) else None
        return dict(status or {})

    def wait(
        self, cluster: Cluster, done: Callable[[dict[str, Any]], bool], timeout: float, what: str,
        alive: Callable[[], None],
    ) -> dict[str, Any]:  # fmt: skip
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            checkpoint()
            alive()
            with contextlib.suppress(k8s.ApiException):
                status = self.status(cluster)
                if done(status):
                    return status
            time.sleep(0.25)
        raise DemoClusterError(
            f"timed out after {timeout:.0f}s waiting for {what}: phase {status.get('phase')!r}, "
            f"{status.get('message') or 'no message'}"
        )

    def modelrollout_status(self, cluster: Cluster) -> None:
        """``modelrollout status iris -n models``, as a user runs it with the admin kubeconfig."""
        self.say(f"modelrollout status {NAME} -n {NAMESPACE}")
        result = subprocess.run(
            [*MODELROLLOUT, "status", NAME, "-n", NAMESPACE], capture_output=True, text=True, encoding="utf-8",
            errors="replace", timeout=60, cwd=REPO,
            env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "PYTHONIOENCODING": "utf-8"},
        )  # fmt: skip
        if result.returncode != 0:
            raise DemoClusterError(f"modelrollout status exited {result.returncode}: {result.stderr.strip()}")
        self.console.say(result.stdout.rstrip("\n"), PREFIX_STATUS)

    def run(self) -> list[Outcome]:
        for stale in ("bundles", "cluster", "prometheus", "logs", "helm"):
            shutil.rmtree(self.out / stale, ignore_errors=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        bundles = self.train()
        v1, v2, v3 = bundles["1.0.0"], bundles["2.0.0"], bundles["3.0.0"]
        # Each Deployment's pods are played by one server process with its track; they start (imports take
        # seconds) while the control plane comes up.
        servers = {
            "v1-stable": self.server(v1, "stable"),
            "v2-canary": self.server(v2, "canary"),
            "v2-stable": self.server(v2, "stable"),
            "v3-canary": self.server(v3, "canary", *FAULT),
        }
        cluster, prometheus = self.start_rig()
        operator = self.install(cluster, prometheus)
        for name, server in servers.items():
            try:
                server.wait_ready()
            except RuntimeError as exc:
                raise DemoClusterError(f"model server {name} did not start (log: {server.log_path})") from exc
            prometheus.add_target(f"{NAME}-{name}", f"127.0.0.1:{server.port}", {"namespace": NAMESPACE})
            log.info("server %s on %s", name, server.url)
        self.say("model servers ready and scraped: 1.0.0 stable, 2.0.0 canary, 2.0.0 stable, 3.0.0 canary "
                 f"({' '.join(FAULT)})")  # fmt: skip
        watch = self.follow(cluster)

        def alive() -> None:
            checkpoint()
            if operator.process is not None and operator.process.poll() is not None:
                raise DemoClusterError(
                    f"the operator exited with {operator.process.returncode} (log: {operator.log_path})"
                )
            for name, server in servers.items():
                if server.process is not None and server.process.poll() is not None:
                    raise DemoClusterError(f"model server {name} exited (log: {server.log_path})")
            cluster.check_alive()

        self.say(f"kubectl apply: ModelDeployment {NAMESPACE}/{NAME} at 1.0.0 (the first model becomes stable)")
        cluster.apply(md_body(v1, prometheus.url))
        self.wait(cluster, lambda s: s.get("phase") == "Succeeded" and s.get("stableVersion") == v1.version,
                  SETTLE_TIMEOUT, "1.0.0 to become stable", alive)  # fmt: skip

        outcomes = [
            self.rollout(cluster, prometheus, v1, v2, servers["v1-stable"], servers["v2-canary"], alive, "Succeeded"),
            self.rollout(cluster, prometheus, v2, v3, servers["v2-stable"], servers["v3-canary"], alive, "RolledBack"),
        ]
        seconds = operator_rollback_seconds(operator.metrics())
        if seconds is not None:
            self.say(f"operator metric modelrollout_rollback_duration_seconds (first failed analysis → weight 0): "
                     f"{seconds:.1f}s")  # fmt: skip
        time.sleep(1)  # the last watch lines reach the terminal
        if not watch.lines:
            raise DemoClusterError("`kubectl get md -w` printed nothing")
        return outcomes

    def rollout(
        self, cluster: Cluster, prometheus: Prometheus, stable: Bundle, canary: Bundle, stable_server: ServerProcess,
        canary_server: ServerProcess, alive: Callable[[], None], expected: str,
    ) -> Outcome:  # fmt: skip
        good = expected == "Succeeded"
        kind = "good" if good else f"bad: {' '.join(FAULT)}"
        backends = {"stable": stable_server.url, "canary": canary_server.url}
        load = WeightedLoad(cluster.api_client, NAMESPACE, NAME, backends, rate=RATE, max_seconds=ROLLOUT_TIMEOUT + 30)
        self.later("the load", load.stop)
        self.say(f"traffic: {RATE:g} requests/s split by the HTTPRoute's weights (stable {stable.version}, "
                 f"canary {canary.version})")  # fmt: skip
        load.start()
        time.sleep(2)
        self.say(
            f"kubectl apply: spec.model {stable.version} → {canary.version} ({kind}) starts a canary "
            f"10% → pause 2s → 50% → 100%, analysis every {ANALYSIS['interval']} over {ANALYSIS['window']}"
        )
        began = time.monotonic()
        cluster.apply(md_body(canary, prometheus.url))

        def finished(status: dict[str, Any]) -> bool:
            return status.get("phase") == "RolledBack" or (
                status.get("phase") == "Succeeded" and status.get("stableVersion") == canary.version
            )

        status = self.wait(cluster, finished, ROLLOUT_TIMEOUT, f"the {canary.version} canary to finish", alive)
        seconds = time.monotonic() - began
        phase = str(status.get("phase"))
        self.say(f"{canary.version}: {phase} after {seconds:.1f}s: {status.get('message') or ''}")
        if phase != expected:
            raise DemoClusterError(
                f"{canary.version} ended {phase}, expected {expected}: {status.get('message')} "
                f"(operator log: {self.logs / 'operator.log'})"
            )
        latency = None
        if not good:
            deadline = time.monotonic() + 10
            while load.canary_weight() != 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            latency = rollback_latency(list(load.weights))
            time.sleep(2)  # stable takes everything back
        load.stop()
        self.modelrollout_status(cluster)
        return Outcome(canary.version, phase, str(status.get("stableVersion")), seconds,
                       weights_seen(list(load.weights)), Counter(load.sent), latency)  # fmt: skip


def summary_lines(outcomes: Sequence[Outcome], total: float, logs: Path) -> list[str]:
    lines = []
    for outcome in outcomes:
        canary = sum(n for (track, _), n in outcome.sent.items() if track == "canary")
        errors = sum(n for (track, code), n in outcome.sent.items() if track == "canary" and code >= 500)
        weights = " → ".join(f"{w}%" for w in outcome.weights) or "none"
        lines.append(
            f"  {outcome.canary}: {outcome.phase} in {outcome.seconds:.1f}s, stable {outcome.stable}; gateway weights "
            f"{weights}; canary answered {canary} requests, {errors} with 5xx"
        )
    bad = outcomes[-1]
    latency = f"{bad.rollback_latency:.1f}s" if bad.rollback_latency is not None else "n/a"
    lines.append(f"  rollback latency (gateway: first request to {bad.canary} → weight 0): {latency}")
    lines.append(f"  logs: {logs}")
    phases = ", ".join(f"{o.canary} {o.phase}" for o in outcomes)
    lines.append(f"summary: {phases}, rollback latency {latency}, total {total:.0f}s")
    return lines


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C and SIGTERM both stop the demo through the same cleanup (see ``INTERRUPTED``)."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        INTERRUPTED.set()
        raise KeyboardInterrupt

    default_hook = sys.unraisablehook

    def unraisable(event: Any) -> None:
        if not isinstance(event.exc_value, KeyboardInterrupt):  # a dropped Ctrl-C: the flag carries it
            default_hook(event)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.unraisablehook = default_hook


def _cleanup(stack: contextlib.ExitStack, console: Console) -> None:
    """Stop everything, in reverse order of starting; a second Ctrl-C or a SIGTERM must not cut it short."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        console.say(
            "stopping what it started: load, kubectl watches, operator, model servers, Prometheus, control plane"
        )
        stack.close()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _log_to(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.rig.demo_cluster", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"logs, bundles, rig state (default {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    console = Console()
    try:
        with _interruptible():
            return _main(args.out, console)
    except KeyboardInterrupt:
        log.info("interrupted")
        console.say("demo-cluster interrupted: every process it started is stopped", "")
        return 130


def _main(requested_out: Path, console: Console) -> int:
    missing = missing_rig_piece()
    if missing is not None:
        console.say(f"demo-cluster: the test rig is not built (no {missing}): run `make rig` first", "")
        return 2
    try:
        paths.kubectl()
    except RigMissingError as exc:
        console.say(f"demo-cluster: {exc}", "")
        return 2
    out = requested_out.resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        console.say(f"demo-cluster: cannot use --out {requested_out}: {exc}", "")
        return 2
    _log_to(out / "demo-cluster.log")
    stack = contextlib.ExitStack()
    started = time.monotonic()
    try:
        try:
            outcomes = Story(out, console, stack).run()
            checkpoint()
        finally:
            _cleanup(stack, console)
    except RigMissingError as exc:
        console.say(f"demo-cluster: the test rig is not built ({exc}): run `make rig` first", "")
        return 2
    except Exception as exc:
        log.exception("demo-cluster failed")
        checkpoint()  # a process stopped by the same Ctrl-C failed first: report the interruption
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        kind = "" if isinstance(exc, DemoClusterError) else f"{type(exc).__name__}: "
        console.say(
            f"demo-cluster failed: {kind}{first} (details in {out / 'demo-cluster.log'}, logs in {out / 'logs'})", ""
        )
        return 1
    for line in summary_lines(outcomes, time.monotonic() - started, out / "logs"):
        console.say(line, "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
