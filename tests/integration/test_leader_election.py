"""Leader election on the real rig: two ``python -m model_operator`` processes, each with the operator
ServiceAccount's token (least-privilege RBAC, including the namespaced leader-election Role), contend for
one Lease. Exactly one acts; when it is SIGKILLed the other takes over within the lease duration; a
SIGTERMed leader releases the Lease; a leader whose Lease is taken stops and exits non-zero.

Lease timings are the tests' short ones (``tests.support.rollouts.LEASE_TIMINGS``: 4 s / 3 s / 0.5 s);
the Lease is the chart release's own, deleted after each test.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.rig import Cluster
from tests.support.helm import CHART, Helm
from tests.support.rollouts import LEASE_NAMESPACE, LEASE_TIMINGS, OperatorProcess, wait_for
from tests.support.servers import REPO

pytestmark = pytest.mark.integration
LEASE_DURATION = float(LEASE_TIMINGS["MODELROLLOUT_LEASE_DURATION_SECONDS"])
RETRY_PERIOD = float(LEASE_TIMINGS["MODELROLLOUT_RETRY_PERIOD_SECONDS"])
# A follower takes over at its first attempt after the lease ran out: at most one retry period after the
# lease duration (counted from the last renewal it saw), plus API round trips.
FAILOVER_BOUND = LEASE_DURATION + 2 * RETRY_PERIOD + 1.5
FAILOVERS = 3
StartOperator = Callable[[str], OperatorProcess]


RELEASE = "le"  # fullnameOverride: ServiceAccount, ClusterRole and the Role's one Lease are all "le-operator"


@pytest.fixture(scope="module")
def operator_kubeconfig(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A token of the chart's ServiceAccount: RBAC exactly as `helm install` grants it, leader-election Role
    included (which can only get and update the release's own Lease)."""
    cluster.apply(REPO / "crds" / "modeldeployments.yaml")
    cluster.wait_for_crds()
    cluster.create_namespace(LEASE_NAMESPACE)
    helm = Helm(tmp_path_factory.mktemp("helm"), cluster.kubeconfig)
    values = {"fullnameOverride": RELEASE, "operator": {"replicas": 0}}
    helm.run("install", RELEASE, str(CHART), "-n", LEASE_NAMESPACE, *helm.values_args(values), "--wait")
    yield cluster.mint_service_account_kubeconfig(LEASE_NAMESPACE, f"{RELEASE}-operator")
    helm.run("uninstall", RELEASE, "-n", LEASE_NAMESPACE, "--wait", check=False)


@pytest.fixture
def lease_name(cluster: Cluster) -> Iterator[str]:
    """The release's Lease (the only one its Role may update), deleted after each test."""
    name = f"{RELEASE}-operator"
    yield name
    try:
        k8s.CoordinationV1Api(cluster.api_client).delete_namespaced_lease(name, LEASE_NAMESPACE)
    except k8s.ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture
def operator(operator_kubeconfig: Path, lease_name: str, tmp_path: Path) -> Iterator[StartOperator]:
    """``operator("op-a")``: an operator process (not started) on this test's Lease; all stopped at the end."""
    made: list[OperatorProcess] = []

    def make(identity: str) -> OperatorProcess:
        process = OperatorProcess(
            operator_kubeconfig,
            tmp_path / f"{identity}.log",
            identity=identity,
            env={"MODELROLLOUT_LEASE_NAME": lease_name, **LEASE_TIMINGS},
        )
        made.append(process)
        return process

    yield make
    for process in made:
        process.stop()
    for process in made:
        print(f"--- {process.identity} log (tail)\n{process.log()[-3000:]}")


def read_lease(cluster: Cluster, name: str) -> Any:
    return k8s.CoordinationV1Api(cluster.api_client).read_namespaced_lease(name, LEASE_NAMESPACE)


def holder(cluster: Cluster, name: str) -> str:
    try:
        return read_lease(cluster, name).spec.holder_identity or ""
    except k8s.ApiException as exc:
        if exc.status == 404:
            return ""
        raise


