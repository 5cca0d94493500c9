"""Firmware bundles for the nodes' over-the-air updates (docs/firmware-ota.md).

No login: a node has no HTTP credentials, and needs none. A bundle holds the
firmware's code only (never a config.json, never a secret), and a node takes
it only if its sha256 equals the one in the `ota` command, which reaches it
over the broker, where only the server may write to a node's `cmd` topic.
So a bundle read by anyone reveals nothing, and one tampered with on the way
is refused. Bundles are put in `data_dir/firmware` by `mamaroom device
bundle`; nothing here writes them.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse, PlainTextResponse
from pydantic import BaseModel

from mamaroom.firmware_bundle import VERSION_RE, FirmwareStore
from server.context import Ctx
from server.security import require

router = APIRouter(prefix="/api/firmware", tags=["firmware"])


class FirmwareBundle(BaseModel):
    version: str
    sha256: str
    size: int
    url: str  # relative to the server


def _store(ctx: Ctx) -> FirmwareStore:
    return FirmwareStore.of(ctx.settings)


def _known(store: FirmwareStore, version: str) -> str:
    digest = store.sha256(version) if VERSION_RE.match(version) else None
    if digest is None:
        raise HTTPException(404, f"no firmware bundle {version}")
    return digest


@router.get("", response_model=list[FirmwareBundle], dependencies=[Depends(require("staff"))])
async def bundles(ctx: Ctx) -> list[FirmwareBundle]:
    """The bundles on offer, for staff (the nodes need no list)."""
    store = _store(ctx)
    return [
        FirmwareBundle(
            version=v, sha256=_known(store, v), size=store.size(v), url=f"/api/firmware/{v}.bundle"
        )
        for v in store.versions()
    ]


@router.get("/{version}.bundle", response_class=FileResponse)
async def bundle(version: str, ctx: Ctx) -> FileResponse:
    store = _store(ctx)
    _known(store, version)
    # Content-Length is what the node checks the download against.
    return FileResponse(
        store.path(version),
        media_type="application/octet-stream",
        headers={"Cache-Control": "no-cache"},
    )


@router.get("/{version}.sha256", response_class=PlainTextResponse)
async def sha256(version: str, ctx: Ctx) -> str:
    return _known(_store(ctx), version) + "\n"
