"""The demo's three chapters, driven by the operator's own ``Reconciler``:

1. iris 1.0.0 becomes the first stable model (Initializing → Succeeded);
2. iris 2.0.0, a good model, goes canary 5 → 25 → 50 → 100 % with analysis at every step and is promoted;
3. iris 3.0.0 is bad — its server answers 30 % of requests with HTTP 500 and adds 300 ms (the model
   server's test-only fault injection) — and the analysis rolls it back from 5 %.

The loop is the kopf daemon's without kopf: ``tick.run_once`` (the operator's one tick and error policy),
then wait as long as it says. All decisions come from ``model_operator`` unchanged; the local runtime
(LocalKube, the local gateway, the metrics backend) stands where Kubernetes, the Gateway and Prometheus stand
in a cluster.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from model_operator.analysis.base import MetricProvider
from model_operator.analysis.clients import PrometheusClients
from model_operator.deadline import Deadline
from model_operator.metrics import OperatorMetrics
from model_operator.reconcile import API_VERSION, ProviderFor, Reconciler
from model_operator.schedule import TickTimings
from model_operator.spec import KIND, ModelDeploymentSpec, ModelDeploymentStatus, ModelRef, Phase
from model_operator.tick import run_once
from modelrollout.demo import summary as summaries
from modelrollout.demo import timeline
from modelrollout.demo.journal import Chapter, Happening, Journal, Tick, Verdict
from modelrollout.demo.load import LoadGenerator
from modelrollout.demo.local_kube import LocalKube
from modelrollout.demo.pods import ServerPodFactory
from modelrollout.demo.prometheus_launcher import PrometheusError, PrometheusServer, find_prometheus
from modelrollout.demo.router import LocalRouter
from modelrollout.demo.scrape_provider import ScrapeProvider
from modelrollout.demo.settings import DemoOptions, MetricsBackend, Profile
from modelrollout.demo.view import View, make_view

NAMESPACE, NAME = "demo", "iris"
FAULT_ARGS = ("--fault-error-rate", "0.3", "--fault-latency-ms", "300")
# The same models as examples/iris-v1.yaml, iris-v2.yaml and iris-v3-constant.yaml, inlined so the demo
# runs from an installed package too.
MODELS: dict[str, dict[str, Any]] = {
    "1.0.0": {"estimator": {"type": "logistic_regression", "params": {"C": 1.0, "max_iter": 500}}},
    "2.0.0": {"estimator": {"type": "random_forest", "params": {"n_estimators": 50, "max_depth": 4}}},
    "3.0.0": {"estimator": {"type": "dummy", "params": {"strategy": "most_frequent"}}, "scale": False},
}
BAD = "3.0.0"
TICK_DEADLINE_SECONDS = 10.0
BACKOFF_LIMIT_SECONDS = 5.0
"""A failing tick is retried sooner than in a cluster: the demo has a story to tell."""
log = logging.getLogger(__name__)


class DemoError(Exception):
    """The demo could not tell its story; the message says why and where the logs are."""


class DemoInterrupted(Exception):
    """Ctrl-C or SIGTERM: everything was stopped."""


def train_bundle(version: str, root: Path) -> ModelRef:
    from model_server.training import TrainConfig, train

    config = TrainConfig.model_validate(
        {"name": NAME, "version": version, "seed": 42, "dataset": {"name": "iris", "test_size": 0.25},
         "cv_folds": 5, "format": "skops", **MODELS[version]}
    )  # fmt: skip
    out = (root / f"iris-{version}").resolve()
    manifest = train(config, out)
    return ModelRef(name=NAME, version=version, uri=out.as_uri() + "/", digest=manifest.digest)


def model_deployment(
    model: ModelRef, profile: Profile, prometheus: str | None, strategy: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ModelDeployment the demo applies, as a user would write it; ``strategy`` replaces the demo's
    canary steps (5 → 25 → 50 → 100 %, a pause after each)."""
    pause = {"pause": {"duration": profile.pause}}
    steps = [{"setWeight": 5}, pause, {"setWeight": 25}, pause, {"setWeight": 50}, pause, {"setWeight": 100}]
    analysis: dict[str, Any] = {
        "interval": profile.interval,
        "window": profile.window,
        "failureLimit": 2,
        "minRequests": profile.min_requests,
        "inconclusiveLimit": 30,
        "onNoData": "pause",
        "slo": {"maxErrorRate": 0.02, "maxLatencyP95": "250ms"},
    }
    if prometheus is not None:
        analysis["prometheus"] = {"address": prometheus}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"namespace": NAMESPACE, "name": NAME},
        "spec": {
            "model": model.wire(),
            "image": "modelrollout-server:local",  # unused: LocalKube runs this installation's server
            "replicas": 1,
            "strategy": dict(strategy or {"type": "Canary", "canary": {"steps": steps}}),
            "traffic": {"provider": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "local-gateway"}]}},
            "analysis": analysis,
        },
    }