def md_body(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": "iris", "version": "1.0.0", "uri": "https://models.invalid/iris-1.0.0/",
                      "digest": "sha256:" + "1" * 64},
            "image": "modelrollout/server@sha256:" + "0" * 64,
            "replicas": 1,
        },
    }  # fmt: skip


def phase(cluster: Cluster, namespace: str, name: str) -> str | None:
    obj = k8s.CustomObjectsApi(cluster.api_client).get_namespaced_custom_object(
        "modelrollout.io", "v1alpha1", namespace, "modeldeployments", name
    )
    status: dict[str, Any] = obj.get("status") or {}
    return status.get("phase")


def delete_md(cluster: Cluster, namespace: str, name: str) -> None:
    custom = k8s.CustomObjectsApi(cluster.api_client)
    custom.delete_namespaced_custom_object("modelrollout.io", "v1alpha1", namespace, "modeldeployments", name)

    def gone() -> bool:
        try:
            custom.get_namespaced_custom_object("modelrollout.io", "v1alpha1", namespace, "modeldeployments", name)
        except k8s.ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, 30, f"ModelDeployment {name} deleted (finalizer removed by the leader)")


def assert_only_leader_acts(cluster: Cluster, lease: str, leader: OperatorProcess, follower: OperatorProcess) -> None:
    """For two lease durations: the Lease stays with ``leader`` and is renewed; ``follower`` stays idle."""
    renewals = set()
    deadline = time.monotonic() + 2 * LEASE_DURATION
    while time.monotonic() < deadline:
        record = read_lease(cluster, lease).spec
        assert record.holder_identity.startswith(f"{leader.identity}_"), record
        renewals.add(record.renew_time)
        assert follower.serves_metrics() and not follower.leading(), "a follower runs no kopf, no handlers"
        assert follower.process is not None and follower.process.poll() is None
        time.sleep(0.25)
    assert len(renewals) >= LEASE_DURATION / RETRY_PERIOD, f"renewed every retry period: {len(renewals)}"
    assert leader.leading()
    assert "became leader" not in follower.log()
    assert f"is held by {leader.identity}_" in follower.log()


def test_one_of_two_leads_and_a_follower_takes_over_when_it_dies(
    cluster: Cluster, operator: StartOperator, lease_name: str, namespace: str, request: pytest.FixtureRequest
) -> None:
    custom = k8s.CustomObjectsApi(cluster.api_client)
    leader = operator("op-a").start()
    follower = operator("op-b").start(wait_leading=False)
    assert holder(cluster, lease_name).startswith("op-a_")
    assert_only_leader_acts(cluster, lease_name, leader, follower)

    custom.create_namespaced_custom_object("modelrollout.io", "v1alpha1", namespace, "modeldeployments",
                                           md_body("before", namespace))  # fmt: skip
    wait_for(lambda: phase(cluster, namespace, "before") == "Succeeded", 60, "the leader reconciles 'before'")

    failovers: list[float] = []
    acting: list[float] = []
    for round_ in range(FAILOVERS):
        killed = time.monotonic()
        leader.kill()
        new = wait_for(
            lambda f=follower: holder(cluster, lease_name).startswith(f"{f.identity}_"),
            FAILOVER_BOUND + 5,
            f"round {round_}: {follower.identity} takes the Lease",
            interval=0.05,
        )
        assert new
        failovers.append(time.monotonic() - killed)
        follower.wait_leading(30)
        acting.append(time.monotonic() - killed)
        record = read_lease(cluster, lease_name).spec
        assert record.lease_transitions == round_ + 1, record
        assert "became leader" in follower.log()
        # a fresh follower for the next round, as Kubernetes would restart the killed pod
        leader, follower = follower, operator(f"op-{'cdef'[round_]}").start(wait_leading=False)

    custom.create_namespaced_custom_object("modelrollout.io", "v1alpha1", namespace, "modeldeployments",
                                           md_body("after", namespace))  # fmt: skip
    wait_for(lambda: phase(cluster, namespace, "after") == "Succeeded", 60, "the new leader reconciles 'after'")
    for name in ("before", "after"):
        delete_md(cluster, namespace, name)

    request.node.user_properties.append(
        (
            "measured",
            f"failover after SIGKILL of the leader (lease {LEASE_DURATION:g}s, retry {RETRY_PERIOD:g}s): "
            f"Lease taken after {[round(s, 2) for s in failovers]} s (median {statistics.median(failovers):.2f}); "
            f"new leader's metrics up after {[round(s, 2) for s in acting]} s",
        )
    )
    assert max(failovers) < FAILOVER_BOUND, failovers
    assert min(failovers) > LEASE_DURATION - 2 * RETRY_PERIOD, "nobody takes a lease before it expires"

    # SIGTERM: kopf stops, the Lease is released at once and the follower takes it at its next attempt
    assert leader.process is not None
    leading = holder(cluster, lease_name)
    stopped = time.monotonic()
    leader.process.terminate()
    wait_for(lambda: holder(cluster, lease_name) != leading, 10, "lease released or taken over", interval=0.05)
    release_seconds = time.monotonic() - stopped
    assert leader.process.wait(20) == 0, leader.log()[-3000:]
    assert "released lease" in leader.log()
    wait_for(lambda: holder(cluster, lease_name).startswith(f"{follower.identity}_"), 5, "follower takes over")
    handover_seconds = time.monotonic() - stopped
    request.node.user_properties.append(
        (
            "measured",
            f"graceful handover: Lease released {release_seconds:.2f}s after SIGTERM, "
            f"follower holding it after {handover_seconds:.2f}s",
        )
    )
    assert handover_seconds < 2 * RETRY_PERIOD + 3


