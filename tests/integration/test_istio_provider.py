"""The Istio traffic provider on the real rig: Istio's own CRDs (copied from the istio.io/api module), the
operator's identity as the chart grants it, server-side apply for real.

What the rig cannot show: there is no istiod, so nothing forwards packets by these weights, and Istio's
validating webhook (which adds the semantic checks the CRD schema leaves out) does not run. The CRD
schema checks types (int32 range included) and required fields, not ranges: the out-of-range values it
lets through are listed below, and the router's builder refuses them instead.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from model_operator.kube.client import FIELD_MANAGER, KubeClient
from model_operator.kube.manifests import Owner
from model_operator.spec import GROUP, PLURAL, VERSION, ModelDeploymentSpec
from model_operator.traffic import istio, router_for
from tests.rig import Cluster
from tests.support.helm import CHART, Helm
from tests.support.routes import Split, virtual_service_split

pytestmark = pytest.mark.integration

RELEASE = "istio-t"  # fullnameOverride: the ServiceAccount and ClusterRole are "istio-t-operator"
VS = ("networking.istio.io", "v1", "virtualservices")
DIGEST = "sha256:" + "a" * 64


@dataclass
class Operator:
    """The operator's identity: a token of the chart's ServiceAccount, and the client the operator uses."""

    kubeconfig: Path
    api_client: k8s.ApiClient
    kube: KubeClient


@pytest.fixture(scope="module")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The chart installed (no operator pods) into a namespace of its own; its ServiceAccount's RBAC is what
    this module's API calls run with."""
    system = f"istio-t-{uuid.uuid4().hex[:6]}"
    cluster.create_namespace(system)
    helm = Helm(tmp_path_factory.mktemp("helm"), cluster.kubeconfig)
    values = {"fullnameOverride": RELEASE, "operator": {"replicas": 0}}
    helm.run("upgrade", "--install", RELEASE, str(CHART), "-n", system, *helm.values_args(values), "--wait")
    cluster.wait_for_crds()  # the chart's crds/ install the ModelDeployment CRD on a fresh rig
    kubeconfig = cluster.mint_service_account_kubeconfig(system, f"{RELEASE}-operator")
    api_client = cluster.api_client_for(kubeconfig)
    try:
        yield Operator(kubeconfig, api_client, KubeClient(api_client))
    finally:
        api_client.close()  # type: ignore[no-untyped-call]
        helm.run("uninstall", RELEASE, "-n", system, "--wait", check=False)
        cluster.kubectl("delete", "namespace", system, "--wait=false", "--ignore-not-found")


def make_spec(**section: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {
            "model": {"name": "iris", "version": "1.0.0", "uri": "http://models/iris-1.0.0/", "digest": DIGEST},
            "image": "server@sha256:" + "f" * 64,
            "traffic": {"provider": "istio", "istio": section},
        }
    )


def model_deployment(cluster: Cluster, namespace: str, spec: ModelDeploymentSpec) -> Owner:
    """A real ModelDeployment to own the VirtualService: with an owner uid that exists nowhere, the garbage
    collector would delete it. Nothing reconciles it here; the test drives the router directly."""
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": "iris"}}
    created = k8s.CustomObjectsApi(cluster.api_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, {**body, "spec": spec.wire()}
    )
    return Owner(namespace, "iris", cast(dict[str, Any], created)["metadata"]["uid"])


