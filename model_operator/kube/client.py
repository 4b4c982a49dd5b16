"""Every call the operator makes to the Kubernetes API goes through ``KubeClient``.

Objects are written with server-side apply under one field manager, so applying the same desired
object twice is a no-op and fields other controllers own are left alone.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

FIELD_MANAGER = "modelrollout"
# (connect, read) seconds for every call: a call stuck on a dead connection must fail and be retried by the
# next tick, not stall a rollout (the client's default is to wait forever).
REQUEST_TIMEOUT = (5, 15)


class Kube(Protocol):
    """What the operator needs from the API; ``KubeClient`` is the real one, tests may pass a fake."""

    def apply(self, obj: dict[str, Any]) -> None: ...
    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...
    def delete(self, api_version: str, kind: str, namespace: str, name: str, uid: str) -> None: ...
    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None: ...
    def patch_metadata(self, api_version: str, kind: str, namespace: str, name: str, meta: dict[str, Any]) -> None: ...
    def create_event(self, involved: dict[str, Any], reason: str, message: str, warning: bool) -> None: ...


class KubeClient:
    def __init__(self, api_client: k8s.ApiClient) -> None:
        self._dynamic = DynamicClient(api_client)  # type: ignore[no-untyped-call]

    def _resource(self, api_version: str, kind: str) -> Any:
        return self._dynamic.resources.get(api_version=api_version, kind=kind)

    def apply(self, obj: dict[str, Any]) -> None:
        """Server-side apply; idempotent."""
        resource = self._resource(obj["apiVersion"], obj["kind"])
        resource.server_side_apply(
            body=obj,
            name=obj["metadata"]["name"],
            namespace=obj["metadata"].get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
            _request_timeout=REQUEST_TIMEOUT,
        )

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist — nor its type (a CRD the cluster does not have)."""
        try:
            found = self._resource(api_version, kind).get(
                name=name, namespace=namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ResourceNotFoundError:
            return None
        except (NotFoundError, ApiException) as exc:
            if getattr(exc, "status", 404) == 404:
                return None
            raise
        result: dict[str, Any] = found.to_dict()
        return result

    def delete(self, api_version: str, kind: str, namespace: str, name: str, uid: str) -> None:
        """Delete the object while it is still the one with ``uid`` (a precondition: one recreated under the
        same name in between is refused with 409, not deleted). Gone already, or a type the cluster does not
        have: nothing to do. Idempotent."""
        try:
            self._resource(api_version, kind).delete(
                name=name, namespace=namespace, body={"preconditions": {"uid": uid}}, _request_timeout=REQUEST_TIMEOUT
            )
        except ResourceNotFoundError:
            return
        except (NotFoundError, ApiException) as exc:
            if getattr(exc, "status", 404) != 404:
                raise

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        resource = self._resource(api_version, kind).subresources["status"]
        resource.patch(
            body={"status": status},
            name=name,
            namespace=namespace,
            content_type="application/merge-patch+json",
            _request_timeout=REQUEST_TIMEOUT,
        )

    def create_event(self, involved: dict[str, Any], reason: str, message: str, warning: bool) -> None:
        """Post a core/v1 Event about ``involved`` (an object dict with metadata)."""
        meta = involved["metadata"]
        now = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": FIELD_MANAGER},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._resource("v1", "Event").create(body=body, namespace=meta["namespace"], _request_timeout=REQUEST_TIMEOUT)

    def patch_metadata(self, api_version: str, kind: str, namespace: str, name: str, meta: dict[str, Any]) -> None:
        self._resource(api_version, kind).patch(
            body={"metadata": meta},
            name=name,
            namespace=namespace,
            content_type="application/merge-patch+json",
            _request_timeout=REQUEST_TIMEOUT,
        )
