"""``make demo-cluster``: the rollout story of ``make demo`` on the test rig's real node behind a real gateway.

1.0.0 becomes stable, 2.0.0 goes canary 10 → 50 → 100 % and is promoted, 3.0.0 (iris-v3-constant: it answers
fast and without errors, but always the same class) is rolled back. Everything runs as a user runs it: the
control plane and a real node (containerd, kubelet, kube-proxy) from ``$RIG_DIR``, the Helm chart installed with
the operator image built here (two replicas electing a leader), the model servers as pods from the model-server
image, bundles from an in-cluster store, Prometheus discovering the pods through the chart's PodMonitor, and
Traefik routing 30 requests/s by the operator's HTTPRoute. ``kubectl get md -w`` and the operator's Events stream
to the terminal while it runs. Needs root (the node's network namespace, mounts and cgroups).

Run it with ``python -m tests.rig.demo_cluster [--out DIR]`` (default ``build/demo-cluster``; every log in
``DIR/logs``). Ctrl-C or an error stops every process it started and says so in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
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

    from model_operator.kube.manifests import DRAIN_SECONDS
    from model_server.training import load_config, train
    from tests.rig import Cluster, Prometheus, RigMissingError, paths
    from tests.rig.gateway import Gateway
    from tests.rig.images import built_images
    from tests.rig.node import RealNode
    from tests.rig.node_network import NodeNetwork
    from tests.rig.procs import _die_with_parent
    from tests.support.gateway_load import GatewayLoad
    from tests.support.helm import Helm
    from tests.support.platform import ANALYSIS, RELEASE, SYSTEM, Bundle, model_deployment, set_up
    from tests.support.servers import MODELROLLOUT, REPO
except KeyboardInterrupt:
    if __name__ != "__main__":
        raise
    print("demo-cluster interrupted before it started anything", flush=True)
    os._exit(130)  # not sys.exit: after a KeyboardInterrupt inside an import Python would re-raise SIGINT on exit

NAMESPACE, NAME, HOSTNAME = "models", "iris", "iris.demo.test"
DEFAULT_OUT = REPO / "build" / "demo-cluster"
EXAMPLES = REPO / "examples"
RIG_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "helm", "kubelet", "kube-proxy",
                "containerd", "traefik", "prometheus-k8s")  # fmt: skip
STEPS: list[dict[str, Any]] = [{"setWeight": 10}, {"pause": {"duration": "2s"}}, {"setWeight": 50}, {"setWeight": 100}]
STRATEGY: dict[str, Any] = {"type": "Canary", "canary": {"steps": STEPS}}
RATE = 30.0  # requests/s in total, to the gateway on loopback only
SETTLE_TIMEOUT = 240.0  # first model stable: the model-server pods pulled from the store and Ready
ROLLOUT_TIMEOUT = 240.0  # a canary reaches Succeeded or RolledBack
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
class Rig:
    cluster: Cluster
    node: RealNode
    gateway: Gateway
    prometheus: Prometheus


@dataclass
class Outcome:
    """How one canary ended, as the API server and the gateway saw it."""

    canary: str
    phase: str
    stable: str
    seconds: float
    weights: list[int]
    """The distinct canary weights the status reported, in order."""
    sent: Counter[tuple[str, int]]
    """Answers at the gateway by (model version, HTTP status; 0: connection error)."""
    failed: int
    """Requests that failed at the gateway (connection errors, non-2xx)."""
    rollback_latency: float | None = None
    """Seconds from the bad version's first answer at the gateway to its last."""


def checkpoint() -> None:
    """Raise KeyboardInterrupt if Ctrl-C or SIGTERM came, even when Python dropped the first one."""
    if INTERRUPTED.is_set():
        raise KeyboardInterrupt


