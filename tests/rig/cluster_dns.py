"""Cluster DNS for the real node: CoreDNS on the host, answering for ``cluster.local`` from the API server.

A cluster's DNS is an add-on; users run CoreDNS. So does the rig, as a host process like Traefik (no image to
build, no Deployment to wait for): ``build_dns.sh`` compiles it with only the plugins used here, and it reads
Services, EndpointSlices and Namespaces through its kubernetes plugin under a ServiceAccount token bound to
``coredns/rbac.yaml``. It listens on port 53 of ``address``, the host end of the node's veth: the kubelet's
``clusterDNS``, so every ``dnsPolicy: ClusterFirst`` pod gets it as its nameserver (with the search path
``<namespace>.svc.cluster.local svc.cluster.local cluster.local``) and reaches it by its default route.
Nothing else is served: names outside ``cluster.local`` and the service CIDR's reverse zone get REFUSED (no
``forward``: the machine's resolver is nothing the tests rely on).

``start()`` returns once ``/ready`` says the kubernetes plugin has synced and a real query for
``kubernetes.default.svc.cluster.local`` answers the ``kubernetes`` Service's ClusterIP.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from kubernetes import client as k8s

from tests.rig import paths
from tests.rig.cluster import Cluster
from tests.rig.procs import Component, free_port, wait_until

DNS_PORT = 53  # a kubelet's clusterDNS has no port: pods always ask port 53
NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "rig-coredns"
RBAC_MANIFEST = Path(__file__).resolve().parent / "coredns" / "rbac.yaml"
CLUSTER_ROLE = "rig-coredns"  # the name in RBAC_MANIFEST
TOKEN_SECONDS = 24 * 3600  # read once at start; longer than any test session
STARTUP_TIMEOUT = 60.0
RCODES = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}
# One line of the log plugin's default format: `[INFO] CLIENT:PORT - ID "TYPE CLASS NAME PROTO ..." RCODE ...`.
QUERY_LINE = re.compile(
    r'\[INFO\] (?P<client>[0-9.]+):\d+ - \d+ "(?P<type>\S+) IN (?P<name>\S+) [^"]*" (?P<rcode>[A-Z]+) '
)


@dataclass(frozen=True)
class Query:
    """A query the server answered, from its log: who asked (a pod's IP), for what, and the response code."""

    client: str
    type: str
    name: str  # fully qualified, with the trailing dot
    rcode: str


@dataclass(frozen=True)
class Answer:
    """What a DNS server said to an A query: its response code and the IPv4 addresses it gave."""

    rcode: str
    addresses: list[str]


def query_a(server: str, name: str, *, port: int = DNS_PORT, timeout: float = 2.0) -> Answer:
    """One A query over UDP, recursion desired — just enough of RFC 1035 to check a server from the host
    without a resolver library (and without the host's resolv.conf in the way)."""
    ident = secrets.randbelow(1 << 16)
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split("."))
    question += b"\0" + struct.pack("!HH", 1, 1)  # QTYPE A, QCLASS IN
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question, (server, port))
        reply = sock.recv(4096)
    replied, flags, _, answers, _, _ = struct.unpack("!HHHHHH", reply[:12])
    if replied != ident:
        raise ValueError(f"{server}:{port} answered query {replied}, not {ident}")
    offset = 12 + len(question)  # the question, echoed
    addresses = []
    for _ in range(answers):
        offset = _skip_name(reply, offset)
        rtype, _, _, length = struct.unpack("!HHIH", reply[offset : offset + 10])
        offset += 10
        if rtype == 1 and length == 4:
            addresses.append(socket.inet_ntoa(reply[offset : offset + 4]))
        offset += length
    return Answer(RCODES.get(flags & 0xF, str(flags & 0xF)), addresses)


def _skip_name(message: bytes, offset: int) -> int:
    """The offset after a (possibly compressed) domain name."""
    while True:
        length = message[offset]
        if length & 0xC0 == 0xC0:  # a pointer ends the name
            return offset + 2
        if length == 0:
            return offset + 1
        offset += 1 + length


