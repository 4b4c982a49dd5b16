"""The HTTP layer: routes, error mapping and the app factory.

(No ``from __future__ import annotations`` here: FastAPI resolves the route signatures, which use
types built inside ``create_app``, at run time.)

``create_app(dataplane)`` builds one FastAPI app around a loaded model; ``create_app_from_env`` is
the factory uvicorn calls in every worker process (settings come from ``MODEL_SERVER_*``).
Handlers read the raw body and validate it in pydantic-core from bytes — FastAPI's body machinery
is skipped on the hot path, but the OpenAPI schema still describes every request and response.
"""

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from model_server import binary, oip
from model_server.dataplane import DataPlane, Prediction
from model_server.errors import (
    BadRequest,
    FieldProblem,
    InvalidInput,
    NotFound,
    NotReady,
    PayloadTooLarge,
    ServerError,
    UnsupportedMediaType,
    format_location,
)
from model_server.middleware import RequestContextMiddleware
from model_server.payloads import PredictSchema
from model_server.settings import ServerSettings

JSON = "application/json"
INFER_MEDIA_TYPES = (JSON, binary.OCTET_STREAM)
log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    field: str
    message: str
    type: str


class ErrorResponse(BaseModel):
    error: str
    message: str
    request_id: str | None
    detail: list[ErrorDetail] | None = None


class RowPrediction(BaseModel):
    model_config = {"populate_by_name": True}

    class_: str = Field(alias="class")
    probabilities: dict[str, float]


class PredictResponse(RowPrediction):
    model: str
    version: str
    request_id: str


class BatchPredictResponse(BaseModel):
    predictions: list[RowPrediction]
    model: str
    version: str
    request_id: str


class Liveness(BaseModel):
    """Read both ways: ``status`` by status-only clients, ``live`` by KServe's (Triton's reads the 200)."""

    status: Literal["live"]
    live: bool


class Readiness(BaseModel):
    status: Literal["ready"]
    ready: bool


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Body is not JSON or not an object",
        404: "Unknown model",
        413: "Body too large",
        415: "Content-Type is not application/json",
        422: "A field is missing, extra, of the wrong type or not finite",
        503: "Model not ready",
    }.items()
}


def json_response(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type=JSON)


