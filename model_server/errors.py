"""Errors that become HTTP responses, mapped to status codes in one place (``app.install_error_handlers``).

ServerError                  → its ``status``
├── BadRequest               → 400  body is not JSON / not the right shape to start with / its
│                                   binary framing is wrong / names another model than the path
├── NotFound                 → 404  unknown model name or version
├── PayloadTooLarge          → 413  body above ``max_body_bytes``
├── UnsupportedMediaType     → 415  not ``application/json`` (``/v2`` infer: nor ``application/octet-stream``)
├── InvalidInput             → 422  a field is missing, extra, of the wrong type or not finite
├── NotReady                 → 503  model not loaded yet / shutting down
└── InjectedFault            → 500  TEST ONLY fault injection

BundleError                  — not HTTP: the bundle can't be fetched, verified or loaded; the server
                               refuses to start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass
class FieldProblem:
    """One problem with one field of the request, ``field`` in dotted/indexed form: ``instances[3].x``."""

    field: str
    message: str
    type: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message, "type": self.type}


@dataclass
class ServerError(Exception):
    message: str
    problems: list[FieldProblem] = field(default_factory=list)
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def body(self, request_id: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.code, "message": self.message, "request_id": request_id}
        if self.problems:
            out["detail"] = [p.as_dict() for p in self.problems]
        return out


class BadRequest(ServerError):
    status = 400
    code = "bad_request"


class NotFound(ServerError):
    status = 404
    code = "not_found"


class PayloadTooLarge(ServerError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ServerError):
    status = 415
    code = "unsupported_media_type"


class InvalidInput(ServerError):
    status = 422
    code = "invalid_input"


class NotReady(ServerError):
    status = 503
    code = "not_ready"


class InjectedFault(ServerError):
    status = 500
    code = "injected_fault"


class BundleError(Exception):
    """The bundle can't be served; the message says why and what to do."""


def format_location(loc: tuple[int | str, ...] | list[int | str]) -> str:
    """``('instances', 3, 'x')`` → ``instances[3].x``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"