def faults_for(labels: Mapping[str, str]) -> Sequence[str]:
    """The bad version's pods get the server's test-only fault injection."""
    return FAULT_ARGS if labels.get("version") == BAD else ()


class Story:
    def __init__(self, options: DemoOptions, view: View, stack: contextlib.ExitStack) -> None:
        self.options = options
        self.profile = options.profile
        self.view = view
        self.stack = stack
        self.journal = Journal()
        self.out = options.out.resolve()
        self.logs = self.out / "logs"
        self.prometheus_url: str | None = None
        self.load: LoadGenerator | None = None
        self.timings = TickTimings(
            options.profile.tick, options.profile.tick, TICK_DEADLINE_SECONDS, BACKOFF_LIMIT_SECONDS
        )
        self.failures = 0
        self.next_in = options.profile.tick

    # --- setup ------------------------------------------------------------------------------------

    def metrics_backend(self) -> tuple[ProviderFor, Callable[[Sequence[str]], None]]:
        """The provider the analysis queries, and how to tell it which processes to scrape."""
        wanted = self.options.metrics
        binary = find_prometheus() if wanted is not MetricsBackend.SCRAPE else None
        if wanted is MetricsBackend.PROMETHEUS and binary is None:
            raise DemoError("--metrics prometheus: no `prometheus` on PATH or in $RIG_DIR/bin (try --metrics scrape)")
        server = None
        if binary is not None:
            server = PrometheusServer(binary, self.out / "prometheus")
            self.stack.callback(server.stop)
            try:
                server.start()
            except PrometheusError as exc:
                if wanted is MetricsBackend.PROMETHEUS:
                    raise DemoError(f"{exc}; run with --metrics scrape to do without Prometheus") from exc
                self.note(f"metrics: {exc}; scraping in process instead")
                server = None
        if server is not None:
            url = self.prometheus_url = server.url
            clients = self.stack.enter_context(PrometheusClients(timeout=3.0, retries=1))
            self.journal.metrics = f"Prometheus ({binary}) at {server.url}"
            return lambda spec, deadline: clients.provider(url, deadline), server.set_targets
        scraper = ScrapeProvider(interval=1.0).start()
        self.stack.callback(scraper.close)
        why = "--metrics scrape" if wanted is MetricsBackend.SCRAPE else "no Prometheus"
        self.journal.metrics = f"in-process scraping of /metrics every 1s ({why})"
        return _always(scraper), scraper.set_targets

    def run(self) -> summaries.Run:
        for stale in ("summary.json", "timeline.png"):
            (self.out / stale).unlink(missing_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.note(f"metrics: starting ({self.options.metrics.value})")
        provider_for, set_targets = self.metrics_backend()
        self.note(f"metrics: {self.journal.metrics}")
        kube = LocalKube(ServerPodFactory(self.logs, extra_args=faults_for))
        self.stack.callback(kube.close)
        self.kube = kube
        router = LocalRouter(kube, NAMESPACE, NAME)
        kube.subscribe(router.refresh)
        kube.subscribe(lambda: set_targets([e.url for e in kube.scrape_targets()]))
        kube.start()
        self.router = router
        self.reconciler = Reconciler(kube, provider_for, OperatorMetrics())

        bundles = self.out / "bundles"
        self.note("training iris 1.0.0 (logistic regression)")
        v1 = train_bundle("1.0.0", bundles)
        chapter = self.begin("1.0.0 becomes the first stable model", v1)
        self.tick()  # the stable Deployment exists now: its server starts while we train the others
        self.note("training iris 2.0.0 (random forest) and 3.0.0 (the bad one) while 1.0.0 starts")
        v2 = train_bundle("2.0.0", bundles)
        v3 = train_bundle(BAD, bundles)
        self.until(chapter, lambda s: s.phase is Phase.SUCCEEDED and s.stable_version == v1.version, "stable")

        load = LoadGenerator(router, self.profile.rate, max_seconds=600.0)
        self.stack.callback(load.stop)
        self.load = load.start()
        self.note(f"traffic: {self.profile.rate:g} requests/s through the local gateway (loopback)")

        chapter = self.begin("2.0.0 (good) canary 5 → 25 → 50 → 100 %", v2)
        self.until(chapter, lambda s: s.phase is Phase.SUCCEEDED and s.stable_version == v2.version, "promoted")
        chapter = self.begin("3.0.0 (bad: 30 % HTTP 500, +300 ms) canary", v3)
        self.until(chapter, lambda s: s.phase is Phase.ROLLED_BACK, "rolled_back")
        self.note(f"stable {v2.version} takes all traffic again; {self.profile.settle:g}s more traffic")
        self.wait(self.profile.settle)
        load.stop()
        steps = len(model_deployment(v2, self.profile, None)["spec"]["strategy"]["canary"]["steps"])
        return summaries.Run(
            self.options, self.journal, load.outcomes(), self.reconciler.metrics, NAMESPACE, NAME, BAD, steps,
            finished=time.monotonic(),
        )  # fmt: skip

    # --- the loop ---------------------------------------------------------------------------------

    def note(self, text: str) -> None:
        self.journal.note(text)
        self.refresh()

    def begin(self, title: str, model: ModelRef) -> Chapter:
        chapter = Chapter(title, model.version, time.monotonic())
        self.journal.chapters.append(chapter)
        self.kube.apply(model_deployment(model, self.profile, self.prometheus_url))
        self.refresh()
        return chapter

    def until(self, chapter: Chapter, done: Callable[[ModelDeploymentStatus], bool], outcome: str) -> None:
        deadline = time.monotonic() + self.profile.chapter_timeout
        while True:
            status = self.tick()
            if done(status):
                chapter.ended, chapter.outcome = time.monotonic(), outcome
                self.refresh()
                return
            failures = self.kube.failures()
            if failures:
                raise DemoError(f"a model server stopped: {failures[0]} (logs in {self.logs})")
            if status.phase is Phase.ROLLED_BACK and outcome != "rolled_back":
                raise DemoError(f"{chapter.version} was rolled back: {status.message} (logs in {self.logs})")
            if status.phase is Phase.SUCCEEDED and status.stable_version == chapter.version and outcome != "promoted":
                raise DemoError(f"{chapter.version} was promoted although it is bad: {status.message}")
            if time.monotonic() > deadline:
                raise DemoError(
                    f"chapter '{chapter.title}' took over {self.profile.chapter_timeout:.0f}s; "
                    f"phase {status.phase}: {status.message} (logs in {self.logs})"
                )
            self.wait(self.next_in)

    def tick(self) -> ModelDeploymentStatus:
        """One operator tick, exactly as the kopf daemon runs it, plus bookkeeping for the view."""
        outcome = run_once(self.reconciler, NAMESPACE, NAME, self.timings, self.failures)
        if outcome.next_in is None:
            raise DemoError("the ModelDeployment disappeared")
        if outcome.status is None:
            raise DemoError(f"the operator's tick failed: {outcome.reason} (logs in {self.logs})")
        self.failures, self.next_in = outcome.failures, outcome.next_in
        at, status = time.monotonic(), outcome.status
        chapter = self.journal.chapter()
        version = chapter.version if chapter else "?"
        for event in outcome.events:
            self.journal.events.append(Happening(at, version, event.reason, event.message, event.warning))
        analysis = outcome.result.analysis if outcome.result is not None else None
        for check in analysis.results if analysis is not None else ():
            self.journal.verdicts.append(
                Verdict(at, version, check.check, check.verdict.value, check.value, check.limit, check.message)
            )
        self.journal.ticks.append(
            Tick(at, str(status.phase or ""), self.router.canary_weight(), status.current_step,
                 status.canary_version, status.stable_version)
        )  # fmt: skip
        self.journal.status = status
        self.refresh()
        return status

    def wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(0.25, left))
            self.refresh()

    def refresh(self) -> None:
        self.view.update(self.journal, self.load.stats(3.0) if self.load else {})


