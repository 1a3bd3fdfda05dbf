"""Exceptions to OpenAI-style error bodies, in one place: the HTTP exception handlers and the
error event that ends a failed stream both use ``describe``."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from coe.errors import (
    CoeError,
    ConfigError,
    ExpertRejected,
    ExpertTimeout,
    ExpertUnavailable,
    GraphNotFound,
    InvalidRequest,
    Overloaded,
    RequestTimeout,
    UpstreamError,
    UserError,
)

log = logging.getLogger("coe.api")


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}


def error_response(
    status: int, message: str, type_: str, code: str | None = None, param: str | None = None
) -> JSONResponse:
    return JSONResponse(error_body(message, type_, code, param), status_code=status)


#: exception class -> (HTTP status, OpenAI error type, code, param), most specific first
_MAPPING: tuple[tuple[type[BaseException], int, str, str | None, str | None], ...] = (
    (Overloaded, 429, "requests", "rate_limit_exceeded", None),
    (GraphNotFound, 404, "invalid_request_error", "model_not_found", "model"),
    (InvalidRequest, 400, "invalid_request_error", "invalid_request", None),
    (ConfigError, 400, "invalid_request_error", "invalid_config", None),
    (UserError, 400, "invalid_request_error", "invalid_request", None),
    (ExpertRejected, 400, "invalid_request_error", "expert_rejected", None),
    (RequestTimeout, 504, "timeout_error", "request_timeout", None),
    (ExpertTimeout, 504, "upstream_error", "expert_timeout", None),
    (ExpertUnavailable, 503, "upstream_error", "expert_unavailable", None),
    (UpstreamError, 502, "upstream_error", "expert_failed", None),
)


def describe(err: BaseException) -> tuple[int, dict[str, Any]]:
    """The HTTP status and OpenAI error body for an exception; anything unexpected is a 500 that
    says nothing of its cause (the log has it)."""
    for cls, status, type_, code, param in _MAPPING:
        if isinstance(err, cls):
            if isinstance(err, InvalidRequest):
                param, code = err.param, err.code
            elif isinstance(err, ExpertRejected) and err.code:
                code = err.code
                param = "messages" if err.code == "context_length_exceeded" else None
            return status, error_body(str(err), type_, code, param)
    return 500, error_body("The server had an error while processing your request.", "server_error")


def _describe_validation(err: RequestValidationError) -> tuple[str, str | None]:
    problems = []
    first_param = None
    for item in err.errors():
        loc = [str(p) for p in item.get("loc", ()) if p != "body"]
        if item.get("type") == "json_invalid":
            return "We could not parse the JSON body of your request.", None
        param = ".".join(loc) or None
        first_param = first_param or param
        problems.append(f"{param}: {item.get('msg')}" if param else str(item.get("msg")))
    return "Invalid request: " + "; ".join(problems), first_param


def headers_for(err: BaseException) -> dict[str, str]:
    if isinstance(err, Overloaded):
        return {"Retry-After": str(max(1, math.ceil(err.retry_after_s)))}
    return {}


def log_failure(err: BaseException, status: int) -> None:
    if status >= 500 and not isinstance(err, CoeError):
        log.error("internal error", exc_info=err)
    elif status >= 500:
        log.warning("upstream failure: %s", err)


_HTTP_TYPES = {401: "authentication_error", 429: "requests", 405: "invalid_request_error"}
_HTTP_CODES = {
    401: "invalid_api_key",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    429: "rate_limit_exceeded",
}


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError) -> JSONResponse:
        message, param = _describe_validation(err)
        return error_response(400, message, "invalid_request_error", "invalid_request", param)

    @app.exception_handler(CoeError)
    async def _coe(request: Request, err: CoeError) -> JSONResponse:
        status, body = describe(err)
        log_failure(err, status)
        return JSONResponse(body, status_code=status, headers=headers_for(err))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, err: HTTPException) -> JSONResponse:
        type_ = _HTTP_TYPES.get(err.status_code, "invalid_request_error")
        code = _HTTP_CODES.get(err.status_code)
        return JSONResponse(
            error_body(str(err.detail), type_, code), status_code=err.status_code, headers=err.headers
        )
