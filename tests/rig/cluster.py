"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, controller-manager, scheduler, kwok.

The same binaries a cluster runs, configured the way a cluster is: TLS from a session CA, client-cert
identities for the components, RBAC and Node authorization, the default admission chain (PodSecurity
included), ServiceAccount tokens signed by the API server. kwok plays the kubelets of a few fake Nodes, so
Deployments become Ready through the real controllers and scheduler; no container ever runs.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from tests.rig import paths
from tests.rig.kubeconfig import write_kubeconfig
from tests.rig.pki import KeyPair, Pki
from tests.rig.procs import Component, free_port, run_phases, wait_until

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
ISSUER = "https://kubernetes.default.svc.cluster.local"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
NODE_LEASE_SECONDS = 40  # what a kubelet sets
STARTUP_TIMEOUT = 120.0
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
# The API server's audit log, an oracle outside every client: who (user, and which of their tokens) wrote
# what. Only ServiceAccounts outside kube-system are recorded (the code under test runs as one; the
# controllers' own accounts live in kube-system), at Metadata level: their writes, and their reads of Leases
# (proof that a client that wrote nothing was there and identifiable). One line of JSON per request.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"], "verbs": list(WRITE_VERBS)},
        {
            "level": "Metadata",
            "userGroups": ["system:serviceaccounts"],
            "verbs": ["get"],
            "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]}],
        },
        {"level": "None"},
    ],
}
APISERVER_SANS = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


class KubectlError(RuntimeError):
    """kubectl exited non-zero; the message carries its stderr."""

    def __init__(self, args: list[str], result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr}{result.stdout}")
        self.result = result


def _tmpfs_dir(prefix: str) -> Path:
    """A scratch directory in RAM: etcd fsyncs every write, which costs nothing on tmpfs.

    RAM is precious, so the directory records its owner's pid, and directories whose owner died without
    cleaning up (a killed pytest) are swept before a new one is made.
    """
    shm = Path("/dev/shm")
    root = shm if shm.is_dir() else Path(tempfile.gettempdir())
    for stale in root.glob(f"{prefix}*"):
        try:
            owner = int((stale / "owner.pid").read_text())
            os.kill(owner, 0)
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except (OSError, ValueError):  # not ours to judge (no pid file, another user's): leave it
            continue
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    (directory / "owner.pid").write_text(str(os.getpid()))
    return directory


