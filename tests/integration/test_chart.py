"""The Helm chart on the real rig: lint, values validation, a values matrix, install into a namespace that
enforces Pod Security ``restricted``, upgrade and uninstall. ``helm test`` needs its pod to run, which no kwok
node does: tests/e2e/test_helm_test.py runs it on the real node.

The operator's canary scenario (test_operator_canary.py) runs with the ServiceAccount and RBAC this chart
installs, so a rule missing from the chart fails a rollout there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from tests.rig import Cluster
from tests.support.diagnostics import describe_workloads
from tests.support.helm import CHART, Helm, HelmError, kinds
from tests.support.rollouts import wait_for

pytestmark = pytest.mark.integration

EVERYTHING_ON = {
    "serviceMonitor": {"enabled": True},
    "podMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "dashboards": {"enabled": True},
    "networkPolicy": {"enabled": True},
}
ALWAYS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment", "Service"}


@pytest.fixture(scope="module")
def helm(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(tmp_path_factory.mktemp("helm"), cluster.kubeconfig)


@pytest.fixture
def restricted(cluster: Cluster, namespace: str) -> str:
    """The test's namespace, enforcing (not just warning about) Pod Security ``restricted``."""
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", "--overwrite")
    return namespace


@pytest.mark.parametrize("values", [{}, EVERYTHING_ON], ids=["defaults", "everything-on"])
def test_chart_lints_strictly(helm: Helm, values: dict[str, Any]) -> None:
    result = helm.run("lint", "--strict", str(CHART), *helm.values_args(values))
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"operator": {"replicas": "two"}}, "/operator/replicas"),
        ({"operator": {"replica": 2}}, "replica"),
        ({"operator": {"image": {"digest": "latest"}}}, "/operator/image/digest"),
        ({"operator": {"logLevel": "LOUD"}}, "/operator/logLevel"),
        ({"serviceMonitor": {"interval": "15 seconds"}}, "/serviceMonitor/interval"),
        ({"operator": {"leaderElection": {"renewDeadline": 20}}}, "renewDeadline must be shorter"),
        ({"operator": {"leaderElection": {"enabled": False}}}, "needs operator.leaderElection.enabled"),
    ],
    ids=["wrong-type", "unknown-key", "bad-digest", "bad-enum", "bad-duration", "renew-vs-lease", "ha-without-lease"],
)
def test_bad_values_fail_with_the_field_at_fault(helm: Helm, values: dict[str, Any], expected: str) -> None:
    with pytest.raises(HelmError) as failure:
        helm.template(values)
    assert expected in failure.value.stderr, failure.value.stderr


@pytest.mark.parametrize("monitors", [False, True], ids=["monitors-off", "monitors-on"])
@pytest.mark.parametrize("dashboards", [False, True], ids=["dashboards-off", "dashboards-on"])
@pytest.mark.parametrize("network_policy", [False, True], ids=["netpol-off", "netpol-on"])
def test_values_matrix_renders_what_was_asked_and_the_api_server_accepts_it(
    helm: Helm, cluster: Cluster, restricted: str, monitors: bool, dashboards: bool, network_policy: bool
) -> None:
    values = {
        "serviceMonitor": {"enabled": monitors},
        "podMonitor": {"enabled": monitors},
        "prometheusRule": {"enabled": monitors},
        "dashboards": {"enabled": dashboards},
        "networkPolicy": {"enabled": network_policy},
    }
    documents = helm.template(values, namespace=restricted)
    expected = set(ALWAYS) | {"PodDisruptionBudget"}
    expected |= {"ServiceMonitor", "PodMonitor", "PrometheusRule"} if monitors else set()
    expected |= {"ConfigMap"} if dashboards else set()
    expected |= {"NetworkPolicy"} if network_policy else set()
    assert kinds(documents) == expected
    # schema, CEL, defaulting and admission (Pod Security included) run; nothing is persisted
    rendered = "\n---\n".join(yaml.safe_dump(doc) for doc in documents)
    result = cluster.kubectl("apply", "--server-side", "--dry-run=server", "-n", restricted, "-f", "-", input=rendered)
    assert "PodSecurity" not in result.stderr and "violate" not in result.stderr, result.stderr


