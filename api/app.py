"""The aiohttp application: routes, middlewares, and the lifecycle of clients and background tasks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from aiohttp import WSCloseCode, web
from redis.exceptions import RedisError

from api import admin, handlers, ws
from api.backends import connect
from api.context import BACKENDS, BACKGROUND, HUB, LIMITER, METRICS, SETTINGS, Backends, Background
from api.cors import cors_middleware
from api.errors import error_middleware
from api.hub import Hub
from api.limits import MemoryRateLimiter
from api.metrics import Metrics, metrics_middleware
from api.openapi import openapi_document
from models.records import AnalysisResult
from models.settings import Settings, check_secrets

log = logging.getLogger("api.app")

BackendsFactory = Callable[[Settings], AbstractAsyncContextManager[Backends]]

STATIC_DIR = Path(__file__).parent / "static"
CLIENT_MAX_SIZE = 64 * 1024  # request bodies are small JSON; images go straight to S3
STARTUP_WAIT_S = 15.0
RESTART_DELAY_S = 2.0
STOP_WAIT_S = 5.0
SHUTDOWN_CLOSE_S = 5.0


def create_app(settings: Settings, *, backends: BackendsFactory = connect) -> web.Application:
    """Build the API. ``backends`` builds the outside services; tests pass one that yields fakes.

    Raises ``InsecureSettingsError`` outside development mode when a secret is a default, empty or short.
    """
    check_secrets(settings)
    metrics = Metrics()
    app = web.Application(
        client_max_size=CLIENT_MAX_SIZE,
        middlewares=[
            metrics_middleware(metrics),
            cors_middleware(settings.cors_origins),
            error_middleware(unavailable=(RedisError, ConnectionError)),
        ],
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[HUB] = Hub()
    app[LIMITER] = MemoryRateLimiter()
    app[BACKGROUND] = Background()
    app.cleanup_ctx.append(_backends_ctx(backends))
    app.cleanup_ctx.append(_background_ctx)
    app.on_shutdown.append(_close_sockets)
    _add_routes(app)
    return app


def _add_routes(app: web.Application) -> None:
    document = openapi_document(app[SETTINGS])

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(document)

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.router.add_post("/api/v1/waste/analyze", handlers.analyze)
    app.router.add_post("/api/v1/waste/upload-complete/{job_id}", handlers.upload_complete)
    app.router.add_get("/api/v1/waste/results/{job_id}", handlers.get_result)
    app.router.add_get("/api/v1/waste/ws", ws.websocket)
    app.router.add_delete("/api/v1/waste/admin/cache/{phash}", admin.invalidate_cached_result)
    app.router.add_delete("/api/v1/waste/admin/cache", admin.invalidate_cached_result)
    app.router.add_get("/api/v1/waste/admin/results/{job_id}", admin.full_result)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC_DIR)


def _backends_ctx(factory: BackendsFactory) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with factory(app[SETTINGS]) as backends:
            app[BACKENDS] = backends
            yield

    return ctx


async def _background_ctx(app: web.Application) -> AsyncIterator[None]:
    backends, hub, metrics, background = app[BACKENDS], app[HUB], app[METRICS], app[BACKGROUND]

    async def on_results(results: list[AnalysisResult]) -> None:
        metrics.results_consumed.inc(len(results))
        try:
            # Store before fan-out: a socket that subscribes after the fan-out then finds it in Redis.
            await backends.store.save_results(results)
        except Exception as exc:  # live subscribers still get them; late ones need Redis back
            log.warning("storing %d result(s) failed: %s", len(results), type(exc).__name__)
        for result in results:
            hub.publish_result(result)

    background.tasks = [
        asyncio.create_task(
            _supervise(
                "results consumer",
                lambda: backends.results.run(on_results, background.results_ready),
                background.results_ready,
            )
        ),
        asyncio.create_task(
            _supervise(
                "state listener",
                lambda: backends.store.watch_states(hub.publish_state, background.states_ready),
                background.states_ready,
            )
        ),
    ]
    # Serve only once both feeds are positioned, so nothing published right after start-up is missed.
    for name, event in (("results consumer", background.results_ready), ("state listener", background.states_ready)):
        try:
            await asyncio.wait_for(event.wait(), STARTUP_WAIT_S)
        except TimeoutError:
            log.warning("%s not ready after %ss; serving anyway (see /healthz)", name, STARTUP_WAIT_S)
    yield
    await _stop(background.tasks)


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    # Cancel again if a task is still running: a client library may lose a cancellation (see api.store).
    for _ in range(3):
        for task in tasks:
            task.cancel()
        _, pending = await asyncio.wait(tasks, timeout=STOP_WAIT_S)
        if not pending:
            return
        log.warning("%d background task(s) ignored cancel(); cancelling again", len(pending))


async def _supervise(name: str, run: Callable[[], Awaitable[None]], ready: asyncio.Event) -> None:
    """Keep a feed running: a crash is logged and the feed restarts, instead of silently ending."""
    while True:
        try:
            await run()
            log.warning("%s stopped; restarting", name)
        except Exception:
            log.exception("%s crashed; restarting in %ss", name, RESTART_DELAY_S)
        ready.clear()
        await asyncio.sleep(RESTART_DELAY_S)


async def _close_sockets(app: web.Application) -> None:
    hub = app[HUB]
    for conn in hub.connections:
        conn.close_soon(WSCloseCode.GOING_AWAY)

    async def all_closed() -> None:
        while hub.connections:
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(all_closed(), SHUTDOWN_CLOSE_S)
    except TimeoutError:  # clients that do not answer the close frame; aiohttp drops them after this
        log.warning("%d socket(s) still open at shutdown", len(hub.connections))
