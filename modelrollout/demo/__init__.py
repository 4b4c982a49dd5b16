"""``modelrollout demo``: the whole rollout story on one machine, pure Python — no cluster, no Docker, no Go.

The demo runs the operator's own code (``Reconciler``, the state machine, the analysis checks, the Gateway
API traffic router) against a *local runtime* that is a peer of the Kubernetes one behind the same
interfaces:

    local_kube.py          LocalKube: the ``Kube`` Protocol in memory; Deployments become real
                           model-server processes (pods.py, started through procs.py so none
                           outlives the demo), their status comes from readiness
    router.py              the gateway: reads the HTTPRoute weights from LocalKube, picks a backend
    load.py                bounded loopback HTTP load through that router
    promql.py              the PromQL subset the analysis generates, evaluated over sample series
    scrape_provider.py     a MetricProvider that scrapes /metrics itself (used when no Prometheus exists)
    prometheus_launcher.py a real Prometheus on loopback when one is installed
    story.py               the chapters: v1 stable, v2 promoted, v3 rolled back; settings.py its timings
    journal.py             what happened, for view.py (live or plain), timeline.py (PNG), summary.py (JSON)
"""
