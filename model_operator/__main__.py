"""``python -m model_operator`` (``modelrollout-operator``): the operator process, leader-elected.

Every replica serves its metrics (``modelrollout_leader`` 0 or 1) and waits for the Lease
(``model_operator.leader``); only the holder runs kopf — and with it the handlers and the reconcile
daemons. The moment it cannot renew, it stops kopf and exits non-zero so Kubernetes restarts it as a
follower (controller-runtime does the same): a process that has lost the lease must not act on its
in-memory view a moment longer. SIGTERM/SIGINT stop kopf, release the Lease
so a follower takes over at its next retry instead of a lease duration later, and exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import kopf
from aiohttp import web
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from prometheus_client import start_http_server
from pydantic import ValidationError

from model_operator.leader import LeaseElector
from model_operator.metrics import OperatorMetrics
from model_operator.settings import OperatorSettings

log = logging.getLogger("model_operator.main")

EXIT_OK = 0
EXIT_LEADERSHIP_LOST = 1
EXIT_FAILED = 2


def make_identity(environ: Mapping[str, str] | None = None) -> str:
    """POD_NAME (Downward API; else the hostname) and a short random suffix: a restarted container of the
    same pod is a new candidate, never mistaken for the holder it replaced."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    return f"{env.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def load_kube_config() -> None:
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()  # type: ignore[no-untyped-call]


def _mark_leading(memo: kopf.Memo, **_: Any) -> None:
    """``modelrollout_leader`` 1: kopf runs only in the acting replica."""
    memo.metrics.leader.set(1)


def serve_metrics(settings: OperatorSettings) -> OperatorMetrics:
    """Every replica answers on the metrics port (followers with ``modelrollout_leader 0``), so a scrape of
    any pod behind the Service, and ``helm test``, gets an answer."""
    metrics = OperatorMetrics()
    start_http_server(settings.metrics_port, registry=metrics.registry)
    metrics.leader.set(0)
    return metrics


def _run_kopf(
    settings: OperatorSettings,
    metrics: OperatorMetrics,
    identity: str,
    stop_flag: asyncio.Event,
    on_signal: Callable[[], None],
) -> asyncio.Task[None]:
    import model_operator.handlers  # noqa: F401  (registers the handlers with kopf's default registry)

    # After handlers.start, which creates the metrics: kopf runs startup handlers in registration order.
    kopf.on.startup(id="modelrollout-leader-gauge")(_mark_leading)
    return asyncio.create_task(_operator(settings, metrics, identity, stop_flag, on_signal), name="kopf operator")


async def _operator(
    settings: OperatorSettings,
    metrics: OperatorMetrics,
    identity: str,
    stop_flag: asyncio.Event,
    on_signal: Callable[[], None],
) -> None:
    """``kopf.operator(...)``, unrolled into its two documented halves (``spawn_tasks`` + ``run_tasks``) for one
    reason: ``spawn_tasks`` installs kopf's own SIGINT/SIGTERM handlers, and we put ours back. Stopped by its
    signal handlers while a ``stop_flag`` is also given, kopf leaves the flag's waiter task pending and waits
    5 s for it as a "hung task" — 5 s more before the Lease is released; a signal that sets the stop flag
    stops it at once (and tells us why it stopped).

    kopf is given our identity: left to find its own (``POD_ID``, else ``getpass.getuser()``), it fails in the
    image, whose UID 65532 has no passwd entry (``KeyError: 'getpwuid(): uid not found: 65532'``)."""
    existing = {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}
    tasks = await kopf.spawn_tasks(
        standalone=True,  # no kopf peering: the Lease decides who runs
        identity=identity,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str, not exported
        clusterwide=True,
        stop_flag=stop_flag,
        memo=kopf.Memo(metrics=metrics),  # handlers.start uses these metrics instead of serving its own
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz",
    )
    _on_signals(asyncio.get_running_loop(), on_signal)
    await kopf.run_tasks(tasks, ignored=existing)


async def _serve_follower_liveness(port: int, elector: LeaseElector) -> web.AppRunner:
    """/healthz while following: kopf's own endpoint (same port) only exists once we lead, and a follower
    without one would be restarted by its liveness probe over and over."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"leader": False, "identity": elector.identity, "holder": elector.holder})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port, reuse_address=True).start()
    return runner


def _on_signals(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, callback)


async def run(settings: OperatorSettings, identity: str) -> int:
    """Run until stopped; the process exit code."""
    loop = asyncio.get_running_loop()
    shutdown = asyncio.Event()  # a signal arrived
    stop_kopf = asyncio.Event()  # kopf's stop_flag

    def on_signal() -> None:
        shutdown.set()
        stop_kopf.set()

    _on_signals(loop, on_signal)
    metrics = serve_metrics(settings)

    if not settings.leader_election:
        log.info("%s: leader election disabled; running the operator", identity)
        await _run_kopf(settings, metrics, identity, stop_kopf, on_signal)
        return EXIT_OK

    elector = LeaseElector(
        k8s.CoordinationV1Api(k8s.ApiClient()),
        settings.lease_name,
        settings.lease_namespace,
        identity,
        lease_duration_seconds=settings.lease_duration_seconds,
        renew_deadline_seconds=settings.renew_deadline_seconds,
        retry_period_seconds=settings.retry_period_seconds,
    )
    try:
        return await _lead(settings, metrics, elector, shutdown, stop_kopf, on_signal)
    finally:
        elector.close()


async def _lead(
    settings: OperatorSettings,
    metrics: OperatorMetrics,
    elector: LeaseElector,
    shutdown: asyncio.Event,
    stop_kopf: asyncio.Event,
    on_signal: Callable[[], None],
) -> int:
    liveness = await _serve_follower_liveness(settings.liveness_port, elector)
    try:
        leading = await elector.acquire(shutdown)
    finally:
        await liveness.cleanup()  # frees the port for kopf's liveness endpoint
    if not leading:
        return EXIT_OK
    if shutdown.is_set():
        await elector.release()
        return EXIT_OK

    # The holder task must exist before kopf starts: when kopf stops, it cancels every task created after
    # it started (its "hung tasks"), and only those that existed before are left alone.
    stop_holding = asyncio.Event()
    holder = asyncio.create_task(elector.hold(stop_holding), name="lease holder")
    operator = _run_kopf(settings, metrics, elector.identity, stop_kopf, on_signal)
    await asyncio.wait({holder, operator}, return_when=asyncio.FIRST_COMPLETED)

    if operator.done():  # stopped by a signal, or failed
        stop_holding.set()
        await asyncio.wait({holder})
        await elector.release()
        error = None if operator.cancelled() else operator.exception()
        if error is not None:
            log.error("%s: the operator failed", elector.identity, exc_info=error)
            return EXIT_FAILED
        return EXIT_OK

    # Leadership lost (or the holder failed, which is the same to us): stop acting right now. Followers may
    # take over once lease duration - renew deadline has passed; kopf gets that long, then we exit anyway.
    if not holder.cancelled() and holder.exception() is not None:
        log.error("%s: the lease holder failed", elector.identity, exc_info=holder.exception())
    stop_kopf.set()
    grace = settings.lease_duration_seconds - settings.renew_deadline_seconds
    await asyncio.wait({operator}, timeout=grace)
    if not operator.done():
        log.error("%s: the operator did not stop within %.1fs of losing leadership", elector.identity, grace)
    log.error("%s: exiting after losing leadership", elector.identity)
    return _exit_now(EXIT_LEADERSHIP_LOST)


def _exit_now(code: int) -> NoReturn:
    """Exit without waiting for worker threads (a reconcile tick mid-flight, a hung API call): after losing
    the lease nothing may linger, and a restart is the recovery."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    kopf.configure(verbose=False)  # kopf's log format; INFO
    try:
        settings = OperatorSettings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        log.error("invalid MODELROLLOUT_* settings: %s", problems)
        sys.exit(EXIT_FAILED)
    logging.getLogger().setLevel(settings.log_level)
    load_kube_config()
    identity = make_identity()
    sys.exit(asyncio.run(run(settings, identity)))


if __name__ == "__main__":
    main()
