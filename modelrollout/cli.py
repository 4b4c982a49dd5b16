"""``modelrollout``: train a model bundle, serve it, and (with the operator) roll it out.

Subcommands import their heavy dependencies lazily, so ``modelrollout --help`` is instant and the
server image does not need the operator's libraries.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from model_server.settings import K8S_NAME, Engine, Track
from modelrollout.demo.settings import DEFAULT_OUT as DEFAULT_DEMO_OUT
from modelrollout.demo.settings import DemoOptions, MetricsBackend

app = typer.Typer(
    name="modelrollout",
    help=(
        "Train scikit-learn model bundles, serve them, and roll new versions out safely.\n\n"
        "See it work first: `modelrollout demo --fast` (no cluster needed).\n\n"
        "Package and serve: `modelrollout train --config iris.yaml --out bundles/iris-1.0.0`, then "
        "`modelrollout serve file://bundles/iris-1.0.0`.\n\n"
        "Roll out on Kubernetes: change a ModelDeployment's spec.model and `kubectl apply` it; watch with "
        "`modelrollout status NAME -n NS`; steer with promote, abort, pause, resume and retry; read the "
        "Events with history. Installed as a kubectl plugin too: `kubectl modelrollout status NAME`.\n\n"
        "Exit codes: 0 done, 1 failed, 2 bad input or refused (the message says what to do), 130 interrupted."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


@app.command(
    epilog="Example: modelrollout train --config examples/iris-v1.yaml --out bundles/iris-1.0.0",
)
def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="Training config (YAML).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the bundle to.")],
) -> None:
    """Train, cross-validate and evaluate a model; write it as a bundle (model file + model.json)."""
    from model_server.training import TrainingError, load_config
    from model_server.training import train as run_training

    try:
        manifest = run_training(load_config(config), out)
    except TrainingError as exc:
        fail(str(exc))
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in manifest.metrics.items())
    typer.echo(f"{manifest.name} {manifest.version} → {out}")
    typer.echo(f"  digest   {manifest.digest}")
    typer.echo(f"  metrics  {metrics}")


def _object_name(value: str) -> str:
    if not re.fullmatch(K8S_NAME, value):
        raise typer.BadParameter(f"{value!r} is not a Kubernetes object name (lower-case letters, digits, '-', '.')")
    return value


@app.command(
    epilog=(
        "Examples:\n\n"
        "  modelrollout serve file://bundles/iris-1.0.0 --port 8080\n\n"
        "  modelrollout serve https://models.example/iris-2.0.0/ --track canary --expected-digest sha256:…"
    ),
)
def serve(
    bundle_uri: Annotated[str, typer.Argument(help="Bundle directory: a path, file://, http:// or https:// URI.")],
    host: Annotated[str, typer.Option(envvar="MODEL_SERVER_HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="MODEL_SERVER_PORT", help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
    track: Annotated[Track, typer.Option(help="Rollout role; the metrics' track label.")] = Track.STABLE,
    namespace: Annotated[
        str,
        typer.Option(
            envvar="MODEL_SERVER_NAMESPACE", callback=_object_name, help="ModelDeployment's namespace; a label."
        ),
    ] = "",
    model_deployment: Annotated[
        str,
        typer.Option(
            envvar="MODEL_SERVER_MODEL_DEPLOYMENT", callback=_object_name, help="ModelDeployment's name; a label."
        ),
    ] = "",
    expected_digest: Annotated[
        str | None,
        typer.Option(envvar="MODEL_SERVER_EXPECTED_DIGEST", help="Refuse the model unless it hashes to this."),
    ] = None,
    trust_pickle: Annotated[
        bool, typer.Option("--trust-pickle", help="Allow joblib/pickle bundles (they can run code).")
    ] = False,
    trust_type: Annotated[
        list[str] | None, typer.Option("--trust-type", help="Extra type skops may load (repeatable).")
    ] = None,
    engine: Annotated[Engine, typer.Option(help="auto: ONNX when it matches sklearn.")] = Engine.AUTO,
    max_batch_rows: Annotated[int, typer.Option(min=1, help="Largest accepted batch.")] = 1000,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request.")] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
    fault_latency_ms: Annotated[
        float,
        typer.Option(min=0, help="TEST ONLY: add this latency to every prediction.", rich_help_panel="Test only"),
    ] = 0.0,
    fault_error_rate: Annotated[
        float,
        typer.Option(min=0, max=1, help="TEST ONLY: answer this share with HTTP 500.", rich_help_panel="Test only"),
    ] = 0.0,
) -> None:
    """Serve a model bundle over HTTP (/predict, Open Inference Protocol v2, /metrics)."""
    from model_server.errors import BundleError
    from model_server.serve import ListenOptions, run

    overrides: dict[str, object] = {
        "track": track.value,
        "namespace": namespace,
        "model_deployment": model_deployment,
        "expected_digest": expected_digest,
        "trust_pickle": trust_pickle,
        "trusted_types": trust_type or [],
        "engine": engine.value,
        "max_batch_rows": max_batch_rows,
        "access_log": access_log,
        "fault_latency_ms": fault_latency_ms,
        "fault_error_rate": fault_error_rate,
    }
    try:
        run(bundle_uri, overrides, ListenOptions(host=host, port=port, workers=workers, log_level=log_level))
    except BundleError as exc:
        fail(f"{exc}\nnothing is served.")


KUBE_HELP = "Uses your current kubeconfig context (KUBECONFIG honoured)."
NamespaceOption = Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the ModelDeployment.")]


def _kube() -> tuple[object, object]:
    from kubernetes import client, config

    try:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    except Exception as exc:  # config raises several types; all mean "no usable kubeconfig"
        fail(f"cannot load a kubeconfig ({exc}); set KUBECONFIG or run `kubectl config use-context …`")
    api = client.ApiClient()
    return client.CustomObjectsApi(api), client.CoreV1Api(api)


def _get(custom: object, namespace: str, name: str) -> dict[str, Any]:
    from kubernetes.client.exceptions import ApiException

    try:
        obj: dict[str, Any] = custom.get_namespaced_custom_object(  # type: ignore[attr-defined]
            "modelrollout.io", "v1alpha1", namespace, "modeldeployments", name
        )
    except ApiException as exc:
        if exc.status == 404:
            fail(f"ModelDeployment {namespace}/{name} not found; list them with `kubectl get md -n {namespace}`")
        fail(f"API error {exc.status}: {exc.reason}")
    return obj


@app.command(epilog="Example: modelrollout status iris -n models\n\n" + KUBE_HELP)
def status(name: str, namespace: NamespaceOption = "default") -> None:
    """Show a rollout: phase, stable and canary models, steps, and recent analysis results."""
    from model_operator.control import render_status

    custom, _ = _kube()
    typer.echo(render_status(_get(custom, namespace, name)))


def _send(command: str, name: str, namespace: str) -> None:
    import datetime as dt

    from kubernetes.client.exceptions import ApiException

    from model_operator.control import command_patch
    from model_operator.rollout.types import Command

    custom, _ = _kube()
    _get(custom, namespace, name)
    try:
        custom.patch_namespaced_custom_object(  # type: ignore[attr-defined]
            "modelrollout.io", "v1alpha1", namespace, "modeldeployments", name,
            command_patch(Command(command), dt.datetime.now(dt.UTC)),
        )  # fmt: skip
    except ApiException as exc:
        fail(f"cannot annotate {namespace}/{name}: API error {exc.status} {exc.reason}")
    typer.echo(
        f"{command} requested for {namespace}/{name}; follow it with `modelrollout status {name} -n {namespace}`"
    )


def _command(command: str, doc: str) -> None:
    def run(name: str, namespace: NamespaceOption = "default") -> None:
        _send(command, name, namespace)

    run.__doc__ = doc
    app.command(name=command, epilog=f"Example: modelrollout {command} iris -n models\n\n{KUBE_HELP}")(run)


_command("promote", "Skip the remaining steps and promote the canary now.")
_command("abort", "Roll back to the stable model now.")
_command("pause", "Hold the rollout at its current step (analysis keeps guarding it).")
_command("resume", "Continue a paused rollout.")
_command("retry", "Start a rolled-back canary again from the first step.")


@app.command(epilog="Example: modelrollout history iris -n models\n\n" + KUBE_HELP)
def history(name: str, namespace: NamespaceOption = "default") -> None:
    """The rollout's Events: every phase transition, step and failed analysis."""
    from model_operator.control import render_history

    custom, core = _kube()
    _get(custom, namespace, name)
    events = core.list_namespaced_event(  # type: ignore[attr-defined]
        namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=ModelDeployment"
    ).items
    rows = []
    for event in events:
        when = event.last_timestamp or event.event_time or event.first_timestamp
        rows.append(
            {"time": when.isoformat() if when else "", "type": event.type, "reason": event.reason,
             "message": event.message}
        )  # fmt: skip
    typer.echo(render_history(rows))


