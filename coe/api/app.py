"""``create_app(settings)``: the FastAPI application. Handlers only translate HTTP to the Service."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from coe.api import batches, errors, schema, web
from coe.api.middleware import Instrument, RequestGuard
from coe.api.protocol import ChatCompletionRequest, chat_completion, stream_events
from coe.api.ratelimit import RateLimiter
from coe.config import Settings
from coe.errors import CoeError, ConfigError
from coe.logs import GRAPH
from coe.metrics import ApiMetrics, PoolCollector, render
from coe.pipeline import RunResult
from coe.service import Service

log = logging.getLogger("coe.api")
T = TypeVar("T")


async def get_service(request: Request) -> Service:  # async: FastAPI runs sync ones in a thread
    service: Service = request.app.state.service
    return service


async def check_auth(request: Request) -> str:
    """The caller's identity for the rate limit: its API key when keys are set (401 without a
    valid one), else its address."""
    keys: list[str] = request.app.state.settings.api_keys
    if not keys:
        return request.client.host if request.client else "-"
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""  # the scheme is case-insensitive
    matches = [hmac.compare_digest(token.encode(), key.encode()) for key in keys]  # every key, always
    if not token or not any(matches):
        # the page (coe/api/static) shows this message when it asks for a key
        message = "Incorrect API key provided." + (
            "" if token else " None was sent: use Authorization: Bearer KEY."
        )
        raise HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})
    return keys[matches.index(True)]


async def check_rate(request: Request, identity: Annotated[str, Depends(check_auth)]) -> None:
    """429 with Retry-After once the caller's bucket is empty (``rate_limit`` in settings)."""
    limiter: RateLimiter | None = request.app.state.limiter
    if limiter is None:
        return
    wait_s = await limiter.take(identity)
    if wait_s:
        request.app.state.metrics.rate_limited.inc()
        limit = request.app.state.settings.rate_limit
        raise HTTPException(
            429,
            f"Rate limit reached: {limit.requests_per_minute:g} requests per minute (bursts of "
            f"{limit.burst}) per key; retry after {wait_s:.0f}s.",
            headers={"Retry-After": str(int(wait_s))},
        )


ServiceDep = Annotated[Service, Depends(get_service)]
router = APIRouter()
v1 = APIRouter(prefix="/v1", dependencies=[Depends(check_rate)])


@router.get("/healthz", response_model=schema.Health)
async def healthz(service: ServiceDep) -> dict[str, Any]:
    """Liveness (200 while the process serves): ``degraded`` names experts that are down, and
    each expert's state and the pid of the server coe launched for it."""
    down = service.pool.down
    return {
        "status": "degraded" if down else "ok",
        "down": down,
        "graphs": sorted(service.pipelines),
        "experts": service.pool.stats(),
    }


@router.get("/readyz", response_model=schema.Ready, responses=schema.errors(503))
async def readyz(service: ServiceDep) -> JSONResponse:
    """Readiness: 503 while an expert that a served graph needs is down."""
    unready = service.unready()
    if unready:
        message = f"experts down: {', '.join(unready)}"
        return JSONResponse(
            errors.error_body(message, "upstream_error", "expert_unavailable"), status_code=503
        )
    return JSONResponse({"status": "ready"})


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    dependencies=[Depends(check_auth)],
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **schema.errors(401)},
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (``coe_*``); the batch queues are read from Redis now."""
    collector: PoolCollector = request.app.state.collector
    try:
        await collector.refresh()
    except RedisError as err:
        log.warning("metrics: batch queues not read, Redis failed (%s)", err)
    return Response(render(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)


@v1.get("/models", response_model=schema.ModelList, responses=schema.errors(401, 429))
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


class ClientGone(Exception):
    """The client disconnected before its answer began."""


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client goes away first; then cancel it (and the expert calls it
    made) and raise ``ClientGone``."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(task, watcher, return_exceptions=True)
    if task.cancelled():
        raise ClientGone
    return task.result()


def _log_answer(result: RunResult) -> None:
    log.info("answer: %s", json.dumps(result.content, ensure_ascii=False))


@v1.post("/chat/completions", response_model=None, responses=schema.CHAT_RESPONSES)
async def chat_completions(body: ChatCompletionRequest, request: Request, service: ServiceDep) -> Response:
    GRAPH.set(body.model[:100])
    body.refuse_unsupported(service.settings.max_messages)
    if body.unknown_fields():
        log.info("ignoring unknown request fields: %s", ", ".join(body.unknown_fields()))
    content = service.settings.log_content
    if content:
        log.info("prompt: %s", json.dumps(body.chat_messages(), ensure_ascii=False))
    try:
        if not body.stream:
            result = await until_disconnected(
                request, service.run(body.model, body.chat_messages(), body.params())
            )
            if content:
                _log_answer(result)
            return JSONResponse(chat_completion(result, body.model))
        # Wait for the answer's first piece before sending headers: a failure before any text is
        # an HTTP error with its status; after that, an error event ends the stream.
        events = service.stream(body.model, body.chat_messages(), body.params())
        try:
            first = await until_disconnected(request, anext(events))
        except BaseException:
            await events.aclose()
            raise
    except ClientGone:
        log.info("client disconnected; run cancelled")
        return Response(status_code=499)
    return StreamingResponse(
        stream_events(first, events, body.model, _log_answer if content else None),
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
            redis = aioredis.Redis.from_url(service.redis_url) if service.redis_url else None
            if settings.rate_limit is not None and redis is None:
                await service.stop()
                raise ConfigError("rate_limit: needs Redis (set redis_url, or let coe start its own)")
        except CoeError as err:
            app.state.startup_error = err  # `coe serve` exits with it (uvicorn alone would exit 3)
            raise
        app.state.limiter = RateLimiter(redis, settings.rate_limit) if redis and settings.rate_limit else None
        app.state.collector = PoolCollector(service.pool, redis)
        api_metrics.registry.register(app.state.collector)
        _log_access(settings)
        try:
            app.state.service = service
            yield
        finally:
            api_metrics.registry.unregister(app.state.collector)
            if redis is not None:
                await redis.aclose()
            await service.stop()

    api_metrics = ApiMetrics()
    app = FastAPI(
        title="coe",
        version="0.1.0",
        lifespan=lifespan,
        description=DESCRIPTION,
        docs_url=None,  # Swagger UI and ReDoc load their assets from a CDN; /openapi.json stays
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = api_metrics
    app.state.limiter = None
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(Instrument, metrics=api_metrics, served=lambda: app.state.service.pipelines)
    errors.install(app)
    app.include_router(router)
    app.include_router(v1)
    app.include_router(batches.router, prefix="/v1", dependencies=[Depends(check_rate)])
    app.include_router(web.router)
    openapi = app.openapi
    app.openapi = lambda: schema.drop_422(openapi())  # type: ignore[method-assign]
    return app


DESCRIPTION = (
    "OpenAI-compatible chat completions over graphs of experts. With `COE_API_KEYS` set, `/v1` and "
    "`/metrics` need `Authorization: Bearer KEY`. Errors are OpenAI's body "
    '`{"error": {"message", "type", "param", "code"}}`.'
)


def _log_access(settings: Settings) -> None:
    keys = len(settings.api_keys)
    log.info("auth: %s", f"on ({keys} key{'s' * (keys != 1)})" if keys else "off (no COE_API_KEYS)")
    limit = settings.rate_limit
    if limit is not None:
        log.info(
            "rate limit: %g requests per minute per key, bursts of %d", limit.requests_per_minute, limit.burst
        )
