"""Request validation for ``/predict``, built from the bundle's feature schema.

A request is either one row of named features (``{"sepal_length_cm": 5.1, ...}``) or a batch
(``{"instances": [row, ...]}``). Validation runs in pydantic-core straight from the JSON bytes; every
feature must be present, a real number (bools and strings are refused) and finite, and unknown fields
are refused, so a typo never silently becomes a default value.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

import numpy as np
from pydantic import ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from model_server.batching import Matrix
from model_server.bundle import ModelManifest
from model_server.errors import BadRequest, FieldProblem, InvalidInput, format_location

_JSON_ERRORS = {"json_invalid", "json_type"}
_NOT_AN_OBJECT = {"dict_type", "model_attributes_type", "typed_dict_type"}


def _kind(value: Any) -> str:
    return "batch" if isinstance(value, dict) and "instances" in value else "row"


class PredictSchema:
    """Validators and the OpenAPI schema of ``/predict`` for one model."""

    def __init__(self, manifest: ModelManifest, max_batch_rows: int) -> None:
        self.names = manifest.feature_names
        number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
        fields: dict[str, Any] = {
            f.name: Annotated[
                number,
                Field(description=f"{f.source_name}; training range [{f.min:g}, {f.max:g}]"),
            ]
            for f in manifest.features
        }
        row = _strict_typed_dict(f"{_title(manifest.name)}Features", fields)
        batch = _strict_typed_dict(
            f"{_title(manifest.name)}Batch",
            {"instances": Annotated[list[row], Field(min_length=1, max_length=max_batch_rows)]},  # type: ignore[valid-type]
        )
        union = Annotated[
            Union[Annotated[batch, Tag("batch")], Annotated[row, Tag("row")]],  # type: ignore[valid-type]  # noqa: UP007
            Discriminator(_kind),
        ]
        self._adapter: TypeAdapter[Any] = TypeAdapter(union)
        self.json_schema = self._adapter.json_schema(ref_template="#/components/schemas/{model}")

    def parse(self, body: bytes) -> tuple[Matrix, bool]:
        """Validated rows as a float64 matrix in feature order, and whether the request was a batch."""
        try:
            value = self._adapter.validate_json(body)
        except ValidationError as exc:
            raise _as_http_error(exc) from None
        names = self.names
        if "instances" in value:
            rows = value["instances"]
            return np.array([[r[n] for n in names] for r in rows], dtype=np.float64), True
        return np.array([[value[n] for n in names]], dtype=np.float64), False


def _strict_typed_dict(name: str, fields: dict[str, Any]) -> Any:
    """A TypedDict class built at run time (its fields come from the bundle) that refuses extra keys."""
    factory: Any = TypedDict  # called dynamically; mypy only understands literal TypedDict definitions
    cls = factory(name, fields)
    cls.__pydantic_config__ = ConfigDict(extra="forbid")
    return cls


def _title(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-"))


def _as_http_error(exc: ValidationError) -> BadRequest | InvalidInput:
    errors = exc.errors(include_url=False)
    if any(e["type"] in _JSON_ERRORS for e in errors):
        return BadRequest(f"request body is not valid JSON: {errors[0]['msg']}")
    problems = [
        FieldProblem(
            field=format_location([p for p in e["loc"][1:] if p not in ("batch", "row")] if e["loc"] else []),
            message=e["msg"],
            type=e["type"],
        )
        for e in errors
    ]
    if all(e["type"] in _NOT_AN_OBJECT and not e["loc"][1:] for e in errors):
        return BadRequest("request body must be a JSON object: one row of named features or {'instances': [...]}")
    summary = "; ".join(f"{p.field}: {p.message}" for p in problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return InvalidInput(f"invalid input: {summary}{more}", problems)