@app.command(
    epilog=(
        "Examples:\n\n"
        "  modelrollout demo                  # a minute or two; a live view on a terminal\n\n"
        "  modelrollout demo --fast --out /tmp/demo\n\n"
        "Writes OUT/timeline.png, OUT/summary.json and every process's log under OUT/logs."
    ),
)
def demo(
    fast: Annotated[bool, typer.Option("--fast", help="Shorter pauses and analysis: under a minute.")] = False,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory for bundles, logs, timeline.png and summary.json.")
    ] = DEFAULT_DEMO_OUT,
    metrics: Annotated[
        MetricsBackend,
        typer.Option(help="auto: a real Prometheus when installed (PATH or $RIG_DIR/bin), else in-process scraping."),
    ] = MetricsBackend.AUTO,
) -> None:
    """The whole rollout story on this machine, no cluster: 1.0.0 stable, 2.0.0 promoted, 3.0.0 rolled back.

    Real model servers and HTTP load on loopback; the operator's own code against a local stand-in for Kubernetes.
    """
    from modelrollout.demo.story import DemoError, DemoInterrupted, run_demo

    try:
        run_demo(DemoOptions(out=out, fast=fast, metrics=metrics))
    except DemoInterrupted as exc:
        typer.secho(str(exc), err=True, fg=typer.colors.YELLOW)
        raise typer.Exit(130) from None
    except DemoError as exc:
        fail(str(exc), 1)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
