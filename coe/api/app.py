"""``create_app(settings)``: the FastAPI application. Handlers only translate HTTP to the Service."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

from coe.api import errors
from coe.api.protocol import ChatCompletionRequest, chat_completion, completion_id, stream_chunks
from coe.config import Settings
from coe.errors import CoeError
from coe.service import Service

log = logging.getLogger("coe.api")


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def check_auth(request: Request) -> None:
    keys: list[str] = request.app.state.settings.api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
    if not any(hmac.compare_digest(token, key) for key in keys):
        raise HTTPException(401, "Incorrect API key provided.")


ServiceDep = Annotated[Service, Depends(get_service)]
router = APIRouter()
v1 = APIRouter(prefix="/v1", dependencies=[Depends(check_auth)])


@router.get("/healthz")
async def healthz(service: ServiceDep) -> dict[str, Any]:
    return {"status": "ok", "graphs": sorted(service.pipelines), "experts": service.pool.stats()}


@v1.get("/models")
async def list_models(service: ServiceDep) -> dict[str, Any]:
    created = int(service.started_at)
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "coe",
                "description": p.description,
                "experts": list(p.experts),
            }
            for name, p in sorted(service.pipelines.items())
        ],
    }


@v1.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, service: ServiceDep
) -> JSONResponse | StreamingResponse:
    if body.unknown_fields():
        log.info("ignoring unknown request fields: %s", ", ".join(body.unknown_fields()))
    result = await service.run(body.model, body.chat_messages(), body.params())
    if not body.stream:
        return JSONResponse(chat_completion(result, body.model))
    events = stream_chunks(result, body.model, completion_id(), int(time.time()))
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def create_app(settings: Settings, service_factory: Callable[[Settings], Service] = Service) -> FastAPI:
    """Build the app; the lifespan starts the Service (Redis, expert servers) and stops it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = service_factory(settings)
        try:
            await service.start()
        except CoeError as err:
            app.state.startup_error = err  # `coe serve` exits with it (uvicorn alone would exit 3)
            raise
        try:
            app.state.service = service
            yield
        finally:
            await service.stop()

    app = FastAPI(title="coe", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    errors.install(app)
    app.include_router(router)
    app.include_router(v1)
    return app
