"""Leader election on the real rig: two ``python -m model_operator`` processes, each with a token of its own
of the operator ServiceAccount (least-privilege RBAC, including the namespaced leader-election Role; one
token per process, as each pod gets its own), contend for one Lease. Exactly one acts — the API server's
audit log shows every write of a reconciled ModelDeployment's life came from the leader's token and none
from the follower's; when the leader is SIGKILLed the other takes over within the lease duration; a
SIGTERMed leader releases the Lease; a leader whose Lease is taken stops and exits non-zero.

Lease timings are the tests' short ones (``tests.support.rollouts.LEASE_TIMINGS``: 4 s / 3 s / 0.5 s),
except where a test says otherwise; the Lease is the chart release's own, deleted after each test.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from tests.rig import Cluster
from tests.rig.cluster import WRITE_VERBS
from tests.support.helm import CHART, Helm
from tests.support.rollouts import CHART_LEASE_TIMINGS, LEASE_NAMESPACE, LEASE_TIMINGS, OperatorProcess, wait_for
from tests.support.servers import REPO

pytestmark = pytest.mark.integration
LEASE_DURATION = float(LEASE_TIMINGS["MODELROLLOUT_LEASE_DURATION_SECONDS"])
RETRY_PERIOD = float(LEASE_TIMINGS["MODELROLLOUT_RETRY_PERIOD_SECONDS"])
# A follower takes over at its first attempt after the lease ran out: at most one retry period after the
# lease duration (counted from the last renewal it saw), plus API round trips.
FAILOVER_BOUND = LEASE_DURATION + 2 * RETRY_PERIOD + 5  # the slack is for a loaded 2-core machine
FAILOVERS = 3
StartOperator = Callable[..., OperatorProcess]


RELEASE = "le"  # fullnameOverride: ServiceAccount, ClusterRole and the Role's one Lease are all "le-operator"


@pytest.fixture(scope="module")
def operator_account(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The chart's ServiceAccount: RBAC exactly as `helm install` grants it, leader-election Role included
    (which can only get and update the release's own Lease)."""
    cluster.apply(REPO / "crds" / "modeldeployments.yaml")
    cluster.wait_for_crds()
    cluster.create_namespace(LEASE_NAMESPACE)
    helm = Helm(tmp_path_factory.mktemp("helm"), cluster.kubeconfig)
    values = {"fullnameOverride": RELEASE, "operator": {"replicas": 0}}
    helm.run("install", RELEASE, str(CHART), "-n", LEASE_NAMESPACE, *helm.values_args(values), "--wait")
    yield f"{RELEASE}-operator"
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
def operator(cluster: Cluster, operator_account: str, lease_name: str, tmp_path: Path) -> Iterator[StartOperator]:
    """``operator("op-a")``: an operator process (not started) on this test's Lease, with a token of its own
    (``timings`` replaces the short lease timings); all stopped at the end."""
    made: list[OperatorProcess] = []

    def make(identity: str, timings: Mapping[str, str] = LEASE_TIMINGS) -> OperatorProcess:
        kubeconfig = cluster.mint_service_account_kubeconfig(
            LEASE_NAMESPACE, operator_account, path=tmp_path / f"{identity}.kubeconfig"
        )
        process = OperatorProcess(
            kubeconfig,
            tmp_path / f"{identity}.log",
            identity=identity,
            env={"MODELROLLOUT_LEASE_NAME": lease_name, **timings},
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


CREDENTIAL_ID = "authentication.kubernetes.io/credential-id"  # user.extra in audit events: which token


def token_credential(kubeconfig: Path) -> str:
    """How the API server's audit log names the ServiceAccount token in ``kubeconfig``: ``JTI=<its jti>``,
    read from the token's own claims (a TokenRequest token is a JWT)."""
    user = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]
    payload = user["token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"JTI={claims['jti']}"


def audited(cluster: Cluster, credential: str) -> list[dict[str, Any]]:
    """The audit log's events for requests made with one token."""
    return [e for e in cluster.audit_events(containing=credential)
            if credential in ((e.get("user") or {}).get("extra") or {}).get(CREDENTIAL_ID, [])]  # fmt: skip


def lease_reads(events: list[dict[str, Any]], lease: str) -> int:
    return sum(1 for e in events if e["verb"] == "get" and (e.get("objectRef") or {}).get("name") == lease)


def write_summary(event: dict[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    resource = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    code = (event.get("responseStatus") or {}).get("code")
    return f"{event['verb']} {resource} {ref.get('namespace', '')}/{ref.get('name', '')} -> {code}"


def test_only_the_leader_writes_while_a_model_deployment_lives(
    cluster: Cluster, operator: StartOperator, lease_name: str, namespace: str, request: pytest.FixtureRequest
) -> None:
    """Two replicas; a ModelDeployment is created, reconciled, scaled and deleted. The API server's audit log
    — not the operator's own metrics or logs — shows every write of that life came from the leader's token,
    and none at all from the follower's, which it saw reading the Lease all along (so the follower was there,
    and its requests are recognisable). The chart's lease timings, so no renewal lapses on a loaded machine."""
    custom = k8s.CustomObjectsApi(cluster.api_client)
    leader = operator("op-lead", CHART_LEASE_TIMINGS).start()
    follower = operator("op-follow", CHART_LEASE_TIMINGS).start(wait_leading=False)
    leader_token, follower_token = token_credential(leader.kubeconfig), token_credential(follower.kubeconfig)
    assert leader_token != follower_token
    wait_for(
        lambda: lease_reads(audited(cluster, follower_token), lease_name) >= 2, 30, "the follower polling the Lease"
    )

    started = time.monotonic()
    custom.create_namespaced_custom_object("modelrollout.io", "v1alpha1", namespace, "modeldeployments",
                                           md_body("solo", namespace))  # fmt: skip
    wait_for(lambda: phase(cluster, namespace, "solo") == "Succeeded", 90, "the leader reconciles 'solo'")
    custom.patch_namespaced_custom_object(
        "modelrollout.io", "v1alpha1", namespace, "modeldeployments", "solo", {"spec": {"replicas": 2}}
    )
    apps = k8s.AppsV1Api(cluster.api_client)
    wait_for(lambda: apps.read_namespaced_deployment("solo-stable", namespace).spec.replicas == 2, 90, "scaled to 2")
    delete_md(cluster, namespace, "solo")
    lifetime = time.monotonic() - started
    # The follower outlived all of that, still following: two more Lease reads from its token after the end.
    reads = lease_reads(audited(cluster, follower_token), lease_name)
    wait_for(
        lambda: lease_reads(audited(cluster, follower_token), lease_name) >= reads + 2, 30, "the follower still there"
    )

    follower_writes = [write_summary(e) for e in audited(cluster, follower_token) if e["verb"] in WRITE_VERBS]
    assert follower_writes == [], f"the follower wrote to the API server: {follower_writes}"

    leader_writes = [e for e in audited(cluster, leader_token) if e["verb"] in WRITE_VERBS]
    ours = Counter((e["objectRef"]["resource"], e["verb"]) for e in leader_writes
                   if e["objectRef"].get("namespace") == namespace)  # fmt: skip
    assert ours[("deployments", "patch")] >= 2, ours  # created, then scaled (server-side apply)
    assert ours[("modeldeployments", "patch")] >= 2, ours  # finalizer and status, finalizer removed at the end
    assert any(e["objectRef"]["resource"] == "leases" and e["verb"] == "update" for e in leader_writes)
    assert follower.process is not None and follower.process.poll() is None
    record = read_lease(cluster, lease_name).spec
    assert record.holder_identity.startswith(f"{leader.identity}_") and record.lease_transitions == 0, record
    request.node.user_properties.append(
        (
            "measured",
            f"one ModelDeployment's life ({lifetime:.1f}s): {len(leader_writes)} writes by the leader's token "
            f"(in its namespace: {dict(ours)}), 0 by the follower's "
            f"({lease_reads(audited(cluster, follower_token), lease_name)} Lease reads)",
        )
    )


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
    wait_for(lambda: holder(cluster, lease_name).startswith(f"{follower.identity}_"), 15, "follower takes over")
    handover_seconds = time.monotonic() - stopped
    request.node.user_properties.append(
        (
            "measured",
            f"graceful handover: Lease released {release_seconds:.2f}s after SIGTERM, "
            f"follower holding it after {handover_seconds:.2f}s",
        )
    )
    assert handover_seconds < 2 * RETRY_PERIOD + 6, "the next attempt after a release, not the lease's expiry"


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
