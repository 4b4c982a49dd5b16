"""kopf glue: one daemon per ModelDeployment runs ticks of ``Reconciler`` until the object goes away.

State lives in ``.status`` (re-read every tick), never in memory, so a restarted operator resumes
where the last one stopped. Run: ``modelrollout-operator`` (``python -m model_operator``: these handlers
behind Lease leader election), or without election ``kopf run --standalone --all-namespaces -m
model_operator.handlers``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import kopf
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from prometheus_client import start_http_server
from pydantic import ValidationError

from model_operator.analysis.base import ProviderError
from model_operator.analysis.prometheus import PrometheusProvider
from model_operator.kube.client import KubeClient
from model_operator.metrics import OperatorMetrics
from model_operator.reconcile import API_VERSION, Reconciler
from model_operator.rollout.types import Event
from model_operator.settings import OperatorSettings
from model_operator.spec import GROUP, KIND, PLURAL, VERSION, ModelDeploymentSpec, Phase

Logger = logging.Logger | logging.LoggerAdapter[Any]
SETTLED = {Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED}


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
    kube = KubeClient(k8s.ApiClient())

    def provider_for(spec: ModelDeploymentSpec) -> PrometheusProvider:
        return PrometheusProvider(spec.analysis.prometheus.address, retries=config.prometheus_retries)

    memo.settings = config
    memo.kube = kube
    memo.reconciler = Reconciler(kube, provider_for, metrics)
    logger.info("modelrollout operator started; metrics on :%d", config.metrics_port)


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
    thread only while it runs (the Kubernetes and Prometheus clients are blocking)."""
    assert namespace is not None  # ModelDeployment is namespaced
    while not stopped:
        delay = await asyncio.to_thread(_tick, memo, namespace, name, logger)
        if delay is None:
            return
        await stopped.wait(max(delay, 0.2))


def _tick(memo: kopf.Memo, namespace: str, name: str, logger: Logger) -> float | None:
    """One tick; the seconds until the next, or None when the object is gone."""
    config: OperatorSettings = memo.settings
    kube: KubeClient = memo.kube
    reconciler: Reconciler = memo.reconciler
    try:
        obj = kube.get(API_VERSION, KIND, namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return None
        result = reconciler.tick(obj, dt.datetime.now(dt.UTC))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        logger.error("invalid spec: %s", problems)
        kube.patch_status(API_VERSION, KIND, namespace, name, {"phase": "Failed", "message": problems[:1000]})
        return config.idle_tick_seconds
    except (ApiException, ProviderError, urllib3.exceptions.HTTPError) as exc:
        logger.warning("tick failed, retrying: %s", exc)
        return config.max_tick_seconds
    for event in result.events:
        _post(kube, obj, event, logger)
    settled = result.status.phase in SETTLED
    return min(result.decision.requeue_after, config.idle_tick_seconds if settled else config.max_tick_seconds)


def _post(
    kube: KubeClient, obj: dict[str, Any], event: Event, logger: logging.Logger | logging.LoggerAdapter[Any]
) -> None:
    (logger.warning if event.warning else logger.info)("%s: %s", event.reason, event.message)
    try:
        kube.create_event(obj, event.reason, event.message, event.warning)
    except (ApiException, urllib3.exceptions.HTTPError) as exc:
        logger.warning("could not post event %s: %s", event.reason, exc)