def read_vs(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    found = k8s.CustomObjectsApi(cluster.api_client).get_namespaced_custom_object(*VS[:2], namespace, VS[2], name)
    return cast(dict[str, Any], found)


def _message(error: ApiException) -> str:
    """The human message of the API server's Status body (what kubectl would print)."""
    return str(json.loads(error.body or "{}").get("message"))


def hosts(namespace: str) -> tuple[str, str]:
    """The stable and canary Services' in-cluster names, spelled out here rather than taken from the router."""
    return f"iris-stable.{namespace}.svc.cluster.local", f"iris-canary.{namespace}.svc.cluster.local"


def test_weights_round_trip_through_the_api_server(cluster: Cluster, operator: Operator, namespace: str) -> None:
    """Each weight the router writes is the split Istio would make of the stored VirtualService, read by
    Istio's rules (``tests.support.routes``), not by the router's own ``current_weight``."""
    spec = make_spec()
    owner = model_deployment(cluster, namespace, spec)
    router = router_for("istio", operator.kube)
    assert router.current_weight(owner) is None
    stable, canary = hosts(namespace)

    for weight in (0, 5, 25, 50, 100, 0):
        router.set_weight(owner, spec, weight)
        split = virtual_service_split(read_vs(cluster, namespace, "iris"))
        assert split == Split(live={stable: 100 - weight, canary: weight}), (weight, split)
        assert router.current_weight(owner) == weight  # and the router reads back what Istio would do
    stored = read_vs(cluster, namespace, "iris")
    assert stored["spec"]["hosts"] == [f"iris.{namespace}.svc.cluster.local"]
    assert stored["metadata"]["ownerReferences"][0]["uid"] == owner.uid
    assert {m["manager"] for m in stored["metadata"]["managedFields"]} == {FIELD_MANAGER}

    version = stored["metadata"]["resourceVersion"]
    router.set_weight(owner, spec, 0)  # server-side apply of the same object: no write
    assert read_vs(cluster, namespace, "iris")["metadata"]["resourceVersion"] == version


def test_hosts_gateways_and_mirror_are_accepted(cluster: Cluster, operator: Operator, namespace: str) -> None:
    spec = make_spec(hosts=["iris.example.com"], gateways=["istio-system/public", "mesh"])
    owner = model_deployment(cluster, namespace, spec)
    operator.kube.apply(istio.virtual_service(owner, spec, 10, mirror_percent=12.5))
    stored = read_vs(cluster, namespace, "iris")
    assert stored["spec"]["hosts"] == ["iris.example.com"]
    assert stored["spec"]["gateways"] == ["istio-system/public", "mesh"]
    stable, canary = hosts(namespace)
    assert virtual_service_split(stored) == Split(live={stable: 90, canary: 10}, mirrored={canary: 12.5})


def test_the_router_mirrors_the_share_it_is_given(cluster: Cluster, operator: Operator, namespace: str) -> None:
    """A shadow's mirrored share as Istio reads the stored route (``mirrorPercentage.value`` is a percent;
    absent, everything is mirrored), for each share the router is asked for, and none once it is 0."""
    spec = make_spec()
    owner = model_deployment(cluster, namespace, spec)
    router = router_for("istio", operator.kube)
    stable, canary = hosts(namespace)
    for mirror in (1, 25, 100, 0):
        router.set_weight(owner, spec, 0, mirror_percent=mirror)
        split = virtual_service_split(read_vs(cluster, namespace, "iris"))
        assert split == Split(live={stable: 100, canary: 0}, mirrored={canary: mirror} if mirror else {}), split


def _route(vs: dict[str, Any]) -> dict[str, Any]:
    route: dict[str, Any] = vs["spec"]["http"][0]
    return route


def _set_canary(vs: dict[str, Any], key: str, value: Any) -> None:
    _route(vs)["route"][1][key] = value


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(lambda vs: _set_canary(vs, "weight", "ten"), "weight", id="weight-not-a-number"),
        pytest.param(lambda vs: _set_canary(vs, "weight", 12.5), "weight", id="weight-not-an-integer"),
        pytest.param(lambda vs: _set_canary(vs, "weight", 2**31), "format int32", id="weight-over-int32"),
        pytest.param(lambda vs: _set_canary(vs, "destination", {"port": {"number": 80}}), "host", id="no-host"),
        pytest.param(
            lambda vs: _route(vs)["mirrorPercentage"].update(value="half"), "mirrorPercentage", id="mirror-not-a-number"
        ),
    ],
)
def test_the_crd_schema_rejects_malformed_routes(
    cluster: Cluster, operator: Operator, namespace: str, mutate: Any, message: str
) -> None:
    spec = make_spec()
    owner = model_deployment(cluster, namespace, spec)
    vs = istio.virtual_service(owner, spec, 10, mirror_percent=50)
    mutate(vs)
    with pytest.raises(ApiException) as rejected:
        k8s.CustomObjectsApi(operator.api_client).create_namespaced_custom_object(*VS[:2], namespace, VS[2], vs)
    assert rejected.value.status == 422, rejected.value.body
    assert message in _message(rejected.value)
    # The operator's own path, server-side apply, is refused too; a value of the wrong JSON type fails
    # before validation, in SSA's typed conversion, which answers 500 today (kubernetes/kubernetes#139253).
    with pytest.raises(ApiException) as refused:
        operator.kube.apply(vs)
    assert message in _message(refused.value)
    assert operator.kube.get(istio.API_VERSION, istio.KIND, namespace, "iris") is None


@pytest.mark.parametrize(
    ("mutate", "builder_call"),
    [
        pytest.param(lambda vs: _set_canary(vs, "weight", -10), {"weight": -10}, id="negative-weight"),
        pytest.param(lambda vs: _set_canary(vs, "weight", 250), {"weight": 250}, id="weight-over-100"),
        pytest.param(
            lambda vs: _route(vs)["mirrorPercentage"].update(value=150.0),
            {"weight": 10, "mirror_percent": 150.0},
            id="mirror-over-100",
        ),
    ],
)
def test_the_crd_schema_does_not_bound_weights_so_the_builder_does(
    cluster: Cluster, operator: Operator, namespace: str, mutate: Any, builder_call: dict[str, Any]
) -> None:
    """Istio's CRD declares weights as int32 and mirrorPercentage as a double, without bounds, so the API
    server stores these. istiod's webhook (absent here) refuses negative weights and percentages outside
    [0.0001, 100]; weights over 100 are legal for Istio (they are relative). The router builds none of them."""
    spec = make_spec()
    owner = model_deployment(cluster, namespace, spec)
    vs = istio.virtual_service(owner, spec, 10, mirror_percent=50)
    mutate(vs)
    operator.kube.apply(vs)
    assert read_vs(cluster, namespace, "iris")["spec"] == vs["spec"]
    with pytest.raises(ValueError, match="must be within"):
        istio.virtual_service(owner, spec, **builder_call)


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("get", "virtualservices.networking.istio.io", True),
        ("watch", "virtualservices.networking.istio.io", True),
        ("patch", "virtualservices.networking.istio.io", True),
        ("create", "virtualservices.networking.istio.io", True),
        ("delete", "virtualservices.networking.istio.io", True),  # a route left behind by a change of provider
        ("delete", "deployments.apps", False),  # owner references clean up the rest
        ("create", "destinationrules.networking.istio.io", False),  # not needed: one Service per track
        ("create", "gateways.networking.istio.io", False),
    ],
)
def test_the_chart_grants_exactly_what_the_router_needs(
    cluster: Cluster, operator: Operator, namespace: str, verb: str, resource: str, allowed: bool
) -> None:
    answer = cluster.kubectl(
        "auth", "can-i", verb, resource, "-n", namespace, kubeconfig=operator.kubeconfig, check=False
    ).stdout.strip()
    assert answer == ("yes" if allowed else "no")