async def read_body(
    request: Request, limit: int, media_types: tuple[str, ...] = (JSON,), *, allow_untyped: bool = False
) -> bytes:
    """The body, after checking its media type (absent is accepted where ``allow_untyped``) and size."""
    content_type = request.headers.get("content-type", "")
    if (content_type or not allow_untyped) and content_type.split(";")[0].strip().lower() not in media_types:
        raise UnsupportedMediaType(
            f"Content-Type must be {' or '.join(media_types)}, got {content_type or 'nothing'!r}"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes; split the batch")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise BadRequest("request body is empty; send a JSON object")
    return body


def install_error_handlers(app: FastAPI) -> None:
    def request_id(request: Request) -> str | None:
        return getattr(request.state, "request_id", None)

    def render(request: Request, error: ServerError) -> Response:
        body = error.body(request_id(request))
        if request.url.path.startswith("/v2/"):
            body = {**body, "error": error.message, "code": error.code}  # OIP clients read "error"
        return json_response(body, error.status)

    async def on_server_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServerError)
        return render(request, exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = [FieldProblem(format_location(list(e["loc"])), e["msg"], e["type"]) for e in exc.errors()]
        summary = "; ".join(f"{p.field}: {p.message}" for p in problems)
        return render(request, InvalidInput(f"invalid request: {summary}", problems))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        error = NotFound(f"no route {request.url.path}") if exc.status_code == 404 else None
        if error is not None:
            return render(request, error)
        return json_response(
            {"error": "http_error", "message": str(exc.detail), "request_id": request_id(request)},
            exc.status_code,
        )

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc, extra={"request_id": request_id(request)})
        return json_response(
            {"error": "internal_error", "message": "internal error", "request_id": request_id(request)}, 500
        )

    app.add_exception_handler(ServerError, on_server_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


def create_app(plane: DataPlane) -> FastAPI:
    settings = plane.settings
    manifest = plane.manifest
    schema = PredictSchema(manifest, settings.max_batch_rows)
    predict_body = dict(schema.json_schema)
    predict_defs = predict_body.pop("$defs", {})
    class_names = manifest.classes
    metadata = oip.model_metadata(manifest).model_dump()
    infer_adapter = oip.InferenceRequest
    ModelName = Annotated[str, Path(examples=[manifest.name], description="Name of the served model")]  # noqa: N806
    ModelVersion = Annotated[str, Path(examples=[manifest.version], description="Its version")]  # noqa: N806

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        plane.warm_up()
        # Everything imported so far lives for the whole process: keep it out of the collector's scans,
        # which otherwise pause every request for 100+ ms about once a second under load (bench/README).
        gc.collect()
        gc.freeze()
        for code in (200, 500):  # so error-rate queries see a zero, not "no data", before the first error
            plane.metrics.observe_request_count_only("predict", code)
        log.info(
            "model ready",
            extra={
                "model": manifest.name,
                "version": manifest.version,
                "digest": manifest.digest,
                "engine": plane.predictor.name,
                "track": settings.track.value,
                "namespace": settings.namespace,
                "modeldeployment": settings.model_deployment,
            },
        )
        if plane.faults is not None:
            log.warning(
                "TEST-ONLY FAULT INJECTION ENABLED",
                extra={"latency_ms": settings.fault_latency_ms, "error_rate": settings.fault_error_rate},
            )
        yield
        plane.ready = False

    app = FastAPI(
        title=f"modelrollout model server — {manifest.name} {manifest.version}",
        version=manifest.version,
        lifespan=lifespan,
        openapi_tags=[{"name": "predict"}, {"name": "oip", "description": "Open Inference Protocol v2"}],
    )
    install_error_handlers(app)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=plane.metrics,
        max_body_bytes=settings.max_body_bytes,
        access_log_all=settings.access_log,
    )

    def rows_payload(prediction: Prediction) -> list[dict[str, Any]]:
        return [
            {"class": label, "probabilities": dict(zip(class_names, probs, strict=True))}
            for label, probs in zip(prediction.classes, prediction.probabilities.tolist(), strict=True)
        ]

    def require_ready() -> None:
        if not plane.ready:
            raise NotReady("model is not ready")

    def require_model(name: str, version: str | None = None) -> None:
        if name != manifest.name:
            raise NotFound(f"model {name!r} is not served here; this server serves {manifest.name!r}")
        if version is not None and version != manifest.version:
            raise NotFound(f"version {version!r} of {name!r} is not served here; it serves {manifest.version!r}")

    @app.post(
        "/predict",
        tags=["predict"],
        summary="Predict one row or a batch of named features",
        openapi_extra={"requestBody": {"required": True, "content": {JSON: {"schema": predict_body}}}},
        responses={200: {"model": PredictResponse | BatchPredictResponse}, **ERROR_RESPONSES},
    )
    async def predict(request: Request) -> Response:
        require_ready()
        rows, is_batch = schema.parse(await read_body(request, settings.max_body_bytes))
        prediction = await plane.predict(rows, "instances" if is_batch else None)
        request_id = request.state.request_id
        common = {"model": manifest.name, "version": manifest.version, "request_id": request_id}
        if is_batch:
            return json_response({"predictions": rows_payload(prediction), **common})
        return json_response({**rows_payload(prediction)[0], **common})

    async def infer_impl(request: Request, name: str, version: str | None) -> Response:
        require_model(name, version)
        require_ready()
        # OIP clients omit the type (Triton's) or send binary tensors as octet-stream (KServe's)
        body = await read_body(request, settings.max_body_bytes, INFER_MEDIA_TYPES, allow_untyped=True)
        header, raw = binary.split(body, request.headers.get(binary.HEADER))
        try:
            infer = infer_adapter.model_validate_json(header)
        except ValidationError as exc:
            raise _oip_validation_error(exc) from None
        asked_version = oip.check_target(infer, name, version)
        if asked_version != version:
            require_model(name, asked_version)
        outputs = oip.requested_outputs(infer)
        as_binary = oip.binary_outputs(infer)
        matrix = oip.to_matrix(infer, manifest, settings.max_batch_rows, raw)
        prediction = await plane.predict(matrix, "rows")
        request_id = infer.id or request.state.request_id
        if not as_binary:
            return json_response(oip.to_response(manifest, request_id, prediction, outputs))
        content, json_length = oip.to_binary_response(manifest, request_id, prediction, outputs, as_binary)
        return Response(content, media_type=binary.OCTET_STREAM, headers={binary.HEADER: str(json_length)})

    infer_docs: dict[str, Any] = {
        "tags": ["oip"],
        "openapi_extra": {
            "parameters": [
                {
                    "name": binary.HEADER_TITLE,
                    "in": "header",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1},
                    "description": "Binary tensor extension: the JSON header's length; binary tensors follow it",
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    JSON: {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
                    binary.OCTET_STREAM: {
                        "schema": {
                            "type": "string",
                            "format": "binary",
                            "description": "An InferenceRequest, then its inputs' binary data",
                        }
                    },
                },
            },
        },
        "responses": {
            200: {
                "model": oip.InferenceResponse,
                "content": {binary.OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
                "description": "JSON, or JSON then binary outputs when they were asked for",
            },
            **ERROR_RESPONSES,
            415: {"model": ErrorResponse, "description": f"Content-Type is neither {JSON} nor {binary.OCTET_STREAM}"},
        },
    }

    @app.post("/v2/models/{model_name}/infer", summary="OIP inference", **infer_docs)
    async def infer(request: Request, model_name: ModelName) -> Response:
        return await infer_impl(request, model_name, None)

    @app.post("/v2/models/{model_name}/versions/{model_version}/infer", summary="OIP inference", **infer_docs)
    async def infer_version(request: Request, model_name: ModelName, model_version: ModelVersion) -> Response:
        return await infer_impl(request, model_name, model_version)

    @app.get("/v2/models/{model_name}", tags=["oip"], response_model=oip.ModelMetadata, responses=ERROR_RESPONSES)
    async def model_info(model_name: ModelName) -> Response:
        require_model(model_name)
        return json_response(metadata)

    @app.get(
        "/v2/models/{model_name}/versions/{model_version}",
        tags=["oip"],
        response_model=oip.ModelMetadata,
        responses=ERROR_RESPONSES,
    )
    async def model_version_info(model_name: ModelName, model_version: ModelVersion) -> Response:
        require_model(model_name, model_version)
        return json_response(metadata)

    @app.get("/v2/models/{model_name}/ready", tags=["oip"], responses=ERROR_RESPONSES)
    async def model_ready(model_name: ModelName) -> Response:
        require_model(model_name)
        require_ready()
        return json_response({"name": manifest.name, "ready": True})

    @app.get("/v2", tags=["oip"])
    async def server_metadata() -> Response:
        return json_response(
            {"name": "modelrollout-model-server", "version": "0.1.0", "extensions": [binary.EXTENSION]}
        )

    @app.get("/health/live", response_model=Liveness, tags=["health"])
    @app.get("/v2/health/live", response_model=Liveness, tags=["oip"])
    async def live() -> Response:
        return json_response({"status": "live", "live": True})

    @app.get("/health/ready", response_model=Readiness, tags=["health"], responses={503: ERROR_RESPONSES[503]})
    @app.get("/v2/health/ready", response_model=Readiness, tags=["oip"], responses={503: ERROR_RESPONSES[503]})
    async def ready() -> Response:
        require_ready()
        return json_response({"status": "ready", "ready": True})

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics() -> Response:
        return Response(plane.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    _register_component_schemas(app, predict_defs)
    return app


def _oip_validation_error(exc: ValidationError) -> BadRequest | InvalidInput:
    errors = exc.errors(include_url=False)
    if any(e["type"] in ("json_invalid", "json_type") for e in errors):
        return BadRequest(f"request body is not valid JSON: {errors[0]['msg']}")
    if all(e["type"] == "model_type" and not e["loc"] for e in errors):
        return BadRequest("request body must be a JSON object with 'inputs'")
    problems = [FieldProblem(format_location(list(e["loc"])), e["msg"], e["type"]) for e in errors]
    summary = "; ".join(f"{p.field}: {p.message}" for p in problems[:5])
    return InvalidInput(f"invalid inference request: {summary}", problems)


def _register_component_schemas(app: FastAPI, predict_defs: dict[str, Any]) -> None:
    """Add the hand-validated request bodies' schemas to the OpenAPI components (FastAPI can't see them)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        request_schema = oip.InferenceRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(request_schema.pop("$defs", {}))
        components.update(predict_defs)
        components["InferenceRequest"] = request_schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app_from_env() -> FastAPI:
    """uvicorn factory: one per worker process."""
    settings = ServerSettings()  # bundle_dir comes from MODEL_SERVER_BUNDLE_DIR
    return create_app(DataPlane.from_settings(settings))
