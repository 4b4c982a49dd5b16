"""What a failed wait on the cluster prints: the state a human would look up with kubectl next."""

from __future__ import annotations

from kubernetes import client as k8s


def describe_workloads(api: k8s.ApiClient, namespace: str, prefix: str = "") -> str:
    """Deployments, ReplicaSets and Pods whose names start with ``prefix``, Node readiness and recent Events."""
    apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
    lines: list[str] = []
    for dep in apps.list_namespaced_deployment(namespace).items:
        if dep.metadata.name.startswith(prefix):
            st = dep.status
            conditions = [(c.type, c.status, c.reason) for c in st.conditions or []]
            lines.append(
                f"deployment {dep.metadata.name}: gen {dep.metadata.generation}/{st.observed_generation} "
                f"replicas {dep.spec.replicas} updated {st.updated_replicas} ready {st.ready_replicas} "
                f"available {st.available_replicas} {conditions}"
            )
    for rs in apps.list_namespaced_replica_set(namespace).items:
        if rs.metadata.name.startswith(prefix):
            lines.append(f"replicaset {rs.metadata.name}: want {rs.spec.replicas} ready {rs.status.ready_replicas}")
    for pod in core.list_namespaced_pod(namespace).items:
        if pod.metadata.name.startswith(prefix):
            conditions = [(c.type, c.status) for c in pod.status.conditions or []]
            deleting = " deleting" if pod.metadata.deletion_timestamp else ""
            lines.append(f"pod {pod.metadata.name}: {pod.status.phase} on {pod.spec.node_name}{deleting} {conditions}")
    for node in core.list_node().items:
        ready = next((c for c in node.status.conditions or [] if c.type == "Ready"), None)
        taints = [t.key for t in node.spec.taints or []]
        lines.append(f"node {node.metadata.name}: Ready={ready.status if ready else '?'} taints={taints}")
    events = sorted(
        core.list_namespaced_event(namespace).items,
        key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp,
    )
    for event in events[-25:]:
        lines.append(f"event {event.involved_object.kind}/{event.involved_object.name}: {event.reason} {event.message}")
    return "\n".join(lines)
