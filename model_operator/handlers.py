"""kopf glue: one daemon per ModelDeployment runs ``tick.run_once`` until the object goes away.

State lives in ``.status`` (re-read every tick), never in memory, so a restarted operator resumes
where the last one stopped. Run: ``modelrollout-operator`` (``python -m model_operator``: these handlers
behind Lease leader election), or without election ``kopf run --standalone --all-namespaces -m
model_operator.handlers``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from prometheus_client import start_http_server

from model_operator.analysis.clients import PrometheusClients
from model_operator.analysis.prometheus import PrometheusProvider
from model_operator.deadline import Deadline
from model_operator.kube.client import KubeClient
from model_operator.metrics import OperatorMetrics
from model_operator.reconcile import Reconciler
from model_operator.schedule import TickTimings
from model_operator.settings import OperatorSettings
from model_operator.spec import GROUP, PLURAL, VERSION, ModelDeploymentSpec
from model_operator.tick import run_once

Logger = logging.Logger | logging.LoggerAdapter[Any]


@kopf.on.startup()
def start(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Logger, **_: Any) -> None:
    config = OperatorSettings()
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.WARNING
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
    metrics: OperatorMetrics | None = getattr(memo, "metrics", None)  # `python -m model_operator` serves them
    if metrics is None:  # plain `kopf run -m model_operator.handlers`
        metrics = OperatorMetrics()
        start_http_server(config.metrics_port, registry=metrics.registry)
    prometheus = PrometheusClients(config.prometheus_timeout_seconds, config.prometheus_retries)

    def provider_for(spec: ModelDeploymentSpec, deadline: Deadline) -> PrometheusProvider:
        return prometheus.provider(spec.analysis.prometheus.address, deadline)

    memo.prometheus = prometheus
    memo.timings = TickTimings.from_settings(config)
    memo.reconciler = Reconciler(KubeClient(k8s.ApiClient()), provider_for, metrics)
    logger.info("modelrollout operator started; metrics on :%d", config.metrics_port)


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    """After every daemon has stopped: close the Prometheus clients (their connections)."""
    prometheus: PrometheusClients | None = getattr(memo, "prometheus", None)
    if prometheus is not None:
        prometheus.close()


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10.0)
async def rollout(
    stopped: kopf.DaemonStopped,
    namespace: str | None,
    name: str,
    memo: kopf.Memo,
    logger: Logger,
    **_: Any,
) -> None:
    """Async so a thousand ModelDeployments don't hold a thousand threads: a tick borrows a worker
    thread only while it runs (the Kubernetes and Prometheus clients are blocking). ``run_once`` decides
    what a failure means and when the next tick runs; the failure count is only the backoff's."""
    assert namespace is not None  # ModelDeployment is namespaced
    failures = 0
    while not stopped:
        outcome = await asyncio.to_thread(
            run_once, memo.reconciler, namespace, name, memo.timings, failures, logger=logger
        )
        if outcome.next_in is None:
            return
        failures = outcome.failures
        await stopped.wait(outcome.next_in)
