"""Start the server: fetch and verify the bundle once, then hand over to uvicorn.

Everything that can refuse the bundle (download, digest, unsafe format, untrusted types, ONNX parity
when demanded) runs here, before a socket is opened, so a bad bundle is a clear error and a non-zero
exit — never a server that answers. With several workers, each re-verifies the local copy and
metrics switch to prometheus_client's multiprocess mode.
"""

from __future__ import annotations

import json
import logging.config
import os
import shutil
import tempfile
from dataclasses import dataclass

import uvicorn

from model_server.app import create_app
from model_server.dataplane import DataPlane
from model_server.loader import fetch_bundle
from model_server.logs import logging_config
from model_server.settings import ServerSettings

GRACEFUL_SHUTDOWN_SECONDS = 30


@dataclass(frozen=True)
class ListenOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    log_level: str = "info"


def settings_env(settings: ServerSettings) -> dict[str, str]:
    """The settings as ``MODEL_SERVER_*`` variables, for worker processes."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        key = f"MODEL_SERVER_{name.upper()}"
        env[key] = value if isinstance(value, str) else json.dumps(value)
    return env


def run(bundle_uri: str, settings_overrides: dict[str, object], listen: ListenOptions) -> None:
    """Verify, then serve until SIGTERM/SIGINT; raises BundleError (nothing served) on a bad bundle."""
    logging.config.dictConfig(logging_config(listen.log_level.upper()))
    bundle_dir = fetch_bundle(bundle_uri)
    settings = ServerSettings(bundle_dir=bundle_dir, **settings_overrides)  # type: ignore[arg-type]
    common = {
        "host": listen.host,
        "port": listen.port,
        "loop": "uvloop",
        "http": "httptools",
        "log_config": logging_config(listen.log_level.upper()),
        "access_log": False,
        "server_header": False,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
    }
    if listen.workers == 1:
        uvicorn.run(create_app(DataPlane.from_settings(settings)), **common)  # type: ignore[arg-type]
        return
    DataPlane.from_settings(settings)  # refuse a bad bundle before forking workers
    metrics_dir = tempfile.mkdtemp(prefix="modelserver-metrics-")
    os.environ.update(settings_env(settings))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run(
            "model_server.app:create_app_from_env",
            factory=True,
            workers=listen.workers,
            **common,  # type: ignore[arg-type]
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