@dataclass(repr=False)
class ClusterDNS:
    """One CoreDNS serving ``domain`` of ``cluster`` on ``address``:53; ``start()`` / ``stop()``."""

    cluster: Cluster
    work_dir: Path
    log_dir: Path
    address: str  # the host end of the node's veth: the kubelet's clusterDNS
    service_cidr: str  # its reverse zone answers PTR queries for ClusterIPs
    domain: str = "cluster.local"
    health_port: int = field(default_factory=free_port)  # /health on 127.0.0.1
    ready_port: int = field(default_factory=free_port)  # /ready on 127.0.0.1
    component: Component | None = field(init=False, default=None)
    startup_seconds: float = field(init=False, default=0.0)

    def __repr__(self) -> str:  # short: pytest prints fixtures' reprs in every failure report
        return f"ClusterDNS(address={self.address!r}, domain={self.domain!r})"

    @property
    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.ready_port}/ready"

    def lookup(self, name: str) -> Answer:
        """Ask this server for ``name``'s A records (a fully qualified name: no search path here)."""
        return query_a(self.address, name)

    def queries(self) -> list[Query]:
        """Every query answered so far, in order (the ``log`` plugin writes one line per query)."""
        if self.component is None:
            return []
        text = self.component.log_path.read_text(errors="replace")
        return [Query(**match.groupdict()) for match in QUERY_LINE.finditer(text)]

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> ClusterDNS:
        coredns = paths.rig_dir() / "bin" / "coredns"  # checked before any API call
        if not coredns.is_file():
            raise paths.RigMissingError(
                f"{coredns} is missing: run `bash tests/rig/build_dns.sh` (RIG_DIR={paths.rig_dir()})"
            )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            corefile = self.work_dir / "Corefile"
            corefile.write_text(self.corefile(self._grant_access()))
            self.component = Component(
                "coredns",
                [str(coredns), "-conf", str(corefile)],
                self.log_dir,
                # The kubeconfig in the Corefile is what it uses; neither a CI pod's in-cluster variables nor
                # a developer's $KUBECONFIG may stand in.
                env={"KUBERNETES_SERVICE_HOST": "", "KUBERNETES_SERVICE_PORT": "", "KUBECONFIG": ""},
            ).start()
            wait_until(
                lambda: httpx.get(self.ready_url, timeout=2).status_code == 200,
                timeout=STARTUP_TIMEOUT,
                what="coredns /ready (the kubernetes plugin synced)",
                alive=self.component.check_alive,
            )
            self._check_answers()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        if self.component is not None:
            self.component.stop()
        with contextlib.suppress(Exception):  # best effort: the cluster may be gone already
            self.cluster.kubectl(
                "delete", "clusterrolebinding", CLUSTER_ROLE, "--ignore-not-found", "--wait=false", check=False
            )

    def check_alive(self) -> None:
        if self.component is None:
            raise RuntimeError("the cluster DNS was never started")
        self.component.check_alive()

    # --- pieces ------------------------------------------------------------------------------------

    def corefile(self, kubeconfig: Path) -> str:
        """One server block for the cluster domain and the services' reverse zone (see each plugin's README in
        the coredns module; the plugins run in the order ``coredns/main.go`` gives, not this file's)."""
        return f"""\
{self.domain}:{DNS_PORT} {self.service_cidr}:{DNS_PORT} {{
    bind {self.address}
    errors
    log
    health 127.0.0.1:{self.health_port}
    ready 127.0.0.1:{self.ready_port}
    kubernetes {self.domain} {self.service_cidr} {{
        kubeconfig {kubeconfig}
        ttl 5
    }}
    cache 30
}}
"""

    def _grant_access(self) -> Path:
        """A ServiceAccount bound to ``coredns/rbac.yaml``; returns a kubeconfig holding its token."""
        self.cluster.apply(RBAC_MANIFEST)
        self.cluster.apply(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SERVICE_ACCOUNT}}, namespace=NAMESPACE
        )
        self.cluster.apply(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": CLUSTER_ROLE},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CLUSTER_ROLE},
                "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}],
            }
        )
        return self.cluster.mint_service_account_kubeconfig(
            NAMESPACE, SERVICE_ACCOUNT, expiration_seconds=TOKEN_SECONDS, path=self.work_dir / "coredns.kubeconfig"
        )

    def _check_answers(self) -> None:
        """A real query: the ``kubernetes`` Service's name resolves to its ClusterIP."""
        service = k8s.CoreV1Api(self.cluster.api_client).read_namespaced_service("kubernetes", "default")
        expected = [str(service.spec and service.spec.cluster_ip)]
        name = f"kubernetes.default.svc.{self.domain}"
        assert self.component is not None
        try:
            wait_until(
                lambda: self.lookup(name).addresses == expected,
                timeout=STARTUP_TIMEOUT,
                what=f"{name} to resolve to {expected[0]} at {self.address}:{DNS_PORT}",
                alive=self.component.check_alive,
            )
        except TimeoutError as error:
            raise TimeoutError(f"{error}; coredns log tail:\n{self.component.tail()}") from error