def test_security_defaults_meet_restricted_and_pin_what_they_can(helm: Helm) -> None:
    documents = helm.template({"operator": {"image": {"digest": "sha256:" + "a" * 64}}})
    deployment = next(doc for doc in documents if doc["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "modelrollout/operator@sha256:" + "a" * 64
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["seccompProfile"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    cluster_role = next(doc for doc in documents if doc["kind"] == "ClusterRole")
    verbs = {verb for rule in cluster_role["rules"] for verb in rule["verbs"]}
    assert not verbs & {"*", "deletecollection", "escalate", "bind", "impersonate"}
    deletable = {res for rule in cluster_role["rules"] if "delete" in rule["verbs"] for res in rule["resources"]}
    assert deletable == {"httproutes", "virtualservices"}, "only a route left behind by a change of provider"
    assert not any("secrets" in rule["resources"] for rule in cluster_role["rules"])
    lease_role = next(doc for doc in documents if doc["kind"] == "Role")
    scoped = [rule for rule in lease_role["rules"] if "update" in rule["verbs"]]
    assert scoped and all(rule.get("resourceNames") == ["mr-modelrollout-operator"] for rule in scoped)


@pytest.fixture
def installed(helm: Helm, cluster: Cluster, restricted: str) -> Iterator[str]:
    """Release ``mr`` installed with every feature on, in the restricted namespace; uninstalled after."""
    helm.run("install", "mr", str(CHART), "-n", restricted, *helm.values_args(EVERYTHING_ON), "--wait", "--timeout=2m")
    yield restricted
    helm.run("uninstall", "mr", "-n", restricted, "--wait", check=False)


def operator_pods(cluster: Cluster, namespace: str) -> list[k8s.V1Pod]:
    pods: list[k8s.V1Pod] = (
        k8s.CoreV1Api(cluster.api_client)
        .list_namespaced_pod(namespace, label_selector="app.kubernetes.io/component=operator")
        .items
    )
    return pods


def test_install_upgrade_and_uninstall(helm: Helm, cluster: Cluster, installed: str, tmp_path: Path) -> None:
    namespace = installed
    try:
        pods = wait_for(
            lambda: (p := operator_pods(cluster, namespace)) and all(x.status.phase == "Running" for x in p) and p,
            60,
            "operator pods Running under kwok",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{describe_workloads(cluster.api_client, namespace)}") from None
    assert len(pods) == 2
    release = json.loads(helm.run("status", "mr", "-n", namespace, "-o", "json").stdout)
    assert (release["info"]["status"], release["version"]) == ("deployed", 1)

    helm.run("upgrade", "mr", str(CHART), "-n", namespace, *helm.values_args({**EVERYTHING_ON,
             "operator": {"logLevel": "DEBUG"}}), "--wait", "--timeout=2m")  # fmt: skip
    deployment = k8s.AppsV1Api(cluster.api_client).read_namespaced_deployment("mr-modelrollout-operator", namespace)
    env = {e.name: e.value for e in deployment.spec.template.spec.containers[0].env}
    assert env["MODELROLLOUT_LOG_LEVEL"] == "DEBUG"
    release = json.loads(helm.run("status", "mr", "-n", namespace, "-o", "json").stdout)
    assert (release["info"]["status"], release["version"]) == ("deployed", 2)

    helm.run("uninstall", "mr", "-n", namespace, "--wait")
    apps = k8s.AppsV1Api(cluster.api_client)
    assert not apps.list_namespaced_deployment(namespace).items, "uninstall removes the operator"
    rbac = k8s.RbacAuthorizationV1Api(cluster.api_client)
    assert not [r for r in rbac.list_cluster_role().items if r.metadata.name == "mr-modelrollout-operator"]
    crd = k8s.ApiextensionsV1Api(cluster.api_client).read_custom_resource_definition("modeldeployments.modelrollout.io")
    assert crd.metadata.name, "the CRD stays: deleting it would delete every ModelDeployment"
