"""Builds the FastAPI app: thin routers, and a lifespan that runs the
composition root (server/composition.py) and closes what it opened."""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

import dashboard
from mamaroom import said
from mamaroom.config import Settings
from mamaroom.logs import get_logger
from server.api import admin, auth, devices, health, pages, public, rooms
from server.api import alerts as alerts_api
from server.api import firmware as firmware_api
from server.api import trends as trends_api
from server.api import wechat as wechat_api
from server.body_limit import BodyLimit
from server.composition import build
from server.errors import ServerError
from server.security import SecurityHeaders
from server.surfaces import PublicSurface

log = get_logger(__name__)
DASHBOARD = dashboard.ROOT


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            app.state.ctx = await build(settings, stack)
            tune_gc()
            try:
                yield
            finally:
                log.info("server stopping")
        log.info("server stopped")

    app = FastAPI(
        title="mamaroom",
        summary="Live occupancy of the park's nursing rooms (母婴室)",
        version="0.1.0",
        lifespan=lifespan,
        # FastAPI's /docs and /redoc load their scripts from a CDN, which the
        # park's intranet may not reach; the schema itself is served.
        docs_url=None,
        redoc_url=None,
    )

    @app.exception_handler(ServerError)
    async def server_error(_: Request, exc: ServerError) -> JSONResponse:
        body: dict[str, Any] = {"detail": exc.detail}
        if exc.detail_zh is not None:
            body["detail_zh"] = exc.detail_zh
        return JSONResponse(body, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer, plus the same in Chinese for the admin page.
        answer = await request_validation_exception_handler(request, exc)
        body = json.loads(bytes(answer.body))
        body["detail_zh"] = said.validation(exc.errors()).zh
        return JSONResponse(body, status_code=answer.status_code)

    # Innermost first: the public surface's 404 still gets the security headers.
    app.add_middleware(PublicSurface)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(
        BodyLimit,
        default=settings.http.max_body_bytes,
        larger={"/api/admin/rooms/import": settings.http.max_import_bytes},
    )
    app.include_router(rooms.router)
    app.include_router(auth.router)
    app.include_router(devices.router)
    app.include_router(admin.router)
    app.include_router(alerts_api.router)
    app.include_router(health.router)
    app.include_router(trends_api.router)
    app.include_router(firmware_api.router)
    app.include_router(public.router)
    app.include_router(wechat_api.router)
    _mount_pages(app, DASHBOARD)
    pages.mount(app)
    return app


def tune_gc() -> None:
    """Garbage collector settings for thousands of open streams.

    Each room change puts a few objects per stream client in flight for a
    fraction of a second (queue item, wake-up, ASGI messages). With CPython's
    default young generation (700 objects) they were promoted to the old
    generation again and again, and every few changes that triggered a full
    collection of every object of every connection: ~0.4 s at 5,000 streams
    (bench/sse_fanout.py, measured with gc.callbacks). A young generation of
    100,000 lets them die young; what startup built is frozen out of all
    collections. Only reference cycles wait longer to be freed."""
    gc.freeze()
    gc.set_threshold(100_000, 20, 10)


def _mount_pages(app: FastAPI, root: Path) -> None:
    app.mount("/static", StaticFiles(directory=root / "static"), name="static")
