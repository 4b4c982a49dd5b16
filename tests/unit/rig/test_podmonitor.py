"""The chart's PodMonitor, turned into the scrape configuration the rig's Prometheus runs, is one Prometheus
accepts and selects what the PodMonitor selects (the e2e suite shows the targets it discovers)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.rig.paths import binary
from tests.rig.podmonitor import UnsupportedPodMonitor, scrape_configs
from tests.support.helm import Helm


def chart_pod_monitor(tmp_path: Path, **values: Any) -> dict[str, Any]:
    documents = Helm(tmp_path / "helm").template({"podMonitor": {"enabled": True, **values}})
    (monitor,) = [doc for doc in documents if doc["kind"] == "PodMonitor"]
    return monitor


def rule(config: dict[str, Any], **match: Any) -> dict[str, Any]:
    found = [r for r in config["relabel_configs"] if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, config["relabel_configs"])
    only: dict[str, Any] = found[0]
    return only


def test_the_chart_pod_monitor_becomes_pod_discovery_with_its_relabelling(tmp_path: Path) -> None:
    monitor = chart_pod_monitor(tmp_path, interval="2s")
    (config,) = scrape_configs(monitor, kubeconfig=tmp_path / "kubeconfig")
    name = monitor["metadata"]["name"]
    assert config["job_name"] == f"podMonitor/modelrollout-system/{name}/0"
    assert config["kubernetes_sd_configs"] == [{"role": "pod", "kubeconfig_file": str(tmp_path / "kubeconfig")}]
    assert (config["scrape_interval"], config["metrics_path"], config["honor_labels"]) == ("2s", "/metrics", True)
    selected = rule(config, source_labels=["__meta_kubernetes_pod_labelpresent_modelrollout_io_track"])
    assert (selected["action"], selected["regex"]) == ("keep", "true"), "every pod with a track label"
    port = rule(config, source_labels=["__meta_kubernetes_pod_container_port_name"])
    assert (port["action"], port["regex"]) == ("keep", "http")
    job = rule(config, source_labels=["__meta_kubernetes_pod_label_app_kubernetes_io_name"])
    assert job["target_label"] == "job", "jobLabel: the ModelDeployment's name"
    running = rule(config, source_labels=["__meta_kubernetes_pod_phase"])
    assert running["action"] == "drop" and "Succeeded" in running["regex"]


def test_namespaces_named_in_the_values_limit_discovery(tmp_path: Path) -> None:
    (config,) = scrape_configs(chart_pod_monitor(tmp_path, namespaces=["models"]), kubeconfig=tmp_path / "k")
    assert config["kubernetes_sd_configs"][0]["namespaces"] == {"names": ["models"]}


def test_prometheus_accepts_the_configuration(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    configs = scrape_configs(chart_pod_monitor(tmp_path), kubeconfig=kubeconfig)
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump({"scrape_configs": configs}))
    result = subprocess.run(
        [str(binary("promtool-k8s")), "check", "config", "--syntax-only", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_field_it_does_not_translate_is_refused_not_dropped(tmp_path: Path) -> None:
    monitor = chart_pod_monitor(tmp_path)
    monitor["spec"]["podMetricsEndpoints"][0]["relabelings"] = [{"action": "drop"}]
    with pytest.raises(UnsupportedPodMonitor, match="relabelings"):
        scrape_configs(monitor, kubeconfig=tmp_path / "k")
