"""Exceptions to OpenAI-style error bodies, in one place."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from coe.errors import (
    ConfigError,
    ExpertTimeout,
    GraphNotFound,
    InvalidRequest,
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


def _describe(err: RequestValidationError) -> tuple[str, str | None]:
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


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError) -> JSONResponse:
        message, param = _describe(err)
        return error_response(400, message, "invalid_request_error", "invalid_request", param)

    @app.exception_handler(GraphNotFound)
    async def _not_found(request: Request, err: GraphNotFound) -> JSONResponse:
        return error_response(404, str(err), "invalid_request_error", "model_not_found", "model")

    @app.exception_handler(InvalidRequest)
    async def _invalid(request: Request, err: InvalidRequest) -> JSONResponse:
        return error_response(400, str(err), "invalid_request_error", "invalid_request", err.param)

    @app.exception_handler(ConfigError)
    async def _config(request: Request, err: ConfigError) -> JSONResponse:
        return error_response(400, str(err), "invalid_request_error", "invalid_config")

    @app.exception_handler(UserError)
    async def _user(request: Request, err: UserError) -> JSONResponse:
        return error_response(400, str(err), "invalid_request_error", "invalid_request")

    @app.exception_handler(ExpertTimeout)
    async def _timeout(request: Request, err: ExpertTimeout) -> JSONResponse:
        return error_response(504, str(err), "upstream_error", "expert_timeout")

    @app.exception_handler(UpstreamError)
    async def _upstream(request: Request, err: UpstreamError) -> JSONResponse:
        log.warning("upstream failure: %s", err)
        return error_response(502, str(err), "upstream_error", "expert_failed")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, err: HTTPException) -> JSONResponse:
        type_ = "authentication_error" if err.status_code == 401 else "invalid_request_error"
        return error_response(err.status_code, str(err.detail), type_, None)
