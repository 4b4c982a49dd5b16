"""``helm test`` of the installed chart, run for real: the hook's pod on the real node reaches the operator's
metrics Service by the name and port the template writes.

The release is the one every e2e story shares (``e2e_platform``: ``helm install`` into a namespace enforcing
Pod Security ``restricted``), its ``tests.image`` the image ``build_images.sh`` makes for the hook (Debian's
dash, GNU wget and grep; pinned by digest). The pod runs ``wget -q -T 5 -O - http://<service>:<port>/metrics
| grep -q '^modelrollout_leader'`` as 65532 on a read-only root: the kubelet gives it the rig's CoreDNS as its
nameserver and the namespace's search path, so the short Service name in the URL resolves as on any cluster,
and kube-proxy carries the connection to an operator pod. ``helm test`` reports Succeeded only if the
container exited 0; the DNS server's log shows the pod asked for that name.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from tests.rig.cluster_dns import ClusterDNS
from tests.rig.node import RealNode
from tests.support.platform import RELEASE, SYSTEM, Platform

pytestmark = pytest.mark.e2e

HOOK_URL = re.compile(r"http://(?P<host>[a-z0-9.-]+):(?P<port>\d+)/metrics")


def _test_pod(platform: Platform) -> dict[str, Any]:
    """The release's ``helm test`` pod as Helm stored it (the rendered hook, not a copy of the template)."""
    hooks = platform.helm.run("get", "hooks", RELEASE, "-n", SYSTEM).stdout
    pods = [
        doc
        for doc in yaml.safe_load_all(hooks)
        if doc and doc["kind"] == "Pod" and doc["metadata"]["annotations"].get("helm.sh/hook") == "test"
    ]
    assert len(pods) == 1, f"expected one test hook, got {[p['metadata']['name'] for p in pods]}"
    pod: dict[str, Any] = pods[0]
    return pod


def _diagnostics(core: k8s.CoreV1Api, pod_name: str, dns: ClusterDNS) -> str:
    """What a failed run left: the pod's status (it is kept when the test fails), its events, the DNS queries."""
    try:
        status = core.read_namespaced_pod(pod_name, SYSTEM).status
        containers = (status and status.container_statuses) or []
        ended = [c.state.terminated for c in containers if c.state and c.state.terminated]
        summary = f"pod {status and status.phase}, exit codes {[t.exit_code for t in ended]}"
    except k8s.ApiException as error:
        summary = f"pod not readable: {error.status}"
    events = core.list_namespaced_event(SYSTEM, field_selector=f"involvedObject.name={pod_name}").items
    lines = [f"{e.reason}: {e.message}" for e in events]
    return f"{summary}\nevents: {lines}\nDNS queries: {dns.queries()[-20:]}"


def test_helm_test_reaches_the_metrics_service_by_name_from_the_node(
    e2e_platform: Platform, e2e_dns: ClusterDNS, real_node: RealNode
) -> None:
    pod = _test_pod(e2e_platform)
    pod_name = pod["metadata"]["name"]
    container = pod["spec"]["containers"][0]
    assert container["image"] == e2e_platform.images["helm-test"], "the hook runs the image built for it"
    url = HOOK_URL.search(" ".join(container["command"]))
    assert url is not None, container["command"]
    core = k8s.CoreV1Api(e2e_platform.cluster.api_client)

    result = e2e_platform.helm.run("test", RELEASE, "-n", SYSTEM, "--timeout=2m", check=False, timeout=180)

    assert result.returncode == 0, f"{result.stderr}\n{_diagnostics(core, pod_name, e2e_dns)}"
    assert re.search(r"^Phase:\s+Succeeded$", result.stdout, re.MULTILINE), result.stdout
    host, port = url["host"], int(url["port"])
    service = core.read_namespaced_service(host, SYSTEM)
    ports = {p.port for p in (service.spec and service.spec.ports) or []}
    assert port in ports, f"the URL's port is the metrics Service's: {ports}"
    fqdn = f"{host}.{SYSTEM}.svc.cluster.local."
    asked = [q for q in e2e_dns.queries() if q.name == fqdn and q.type == "A"]
    assert asked, f"no pod asked the cluster DNS for {fqdn}: {e2e_dns.queries()[-20:]}"
    pods = ipaddress.ip_network(real_node.pod_cidr)
    assert all(ipaddress.ip_address(q.client) in pods and q.rcode == "NOERROR" for q in asked), asked
    events = core.list_namespaced_event(SYSTEM, field_selector=f"involvedObject.name={pod_name}").items
    reasons = {str(e.reason): str(e.message) for e in events}
    assert reasons.get("Scheduled", "").endswith(f"to {real_node.name}"), reasons
    assert "Started" in reasons, reasons
