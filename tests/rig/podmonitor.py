"""A PodMonitor as the scrape configuration the Prometheus Operator generates from it (pure).

The e2e rig runs Prometheus on the host, not under the Operator, yet it must discover model-server pods the
way a user's Prometheus does: through Kubernetes service discovery against the API server, with the
relabelling the chart's PodMonitor produces. This module writes that configuration from the rendered
PodMonitor, following the Operator's documented generation for ``role: pod`` (job name
``podMonitor/<namespace>/<name>/<index>``; running pods only; the label selector as keep/drop rules; the
named port; ``namespace``/``container``/``pod`` target labels; ``job`` from ``jobLabel``; ``endpoint``
from the port), for the fields the chart sets. A field it does not translate raises instead of being
silently dropped, so a chart change cannot make the rig scrape something the Operator would not.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

SUPPORTED_ENDPOINT_FIELDS = {"port", "path", "interval", "scrapeTimeout", "honorLabels"}
ENDPOINT_SETTINGS = (("interval", "scrape_interval"), ("scrapeTimeout", "scrape_timeout"), ("path", "metrics_path"))
SUPPORTED_SPEC_FIELDS = {"jobLabel", "selector", "namespaceSelector", "podMetricsEndpoints", "podTargetLabels"}


class UnsupportedPodMonitor(ValueError):
    """The PodMonitor uses a field this translation does not implement."""


def _label(name: str) -> str:
    """A Kubernetes label key as the suffix of a ``__meta_kubernetes_pod_label_*`` name."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _selector_rules(selector: dict[str, Any]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for key in sorted(selector.get("matchLabels") or {}):
        value = selector["matchLabels"][key]
        sources = [f"__meta_kubernetes_pod_label_{_label(key)}", f"__meta_kubernetes_pod_labelpresent_{_label(key)}"]
        rules.append({"action": "keep", "source_labels": sources, "regex": f"({value});true"})
    for expression in selector.get("matchExpressions") or []:
        key, operator = _label(expression["key"]), expression["operator"]
        present = f"__meta_kubernetes_pod_labelpresent_{key}"
        if operator in ("In", "NotIn"):
            values = "|".join(expression.get("values") or [])
            rules.append(
                {
                    "action": "keep" if operator == "In" else "drop",
                    "source_labels": [f"__meta_kubernetes_pod_label_{key}", present],
                    "regex": f"({values});true",
                }
            )
        elif operator in ("Exists", "DoesNotExist"):
            action = "keep" if operator == "Exists" else "drop"
            rules.append({"action": action, "source_labels": [present], "regex": "true"})
        else:
            raise UnsupportedPodMonitor(f"selector operator {operator!r}")
    return rules


def _namespaces(monitor: dict[str, Any]) -> list[str] | None:
    """The namespaces to discover in; None: all of them."""
    selector = monitor["spec"].get("namespaceSelector") or {}
    if selector.get("any"):
        return None
    return list(selector.get("matchNames") or [monitor["metadata"]["namespace"]])


def scrape_configs(monitor: dict[str, Any], *, kubeconfig: Path) -> list[dict[str, Any]]:
    """One scrape configuration per ``podMetricsEndpoints`` entry, discovering pods through the API server
    named in ``kubeconfig`` (the Operator uses the in-cluster account; the rig's Prometheus runs outside)."""
    spec, meta = monitor["spec"], monitor["metadata"]
    unknown = set(spec) - SUPPORTED_SPEC_FIELDS
    if unknown:
        raise UnsupportedPodMonitor(f"PodMonitor fields {sorted(unknown)}")
    discovery: dict[str, Any] = {"role": "pod", "kubeconfig_file": str(kubeconfig)}
    namespaces = _namespaces(monitor)
    if namespaces is not None:
        discovery["namespaces"] = {"names": namespaces}
    configs = []
    for index, endpoint in enumerate(spec.get("podMetricsEndpoints") or []):
        unknown = set(endpoint) - SUPPORTED_ENDPOINT_FIELDS
        if unknown:
            raise UnsupportedPodMonitor(f"podMetricsEndpoints fields {sorted(unknown)}")
        rules: list[dict[str, Any]] = [
            {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
            {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
            *_selector_rules(spec.get("selector") or {}),
        ]
        if endpoint.get("port"):
            rules.append(
                {
                    "action": "keep",
                    "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                    "regex": endpoint["port"],
                }
            )
        rules += [
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ]
        for label in spec.get("podTargetLabels") or []:
            rules.append(
                {
                    "source_labels": [f"__meta_kubernetes_pod_label_{_label(label)}"],
                    "target_label": _label(label),
                    "regex": "(.+)",
                    "replacement": "${1}",
                }
            )
        rules.append({"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"})
        if spec.get("jobLabel"):
            rules.append(
                {
                    "source_labels": [f"__meta_kubernetes_pod_label_{_label(spec['jobLabel'])}"],
                    "target_label": "job",
                    "regex": "(.+)",
                    "replacement": "${1}",
                }
            )
        if endpoint.get("port"):
            rules.append({"target_label": "endpoint", "replacement": endpoint["port"]})
        config: dict[str, Any] = {
            "job_name": f"podMonitor/{meta['namespace']}/{meta['name']}/{index}",
            "honor_labels": bool(endpoint.get("honorLabels", False)),
            "kubernetes_sd_configs": [discovery],
            "relabel_configs": rules,
        }
        for field, key in (
            ("interval", "scrape_interval"),
            ("scrapeTimeout", "scrape_timeout"),
            ("path", "metrics_path"),
        ):
            if endpoint.get(field):
                config[key] = endpoint[field]
        configs.append(config)
    return configs
