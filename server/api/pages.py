"""The pages: HTML routes, their static files and vendor libraries."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

import dashboard
from mamaroom.config import Settings
from mamaroom.contract import ROOM_ID_PATTERN
from mamaroom.logs import get_logger
from server.context import Ctx, ServerContext
from server.security import SECURITY_HEADERS

log = get_logger(__name__)
DASHBOARD = dashboard.ROOT
#: Pages change with every deploy; the browser must ask again each time.
NO_CACHE = {"Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


def _page(name: str, headers: dict[str, str] | None = None) -> FileResponse:
    return FileResponse(
        DASHBOARD / name, headers={**NO_CACHE, **(headers or {})}, media_type="text/html"
    )


def _mothers_headers(ctx: ServerContext) -> dict[str, str]:
    """Inside WeChat the mothers' pages load WeChat's JS-SDK (the subscribe
    button, docs/wechat.md): its origin joins 'self' in script-src."""
    if not ctx.wechat.enabled:
        return {}
    sdk = urlsplit(ctx.settings.wechat.jssdk_url)
    csp = SECURITY_HEADERS["Content-Security-Policy"].replace(
        "script-src 'self'", f"script-src 'self' {sdk.scheme}://{sdk.netloc}"
    )
    return {"Content-Security-Policy": csp}


@router.get("/")
async def mothers(ctx: Ctx) -> FileResponse:
    return _page("index.html", _mothers_headers(ctx))


@router.get("/r/{room_id}")
async def room_page(
    ctx: Ctx, room_id: Annotated[str, PathParam(pattern=ROOM_ID_PATTERN)]
) -> FileResponse:
    # One page for every room: it reads its id from the address. An unknown
    # room (a mistyped or old QR code) gets the same page, saying so, as a 404.
    page = _page("room.html", _mothers_headers(ctx))
    if ctx.registry.find(room_id) is None:
        page.status_code = 404
    return page


@router.get("/staff")
async def staff() -> FileResponse:
    return _page("staff.html")


@router.get("/trends")
async def trends() -> FileResponse:
    return _page("trends.html")


@router.get("/admin")
async def admin() -> FileResponse:
    return _page("admin.html")


@router.get("/sw.js")
async def service_worker() -> FileResponse:
    # Served from the root so its scope covers every page.
    return FileResponse(
        DASHBOARD / "sw.js",
        media_type="text/javascript",
        headers={**NO_CACHE, "Service-Worker-Allowed": "/"},
    )


@router.get("/manifest.webmanifest")
async def manifest() -> FileResponse:
    return FileResponse(
        DASHBOARD / "manifest.webmanifest", media_type="application/manifest+json", headers=NO_CACHE
    )


def mount(app: FastAPI, root: Path = DASHBOARD) -> None:
    """Page routes, /static (ours) and /vendor (from npm: `make vendor`)."""
    app.include_router(router)
    vendor = root / "vendor"
    if not (vendor / ".built").exists():
        log.warning("dashboard/vendor is missing: run `make vendor` (charts, a11y checks)")
        vendor.mkdir(exist_ok=True)
    app.mount("/vendor", StaticFiles(directory=vendor), name="vendor")


def public_url(settings: Settings) -> str:
    """Where phones reach the mothers' pages (the public surface)."""
    if settings.pages.public_url:
        return settings.pages.public_url.rstrip("/")
    host = settings.http.host if settings.http.host not in ("0.0.0.0", "::") else "127.0.0.1"
    return f"http://{host}:{settings.http.port}"


def staff_url(settings: Settings) -> str:
    """Where staff reach their console (the intranet's staff listener)."""
    return settings.pages.staff_url.rstrip("/") or public_url(settings)
