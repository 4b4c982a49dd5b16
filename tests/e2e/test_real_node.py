"""The real node runs real pods: Pod Security ``restricted``, pod IPs the host reaches, ClusterIP Services
(from the host and from another pod), the kubelet's log endpoint, and a pod's network gone with the pod."""

from __future__ import annotations

import ipaddress
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s

from tests.rig import Cluster
from tests.rig.node import RealNode
from tests.rig.procs import wait_until

pytestmark = pytest.mark.e2e

BUSYBOX = "localhost/rig/busybox:1.35.0"
UID = 65532


class PodFailedError(RuntimeError):
    """The pod reached phase Failed while a test waited for another phase."""


def restricted_container(name: str, command: list[str], **extra: Any) -> dict[str, Any]:
    """A busybox container that passes Pod Security ``restricted`` (non-root, read-only root, no caps)."""
    return {
        "name": name,
        "image": BUSYBOX,
        "imagePullPolicy": "Never",
        "command": command,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        **extra,
    }


def pod_manifest(
    name: str, node: RealNode, containers: list[dict[str, Any]], *, labels: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {
            "nodeSelector": node.selector,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": UID,
                "runAsGroup": UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": containers,
            **spec,
        },
    }


def web_pod(name: str, node: RealNode) -> dict[str, Any]:
    """busybox httpd on :8080 serving a page that names the pod (written into an emptyDir: root is RO)."""
    web = restricted_container(
        "web",
        ["sh", "-c", 'echo "hello from $(hostname)" > /www/index.html && exec httpd -f -p 8080 -h /www'],
        ports=[{"containerPort": 8080}],
        volumeMounts=[{"name": "www", "mountPath": "/www"}],
        readinessProbe={"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
    )
    return pod_manifest(name, node, [web], volumes=[{"name": "www", "emptyDir": {"medium": "Memory"}}])


def wait_for_pod(cluster: Cluster, namespace: str, name: str, *, phase: str = "Running", ready: bool = True) -> Any:
    core = k8s.CoreV1Api(cluster.api_client)

    def reached() -> Any:
        pod: Any = core.read_namespaced_pod(name, namespace)
        conditions = {c.type: c.status for c in pod.status.conditions or []}
        if pod.status.phase == phase and (not ready or conditions.get("Ready") == "True"):
            return pod
        if pod.status.phase == "Failed":
            raise PodFailedError(f"pod {namespace}/{name} failed")
        return None

    def alive() -> None:
        cluster.check_alive()
        reached()  # raises at once for a failed pod instead of waiting for the timeout

    try:
        return wait_until(reached, timeout=120, what=f"pod {namespace}/{name} {phase}", alive=alive)
    except (TimeoutError, PodFailedError):
        described = cluster.kubectl("describe", "pod", name, "-n", namespace, check=False).stdout
        raise TimeoutError(f"pod {namespace}/{name} never reached {phase}:\n{described}") from None


def netns_with_ip(node: RealNode, ip: str) -> str | None:
    """The pod network namespace (containerd mounts them under its state dir) that holds ``ip``."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point, fstype = fields[4], fields[fields.index("-") + 1]
        if fstype != "nsfs" or not point.startswith(f"{node.addresses.state_dir}/"):
            continue
        shown = subprocess.run(
            ["nsenter", f"--net={point}", "ip", "-4", "-o", "addr"], capture_output=True, text=True, check=False
        )
        if f" {ip}/" in shown.stdout:
            return point
    return None


def test_restricted_pod_runs_and_the_host_reaches_its_ip(
    e2e_cluster: Cluster, real_node: RealNode, restricted_namespace: str
) -> None:
    started = time.monotonic()
    e2e_cluster.apply(web_pod("web", real_node), namespace=restricted_namespace)
    pod = wait_for_pod(e2e_cluster, restricted_namespace, "web")
    print(f"\nfirst pod Running and Ready {time.monotonic() - started:.1f}s after it was created")

    assert pod.spec.node_name == real_node.name
    assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(real_node.pod_cidr)
    container = pod.status.container_statuses[0]
    assert container.ready and container.image == BUSYBOX
    reply = httpx.get(f"http://{pod.status.pod_ip}:8080/", timeout=5)
    assert reply.status_code == 200 and reply.text == "hello from web\n"


def test_cluster_ip_service_answers_the_host_and_other_pods(
    e2e_cluster: Cluster, real_node: RealNode, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    e2e_cluster.apply(web_pod("backend", real_node), namespace=ns)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "backend"},
        "spec": {"selector": {"app": "backend"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    e2e_cluster.apply(service, namespace=ns)
    wait_for_pod(e2e_cluster, ns, "backend")
    read: Any = k8s.CoreV1Api(e2e_cluster.api_client).read_namespaced_service("backend", ns)
    cluster_ip: str = read.spec.cluster_ip
    assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network(real_node.service_cidr)

    # From the host: routed to the node, DNATed by kube-proxy's rules (once they are synced).
    reply = wait_until(
        lambda: httpx.get(f"http://{cluster_ip}/", timeout=2),
        timeout=30,
        what=f"Service backend answering on {cluster_ip}",
    )
    assert reply.text == "hello from backend\n"

    # From another pod: the Service by ClusterIP, and the API server through the `kubernetes` Service.
    # (No TLS client in busybox that speaks to the API server's ciphers, so the API check is a TCP connect;
    # and no `wget -T`: Debian's static busybox 1.35 segfaults on it.)
    script = (
        f"wget -q -O- http://{cluster_ip}/ && "
        "nc -w 5 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT </dev/null && echo api reachable"
    )
    client = pod_manifest("client", real_node, [restricted_container("wget", ["sh", "-c", script])])
    client["spec"]["restartPolicy"] = "Never"
    e2e_cluster.apply(client, namespace=ns)
    wait_for_pod(e2e_cluster, ns, "client", phase="Succeeded", ready=False)
    assert e2e_cluster.kubectl("logs", "client", "-n", ns).stdout == "hello from backend\napi reachable\n"


def test_kubectl_logs_reads_the_kubelet(e2e_cluster: Cluster, real_node: RealNode, restricted_namespace: str) -> None:
    talker = restricted_container("talk", ["sh", "-c", "echo line one; echo line two >&2; exec sleep 3600"])
    e2e_cluster.apply(pod_manifest("talker", real_node, [talker]), namespace=restricted_namespace)
    wait_for_pod(e2e_cluster, restricted_namespace, "talker")

    def logged() -> str | None:
        out = e2e_cluster.kubectl("logs", "talker", "-n", restricted_namespace).stdout
        return out if "line two" in out else None

    out = wait_until(logged, timeout=30, what="both lines in kubectl logs")
    # stdout and stderr are copied by separate readers in the runtime: both present, in either order
    assert sorted(out.splitlines()) == ["line one", "line two"], out


def test_deleting_a_pod_removes_its_network(
    e2e_cluster: Cluster, real_node: RealNode, restricted_namespace: str
) -> None:
    e2e_cluster.apply(web_pod("doomed", real_node), namespace=restricted_namespace)
    ip = wait_for_pod(e2e_cluster, restricted_namespace, "doomed").status.pod_ip
    lease = real_node.paths.ipam_dir / real_node.addresses.netns / ip  # host-local: one file per leased IP
    assert netns_with_ip(real_node, ip) is not None and lease.exists()

    e2e_cluster.kubectl("delete", "pod", "doomed", "-n", restricted_namespace, "--wait=true", "--timeout=60s")

    wait_until(
        lambda: netns_with_ip(real_node, ip) is None and not lease.exists(),
        timeout=30,
        what=f"the network namespace and IPAM lease of {ip} gone",
    )
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{ip}:8080/", timeout=2)
