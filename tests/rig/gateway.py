"""A real Gateway API implementation next to the rig's control plane: Traefik, as a process on the host.

Traefik watches the API server through its Kubernetes Gateway provider (out of cluster: endpoint, CA and a
ServiceAccount token with the RBAC Traefik documents, ``traefik/rbac.yaml``), programs the Gateway this
class applies (one HTTP listener on Traefik's ``web`` entrypoint) and routes by the HTTPRoutes attached to
it: weighted backendRefs split requests straight to the EndpointSlice addresses of the Services.

What Traefik 3.7 does and does not do with them (read from its provider's source) is in tests/rig/README.md:
weights yes (weight 0 drops a backend), RequestMirror no (a route carrying it answers 500), only endpoints
with ``ready: true`` receive traffic, changes apply within ``THROTTLE`` of the API server's watch event.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.rig import paths
from tests.rig.cluster import Cluster
from tests.rig.procs import Component, free_port, wait_until

CONTROLLER_NAME = "traefik.io/gateway-controller"  # fixed in Traefik's provider
GROUP = "gateway.networking.k8s.io"
VERSION = "v1"
INSTANCE_LABEL = "modelrollout.io/rig-gateway"
RBAC_MANIFEST = Path(__file__).resolve().parent / "traefik" / "rbac.yaml"
CLUSTER_ROLE = "rig-traefik-gateway"  # the name in RBAC_MANIFEST
# Traefik applies provider updates at most once per providersThrottleDuration (default 2 s); the rig wants
# HTTPRoute and EndpointSlice changes in effect within a fraction of a second.
THROTTLE = "100ms"
TOKEN_SECONDS = 24 * 3600  # Traefik reads its token once at start; longer than any test session
STARTUP_TIMEOUT = 60.0


def _conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """An object's status conditions by type."""
    status = (obj or {}).get("status") or {}
    return {c["type"]: c for c in status.get("conditions") or []}


def _current(condition: dict[str, Any] | None, generation: int) -> bool:
    """The condition is True and about the object's current generation."""
    return bool(
        condition is not None
        and condition.get("status") == "True"
        and condition.get("observedGeneration", generation) == generation
    )