def _always(provider: MetricProvider) -> ProviderFor:
    """One provider for every spec and tick (the in-process scraper has no requests to bound)."""

    def provider_for(spec: ModelDeploymentSpec, deadline: Deadline) -> MetricProvider:
        return provider

    return provider_for


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so cleanup runs either way."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _log_to(path: Path) -> Iterator[None]:
    """Log records go to a file while the demo runs (the terminal belongs to the view)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", "httpx", "httpcore")}
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("httpx", "httpcore"):  # one line per request otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def run_demo(options: DemoOptions) -> dict[str, Any]:
    """Run the story; the summary (also written to ``<out>/summary.json``). Every process it started is
    stopped before it returns or raises ``DemoError`` / ``DemoInterrupted``; never anything else."""
    try:
        import matplotlib  # noqa: F401 - fail before starting anything
    except ImportError as exc:
        raise DemoError("the demo needs matplotlib: pip install 'modelrollout[demo]'") from exc
    out = options.out.resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoError(f"cannot use --out {options.out}: {exc}") from exc
    try:
        with _log_to(out / "demo.log"):
            try:
                return _run(options, out)
            except (KeyboardInterrupt, DemoError):
                raise
            except Exception as exc:
                log.exception("demo failed")
                raise DemoError(f"demo failed: {type(exc).__name__}: {exc} (details in {out / 'demo.log'})") from exc
    except KeyboardInterrupt as exc:
        raise DemoInterrupted("demo interrupted: every process it started is stopped") from exc


def _run(options: DemoOptions, out: Path) -> dict[str, Any]:
    view = make_view(options.live)
    stack = contextlib.ExitStack()
    with _stop_on_sigterm(), view:
        try:
            run = Story(options, view, stack).run()
        finally:
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut cleanup
            try:
                stack.close()
            finally:
                signal.signal(signal.SIGINT, previous)
    png = timeline.write_png(out / "timeline.png", run)
    summary = summaries.build(run, png)
    summaries.write_json(summary, out / "summary.json")
    view.print_lines(summaries.closing_lines(summary))
    return summary
