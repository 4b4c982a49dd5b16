"""Traffic providers changed under a live ModelDeployment, and the replicas provider with one replica, on the
real rig: API server + controllers + kwok, the Gateway API and Istio CRDs the rig installs, the operator on
the chart's ServiceAccount (a release of its own, ``tests/support/release_rig.py``).

No model server runs (kwok pods run no container) and Prometheus has no target for these rollouts: their
analyses find no data, which never passes, so each canary holds at its first step's weight. That is all
these tests need — a live split that the routes must carry across a change of provider. Routes are read by
the route APIs' own rules (``tests/support/routes.py``), not by the operator's code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
from kubernetes import client as k8s

from model_operator.kube.client import KubeClient
from model_operator.kube.manifests import Owner
from model_operator.traffic.base import remove_owned
from tests.rig import Cluster, Prometheus
from tests.support.release_rig import ReleaseRig, release_rig
from tests.support.rollouts import model_deployment, wait_for
from tests.support.routes import Split, httproute_split, virtual_service_split

pytestmark = pytest.mark.integration
NAMESPACE = "traffic-providers"
RELEASE = "providers"
STEPS = [{"setWeight": 30}, {"pause": {}}, {"setWeight": 100}]
ANALYSIS = {"interval": "2s", "window": "8s", "inconclusiveLimit": 1000}  # no data: held at 30%, Progressing
ROUTES = {  # provider -> (group, version, plural) of its route; the replicas provider has none
    "gatewayAPI": ("gateway.networking.k8s.io", "v1", "httproutes"),
    "istio": ("networking.istio.io", "v1", "virtualservices"),
}


@pytest.fixture(scope="module")
def rig(cluster: Cluster, prometheus: Prometheus, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReleaseRig]:
    with release_rig(cluster, prometheus, tmp_path_factory.mktemp("providers"), RELEASE, NAMESPACE) as made:
        yield made


def model(version: str, digit: str) -> dict[str, str]:
    """A model reference nothing ever downloads (kwok runs no container)."""
    return {
        "name": "iris",
        "version": version,
        "uri": f"http://models/iris-{version}/",
        "digest": "sha256:" + digit * 64,
    }


def body(rig: ReleaseRig, name: str, version: str, provider: str, replicas: int = 2) -> dict[str, Any]:
    ref = model(version, "a" if version == "1.0.0" else "b")
    md = model_deployment(name, NAMESPACE, ref, rig.prometheus.url, STEPS, ANALYSIS)
    md["spec"].update(replicas=replicas, traffic={"provider": provider})
    return md


def route(rig: ReleaseRig, provider: str, name: str) -> dict[str, Any] | None:
    """The provider's route named ``name`` as stored, None when there is none."""
    group, version, plural = ROUTES[provider]
    try:
        found = k8s.CustomObjectsApi(rig.cluster.api_client).get_namespaced_custom_object(
            group, version, NAMESPACE, plural, name
        )
    except k8s.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return cast(dict[str, Any], found)


def split(rig: ReleaseRig, provider: str, name: str) -> Split | None:
    """What the provider's route does with requests (by the route API's rules), None without a route."""
    found = route(rig, provider, name)
    if found is None:
        return None
    return virtual_service_split(found) if provider == "istio" else httproute_split(found)


def expected_split(provider: str, name: str, canary: float) -> Split:
    """``canary`` percent to ``<name>-canary``, the rest to ``<name>-stable``, as each provider names them."""
    suffix = f".{NAMESPACE}.svc.cluster.local" if provider == "istio" else ""
    return Split(live={f"{name}-stable{suffix}": 100.0 - canary, f"{name}-canary{suffix}": canary})


def replicas(rig: ReleaseRig, name: str) -> dict[str, int]:
    apps = k8s.AppsV1Api(rig.cluster.api_client)
    out = {}
    for track in ("stable", "canary"):
        deployment = apps.read_namespaced_deployment(f"{name}-{track}", NAMESPACE)
        out[track] = deployment.spec.replicas
    return out


def canary_at_30(rig: ReleaseRig, name: str, provider: str, replica_count: int = 2) -> dict[str, Any]:
    """``name`` on ``provider``: v1 settled as stable, then v2 as a canary holding at 30%."""
    rig.cluster.apply(body(rig, name, "1.0.0", provider, replica_count))
    rig.wait_phase(name, {"Succeeded"}, 60)
    rig.cluster.apply(body(rig, name, "2.0.0", provider, replica_count))
    return wait_for(
        lambda: (s := rig.status(name)).get("canaryWeight") == 30 and s.get("trafficProvider") == provider and s,
        60,
        f"{name}: canary at 30% on {provider}",
    )