def missing_rig_piece() -> str | None:
    """What of the rig is not there (checked before anything starts), with the command that builds it, or None."""
    for name in RIG_BINARIES:
        try:
            paths.binary(name)
        except RigMissingError:
            return f"no {paths.rig_dir() / 'bin' / name}: run `make rig` first"
    try:
        paths.crd_dirs()
        built_images()
    except RigMissingError as exc:
        return str(exc)
    if os.geteuid() != 0:
        return "the real node needs root (network namespaces, mounts, cgroups): run it as root"
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
        self.say("training iris 1.0.0 (iris-v1.yaml), 2.0.0 (iris-v2.yaml) and the bad 3.0.0 (iris-v3-constant.yaml)")
        bundles: dict[str, Bundle] = {}
        for stem, version in (("iris-v1", "1.0.0"), ("iris-v2", "2.0.0"), ("iris-v3-constant", "3.0.0")):
            config = load_config(EXAMPLES / f"{stem}.yaml").model_copy(update={"version": version})
            path = self.out / "bundles" / f"iris-{version}"
            bundles[version] = Bundle(train(config, path), path)
        return bundles

    def start_rig(self) -> Rig:
        self.say("starting the control plane (etcd, kube-apiserver, controller-manager, scheduler) and a real node "
                 "(containerd, kubelet, kube-proxy) in its own network namespace")  # fmt: skip
        network = NodeNetwork().claim()
        self.later("the node's network", network.release)
        addresses = network.addresses
        cluster = Cluster(work_dir=self.out / "cluster", log_dir=self.logs, nodes=0, advertise=addresses.host_ip,
                          service_cidr=addresses.service_cidr)  # fmt: skip
        self.later("the control plane", cluster.stop)
        cluster.start()
        self.say(f"control plane ready in {cluster.startup_seconds:.1f}s at {cluster.server}")
        self.say(f"  kubeconfig: {cluster.kubeconfig}")
        node = RealNode(cluster=cluster, network=network)
        self.later("the node", node.stop)
        node.start()
        self.say(f"node {node.name} Ready in {node.startup_seconds:.1f}s: pods in {node.pod_cidr}, images "
                 f"{', '.join(node.imported)}")  # fmt: skip
        gateway = Gateway(cluster, self.out / "gateway", self.logs)
        self.later("the gateway", gateway.stop)
        gateway.start()
        self.say(f"Traefik routes Gateway {gateway.namespace}/{gateway.name} at {gateway.url}")
        prometheus = Prometheus(work_dir=self.out / "prometheus", log_dir=self.logs, binary="prometheus-k8s",
                                host=addresses.host_ip)  # fmt: skip
        self.later("Prometheus", prometheus.stop)
        prometheus.start()
        self.say(f"Prometheus ready at {prometheus.url}")
        return Rig(cluster, node, gateway, prometheus)

    def install(self, rig: Rig, bundles: dict[str, Bundle]) -> str:
        images = {name: image.pinned for name, image in built_images().items()}
        self.say(f"helm install {RELEASE} charts/modelrollout -n {SYSTEM} --wait (operator image {images['operator']},"
                 " 2 replicas electing a leader); the model store; Prometheus discovers the model servers through "
                 "the chart's PodMonitor")  # fmt: skip
        helm = Helm(self.out / "helm", rig.cluster.kubeconfig)
        store = set_up(rig.cluster, rig.prometheus, helm, NAMESPACE, list(bundles.values()), images)
        self.later("the chart", lambda: helm.run("uninstall", RELEASE, "-n", SYSTEM, "--wait", check=False))
        self.server_image = images["model-server"]
        return store

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

    def md_body(self, rig: Rig, store: str, bundle: Bundle) -> dict[str, Any]:
        return model_deployment(
            NAME, NAMESPACE, bundle, store, self.server_image, prometheus=rig.prometheus.url,
            gateway=(rig.gateway.namespace, rig.gateway.name), hostname=HOSTNAME, strategy=STRATEGY, analysis=ANALYSIS,
        )  # fmt: skip

    # --- the rollouts -----------------------------------------------------------------------------

    def status(self, cluster: Cluster) -> dict[str, Any]:
        obj = k8s.CustomObjectsApi(cluster.api_client).get_namespaced_custom_object(
            "modelrollout.io", "v1alpha1", NAMESPACE, "modeldeployments", NAME
        )
        status = obj.get("status") if isinstance(obj, dict) else None
        return dict(status or {})

    def wait(
        self, cluster: Cluster, done: Callable[[dict[str, Any]], bool], timeout: float, what: str,
        alive: Callable[[], None], weights: list[int] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            checkpoint()
            alive()
            with contextlib.suppress(k8s.ApiException):
                status = self.status(cluster)
                weight = int(status.get("canaryWeight") or 0)
                if weights is not None and weight and (not weights or weights[-1] != weight):
                    weights.append(weight)
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
        for stale in ("bundles", "cluster", "prometheus", "gateway", "logs", "helm"):
            shutil.rmtree(self.out / stale, ignore_errors=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        bundles = self.train()
        v1, v2, v3 = bundles["1.0.0"], bundles["2.0.0"], bundles["3.0.0"]
        rig = self.start_rig()
        store = self.install(rig, bundles)
        watch = self.follow(rig.cluster)

        def alive() -> None:
            checkpoint()
            rig.cluster.check_alive()
            rig.node.check_alive()
            rig.gateway.check_alive()

        self.say(f"kubectl apply: ModelDeployment {NAMESPACE}/{NAME} at 1.0.0 (the first model becomes stable)")
        rig.cluster.apply(self.md_body(rig, store, v1))
        self.wait(rig.cluster, lambda s: s.get("phase") == "Succeeded" and s.get("stableVersion") == "1.0.0",
                  SETTLE_TIMEOUT, "1.0.0 to become stable", alive)  # fmt: skip
        outcomes = [
            self.rollout(rig, store, v1, v2, alive, "Succeeded"),
            self.rollout(rig, store, v2, v3, alive, "RolledBack"),
        ]
        time.sleep(1)  # the last watch lines reach the terminal
        if not watch.lines:
            raise DemoClusterError("`kubectl get md -w` printed nothing")
        return outcomes

    def rollout(
        self, rig: Rig, store: str, stable: Bundle, canary: Bundle, alive: Callable[[], None], expected: str
    ) -> Outcome:
        good = expected == "Succeeded"
        old, new = stable.manifest.version, canary.manifest.version
        kind = "good" if good else "bad: it always predicts one class"
        load = GatewayLoad(rig.gateway.url, host=HOSTNAME, rate=RATE, max_seconds=ROLLOUT_TIMEOUT + 60)
        self.later("the load", load.stop)
        self.say(f"traffic: {RATE:g} requests/s to the gateway {rig.gateway.url} (Host {HOSTNAME}); Traefik splits "
                 "it by the operator's HTTPRoute")  # fmt: skip
        load.start()
        load.wait_for_requests(int(RATE))
        self.say(
            f"kubectl apply: spec.model {old} → {new} ({kind}) starts a canary 10% → pause 2s → 50% → 100%, "
            f"analysis every {ANALYSIS['interval']} over {ANALYSIS['window']}"
        )
        began = time.monotonic()
        rig.cluster.apply(self.md_body(rig, store, canary))

        def finished(status: dict[str, Any]) -> bool:
            return status.get("phase") == "RolledBack" or (
                status.get("phase") == "Succeeded" and status.get("stableVersion") == new
            )

        weights: list[int] = []
        status = self.wait(rig.cluster, finished, ROLLOUT_TIMEOUT, f"the {new} canary to finish", alive, weights)
        seconds = time.monotonic() - began
        phase = str(status.get("phase"))
        self.say(f"{new}: {phase} after {seconds:.1f}s: {status.get('message') or ''}")
        if phase != expected:
            raise DemoClusterError(f"{new} ended {phase}, expected {expected}: {status.get('message')}")
        time.sleep(DRAIN_SECONDS)  # pods scaled away drain: the load goes on through it
        load.stop()
        segment = load.segment(new, began, time.monotonic())
        first, last = segment.first(new), segment.last(new)
        latency = last.at - first.at if not good and first is not None and last is not None else None
        self.modelrollout_status(rig.cluster)
        sent = Counter((sample.version or "none", sample.status) for sample in segment.samples)
        return Outcome(new, phase, str(status.get("stableVersion")), seconds, weights, sent, len(segment.failed),
                       latency)  # fmt: skip


def summary_lines(outcomes: Sequence[Outcome], total: float, logs: Path) -> list[str]:
    lines = []
    for outcome in outcomes:
        answered = sum(n for (version, _), n in outcome.sent.items() if version == outcome.canary)
        weights = " → ".join(f"{w}%" for w in outcome.weights) or "none"
        lines.append(
            f"  {outcome.canary}: {outcome.phase} in {outcome.seconds:.1f}s, stable {outcome.stable}; weights "
            f"{weights}; {outcome.canary} answered {answered} of {outcome.sent.total()} requests at the gateway, "
            f"{outcome.failed} failed"
        )
    bad = outcomes[-1]
    latency = f"{bad.rollback_latency:.1f}s" if bad.rollback_latency is not None else "n/a"
    lines.append(f"  rollback latency (gateway: first answer from {bad.canary} → its last): {latency}")
    lines.append(f"  logs: {logs}")
    phases = ", ".join(f"{o.canary} {o.phase}" for o in outcomes)
    failed = sum(o.failed for o in outcomes)
    lines.append(f"summary: {phases}, rollback latency {latency}, failed requests {failed}, total {total:.0f}s")
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
        console.say("stopping what it started: load, kubectl watches, chart, Prometheus, gateway, node, control plane")
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
        console.say(f"demo-cluster: cannot start: {missing}", "")
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
