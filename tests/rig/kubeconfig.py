"""Kubeconfig files for the rig's identities: client certificates for components, tokens for ServiceAccounts.

Code under test is pointed at one of these files exactly as it would be in a real cluster, so the RBAC it
runs with is the RBAC the chart grants, not an admin shortcut.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.rig.pki import KeyPair

CLUSTER = "rig"


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca: Path,
    user: str,
    client: KeyPair | None = None,
    token: str | None = None,
    namespace: str | None = None,
) -> Path:
    """Write a one-context kubeconfig authenticating with ``client`` (cert/key) or ``token``."""
    credentials: dict[str, Any]
    if token is not None and client is None:
        credentials = {"token": token}
    elif client is not None and token is None:
        credentials = {"client-certificate": str(client.cert), "client-key": str(client.key)}
    else:
        raise ValueError("give exactly one of client= or token=")
    context: dict[str, Any] = {"cluster": CLUSTER, "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER, "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": user, "context": context}],
        "current-context": user,
        "preferences": {},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