@dataclass(repr=False)
class Gateway:
    """One Traefik and the GatewayClass + Gateway it programs; ``url`` takes the routed traffic.

    Each instance owns a GatewayClass labelled with its ``name`` and Traefik only reads GatewayClasses with
    that label, so several instances can share a cluster. HTTPRoutes in any namespace may attach to it
    (``parent_ref()``). ``retry_attempts`` > 1 adds Traefik's retry middleware to the entrypoint: a request
    whose backend refuses the connection (nothing sent yet) is tried again on the next pick of the balancer.
    """

    cluster: Cluster
    work_dir: Path
    log_dir: Path
    name: str = "rig"
    namespace: str = "rig-gateway"
    address: str = "127.0.0.1"
    port: int = field(default_factory=free_port)  # the `web` entrypoint, and the Gateway listener's port
    admin_port: int = field(default_factory=free_port)  # ping and metrics
    retry_attempts: int = 0
    access_log: bool = True
    component: Component | None = field(init=False, default=None)
    startup_seconds: float = field(init=False, default=0.0)

    def __repr__(self) -> str:  # short: pytest prints fixtures' reprs in every failure report
        return f"Gateway(name={self.name!r}, url={self.url!r}, gateway={self.namespace}/{self.name})"

    # --- addresses -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Where clients send requests: Traefik's `web` entrypoint."""
        return f"http://{self.address}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def metrics_url(self) -> str:
        """Traefik's Prometheus metrics (per service and router, entrypoint, config reloads)."""
        return f"{self.admin_url}/metrics"

    @property
    def class_name(self) -> str:
        return f"rig-traefik-{self.name}"

    @property
    def service_account(self) -> str:
        return f"traefik-{self.name}"

    def parent_ref(self) -> dict[str, str]:
        """The ``parentRefs`` entry attaching an HTTPRoute (in any namespace) to this Gateway."""
        return {"group": GROUP, "kind": "Gateway", "namespace": self.namespace, "name": self.name}

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Gateway:
        traefik = paths.rig_dir() / "bin" / "traefik"  # checked before any API call
        if not traefik.is_file():
            raise paths.RigMissingError(
                f"{traefik} is missing: run `bash tests/rig/build_gateway.sh` (RIG_DIR={paths.rig_dir()})"
            )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            token = self._grant_access()
            config = self._write_config(token)
            self.component = Component(
                f"traefik-{self.name}",
                [str(traefik), f"--configFile={config}"],
                self.log_dir,
                # Traefik prefers in-cluster credentials, then $KUBECONFIG, over its own endpoint/token
                # settings: blank both so neither a CI pod's environment nor a developer's kubeconfig wins.
                env={"KUBERNETES_SERVICE_HOST": "", "KUBERNETES_SERVICE_PORT": "", "KUBECONFIG": ""},
            ).start()
            wait_until(
                lambda: httpx.get(f"{self.admin_url}/ping", timeout=2).status_code == 200,
                timeout=STARTUP_TIMEOUT,
                what="traefik /ping",
                alive=self.component.check_alive,
            )
            self._apply_gateway()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        if self.component is not None:
            self.component.stop()
        # Best effort: the cluster may be gone already at the end of a session.
        for args in (
            ("delete", "gateway", self.name, "-n", self.namespace),
            ("delete", "gatewayclass", self.class_name),
            ("delete", "clusterrolebinding", self.class_name),
        ):
            with contextlib.suppress(Exception):
                self.cluster.kubectl(*args, "--ignore-not-found", "--wait=false", check=False)

    @property
    def running(self) -> bool:
        process = self.component.process if self.component is not None else None
        return process is not None and process.poll() is None

    def check_alive(self) -> None:
        if self.component is None:
            raise RuntimeError("the gateway was never started")
        self.component.check_alive()

    # --- pieces ------------------------------------------------------------------------------------

    def _grant_access(self) -> Path:
        """A ServiceAccount bound to Traefik's documented ClusterRole; returns a file holding its token."""
        self.cluster.apply(RBAC_MANIFEST)
        self.cluster.create_namespace(self.namespace)
        self.cluster.apply(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": self.service_account}},
            namespace=self.namespace,
        )
        self.cluster.apply(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": self.class_name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CLUSTER_ROLE},
                "subjects": [{"kind": "ServiceAccount", "name": self.service_account, "namespace": self.namespace}],
            }
        )
        kubeconfig = self.cluster.mint_service_account_kubeconfig(
            self.namespace,
            self.service_account,
            expiration_seconds=TOKEN_SECONDS,
            path=self.work_dir / "traefik.kubeconfig",
        )
        token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
        path = self.work_dir / "token"
        path.write_text(token)
        path.chmod(0o600)
        return path

    def static_config(self, token: Path) -> dict[str, Any]:
        """Traefik's static configuration (see the Traefik reference for every key)."""
        web: dict[str, Any] = {
            "address": f"{self.address}:{self.port}",
            # Stop quickly: the rig's teardown waits for it.
            "transport": {"lifeCycle": {"graceTimeOut": "1s", "requestAcceptGraceTimeout": "0s"}},
        }
        providers: dict[str, Any] = {
            "providersThrottleDuration": THROTTLE,
            "kubernetesGateway": {
                "endpoint": self.cluster.server,
                "token": str(token),  # a path: Traefik reads files for this setting
                "certAuthFilePath": str(self.cluster.pki.ca.cert),
                "labelSelector": f"{INSTANCE_LABEL}={self.name}",  # selects GatewayClasses
                "statusAddress": {"ip": self.address},
            },
        }
        if self.retry_attempts > 1:
            web["http"] = {"middlewares": ["rig-retry@file"]}
            providers["file"] = {"filename": str(self._write_dynamic()), "watch": False}
        config: dict[str, Any] = {
            "global": {"checkNewVersion": False, "sendAnonymousUsage": False},  # no calls home
            "entryPoints": {
                "web": web,
                "traefik": {
                    "address": f"127.0.0.1:{self.admin_port}",
                    "transport": {"lifeCycle": {"graceTimeOut": "1s", "requestAcceptGraceTimeout": "0s"}},
                },
            },
            "ping": {"entryPoint": "traefik"},
            "metrics": {"prometheus": {"entryPoint": "traefik", "addServicesLabels": True, "addRoutersLabels": True}},
            "log": {"level": "INFO", "noColor": True},  # stdout: the component log in the rig's log dir
            "providers": providers,
        }
        if self.access_log:
            config["accessLog"] = {"filePath": str(self.log_dir / f"traefik-{self.name}-access.log")}
        return config

    def _write_dynamic(self) -> Path:
        path = self.work_dir / "dynamic.yaml"
        # Retries happen only when the backend never got the request (connection refused or reset before
        # anything was written), so they are safe for POST predictions too.
        middleware = {"retry": {"attempts": self.retry_attempts}}
        path.write_text(yaml.safe_dump({"http": {"middlewares": {"rig-retry": middleware}}}))
        return path

    def _write_config(self, token: Path) -> Path:
        path = self.work_dir / "traefik.yaml"
        path.write_text(yaml.safe_dump(self.static_config(token), sort_keys=False))
        return path

    def _apply_gateway(self) -> None:
        self.cluster.apply(
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "GatewayClass",
                "metadata": {"name": self.class_name, "labels": {INSTANCE_LABEL: self.name}},
                "spec": {"controllerName": CONTROLLER_NAME},
            }
        )
        self.cluster.apply(
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Gateway",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {
                    "gatewayClassName": self.class_name,
                    "listeners": [
                        {
                            "name": "web",
                            "protocol": "HTTP",
                            "port": self.port,  # Traefik maps a listener to the entrypoint on its port
                            "allowedRoutes": {"namespaces": {"from": "All"}},
                        }
                    ],
                },
            }
        )

        def programmed() -> bool:
            gateway = self._get("gateways", self.namespace, self.name)
            generation = int((gateway or {}).get("metadata", {}).get("generation", 0))
            conditions = _conditions(gateway)
            return all(_current(conditions.get(kind), generation) for kind in ("Accepted", "Programmed"))

        try:
            wait_until(programmed, timeout=STARTUP_TIMEOUT, what=f"Gateway {self.namespace}/{self.name} Programmed")
        except TimeoutError as error:
            gateway = self._get("gateways", self.namespace, self.name)
            raise TimeoutError(f"{error}; status: {(gateway or {}).get('status')}") from error

    # --- reading what Traefik wrote ----------------------------------------------------------------

    def _get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        api = k8s.CustomObjectsApi(self.cluster.api_client)
        try:
            obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return cast(dict[str, Any], obj)

    def route_conditions(self, namespace: str, name: str) -> dict[str, dict[str, Any]]:
        """The conditions Traefik wrote on an HTTPRoute for this Gateway (Accepted, ResolvedRefs), by type."""
        route = self._get("httproutes", namespace, name)
        parents = ((route or {}).get("status") or {}).get("parents") or []
        for parent in parents:
            ref = parent.get("parentRef") or {}
            if ref.get("name") == self.name and ref.get("namespace", namespace) == self.namespace:
                return {c["type"]: c for c in parent.get("conditions") or []}
        return {}

    def wait_route_accepted(self, namespace: str, name: str, *, timeout: float = 30.0) -> None:
        """Block until Traefik reports the route's current generation Accepted with its refs resolved."""

        def accepted() -> bool:
            route = self._get("httproutes", namespace, name)
            generation = int((route or {}).get("metadata", {}).get("generation", 0))
            conditions = self.route_conditions(namespace, name)
            return all(_current(conditions.get(kind), generation) for kind in ("Accepted", "ResolvedRefs"))

        try:
            wait_until(accepted, timeout=timeout, what=f"HTTPRoute {namespace}/{name} Accepted", alive=self.check_alive)
        except TimeoutError as error:
            raise TimeoutError(f"{error}; conditions: {self.route_conditions(namespace, name)}") from error