@dataclass(repr=False)
class Cluster:
    """One control plane. ``start()`` returns when the API, the CRDs and the fake nodes are all ready.

    By default everything listens on loopback and kwok plays ``nodes`` fake kubelets. For real nodes give
    ``advertise``, an address of this host that pods can reach (``tests.rig.node_network``): the API server
    binds and advertises it (the ``kubernetes`` Service's Endpoints then point at it, which loopback may
    not), its certificate names it, and it reaches kubelets on their InternalIP, verifying their serving
    certificates against the session CA with a client certificate of its own. ``service_cidr`` moves the
    ClusterIP range (concurrent runs with real nodes each route their own); ``nodes=0`` starts no kwok.
    """

    work_dir: Path
    log_dir: Path
    nodes: int = 3
    advertise: str | None = None
    service_cidr: str = SERVICE_CIDR
    server: str = field(init=False, default="")
    kubeconfig: Path = field(init=False, default=Path())
    api_client: k8s.ApiClient = field(init=False)
    components: list[Component] = field(init=False, default_factory=list)
    startup_phases: dict[str, float] = field(init=False, default_factory=dict)
    _etcd_dir: Path | None = field(init=False, default=None)
    audit_log: Path = field(init=False, default=Path())

    def __repr__(self) -> str:  # short: pytest prints fixtures' reprs in every failure report
        return f"Cluster(server={self.server!r}, kubeconfig={str(self.kubeconfig)!r}, logs={str(self.log_dir)!r})"

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Cluster:
        started = time.monotonic()
        binaries = {
            name: paths.binary(name)
            for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
            if name != "kwok" or self.nodes > 0
        }
        paths.kubectl()
        crd_dirs = paths.crd_dirs()
        self.kwok_stages = paths.kwok_stages()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.pki = Pki(self.work_dir / "pki")
        phases: tuple[tuple[str, Callable[[], None]], ...] = (
            ("etcd", lambda: self._start_etcd(binaries["etcd"])),
            ("kube-apiserver", lambda: self._start_apiserver(binaries["kube-apiserver"])),
            ("controllers", lambda: self._start_controllers(binaries)),
            ("nodes", self._create_nodes),  # first: kwok readies them while the CRDs go in
            ("crds", lambda: self._apply_crds(crd_dirs)),
            ("ready", self._wait_ready),
        )
        run_phases(phases, self.startup_phases, self.stop)
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Stop components in reverse order (clients before the API server before etcd)."""
        if getattr(self, "api_client", None) is not None:
            self.api_client.close()  # type: ignore[no-untyped-call]
        core = ("kube-apiserver", "etcd")
        clients = [c for c in self.components if c.name not in core]
        for component in clients:  # signal all first: they shut down in parallel
            if component.process is not None and component.process.poll() is None:
                component.process.terminate()
        for component in clients:
            component.stop()
        for component in reversed([c for c in self.components if c.name in core]):
            component.stop()
        if self._etcd_dir is not None:
            shutil.rmtree(self._etcd_dir, ignore_errors=True)

    def _spawn(self, name: str, command: list[str]) -> Component:
        component = Component(name, command, self.log_dir).start()
        self.components.append(component)
        return component

    def check_alive(self) -> None:
        for component in self.components:
            component.check_alive()

    # --- components ------------------------------------------------------------------------------

    def _start_etcd(self, etcd: Path) -> None:
        client_port, peer_port = free_port(), free_port()
        self._etcd_dir = _tmpfs_dir("rig-etcd-")
        self.etcd_url = f"http://127.0.0.1:{client_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        component = self._spawn(
            "etcd",
            [
                str(etcd),
                "--name=rig",
                f"--data-dir={self._etcd_dir / 'data'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=rig={peer}",
                "--initial-cluster-state=new",
                "--logger=zap",
                "--log-level=warn",
            ],
        )
        wait_until(
            lambda: httpx.get(f"{self.etcd_url}/health", timeout=2).json().get("health") == "true",
            timeout=30,
            what="etcd /health",
            alive=component.check_alive,
        )

    @property
    def service_ip(self) -> str:
        """The ``kubernetes`` Service's ClusterIP: the first address of the service range."""
        return str(next(ipaddress.ip_network(self.service_cidr).hosts()))

    def _start_apiserver(self, apiserver: Path) -> None:
        pki = self.pki
        address = self.advertise or "127.0.0.1"
        ips = ("127.0.0.1", self.service_ip, *((self.advertise,) if self.advertise else ()))
        serving = pki.issue("apiserver", "kube-apiserver", dns=APISERVER_SANS, ips=ips, server=True)
        self.sa_keys = pki.service_account_keys()
        self.admin = pki.issue("admin", "rig-admin", organization="system:masters", client=True)
        front_proxy = pki.issue("front-proxy-client", "front-proxy-client", client=True)
        port = free_port()
        self.server = f"https://{address}:{port}"
        self.kubeconfig = write_kubeconfig(
            self.work_dir / "admin.kubeconfig",
            server=self.server,
            ca=pki.ca.cert,
            user="admin",
            client=self.admin,
        )
        (self.work_dir / "apiserver").mkdir(exist_ok=True)
        audit_policy = self.work_dir / "audit-policy.yaml"
        audit_policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        self.audit_log = self.log_dir / "kube-apiserver-audit.log"
        component = self._spawn(
            "kube-apiserver",
            [
                str(apiserver),
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={address}",
                f"--advertise-address={address}",
                f"--secure-port={port}",
                f"--cert-dir={self.work_dir / 'apiserver'}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={pki.ca.cert}",
                f"--service-account-issuer={ISSUER}",
                f"--service-account-key-file={self.sa_keys.cert}",
                f"--service-account-signing-key-file={self.sa_keys.key}",
                f"--service-cluster-ip-range={self.service_cidr}",
                # The aggregation layer's front proxy, so extension API servers (and the components that
                # read the extension-apiserver-authentication ConfigMap) see a complete configuration.
                f"--requestheader-client-ca-file={pki.ca.cert}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={front_proxy.cert}",
                f"--proxy-client-key-file={front_proxy.key}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",  # added to the default set (PodSecurity, ...)
                "--allow-privileged=true",  # so PodSecurity, not this switch, is what rejects privileged pods
                *self._node_facing_flags(),
                f"--audit-policy-file={audit_policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",  # written before the response: a test reads it right after
                "--audit-log-maxsize=200",  # MB, then rotated (a session writes a few MB)
                "--audit-log-maxbackup=1",
                "--profiling=false",
                "--v=1",
            ],
        )
        wait_until(
            lambda: self._get("/readyz").status_code == 200,
            timeout=STARTUP_TIMEOUT,
            what="kube-apiserver /readyz",
            alive=component.check_alive,
        )

    def _node_facing_flags(self) -> list[str]:
        if self.advertise is None:
            return ["--endpoint-reconciler-type=none"]  # Endpoints may not hold a loopback address
        # The API server as the kubelets' client (logs, exec, port-forward): a superuser, so the kubelets'
        # Webhook authorization allows it; it checks their serving certificates against the session CA and
        # dials their InternalIP (a real node's hostname resolves nowhere).
        kubelet_client = self.pki.issue(
            "apiserver-kubelet-client", "kube-apiserver-kubelet-client", organization="system:masters", client=True
        )
        return [
            f"--kubelet-client-certificate={kubelet_client.cert}",
            f"--kubelet-client-key={kubelet_client.key}",
            f"--kubelet-certificate-authority={self.pki.ca.cert}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def _component_kubeconfig(self, name: str, common_name: str, organization: str | None = None) -> Path:
        identity = self.pki.issue(name, common_name, organization=organization, client=True)
        return write_kubeconfig(
            self.work_dir / f"{name}.kubeconfig",
            server=self.server,
            ca=self.pki.ca.cert,
            user=name,
            client=identity,
        )

    def _start_controllers(self, binaries: Mapping[str, Path]) -> None:
        self.api_client = client_from_kubeconfig(self.kubeconfig)
        serving = self.pki.issue("components", "rig-components", dns=("localhost",), ips=("127.0.0.1",), server=True)
        cm_config = self._component_kubeconfig("controller-manager", "system:kube-controller-manager")
        self.controller_manager_port = free_port()
        self._spawn(
            "kube-controller-manager",
            [
                str(binaries["kube-controller-manager"]),
                f"--kubeconfig={cm_config}",
                f"--authentication-kubeconfig={cm_config}",
                f"--authorization-kubeconfig={cm_config}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.controller_manager_port}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--service-account-private-key-file={self.sa_keys.key}",
                f"--root-ca-file={self.pki.ca.cert}",
                f"--cluster-signing-cert-file={self.pki.ca.cert}",
                f"--cluster-signing-key-file={self.pki.ca.key}",
                f"--service-cluster-ip-range={self.service_cidr}",
                "--use-service-account-credentials=true",
                "--controllers=*",
                "--leader-elect=false",
                "--v=1",
            ],
        )
        sched_config = self._component_kubeconfig("scheduler", "system:kube-scheduler")
        self.scheduler_port = free_port()
        self._spawn(
            "kube-scheduler",
            [
                str(binaries["kube-scheduler"]),
                f"--kubeconfig={sched_config}",
                f"--authentication-kubeconfig={sched_config}",
                f"--authorization-kubeconfig={sched_config}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.scheduler_port}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                "--leader-elect=false",
                "--v=1",
            ],
        )
        if self.nodes > 0:
            self._start_kwok(binaries["kwok"])

    def _start_kwok(self, kwok: Path) -> None:
        # kwok acts for many kubelets at once, which no single node identity may; it gets its own admin cert.
        kwok_config = self._component_kubeconfig("kwok", "kwok-controller", organization="system:masters")
        # Our own config file (so a ~/.kwok/kwok.yaml on the machine is ignored) holding only the stages:
        # without a KwokConfiguration document kwok applies all of its defaults.
        kwok_settings = self.work_dir / "kwok.yaml"
        kwok_settings.write_text("\n---\n".join(stage.read_text() for stage in self.kwok_stages))
        self.kwok_port = free_port()
        self._spawn(
            "kwok",
            [
                str(kwok),
                f"--config={kwok_settings}",
                f"--kubeconfig={kwok_config}",
                f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
                f"--server-address=127.0.0.1:{self.kwok_port}",
                "--node-ip=127.0.0.1",
                "--cidr=10.244.0.1/16",
                # The heartbeat stage only refreshes node status every 10-20 min and counts on node Leases
                # for liveness, as a kubelet does; without them the node controller sees every node miss its
                # heartbeat after the grace period, marks it NotReady and its pods not Ready (flaky rollouts).
                f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
            ],
        )

    # --- cluster contents --------------------------------------------------------------------------

    def _apply_crds(self, crd_dirs: list[Path]) -> None:
        args = ["apply", "--server-side", "--force-conflicts"]
        for directory in crd_dirs:
            args += ["-f", str(directory)]
        self.kubectl(*args)

    def _create_nodes(self) -> None:
        core = k8s.CoreV1Api(self.api_client)
        resources = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        for index in range(self.nodes):
            name = f"kwok-node-{index}"
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": {
                        "type": "kwok",
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "topology.kubernetes.io/zone": f"zone-{index % 3}",
                    },
                },
                "status": {"allocatable": resources, "capacity": resources},
            }
            core.create_node(body)  # type: ignore[arg-type]  # the client takes plain dicts too

    def _wait_ready(self) -> None:
        self.wait_for_crds()
        core = k8s.CoreV1Api(self.api_client)

        def nodes_ready() -> bool:
            ready = 0
            for node in core.list_node(label_selector="type=kwok").items:
                conditions = {c.type: c.status for c in (node.status and node.status.conditions) or []}
                ready += conditions.get("Ready") == "True"
            return ready == self.nodes

        wait_until(nodes_ready, timeout=STARTUP_TIMEOUT, what="kwok nodes Ready", alive=self.check_alive)
        for name, port in (
            ("kube-controller-manager", self.controller_manager_port),
            ("kube-scheduler", self.scheduler_port),
        ):
            wait_until(
                partial(self._healthy, port),
                timeout=STARTUP_TIMEOUT,
                what=f"{name} /healthz",
                alive=self.check_alive,
            )
        # The token controller (controller-manager) creating the default ServiceAccount proves it can
        # reach the API with its own credentials; pods need that account before admission lets them in.
        wait_until(
            lambda: core.read_namespaced_service_account("default", "default"),
            timeout=STARTUP_TIMEOUT,
            what="the default ServiceAccount",
            alive=self.check_alive,
        )

    def _healthy(self, port: int) -> bool:
        return self._get("/healthz", port=port).status_code == 200

    def _get(self, path: str, port: int | None = None) -> httpx.Response:
        url = f"https://127.0.0.1:{port}{path}" if port else f"{self.server}{path}"
        with httpx.Client(verify=_ssl_context(self.pki.ca.cert, self.admin), timeout=5) as http:
            return http.get(url)

    # --- helpers for tests -----------------------------------------------------------------------

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster (as admin unless ``kubeconfig`` says otherwise)."""
        command = [str(paths.kubectl()), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        result = subprocess.run(command, input=input, capture_output=True, text=True, timeout=120, check=False)
        if check and result.returncode != 0:
            raise KubectlError(list(args), result)
        return result

    def apply(self, manifest: str | Mapping[str, Any] | Path, *, namespace: str | None = None) -> str:
        """Server-side apply YAML text, a dict or a file; returns kubectl's output."""
        if isinstance(manifest, Path):
            text = manifest.read_text()
        elif isinstance(manifest, str):
            text = manifest
        else:
            text = yaml.safe_dump(dict(manifest))
        args = ["apply", "--server-side", "--field-manager=rig-tests", "-f", "-"]
        if namespace:
            args += ["-n", namespace]
        return self.kubectl(*args, input=text).stdout

    def wait_for_crds(self, timeout: float = 60.0) -> None:
        """Block until every CRD in the cluster is Established (served), e.g. after applying new ones.

        Polls instead of ``kubectl wait``, which fails outright on a CRD whose status is not written yet.
        """
        extensions = k8s.ApiextensionsV1Api(self.api_client)

        def pending() -> list[str]:
            waiting = []
            for crd in extensions.list_custom_resource_definition().items:
                conditions = (crd.status and crd.status.conditions) or []
                if not any(c.type == "Established" and c.status == "True" for c in conditions):
                    waiting.append((crd.metadata and crd.metadata.name) or "?")
            return waiting

        wait_until(lambda: not pending(), timeout=timeout, what="CRDs Established", alive=self.check_alive)

    def create_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> k8s.V1Namespace:
        """Create (or relabel) a namespace and wait for its default ServiceAccount, which pods need."""
        core = k8s.CoreV1Api(self.api_client)
        body = k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels=dict(labels or {})))
        try:
            namespace = core.create_namespace(body)
        except ApiException as error:
            if error.status != 409:
                raise
            namespace = core.patch_namespace(name, {"metadata": {"labels": dict(labels or {})}})
        wait_until(
            lambda: core.read_namespaced_service_account("default", name),
            timeout=60,
            what=f"ServiceAccount default in {name}",
            alive=self.check_alive,
        )
        return namespace

    def mint_service_account_kubeconfig(
        self, namespace: str, sa_name: str, *, expiration_seconds: int = 3600, path: Path | None = None
    ) -> Path:
        """A kubeconfig holding a fresh TokenRequest token for ``namespace/sa_name`` (which must exist)."""
        core = k8s.CoreV1Api(self.api_client)
        request = k8s.AuthenticationV1TokenRequest(
            spec=k8s.V1TokenRequestSpec(audiences=[ISSUER], expiration_seconds=expiration_seconds)
        )
        status = core.create_namespaced_service_account_token(sa_name, namespace, request).status
        if status is None or not status.token:
            raise RuntimeError(f"TokenRequest for {namespace}/{sa_name} returned no token")
        token = status.token
        target = path or self.work_dir / f"sa-{namespace}-{sa_name}.kubeconfig"
        return write_kubeconfig(
            target,
            server=self.server,
            ca=self.pki.ca.cert,
            user=f"{namespace}-{sa_name}",
            token=token,
            namespace=namespace,
        )

    def api_client_for(self, kubeconfig: Path) -> k8s.ApiClient:
        """A python client for another identity (close it when done)."""
        return client_from_kubeconfig(kubeconfig)

    def audit_events(self, containing: str = "") -> list[dict[str, Any]]:
        """The events of the API server's audit log so far (``AUDIT_POLICY`` says which are recorded) whose
        line contains ``containing`` (a cheap filter before parsing): dicts with ``verb``, ``user``
        (``username``, ``extra``), ``objectRef``, ``responseStatus``, ``userAgent``."""
        if not self.audit_log.exists():
            return []
        text = self.audit_log.read_text()
        complete = text[: text.rfind("\n") + 1]  # a line being written right now is left for the next read
        return [json.loads(line) for line in complete.splitlines() if line.strip() and containing in line]

    def server_version(self) -> dict[str, Any]:
        version: dict[str, Any] = json.loads(self.kubectl("get", "--raw", "/version").stdout)
        return version


def client_from_kubeconfig(kubeconfig: Path) -> k8s.ApiClient:
    """A python ``kubernetes`` client for the identity in ``kubeconfig`` (TLS verified against its CA)."""
    api_client: k8s.ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    return api_client


def _ssl_context(ca: Path, client: KeyPair) -> ssl.SSLContext:
    """Verify against the session CA and present the admin certificate."""
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(client.cert), str(client.key))
    return context
