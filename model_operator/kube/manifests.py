"""Desired objects for one ModelDeployment, as plain dicts (pure functions, no API calls).

Names: ``<md>-stable`` / ``<md>-canary`` / ``<md>-preview`` Deployments and Services, ``<md>`` root
Service and HTTPRoute. Pods run the
model server as non-root with a read-only root filesystem and the ``restricted`` Pod Security profile's
settings; the model digest is pinned in the arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model_operator.spec import GROUP, KIND, VERSION, ModelDeploymentSpec, ModelRef

TRACK_LABEL = f"{GROUP}/track"
NAME_LABEL = "app.kubernetes.io/name"
DIGEST_ANNOTATION = f"{GROUP}/digest"
CAPACITY_ANNOTATION = f"{GROUP}/capacity"
CANDIDATE_TRACKS = ("canary", "preview")
MANAGED_BY = {"app.kubernetes.io/managed-by": "modelrollout"}
DRAIN_SECONDS = 10
"""How long a terminating model-server pod keeps serving (preStop) before the server is told to stop: its
endpoint is removed when termination starts, and every gateway, mesh and kube-proxy must see that before
the listener closes, or requests already routed to it fail."""
SHUTDOWN_SECONDS = 20
"""After the drain: time for in-flight requests (uvicorn's graceful shutdown) before the kubelet kills."""


@dataclass(frozen=True)
class Owner:
    """The ModelDeployment every generated object belongs to (deleting it deletes them)."""

    namespace: str
    name: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def metadata(self, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": {NAME_LABEL: self.name, **MANAGED_BY, **(labels or {})},
            "ownerReferences": [self.reference()],
        }

    def object_name(self, track: str | None = None) -> str:
        return f"{self.name}-{track}" if track else self.name

    def owns(self, obj: dict[str, Any]) -> bool:
        """Whether ``obj`` names this ModelDeployment (by uid) among its owners: what the operator may delete."""
        return any(ref.get("uid") == self.uid for ref in obj.get("metadata", {}).get("ownerReferences") or [])


def selector(owner: Owner, track: str | None) -> dict[str, str]:
    return {NAME_LABEL: owner.name, **({TRACK_LABEL: track} if track else {})}


def deployment(
    owner: Owner, spec: ModelDeploymentSpec, model: ModelRef, track: str, replicas: int, capacity: int = 100
) -> dict[str, Any]:
    """``capacity``: the share of requests (percent) ``replicas`` pods are sized for, as an annotation the
    next tick reads back once they are all available (``deployment_capacity``)."""
    labels = selector(owner, track)
    args = [model.uri, "--host", "0.0.0.0", "--port", str(spec.port), "--track", track]
    args += ["--namespace", owner.namespace, "--model-deployment", owner.name]  # every series names its owner
    args += ["--expected-digest", model.digest]
    if model.trust_pickle:
        args.append("--trust-pickle")
    probe = {"httpGet": {"port": "http"}, "periodSeconds": 5, "timeoutSeconds": 2}
    container = {
        "name": "model-server",
        "image": spec.image,
        "args": args,
        "ports": [{"name": "http", "containerPort": spec.port}],
        "env": spec.env,
        "resources": spec.resources,
        "readinessProbe": {**probe, "httpGet": {"path": "/health/ready", "port": "http"}},
        "livenessProbe": {**probe, "httpGet": {"path": "/health/live", "port": "http"}, "failureThreshold": 6},
        "startupProbe": {**probe, "httpGet": {"path": "/health/live", "port": "http"}, "failureThreshold": 60},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},  # no shell or sleep binary needed
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            **owner.metadata(owner.object_name(track), labels),
            "annotations": {CAPACITY_ANNOTATION: str(capacity)},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            # surge first: a new template never takes a serving pod away before its successor is ready
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": {**labels, "model": model.name, "version": model.version},
                    "annotations": {DIGEST_ANNOTATION: model.digest, "prometheus.io/scrape": "true"},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": DRAIN_SECONDS + SHUTDOWN_SECONDS,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
                },
            },
        },
    }


def service(owner: Owner, spec: ModelDeploymentSpec, track: str | None) -> dict[str, Any]:
    """The Service of one track, or for no track the root Service ``<md>``.

    With the replicas provider the root Service is the router: it selects every pod, so the canary's share
    of pods is its share of requests (that provider runs canaries only). Otherwise the route or mesh does the
    splitting and the root Service selects stable's pods: a client that bypasses the gateway or mesh only
    ever reaches the stable model, never a canary, a shadow or a preview.
    """
    if track is not None:
        pods = selector(owner, track)
    else:
        pods = selector(owner, None if spec.traffic.provider == "replicas" else "stable")
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owner.metadata(owner.object_name(track), selector(owner, track)),
        "spec": {
            "selector": pods,
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def deployment_serving(obj: dict[str, Any] | None) -> str | None:
    """The digest a Deployment is fully rolled out to and available with, else None.

    The same test as ``kubectl rollout status``: the controller saw the latest spec, every wanted replica
    is updated and available, and no pod of an older template is left (it would still answer requests).
    """
    if obj is None:
        return None
    spec, status = obj.get("spec", {}), obj.get("status") or {}
    wanted = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    rolled_out = (
        status.get("observedGeneration", 0) >= obj["metadata"].get("generation", 0)
        and updated >= wanted
        and status.get("replicas", 0) <= updated
        and status.get("availableReplicas", 0) >= updated
    )
    digest: str | None = spec["template"]["metadata"].get("annotations", {}).get(DIGEST_ANNOTATION)
    return digest if rolled_out else None


def deployment_capacity(obj: dict[str, Any] | None) -> int:
    """The share of requests a fully rolled-out, available Deployment is sized for; 0 otherwise."""
    if deployment_serving(obj) is None:
        return 0
    assert obj is not None
    value = (obj["metadata"].get("annotations") or {}).get(CAPACITY_ANNOTATION, "100")
    return int(value) if value.isdigit() else 0