def test_a_sigtermed_leader_releases_the_lease(
    cluster: Cluster, operator: StartOperator, lease_name: str, request: pytest.FixtureRequest
) -> None:
    leader = operator("op-solo").start()
    assert leader.process is not None
    stopped = time.monotonic()
    leader.process.terminate()
    assert leader.process.wait(20) == 0, leader.log()[-3000:]
    exited = time.monotonic() - stopped
    spec = read_lease(cluster, lease_name).spec
    assert spec.holder_identity in ("", None) and spec.lease_duration_seconds == 1, spec
    assert dt.datetime.now(dt.UTC) - spec.renew_time < dt.timedelta(seconds=30)
    assert not leader.serves_metrics()
    request.node.user_properties.append(("measured", f"SIGTERM to exit 0 with the Lease released: {exited:.2f}s"))
    assert exited < 10


def test_a_leader_whose_lease_is_taken_stops_acting_and_exits_nonzero(
    cluster: Cluster, operator: StartOperator, lease_name: str, request: pytest.FixtureRequest
) -> None:
    leader = operator("op-victim").start()
    assert leader.process is not None
    coordination = k8s.CoordinationV1Api(cluster.api_client)
    lease = coordination.read_namespaced_lease(lease_name, LEASE_NAMESPACE)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    stolen = time.monotonic()
    coordination.replace_namespaced_lease(
        lease_name,
        LEASE_NAMESPACE,
        {"metadata": {"name": lease_name, "resourceVersion": lease.metadata.resource_version},
         "spec": {"holderIdentity": "intruder", "leaseDurationSeconds": 60, "acquireTime": now, "renewTime": now,
                  "leaseTransitions": (lease.spec.lease_transitions or 0) + 1}},
    )  # fmt: skip
    code = leader.process.wait(LEASE_DURATION + 5)
    exited = time.monotonic() - stolen
    assert code != 0, "losing leadership is a crash: Kubernetes restarts the pod as a follower"
    assert "lost leadership" in leader.log() and "lease taken by intruder" in leader.log()
    assert not leader.serves_metrics()
    assert holder(cluster, lease_name) == "intruder", "a leader that lost never writes the Lease again"
    request.node.user_properties.append(("measured", f"leader stopped {exited:.2f}s after its Lease was taken"))
    assert exited < RETRY_PERIOD + LEASE_DURATION