@pytest.mark.parametrize(
    ("first", "then"), [("gatewayAPI", "istio"), ("istio", "gatewayAPI"), ("gatewayAPI", "replicas")]
)
def test_a_changed_provider_carries_the_split_and_the_old_route_goes(rig: ReleaseRig, first: str, then: str) -> None:
    name = f"{first}-to-{then}".lower()
    try:
        canary_at_30(rig, name, first)
        assert split(rig, first, name) == expected_split(first, name, 30)
        old_uid = (route(rig, first, name) or {})["metadata"]["uid"]

        rig.cluster.apply(body(rig, name, "2.0.0", then))
        status = wait_for(
            lambda: (s := rig.status(name)).get("trafficProvider") == then and s, 30, f"{name}: traffic on {then}"
        )
        assert route(rig, first, name) is None, f"the {first} route {old_uid} is left behind"
        assert status["phase"] == "Progressing" and status["canaryWeight"] == 30, "the canary carries on, not restarted"
        assert status["canaryVersion"] == "2.0.0"
        if then in ROUTES:
            assert split(rig, then, name) == expected_split(then, name, 30), "the new route carries the same weights"
        else:  # pods are the weights: the root Service reaches every pod, one of two is the canary's
            selector = k8s.CoreV1Api(rig.cluster.api_client).read_namespaced_service(name, NAMESPACE).spec.selector
            assert selector == {"app.kubernetes.io/name": name}
            assert wait_for(lambda: replicas(rig, name) == {"stable": 1, "canary": 1}, 30, "the pod split")
            assert all(route(rig, provider, name) is None for provider in ROUTES)
        wait_for(lambda: any(e.reason == "TrafficProviderChanged" for e in rig.events(name)), 15, "the provider Event")
    finally:
        rig.delete(name)


def test_a_route_of_another_owner_or_of_a_missing_type_is_not_removed(rig: ReleaseRig) -> None:
    """``remove`` on the API server itself, with the operator's RBAC: a route whose owner is another
    ModelDeployment (the uid decides, not the name) stays; a resource type the cluster does not have (Istio
    or the Gateway API not installed) is nothing to remove, not an error."""
    name = "kept"
    try:
        canary_at_30(rig, name, "gatewayAPI")
        api_client = rig.cluster.api_client_for(rig.operator.kubeconfig)
        kube = KubeClient(api_client)
        stranger = Owner(NAMESPACE, name, "00000000-0000-0000-0000-000000000000")
        assert remove_owned(kube, "gateway.networking.k8s.io/v1", "HTTPRoute", stranger) is False
        assert route(rig, "gatewayAPI", name) is not None
        owner = Owner(NAMESPACE, name, rig.md(name)["metadata"]["uid"])
        assert remove_owned(kube, "nothing.modelrollout.io/v1", "VirtualService", owner) is False
        kube.delete("nothing.modelrollout.io/v1", "VirtualService", NAMESPACE, name, owner.uid)  # no error
        api_client.close()  # type: ignore[no-untyped-call]
    finally:
        rig.delete(name)


def test_one_replica_on_the_replicas_provider_gives_the_canary_a_pod_of_its_own(rig: ReleaseRig) -> None:
    """With ``replicas: 1`` a canary sized as a share of one pod would get none, no request, and could never
    be judged: it gets a pod next to stable's, and the root Service sends requests to both."""
    name = "single"
    try:
        canary_at_30(rig, name, "replicas", replica_count=1)
        assert replicas(rig, name) == {"stable": 1, "canary": 1}
        discovery = k8s.DiscoveryV1Api(rig.cluster.api_client)

        def ready_tracks() -> set[str]:
            slices = discovery.list_namespaced_endpoint_slice(
                NAMESPACE, label_selector=f"kubernetes.io/service-name={name}"
            ).items
            pods = [
                e.target_ref.name
                for s in slices
                for e in s.endpoints or []
                if e.conditions and e.conditions.ready and e.target_ref
            ]
            return {pod.removeprefix(f"{name}-").split("-")[0] for pod in pods}

        assert wait_for(
            lambda: ready_tracks() == {"stable", "canary"}, 60, "a ready pod of each track behind the root Service"
        )
    finally:
        rig.delete(name)
