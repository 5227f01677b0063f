"""One error shape for every failure: ``{"error": {"code", "message", "details"}}``.

Clients get a single thing to parse whether the failure came from our own checks, from FastAPI's
routing (404/405) and validation (422), or from the engine rejecting data. Engine errors about
input (DataError, ColumnMismatchError, ConfigError) are by definition the caller's fault, so they
are 422 wherever they surface. Anything else is a 500 whose body never carries a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from model_core.config import ConfigError
from model_core.schema import ColumnMismatchError, DataError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    503: "unavailable",
}


class ApiError(Exception):
    """An expected failure with its HTTP status; raised by routes, rendered by the handler below."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details
        self.headers = headers


def limit_exceeded(limit: str, value: int, maximum: int, status: int = 422) -> ApiError:
    """A request over a configured limit; the setting is named so the operator knows what to raise."""
    return ApiError(
        status,
        "limit_exceeded" if status == 422 else "payload_too_large",
        f"{limit} is {maximum}, the request asks for {value}",
        {"limit": limit, "maximum": maximum, "requested": value},
    )


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ColumnMismatchError, _column_mismatch)
    app.add_exception_handler(DataError, _bad_input)
    app.add_exception_handler(ConfigError, _bad_input)
    app.add_exception_handler(Exception, _unexpected)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    return error_response(exc.status_code, code, message, None, getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"location": ".".join(str(p) for p in err.get("loc", ())), "message": err.get("msg", "")}
        for err in exc.errors()
    ]
    summary = "; ".join(f"{p['location']}: {p['message']}" for p in problems)
    return error_response(422, "validation_error", f"invalid request: {summary}", problems)


async def _column_mismatch(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ColumnMismatchError)
    return error_response(422, "column_mismatch", str(exc), {"missing": exc.missing, "extra": exc.extra})


async def _bad_input(request: Request, exc: Exception) -> JSONResponse:
    code = "invalid_config" if isinstance(exc, ConfigError) else "invalid_data"
    return error_response(422, code, str(exc))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error; the server log has the details")
